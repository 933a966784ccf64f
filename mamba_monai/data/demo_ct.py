"""A deterministic synthetic abdominal CT data set (NIfTI + Decathlon datalist) for the 3D segmentation bundles.

Each case is a small abdomen phantom defined in world coordinates (RAS+, mm) and sampled on a voxel grid with
a realistic geometry: anisotropic spacing (0.8-1.0 mm in-plane, 2.5-3.0 mm slices), LPS- or RAS-ordered
voxels, a gantry tilt or small oblique rotation on some cases, scanner-like origins, and sizes that vary per
case and are not multiples of 32. Intensities are int16 Hounsfield units: air, subcutaneous and visceral fat,
muscle wall, organs with distinct enhancement, a segmented spine and ribs, bowel gas, partial-volume blur and
Gaussian noise. Anatomy varies smoothly per case (organ positions, sizes and rotations, lobulated borders, a
low-frequency displacement field). Labels (uint8) follow :data:`DEMO_CT_LABELS`.

Case ``i`` depends only on ``(seed, i, size_scale)``, so the same case is identical whatever the split sizes.
"""

from __future__ import annotations

import logging
import os

import numpy as np
from scipy import ndimage

from mamba_monai.data.demo import DATALIST_NAME, demo_splits, ensure_demo_dataset, write_demo_datalist
from mamba_monai.data.nifti import make_affine, rotation_matrix, write_nifti

__all__ = ["DEMO_CT_LABELS", "DEMO_CT_VERSION", "generate_demo_ct_case", "ensure_demo_ct_dataset"]

logger = logging.getLogger(__name__)

DEMO_CT_VERSION = 1
"""Bumped whenever the generator's output changes; a data set written by another version is regenerated."""

DEMO_CT_LABELS: dict[int, str] = {0: "background", 1: "liver", 2: "spleen", 3: "kidney", 4: "aorta", 5: "gland"}
"""Label values of the demo CT data set. ``kidney`` covers both kidneys; ``gland`` is a small adrenal-like
structure above the left kidney (about 50-150 voxels at 1.5x1.5x2.0 mm)."""

_SUBDIRS = ("imagesTr", "labelsTr", "imagesTs", "labelsTs")


# ----------------------------------------------------------------------------------------------------------------
# one case


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], coarse: tuple[int, ...]) -> np.ndarray:
    """Low-frequency noise of unit standard deviation: random values on a coarse grid of control points,
    interpolated separably with Gaussian weights (one small matrix product per axis, far cheaper than
    ``ndimage.zoom``). ``coarse`` sets the number of control points (bumps) per axis."""
    grid = rng.standard_normal(coarse).astype(np.float32)
    weights = []
    for n, c in zip(shape, coarse):
        knots = np.linspace(-0.5, n - 0.5, c, dtype=np.float32)
        width = max((n / max(c - 1, 1)) * 0.6, 1e-3)
        w = np.exp(-0.5 * ((np.arange(n, dtype=np.float32)[:, None] - knots[None, :]) / width) ** 2)
        weights.append(w / w.sum(axis=1, keepdims=True))
    out = np.einsum("ia,jb,kc,abc->ijk", *weights, grid, optimize=True).astype(np.float32)
    return out / max(float(out.std()), 1e-6)


def _ellipsoid_q(
    p: np.ndarray, center: np.ndarray, radii: np.ndarray, rot: np.ndarray | None = None
) -> np.ndarray:
    """Quadratic form sum(((R^T (p - c)) / r)^2) over points ``p`` of shape (3, ...): <= 1 inside."""
    d = p - center.reshape(3, *([1] * (p.ndim - 1)))
    if rot is not None:
        d = np.tensordot(rot.T.astype(np.float32), d, axes=1)
    q = (d[0] / radii[0]) ** 2
    q += (d[1] / radii[1]) ** 2
    q += (d[2] / radii[2]) ** 2
    return q


def _case_geometry(
    rng: np.random.Generator, index: int, size_scale: float
) -> tuple[tuple[int, int, int], np.ndarray]:
    """Per-case voxel grid (shape) and affine."""

    def not_multiple_of_32(n: int) -> int:
        return n + 1 if n % 32 == 0 else n

    n_xy = int(rng.integers(112, 137))
    n_z = int(rng.integers(48, 65))
    shape = (
        not_multiple_of_32(max(8, round(n_xy * size_scale))),
        not_multiple_of_32(max(8, round((n_xy + int(rng.integers(-6, 7))) * size_scale))),
        not_multiple_of_32(max(8, round(n_z * size_scale))),
    )
    sxy = round(float(rng.uniform(0.8, 1.0)), 4) / size_scale
    sz = round(float(rng.uniform(2.5, 3.0)), 4) / size_scale
    spacing = np.array([sxy, sxy, sz])
    # voxel order cycles over the case index so that every small set mixes them: DICOM/LPS-like (x, y flipped,
    # the usual DICOM-to-NIfTI export), plain RAS, and a single flipped axis
    flip = [(True, True, False), (False, False, False), (True, True, False), (True, False, False)][index % 4]
    if rng.random() < 0.4:  # gantry tilt / oblique acquisition
        rotation = (float(rng.uniform(-12, 12)), float(rng.uniform(-4, 4)), float(rng.uniform(-4, 4)))
    else:
        rotation = (0.0, 0.0, 0.0)
    # world position of the volume centre: scanner-like coordinates, table at a random height and z position
    centre_world = np.array([rng.uniform(-8, 8), rng.uniform(-30, -10), rng.uniform(-600, -300)])
    linear = make_affine(spacing, rotation, (0, 0, 0), flip)[:3, :3]
    origin = centre_world - linear @ ((np.array(shape) - 1) / 2.0)
    return shape, make_affine(spacing, rotation, origin, flip)


def generate_demo_ct_case(
    index: int, seed: int = 0, size_scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generate one synthetic CT case.

    Args:
        index: case number; with ``seed`` it fully determines the case.
        seed: data set seed. Default 0.
        size_scale: multiplies the voxel counts (and divides the spacing), keeping the anatomy the same size in
            mm; e.g. 0.5 for quick tests. Default 1.0 (about 112-136 x 112-136 x 48-64 voxels).

    Returns:
        ``(image, label, affine)``: int16 HU volume (X, Y, Z), uint8 label volume (X, Y, Z) with values from
        :data:`DEMO_CT_LABELS`, float64 (4, 4) voxel-to-world RAS+ affine.
    """
    if size_scale <= 0:
        raise ValueError(f"`size_scale` must be positive, got {size_scale}.")
    rng = np.random.default_rng([int(seed), int(index), 2024])
    shape, affine = _case_geometry(rng, index, size_scale)

    # world coordinates (mm) of every voxel, relative to the body centre
    ijk = np.indices(shape, dtype=np.float32).reshape(3, -1)
    world = (affine[:3, :3].astype(np.float32) @ ijk).reshape(3, *shape)
    # body centre in voxel-relative world coordinates (the origin translation cancels out)
    body_centre = affine[:3, :3] @ ((np.array(shape) - 1) / 2.0)
    body_centre = body_centre + np.array([rng.uniform(-4, 4), rng.uniform(-4, 4), rng.uniform(-6, 6)])
    p = world - body_centre.astype(np.float32).reshape(3, 1, 1, 1)
    del ijk, world

    # smooth anatomical variability: a low-frequency displacement field (mm) in voxel space
    amp = float(rng.uniform(2.5, 4.5))
    max_disp = 0.0
    for axis in range(3):
        disp = amp * _smooth_noise(rng, shape, (5, 5, 4))
        p[axis] += disp
        max_disp = max(max_disp, float(np.abs(disp).max()))
    lobulation = 0.12 * _smooth_noise(rng, shape, (7, 7, 5))
    texture = _smooth_noise(rng, shape, (12, 12, 8))
    inv_linear = np.linalg.inv(affine[:3, :3])
    corners = np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1], indexing="ij")).reshape(3, -1)

    def box(centre, half_extent_mm):
        """Voxel slices that hold every point within ``half_extent_mm`` (+ the displacement) of ``centre``."""
        pts = inv_linear @ (np.asarray(centre, dtype=np.float64)[:, None] + (half_extent_mm + max_disp + 1.0) * corners
                            + body_centre[:, None])
        lo = np.clip(np.floor(pts.min(axis=1)).astype(int), 0, shape)
        hi = np.clip(np.ceil(pts.max(axis=1)).astype(int) + 1, 0, shape)
        return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))

    def jitter(v, frac):
        return np.asarray(v, dtype=np.float32) * rng.uniform(1 - frac, 1 + frac, size=3).astype(np.float32)

    def shift(v, mm):
        return np.asarray(v, dtype=np.float32) + rng.uniform(-mm, mm, size=3).astype(np.float32)

    def rot(max_deg):
        return rotation_matrix(rng.uniform(-max_deg, max_deg, size=3))

    x, y, z = p
    # body: elliptic cylinder (patient size varies), subcutaneous fat, muscle wall, abdominal cavity
    ax, ay = float(rng.uniform(44, 52)), float(rng.uniform(32, 38))
    q_body = (x / ax) ** 2 + (y / ay) ** 2 + 0.03 * lobulation
    fat_mm = float(rng.uniform(3.0, 6.0))
    q_wall = (x / (ax - fat_mm)) ** 2 + (y / (ay - fat_mm)) ** 2
    q_cavity = (x / (ax - fat_mm - 3.0)) ** 2 + (y / (ay - fat_mm - 3.0)) ** 2
    body, wall, cavity = q_body <= 1.0, q_wall <= 1.0, q_cavity <= 1.0

    phase = float(rng.uniform(-10, 10))  # contrast timing shifts every enhancing organ together
    hu = np.full(shape, -1000.0, dtype=np.float32)
    hu[body] = -105.0  # subcutaneous fat
    hu[wall] = 45.0  # muscle wall
    visceral_fat = _smooth_noise(rng, shape, (9, 9, 6)) > 0.3
    hu[cavity] = np.where(visceral_fat[cavity], -90.0, 25.0)  # mesenteric fat and bowel wall
    label = np.zeros(shape, dtype=np.uint8)

    def paint(mask, value, lab=None, region=(...,)):
        """Set ``hu`` (and ``label``) where ``mask`` holds; ``mask``/``value`` cover the sub-block ``region``."""
        hu_r, label_r = hu[region], label[region]  # views
        hu_r[mask] = value if np.isscalar(value) else value[mask]
        if lab is not None:
            label_r[mask] = lab

    # spine: vertebral bodies (cortex/cancellous) with discs, posterior elements, posterior midline
    spine_c = np.array([rng.uniform(-1.5, 1.5), -ay + fat_mm + 12.0, 0.0], dtype=np.float32)
    r_vb = float(rng.uniform(6.5, 8.0))
    q_vb = ((x - spine_c[0]) / r_vb) ** 2 + ((y - spine_c[1]) / (0.85 * r_vb)) ** 2
    period = float(rng.uniform(11.0, 13.0))
    disc = np.abs(((z - rng.uniform(0, period)) % period) - period / 2) > period / 2 - 1.5
    vb = q_vb <= 1.0
    paint(vb, np.where(disc, 90.0, np.where(q_vb > 0.6, 700.0, 260.0)).astype(np.float32))
    q_spinous = ((x - spine_c[0]) / 2.2) ** 2 + ((y - spine_c[1] + 1.6 * r_vb) / (0.9 * r_vb)) ** 2
    paint((q_spinous <= 1.0) & cavity & ~disc, 650.0)

    # aorta (small tube, anterior-left of the spine, gently curving) and IVC (unlabelled, right of it)
    ao_x = -0.45 * r_vb - 2.0 + 1.5 * np.sin(z / 35.0 + rng.uniform(0, 6.3))
    ao_y = spine_c[1] + 1.15 * r_vb + 3.5
    r_ao = float(rng.uniform(4.0, 5.0))
    aorta = ((x - ao_x) ** 2 + (y - ao_y) ** 2) <= r_ao**2
    ivc = (((x - (r_vb + 5.0)) / 5.5) ** 2 + ((y - ao_y - 1.0) / 3.8) ** 2) <= 1.0

    # organs: ellipsoids with per-case jitter, rotations and lobulated borders; in RAS+ the x axis points to
    # the patient's right, so right-sided organs (liver) have x > 0
    organs = [
        # label, centre (mm), radii (mm), max rotation (deg), HU
        (1, shift([16.0, 4.0, 18.0], 3.0), jitter([25.0, 24.0, 32.0], 0.1), 12.0, 62.0),  # liver (right, large)
        (2, shift([-24.0, -8.0, 22.0], 3.0), jitter([8.5, 12.0, 16.0], 0.12), 20.0, 50.0),  # spleen (left)
    ]
    kidney_r = jitter([6.5, 8.0, 14.0], 0.1)
    for side in (1.0, -1.0):
        organs.append((3, shift([side * 19.0, -14.0, -12.0 + side * 4.0], 2.5), kidney_r, 15.0, 150.0))
    organs.append((5, shift([-13.0, -12.0, 10.0], 1.5), jitter([3.2, 4.5, 6.0], 0.12), 20.0, 95.0))  # gland

    for lab, centre, radii, max_deg, value in organs:
        region = box(centre, 1.25 * float(radii.max()))
        q = _ellipsoid_q(p[(slice(None), *region)], centre, radii, rot(max_deg)) + lobulation[region]
        mask = (q <= 1.0) & cavity[region]
        if lab == 3:  # enhancing cortex around a lower medulla / pelvis
            organ_hu = np.where(q <= 0.45, 40.0, value + phase).astype(np.float32)
        else:
            organ_hu = np.full(q.shape, value + 0.5 * phase, dtype=np.float32)
        organ_hu += 6.0 * texture[region]
        paint(mask, organ_hu, lab, region)
        if lab == 1 and mask.any():  # a few darker hepatic vessels, still liver
            vessels = (np.abs(_smooth_noise(rng, q.shape, (6, 6, 5))) < 0.05) & mask
            paint(vessels, 30.0 + phase, None, region)

    paint(ivc & cavity, 120.0 + phase)
    paint(aorta & cavity, float(rng.uniform(190, 230)) + phase, 4)

    # bowel gas: a few small unlabelled pockets, anterior and low
    for _ in range(int(rng.integers(2, 5))):
        c = np.array([rng.uniform(-25, 20), rng.uniform(5, 20), rng.uniform(-45, -5)], dtype=np.float32)
        r = jitter([5.0, 4.0, 6.0], 0.3)
        region = box(c, float(r.max()))
        gas = (_ellipsoid_q(p[(slice(None), *region)], c, r) <= 1.0) & cavity[region] & (label[region] == 0)
        paint(gas, -950.0, None, region)

    # ribs in the muscle-wall ring of the upper abdomen, lateral and anterior; they run obliquely (their height
    # changes with the angle), so an axial slice cuts each one into short arcs
    ring = np.nonzero((q_wall <= 1.0) & (q_cavity > 0.92) & (z > -5.0) & (y > -0.4 * ay) & (label == 0))
    xr, yr, zr = x[ring], y[ring], z[ring]
    angle = np.abs(np.arctan2(yr, xr))
    rib_band = np.abs(((zr + 9.0 * angle - rng.uniform(0, 10.0)) % 10.0) - 5.0) < 1.6
    ribs = rib_band & (np.abs(angle - np.pi / 2) < 1.25)
    hu[tuple(idx[ribs] for idx in ring)] = 700.0

    # acquisition: partial-volume blur (anisotropic, in voxels) and noise
    sigma_mm = 0.6
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    hu = ndimage.gaussian_filter(hu, sigma=np.maximum(sigma_mm / spacing, 0.3), mode="nearest")
    hu += rng.normal(0.0, rng.uniform(10.0, 20.0), size=shape).astype(np.float32)
    image = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
    return image, label, affine


# ----------------------------------------------------------------------------------------------------------------
# the data set on disk


def _rel_paths(case: int, split: str) -> tuple[str, str]:
    name = f"ct_{case:03d}.nii.gz"
    if split == "test":
        return f"imagesTs/{name}", f"labelsTs/{name}"
    return f"imagesTr/{name}", f"labelsTr/{name}"


def ensure_demo_ct_dataset(
    root_dir: str,
    num_train: int = 8,
    num_val: int = 2,
    num_test: int = 2,
    seed: int = 0,
    overwrite: bool = False,
    size_scale: float = 1.0,
) -> str:
    """Write the synthetic CT data set under ``root_dir`` unless a complete one with the same parameters is there.

    Layout (MSD / BTCV style)::

        root_dir/
            dataset_0.json           "training", "validation" (image + label), "test" (image only) and
                                     "test_labeled" (image + label) lists, paths relative to root_dir
            imagesTr/ct_000.nii.gz   training then validation cases, int16 HU
            labelsTr/ct_000.nii.gz   uint8, values of DEMO_CT_LABELS
            imagesTs/ct_010.nii.gz   test cases
            labelsTs/ct_010.nii.gz   their labels, for evaluation
            .complete                written last: generator version, parameters and file list

    A missing or different ``.complete`` (interrupted run, other parameters, other generator version) makes the
    whole set be written again; otherwise the call touches nothing. Concurrent callers (e.g. ``torchrun`` ranks)
    are serialised by an ``fcntl`` lock on ``root_dir/.lock``: one writes, the others wait and then find the
    set complete. Every file is written atomically (temporary file + rename). With ``overwrite=True`` the set
    is always rewritten: call it from one process only.

    Args:
        root_dir: the data set folder (created if needed). It must be empty or hold a demo set written here.
        num_train: training cases. Default 8.
        num_val: validation cases. Default 2.
        num_test: test cases. Default 2.
        seed: data set seed. Default 0.
        overwrite: rewrite even a complete set. Default False.
        size_scale: voxel-count factor of :func:`generate_demo_ct_case` (e.g. 0.5 for quick tests). Default 1.0.

    Returns:
        the path of ``root_dir/dataset_0.json``, for MONAI's ``load_decathlon_datalist`` (or
        :func:`mamba_monai.data.load_datalist`), which resolve the relative paths against ``root_dir``.
    """
    demo_splits(num_train, num_val, num_test)  # checks the counts
    if not size_scale > 0:
        raise ValueError(f"`size_scale` must be positive, got {size_scale!r}.")
    root_dir = os.path.abspath(os.fspath(root_dir))
    params = {
        "generator": "mamba_monai.data.demo_ct",
        "version": DEMO_CT_VERSION,
        "num_train": int(num_train),
        "num_val": int(num_val),
        "num_test": int(num_test),
        "seed": int(seed),
        "size_scale": float(size_scale),
    }
    return ensure_demo_dataset(
        root_dir,
        params,
        lambda root: _write_dataset(root, params),
        subdirs=_SUBDIRS,
        case_prefixes=("ct_",),
        overwrite=overwrite,
    )


def _write_dataset(root_dir: str, params: dict) -> list[str]:
    """Write every case and the datalist; return the written paths relative to ``root_dir``."""
    splits = demo_splits(params["num_train"], params["num_val"], params["num_test"])
    lists: dict[str, list[dict]] = {}
    files: list[str] = []
    for split, cases in splits.items():
        lists[split] = []
        for case in cases:
            image, label, affine = generate_demo_ct_case(case, params["seed"], params["size_scale"])
            rel_img, rel_lab = _rel_paths(case, split)
            write_nifti(image, affine, os.path.join(root_dir, rel_img), dtype=np.int16)
            write_nifti(label, affine, os.path.join(root_dir, rel_lab), dtype=np.uint8)
            lists[split].append({"image": rel_img, "label": rel_lab})
            files += [rel_img, rel_lab]
    write_demo_datalist(
        root_dir,
        lists,
        name="mamba_monai demo CT",
        description="Synthetic abdominal CT phantoms (deterministic), written by "
        "mamba_monai.data.ensure_demo_ct_dataset.",
        reference="synthetic",
        licence="Apache-2.0",
        release=f"demo_ct v{DEMO_CT_VERSION}",
        tensorImageSize="3D",
        modality={"0": "CT"},
        labels={str(k): v for k, v in DEMO_CT_LABELS.items()},
    )
    return files + [DATALIST_NAME]
