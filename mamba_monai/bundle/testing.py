"""Checks that every bundle's tests share: output geometry against inputs, hospital-like and bad inputs, export
parity, running a bundle as a user does (``python -m monai.bundle run``, torchrun)."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import torch

from mamba_monai.bundle.utils import bundle_dir
from mamba_monai.data import make_affine, write_nifti

__all__ = [
    "BAD_INPUT_OUTCOMES",
    "assert_outputs_match_inputs",
    "run_bundle",
    "snapshot_tree",
    "write_bad_inputs",
    "write_hospital_like_inputs",
    "export_and_compare",
    "run_bundle_with_torchrun",
    "record_cases_config",
    "recorded_cases",
    "tensorboard_writer_pids",
]


_OUTPUT_SUFFIXES = (".nii.gz", ".nii", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def _stem(path: str) -> str:
    name = os.path.basename(path)
    for ext in _OUTPUT_SUFFIXES:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return os.path.splitext(name)[0]


def _is_nifti(path: str) -> bool:
    return path.lower().endswith((".nii", ".nii.gz"))


def _plain_image_size(path: str) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as img:
        return img.size  # (width, height)


def assert_outputs_match_inputs(input_paths: list[str], output_dir: str, atol: float = 1e-4) -> dict[str, str]:
    """
    Every input has exactly one output under ``output_dir`` whose name starts with the input's name, and it lies on
    the input's grid: a NIfTI output has the input's spatial shape and affine; a PNG/JPEG/TIFF output (written for
    such an input) has its width and height. Overlay pictures (``*_overlay.png``) are companions, not outputs.
    Returns input path -> output path.
    """
    outputs = sorted(
        o for o in glob.glob(os.path.join(output_dir, "**", "*"), recursive=True)
        if o.lower().endswith(_OUTPUT_SUFFIXES) and not o.lower().endswith("_overlay.png")
    )
    matched = {}
    for path in input_paths:
        stem = _stem(path)
        hits = [o for o in outputs if _stem(o).startswith(stem + "_") or _stem(o) == stem]
        assert len(hits) == 1, f"expected one output for {path} in {output_dir}, found {hits} among {outputs}"
        out = hits[0]
        if _is_nifti(path) and _is_nifti(out):
            src_img, out_img = nib.load(path), nib.load(out)
            n = len(out_img.shape)
            assert out_img.shape == src_img.shape[:n], f"{out} has shape {out_img.shape}, input {path} has {src_img.shape}"
            np.testing.assert_allclose(out_img.affine, src_img.affine, atol=atol, err_msg=f"affine of {out} differs from {path}")
        elif not _is_nifti(path) and not _is_nifti(out):
            assert _plain_image_size(out) == _plain_image_size(path), f"{out} and {path} differ in size"
        else:
            raise AssertionError(f"{out} is not in the format family of its input {path}")
        matched[path] = out
    return matched


def write_hospital_like_inputs(source_image: str, out_dir: str) -> dict[str, str]:
    """
    Variants of ``source_image`` that clinical exports produce, written to ``out_dir``: a 4D file with a singleton
    channel, an odd-sized oblique crop with MR-like float intensities, and a truncated (corrupt) ``.nii.gz``.

    Returns:
        kind -> path, kinds ``"plain"``, ``"singleton_4d"``, ``"oblique_mr"``, ``"corrupt"``.
    """
    os.makedirs(out_dir, exist_ok=True)
    img = nib.load(source_image)
    data = np.asarray(img.dataobj)
    paths = {"plain": os.path.join(out_dir, "plain.nii.gz")}
    shutil.copy(source_image, paths["plain"])
    paths["singleton_4d"] = write_nifti(data[..., None], img.affine, os.path.join(out_dir, "singleton_4d.nii.gz"))
    crop = data[3:-4, 5:-2, 1:-2].astype(np.float32)
    mr = (crop - crop.min()) / max(float(np.ptp(crop)), 1.0) * 1200.0  # MR-like arbitrary units, no HU
    affine = make_affine((1.1, 0.9, 2.3), rotation_deg=(7.0, -4.0, 11.0), origin=(-120.0, 80.0, -40.0))
    paths["oblique_mr"] = write_nifti(mr, affine, os.path.join(out_dir, "oblique_mr.nii.gz"))
    paths["corrupt"] = os.path.join(out_dir, "corrupt.nii.gz")
    with open(source_image, "rb") as f:
        blob = f.read()
    with open(paths["corrupt"], "wb") as f:
        f.write(blob[: len(blob) // 2])
    return paths


def export_and_compare(
    network: torch.nn.Module, exported_path: str, input_shape: tuple[int, ...], atol: float = 1e-4
) -> float:
    """
    Load a TorchScript file written by ``monai.bundle.ckpt_export`` and compare it with the eager ``network`` on a
    fresh random input of ``input_shape``. Returns the largest absolute difference; raises if above ``atol``.
    """
    exported = torch.jit.load(exported_path, map_location="cpu")
    network = network.eval()
    x = torch.rand(*input_shape)
    with torch.no_grad():
        ref, out = network(x), exported(x)
    diff = float((ref - out).abs().max())
    if diff > atol:
        raise AssertionError(f"{exported_path} differs from the eager network by {diff} (> {atol})")
    return diff


def run_bundle(
    bundle: str,
    config_files: list[str],
    nproc: int = 0,
    check: bool = True,
    timeout: float = 600,
    **override,
) -> subprocess.CompletedProcess:
    """
    Run a bundle as its docs tell a user to: ``python -m monai.bundle run --config_file "['configs/a.json', ...]"``
    in the bundle's folder, or under ``torchrun --standalone --nproc_per_node=nproc`` when ``nproc`` > 0 (CPU
    processes use gloo). ``config_files`` are names under ``configs/`` (``"train.json"``); ``override`` become
    ``--key value`` arguments. With ``check`` an ``AssertionError`` carrying the output is raised when the exit
    status is not 0. An absolute path in ``config_files`` is merged as it is (a test's own extra config).
    """
    root = bundle_dir(bundle)
    files = "[" + ",".join(f"'{name}'" if os.path.isabs(name) else f"'configs/{name}'" for name in config_files) + "]"
    launcher = [sys.executable, "-m"]
    if nproc > 0:
        launcher += ["torch.distributed.run", "--standalone", "--nnodes=1", f"--nproc_per_node={nproc}", "-m"]
    cmd = [*launcher, "monai.bundle", "run", "--config_file", files]
    for key, value in override.items():
        cmd += [f"--{key}", str(value)]
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1") if nproc > 0 else dict(os.environ)
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def run_bundle_with_torchrun(
    bundle: str, config_files: list[str], nproc: int = 2, timeout: float = 300, **override
) -> subprocess.CompletedProcess:
    """:func:`run_bundle` under ``torchrun`` with ``nproc`` processes; raises with the output when it fails."""
    return run_bundle(bundle, config_files, nproc=nproc, timeout=timeout, **override)


def record_cases_config(path: str | os.PathLike, engine: str = "@train#trainer") -> str:
    """Write an extra bundle config that makes every rank of a ``torchrun`` run record the cases its trainer
    receives (:class:`~mamba_monai.bundle.CaseRecorder`) in ``@output_dir/cases_rank<r>.txt``; merge it after
    ``multi_gpu_train.json`` (pass its absolute path to :func:`run_bundle`). Returns the path."""
    config = {
        "case_recorder": {
            "_target_": "mamba_monai.bundle.CaseRecorder",
            "output_file": "$@output_dir + '/cases_rank' + str(dist.get_rank()) + '.txt'",
        },
        "run": [f"$@case_recorder.attach({engine})", f"${engine}.run()"],
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(config, f, indent=4)
    return os.fspath(path)


def recorded_cases(output_dir: str | os.PathLike, nproc: int = 2) -> list[set[str]]:
    """The files each rank recorded with :func:`record_cases_config`, one set per rank."""
    ranks = []
    for rank in range(nproc):
        with open(os.path.join(os.fspath(output_dir), f"cases_rank{rank}.txt"), encoding="utf-8") as f:
            ranks.append({line.rstrip("\n").split("\t")[2] for line in f if line.strip()})
    return ranks


def snapshot_tree(root: str) -> dict[str, str]:
    """relative path -> SHA-256 of every file under ``root`` (hidden files included): compare two snapshots to
    prove that a run left a folder byte-identical."""
    digests = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                digests[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return digests


BAD_INPUT_OUTCOMES = {
    "good_a": "written",
    "good_b": "written",
    "constant": "written",  # runs, with a warning that the image is constant
    "tiny": "written",  # smaller than the ROI: the sliding window pads it
    "truncated": "skipped",
    "multi_channel": "skipped",
    "with_nan": "skipped",
    "wrong_dims": "skipped",
    "degenerate_affine": "skipped",
    "nan_affine": "skipped",
}
"""What a bundle's inference must do with each kind that :func:`write_bad_inputs` writes."""


def _write_header_affine(array: np.ndarray, affine: np.ndarray, path: str) -> str:
    """A NIfTI whose sform is ``affine`` as given (even singular or NaN) and whose qform is unset."""
    img = nib.Nifti1Image(array, None)
    img.set_sform(affine, code=1)
    img.set_qform(None, code=0)
    nib.save(img, path)
    return path


def _read_source(path: str) -> tuple[np.ndarray, np.ndarray, str]:
    """(array in MONAI's axis order, 4x4 affine, suffix): NIfTI as stored; a PNG/JPEG gray image transposed to
    (x, y), as MONAI's readers give it, with an identity affine."""
    if _is_nifti(path):
        img = nib.load(path)
        return np.asarray(img.dataobj), img.affine, ".nii.gz"
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("L")).T.copy(), np.eye(4), os.path.splitext(path)[1].lower()


def _write_like_source(array: np.ndarray, affine: np.ndarray, path: str) -> str:
    if _is_nifti(path):
        return write_nifti(array, affine, path)
    from mamba_monai.data import write_image_2d

    return write_image_2d(np.ascontiguousarray(array.T).astype(np.uint8), path)


def write_bad_inputs(source_image: str, out_dir: str, spatial_dims: int = 3) -> dict[str, str]:
    """
    A folder as users' folders are: good cases beside the bad kinds of :data:`BAD_INPUT_OUTCOMES`, made from
    ``source_image`` (a NIfTI of ``spatial_dims`` dims, or for ``spatial_dims=2`` also a PNG/JPEG):

    - written: ``good_a`` (a copy, in the source's format), ``good_b`` (mirrored, as NIfTI with a non-identity
      affine), ``constant`` (with a warning), ``tiny`` (12 voxels a side: padded or resized by the pipeline);
    - skipped: ``truncated`` (half the bytes), ``multi_channel`` (a 3D bundle gets a 3-volume 4D series, a 2D one a
      2-channel NIfTI), ``with_nan``, ``wrong_dims`` (a 2D slice for a 3D bundle, a 3D stack for a 2D one),
      ``degenerate_affine`` (a zero-length axis in the header) and ``nan_affine``.

    Returns:
        kind -> path, ``<kind><suffix>`` in ``out_dir``.
    """
    os.makedirs(out_dir, exist_ok=True)
    data, affine, suffix = _read_source(source_image)
    if data.ndim != spatial_dims:
        raise ValueError(f"{source_image} has {data.ndim} dims, expected a {spatial_dims}D image.")
    native = {"good_a", "constant", "tiny", "truncated"}
    path = {k: os.path.join(out_dir, k + (suffix if k in native else ".nii.gz")) for k in BAD_INPUT_OUTCOMES}
    shutil.copy(source_image, path["good_a"])
    spacing = (0.7, 0.9, 2.0)[:spatial_dims]
    write_nifti(np.ascontiguousarray(data[::-1]), make_affine(spacing, rotation_deg=8.0, origin=(-40.0, 25.0, 3.0)),
                path["good_b"])
    _write_like_source(np.full_like(data, data.flat[0]), affine, path["constant"])
    _write_like_source(np.ascontiguousarray(data[tuple(slice(0, 12) for _ in range(spatial_dims))]), affine, path["tiny"])
    with open(source_image, "rb") as f:
        blob = f.read()
    with open(path["truncated"], "wb") as f:
        f.write(blob[: len(blob) // 2])
    channels = np.stack([data] * 3, axis=-1) if spatial_dims == 3 else np.stack([data, data], axis=-1)[:, :, None]
    write_nifti(channels, affine, path["multi_channel"])
    with_nan = data.astype(np.float32)
    with_nan[(slice(0, 4),) * spatial_dims] = np.nan
    write_nifti(with_nan, affine, path["with_nan"])
    other = data[..., data.shape[-1] // 2] if spatial_dims == 3 else np.stack([data] * 5, axis=-1)
    write_nifti(np.ascontiguousarray(other), affine, path["wrong_dims"])
    singular = affine.copy()
    singular[:3, spatial_dims - 1] = 0.0
    _write_header_affine(data, singular, path["degenerate_affine"])
    non_finite = affine.copy()
    non_finite[0, 3] = np.nan
    _write_header_affine(data, non_finite, path["nan_affine"])
    return path


def tensorboard_writer_pids(log_dir: str) -> set[str]:
    """Process ids that wrote TensorBoard event files under ``log_dir`` (``events.out.tfevents.<t>.<host>.<pid>.<n>``)."""
    files = glob.glob(os.path.join(log_dir, "**", "events.out.tfevents.*"), recursive=True)
    return {os.path.basename(f).split(".")[-2] for f in files}
