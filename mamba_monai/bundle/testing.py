"""Checks that every bundle's tests share: output geometry against inputs, hospital-like inputs, export parity."""

from __future__ import annotations

import glob
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
    "assert_outputs_match_inputs",
    "write_hospital_like_inputs",
    "export_and_compare",
    "run_bundle_with_torchrun",
    "tensorboard_writer_pids",
]


def _stem(path: str) -> str:
    name = os.path.basename(path)
    for ext in (".nii.gz", ".nii", ".png", ".jpg"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return os.path.splitext(name)[0]


def assert_outputs_match_inputs(input_paths: list[str], output_dir: str, atol: float = 1e-4) -> dict[str, str]:
    """
    Every input has exactly one NIfTI under ``output_dir`` whose name contains the input's name, with the input's
    spatial shape and affine. Returns input path -> output path.
    """
    outputs = sorted(glob.glob(os.path.join(output_dir, "**", "*.nii*"), recursive=True))
    matched = {}
    for path in input_paths:
        stem = _stem(path)
        hits = [o for o in outputs if _stem(o).startswith(stem + "_") or _stem(o) == stem]
        assert len(hits) == 1, f"expected one output for {path} in {output_dir}, found {hits} among {outputs}"
        src, out = nib.load(path), nib.load(hits[0])
        assert out.shape[:3] == src.shape[:3], f"{hits[0]} has shape {out.shape}, input {path} has {src.shape}"
        np.testing.assert_allclose(out.affine, src.affine, atol=atol, err_msg=f"affine of {hits[0]} differs from {path}")
        matched[path] = hits[0]
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


def run_bundle_with_torchrun(
    bundle: str, config_files: list[str], nproc: int = 2, timeout: float = 300, **override
) -> subprocess.CompletedProcess:
    """
    ``torchrun --standalone --nproc_per_node=nproc -m monai.bundle run`` in the bundle's folder, as its docs tell a
    user to run it (CPU processes use gloo). ``config_files`` are names under ``configs/`` (``"train.json"``);
    ``override`` become ``--key value`` arguments. Raises ``AssertionError`` with the output when it fails.
    """
    root = bundle_dir(bundle)
    files = "[" + ",".join(f"'configs/{name}'" for name in config_files) + "]"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", f"--nproc_per_node={nproc}",
           "-m", "monai.bundle", "run", "--config_file", files]
    for key, value in override.items():
        cmd += [f"--{key}", str(value)]
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def tensorboard_writer_pids(log_dir: str) -> set[str]:
    """Process ids that wrote TensorBoard event files under ``log_dir`` (``events.out.tfevents.<t>.<host>.<pid>.<n>``)."""
    files = glob.glob(os.path.join(log_dir, "**", "events.out.tfevents.*"), recursive=True)
    return {os.path.basename(f).split(".")[-2] for f in files}
