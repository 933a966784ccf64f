"""A deterministic synthetic multi-contrast brain MRI data set (BraTS 2018-2021 layout) for the synthesis bundles.

Each case is a skull-stripped head phantom defined in world coordinates (RAS+, mm) and sampled on a voxel grid
with a realistic geometry: anisotropic voxels (about 1.5-1.7 mm in-plane, 2.2-2.5 mm slices), LPS- or
RAS-ordered axes, scanner-like origins, sizes that vary per case. The anatomy varies smoothly per case: brain
envelope with a cerebellum and brainstem, a folded cortical ribbon with sulci and an interhemispheric fissure,
white matter, deep grey nuclei, lateral and third ventricles (of a per-case size), and a glioma-like lesion in
one hemisphere (necrotic core, contrast-enhancing rim, vasogenic oedema spreading through the white matter) that
pushes the surrounding tissue away (mass effect).

Contrasts are computed voxel by voxel from tissue T1, T2 and proton density (PD) maps at 1.5 T or 3 T (per case),
with smooth texture, by the textbook signal equations (TR, TE, TI in ms):

- ``t1``: spin echo, TR 500-600, TE 10: ``S = PD (1 - exp(-TR/T1)) exp(-TE/T2)``; WM > GM > CSF.
- ``t1ce``: the same sequence after gadolinium: ``1/T1 -> 1/T1 + r1 C``, ``1/T2 -> 1/T2 + r2 C`` with the
  contrast agent's relaxivities (gadobutrol: r1 5.0-5.2 /mM/s) and a concentration ``C`` of 0.35 mM in the
  enhancing rim (traces elsewhere): the rim turns brighter than white matter.
- ``t2``: turbo spin echo, TR 4000-5000, TE 90-100: CSF > oedema > GM > WM.
- ``flair``: inversion recovery, TR 9000, TE 110-120, ``TI = T1_csf ln(2 / (1 + exp(-TR/T1_csf)))`` (nulls
  CSF, within a few per cent): ``S = PD |1 - 2 exp(-TI/T1) + exp(-TR/T1)| exp(-TE/T2)``; oedema bright,
  CSF dark.

Then, per contrast: partial-volume blur, a receiver gain, a smooth multiplicative bias field, Rician noise
(magnitude of a complex signal with Gaussian noise), the brain mask (BraTS images are skull-stripped: background
exactly 0), and int16 rounding. Segmentations use the BraTS 2018-2021 labels :data:`DEMO_MRI_LABELS`.

Case ``i`` depends only on ``(seed, i, size_scale)``, so the same case is identical whatever the split sizes.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy import ndimage

from mamba_monai.data.demo import DATALIST_NAME, demo_splits, ensure_demo_dataset, write_demo_datalist
from mamba_monai.data.nifti import make_affine, rotation_matrix, write_nifti

__all__ = [
    "DEMO_MRI_CONTRASTS",
    "DEMO_MRI_LABELS",
    "DEMO_MRI_SPLITS",
    "DEMO_MRI_TISSUES",
    "DEMO_MRI_VERSION",
    "DemoMRICase",
    "generate_demo_mri_case",
    "ensure_demo_mri_dataset",
]

logger = logging.getLogger(__name__)

DEMO_MRI_VERSION = 1
"""Bumped whenever the generator's output changes; a data set written by another version is regenerated."""

DEMO_MRI_CONTRASTS: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")
"""The contrasts of every demo case, named as in BraTS 2018-2021 file names (``<case>_<contrast>.nii.gz``)."""

DEMO_MRI_LABELS: dict[int, str] = {0: "background", 1: "necrotic core", 2: "edema", 4: "enhancing tumor"}
"""Label values of the ``_seg.nii.gz`` files, as in BraTS 2018-2021 (NCR/NET = 1, ED = 2, ET = 4)."""

DEMO_MRI_TISSUES: dict[int, str] = {
    0: "background",
    1: "csf",
    2: "grey matter",
    3: "white matter",
    4: "deep grey matter",
    5: "edema",
    6: "necrotic core",
    7: "enhancing rim",
}
"""Tissue classes of :func:`generate_demo_mri_case`'s ``tissue`` map (not written to disk)."""

DEMO_MRI_SPLITS: dict[str, str] = {"training": "train", "validation": "val", "test": "test"}
"""Datalist key -> sub-folder of the demo set holding that split's case folders."""

# tissue properties: (T1 ms, T2 ms, PD, gadolinium concentration mM), indexed by the DEMO_MRI_TISSUES values.
# Literature values (e.g. Wansapura et al. 1999, Stanisz et al. 2005 at 3 T; Bottomley et al. 1984 at 1.5 T);
# lesion values are typical of high-grade glioma (oedema and necrosis have long T1/T2, the viable rim enhances).
_TISSUE_PROPERTIES = {
    3.0: np.array(
        [
            [1.0, 1.0, 0.0, 0.0],  # background (no signal)
            [4200.0, 1800.0, 1.00, 0.0],  # CSF
            [1350.0, 95.0, 0.80, 0.005],  # cortical GM (blood volume: traces of agent)
            [850.0, 75.0, 0.70, 0.002],  # WM
            [1200.0, 85.0, 0.78, 0.005],  # deep GM
            [1750.0, 160.0, 0.86, 0.02],  # vasogenic oedema
            [2800.0, 600.0, 0.93, 0.0],  # necrotic core
            [1500.0, 110.0, 0.84, 0.35],  # enhancing rim (broken blood-brain barrier)
        ]
    ),
    1.5: np.array(
        [
            [1.0, 1.0, 0.0, 0.0],
            [4000.0, 2000.0, 1.00, 0.0],
            [1100.0, 105.0, 0.80, 0.005],
            [650.0, 85.0, 0.70, 0.002],
            [950.0, 90.0, 0.78, 0.005],
            [1400.0, 180.0, 0.86, 0.02],
            [2500.0, 650.0, 0.93, 0.0],
            [1200.0, 120.0, 0.84, 0.35],
        ]
    ),
}
# gadolinium-based agent relaxivities r1, r2 (/mM/s): gadobutrol in plasma (Rohrer et al. 2005)
_RELAXIVITY = {3.0: (5.0, 7.1), 1.5: (5.2, 6.1)}
_SEG_OF_TISSUE = np.array([0, 0, 0, 0, 0, 2, 1, 4], dtype=np.uint8)


class DemoMRICase(NamedTuple):
    """One generated case (see :func:`generate_demo_mri_case`)."""

    images: dict[str, np.ndarray]
    """contrast name -> int16 volume (X, Y, Z), skull-stripped (0 outside the brain)."""
    seg: np.ndarray
    """uint8 (X, Y, Z) tumour labels, values of :data:`DEMO_MRI_LABELS`."""
    tissue: np.ndarray
    """uint8 (X, Y, Z) tissue classes, values of :data:`DEMO_MRI_TISSUES` (before partial-volume blur)."""
    affine: np.ndarray
    """float64 (4, 4) voxel-to-world RAS+ affine shared by all contrasts (co-registered, as in BraTS)."""


# ----------------------------------------------------------------------------------------------------------------
# one case


def _case_geometry(rng: np.random.Generator, index: int, size_scale: float) -> tuple[tuple[int, int, int], np.ndarray]:
    """Per-case voxel grid (shape) and affine: anisotropic voxels, LPS (BraTS-like) or RAS voxel order."""
    n = (int(rng.integers(100, 117)), int(rng.integers(112, 129)), int(rng.integers(62, 79)))
    shape = tuple(max(8, round(v * size_scale)) for v in n)
    sxy = round(float(rng.uniform(1.55, 1.7)), 4)
    sz = round(float(rng.uniform(2.2, 2.5)), 4)
    spacing = np.array([sxy, sxy, sz]) * np.array(n) / np.array(shape)  # same field of view at any size_scale
    flip = [(True, True, False), (False, False, False), (True, True, False)][index % 3]  # LPS, RAS, LPS
    centre_world = np.array([rng.uniform(-3, 3), rng.uniform(-25, -10), rng.uniform(5, 20)])
    linear = make_affine(spacing, (0.0, 0.0, 0.0), (0, 0, 0), flip)[:3, :3]
    origin = centre_world - linear @ ((np.array(shape) - 1) / 2.0)
    return shape, make_affine(spacing, (0.0, 0.0, 0.0), origin, flip)  # type: ignore[return-value]


class _Field:
    """Smooth random fields of unit standard deviation evaluated at given voxels only: random values on a coarse
    grid of control points, interpolated separably with Gaussian weights. Evaluating at the brain's voxels
    (a quarter of the grid) instead of the whole grid is what keeps a case well under a second."""

    def __init__(self, rng: np.random.Generator, shape: Sequence[int], spacing: np.ndarray, flat: np.ndarray) -> None:
        self.rng, self.shape, self.flat = rng, tuple(shape), flat
        self.fov = np.asarray(spacing) * np.asarray(shape)

    def __call__(self, feature_mm: float) -> np.ndarray:
        """A field with bumps about ``feature_mm`` apart, at the voxels of flat indices ``flat``, shape (P,)."""
        coarse = [int(np.clip(round(f / feature_mm) + 1, 2, 40)) for f in self.fov]
        grid = self.rng.standard_normal(coarse, dtype=np.float32)
        weights = []
        for n, c in zip(self.shape, coarse):
            knots = np.linspace(-0.5, n - 0.5, c, dtype=np.float32)
            width = max((n / max(c - 1, 1)) * 0.6, 1e-3)
            w = np.exp(-0.5 * ((np.arange(n, dtype=np.float32)[:, None] - knots[None, :]) / width) ** 2)
            weights.append(w / w.sum(axis=1, keepdims=True))
        # separable products with numpy's single-threaded einsum loops: on a busy machine they beat a threaded
        # BLAS product several times over, and these sizes are small
        inner = np.einsum("jb,abk->ajk", weights[1], np.einsum("kc,abc->abk", weights[2], grid))
        full = np.einsum("ia,ajk->ijk", weights[0], inner)
        out = full.reshape(-1).take(self.flat)
        return out / max(float(out.std()), 1e-6)


def _q(x: np.ndarray, y: np.ndarray, z: np.ndarray, c: Sequence[float], r: Sequence[float]) -> np.ndarray:
    """Ellipsoid quadratic form: <= 1 inside the ellipsoid of centre ``c`` and radii ``r`` (mm)."""
    return ((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2


def _depth(x: np.ndarray, y: np.ndarray, z: np.ndarray, c: Sequence[float], r: Sequence[float], wobble=0.0):
    """Distance (mm, along the ray from the centre) inside the surface of an ellipsoid: > 0 inside, < 0 outside."""
    dist = np.sqrt((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2)
    q = np.sqrt(_q(x, y, z, c, r)) * (1.0 + wobble)
    return dist * (1.0 / np.maximum(q, 1e-3) - 1.0)


def _anatomy(rng: np.random.Generator, p: np.ndarray, noise: _Field) -> tuple[np.ndarray, np.ndarray]:
    """Tissue classes (uint8, DEMO_MRI_TISSUES) and whether each point is in the brain mask, at the head-frame
    world points ``p`` (3, P) in mm; ``noise`` gives smooth fields at those points."""
    # tumour first: its mass effect displaces everything else
    side = 1.0 if rng.random() < 0.5 else -1.0
    t_centre = np.array([side * rng.uniform(22, 32), rng.uniform(-25, 25), rng.uniform(0, 20)], dtype=np.float32)
    r_tumour = float(rng.uniform(9, 15))
    rim = float(rng.uniform(2.5, 4.5))
    r_edema = r_tumour + float(rng.uniform(8, 16))
    d = p - t_centre[:, None]
    dist = np.sqrt((d**2).sum(axis=0))
    push = float(rng.uniform(2.0, 5.0)) * np.exp(-0.5 * (dist / (1.3 * r_tumour)) ** 2) / (1.3 * r_tumour)
    q = p - d * push  # tissue now at p came from q (radial push away from the tumour centre)
    for axis in range(3):  # anatomical variability: low-frequency displacement (mm)
        q[axis] += float(rng.uniform(1.5, 3.0)) * noise(45.0)
    x, y, z = q

    # envelope: cerebrum (flatter below), cerebellum, brainstem (cut at the foramen magnum); a thin layer of CSF
    # outside the pia is kept in the mask, as in skull-stripped BraTS images
    a, b, c = _brain_radii(rng)
    lob = 0.025 * noise(20.0)
    depth = _depth(x, y, np.where(z < 0, 1.25 * z, z), (0, 0, 0), (a, b, c), lob)
    cb_c, cb_r = (0.0, -0.55 * b, -0.62 * c), (0.72 * a, 0.33 * b, 0.36 * c)
    depth_cb = _depth(x, y, z, cb_c, cb_r, lob)
    stem_r = float(rng.uniform(10, 12))
    in_stem = (z < -0.2 * c) & (z > -1.15 * c)
    depth_stem = np.where(in_stem, stem_r - np.sqrt(x**2 + ((y + 0.18 * b) / 1.2) ** 2), -100.0)
    csf_layer = float(rng.uniform(1.5, 3.0))
    mask = (depth > -csf_layer) | (depth_cb > -csf_layer) | (depth_stem > -csf_layer)

    tissue = np.zeros(p.shape[1], dtype=np.uint8)
    tissue[mask] = 1
    cerebrum = depth > 0
    tissue[cerebrum] = 3
    # cortex: a ribbon about 3 mm thick, folded: sulci are sheets where a smooth field crosses zero, CSF-filled,
    # lined with grey matter, reaching 10-25 mm deep (the grey matter then holds about 40 % of the brain)
    fold = noise(11.0)
    sulcal_depth = 17.0 + 4.0 * noise(30.0)
    ribbon = 3.0 + 0.5 * noise(25.0)
    tissue[cerebrum & ((depth < ribbon) | ((np.abs(fold) < 0.75) & (depth < sulcal_depth + ribbon)))] = 2
    tissue[cerebrum & (np.abs(fold) < 0.09) & (depth < sulcal_depth)] = 1
    # interhemispheric fissure above the corpus callosum, lined with the medial cortex
    top = z > 0.28 * c + (sulcal_depth - 17.0)
    tissue[cerebrum & top & (np.abs(x) < 3.5 + ribbon)] = 2
    tissue[cerebrum & top & (np.abs(x) < 1.2)] = 1
    # cerebellum: grey cortex around a white core; brainstem: white matter
    cb = (depth_cb > 0) & ~cerebrum
    tissue[cb] = 2
    tissue[cb & (depth_cb > 0.45 * cb_r[2]) & (np.abs(fold) > 0.4)] = 3
    tissue[(depth_stem > 0) & ~cerebrum & ~cb] = 3
    # deep grey nuclei: caudate, thalamus, lentiform nucleus (both sides)
    for s in (1.0, -1.0):
        for centre, radii in (
            ((s * 11.0, 9.0, 11.0), (4.5, 12.0, 7.0)),
            ((s * 9.0, -13.0, 3.0), (8.0, 12.0, 8.0)),
            ((s * 21.0, 3.0, 2.0), (5.5, 14.0, 9.0)),
        ):
            tissue[_q(x, y, z, centre, radii) <= 1.0] = 4
    # ventricles: curved lateral ventricles (size varies: atrophy) and a thin third ventricle
    v = float(rng.uniform(0.8, 1.5))
    z_curve = z + 0.012 * y**2
    for s in (1.0, -1.0):
        tissue[_q(x, y, z_curve, (s * (3.0 + 3.0 * v), -2.0, 15.0), (3.5 * v, 24.0, 5.5 * v)) <= 1.0] = 1
    tissue[(np.abs(x) < 1.2 * v) & (np.abs(y + 3.0) < 11.0) & (z > -12.0) & (z < 6.0)] = 1

    # lesion: lobulated necrotic core inside an enhancing rim, oedema spreading through the white matter
    dist_lob = dist / (1.0 + 0.12 * noise(12.0))
    dist_edema = dist / (1.0 + 0.25 * noise(14.0))
    white = (tissue == 3) | (tissue == 4)
    tissue[mask & (dist_edema < r_edema) & (white | (dist_edema < r_tumour + 3.0)) & (tissue != 1)] = 5
    tissue[mask & (dist_lob < r_tumour)] = 7
    tissue[mask & (dist_lob < r_tumour - rim)] = 6
    return tissue, mask


def _brain_radii(rng: np.random.Generator) -> tuple[float, float, float]:
    """Cerebrum semi-axes (mm): left-right, anterior-posterior, superior-inferior (an adult brain)."""
    return float(rng.uniform(64, 69)), float(rng.uniform(76, 83)), float(rng.uniform(54, 59))


def _signals(
    rng: np.random.Generator, tissue: np.ndarray, field: float, textures: Sequence[np.ndarray]
) -> dict[str, np.ndarray]:
    """Noise-free magnitude signals (arbitrary units, ~0-1) of the four contrasts from per-voxel T1/T2/PD maps."""
    props = _TISSUE_PROPERTIES[field]
    t1 = props[tissue, 0].astype(np.float32) * (1.0 + 0.04 * textures[0])
    t2 = props[tissue, 1].astype(np.float32) * (1.0 + 0.04 * textures[1])
    pd = props[tissue, 2].astype(np.float32) * (1.0 + 0.02 * textures[2])
    conc = props[tissue, 3].astype(np.float32)
    r1, r2 = _RELAXIVITY[field]
    t1_csf = props[1, 0]

    # sequence parameters (ms), per case within the usual clinical ranges
    tr_t1, te_t1 = float(rng.uniform(500, 600)), 10.0
    tr_t2, te_t2 = float(rng.uniform(4000, 5000)), float(rng.uniform(90, 100))
    tr_fl, te_fl = 9000.0, float(rng.uniform(110, 120))
    ti_fl = t1_csf * np.log(2.0 / (1.0 + np.exp(-tr_fl / t1_csf))) * float(rng.uniform(0.98, 1.02))

    def spin_echo(tr, te, t1_, t2_):
        return pd * (1.0 - np.exp(-tr / t1_)) * np.exp(-te / t2_)

    t1_gd = 1.0 / (1.0 / t1 + r1 * 1e-3 * conc)  # relaxivities per mM per s -> per ms
    t2_gd = 1.0 / (1.0 / t2 + r2 * 1e-3 * conc)
    flair = pd * np.abs(1.0 - 2.0 * np.exp(-ti_fl / t1) + np.exp(-tr_fl / t1)) * np.exp(-te_fl / t2)
    return {
        "t1": spin_echo(tr_t1, te_t1, t1, t2),
        "t1ce": spin_echo(tr_t1, te_t1, t1_gd, t2_gd),
        "t2": spin_echo(tr_t2, te_t2, t1, t2),
        "flair": flair,
    }


def generate_demo_mri_case(index: int, seed: int = 0, size_scale: float = 1.0) -> DemoMRICase:
    """Generate one synthetic skull-stripped multi-contrast brain MRI case (see the module docstring).

    Args:
        index: case number; with ``seed`` it fully determines the case.
        seed: data set seed. Default 0.
        size_scale: multiplies the voxel counts (and divides the spacing), keeping the anatomy the same size in
            mm; e.g. 0.4 for quick tests. Default 1.0 (about 100-116 x 112-128 x 62-78 voxels).

    Returns:
        a :class:`DemoMRICase` ``(images, seg, tissue, affine)``: ``images`` maps each of
        :data:`DEMO_MRI_CONTRASTS` to an int16 volume (X, Y, Z) in scanner units (0 outside the brain).
    """
    if not size_scale > 0:
        raise ValueError(f"`size_scale` must be positive, got {size_scale!r}.")
    rng = np.random.default_rng([int(seed), int(index), 2018])
    shape, affine = _case_geometry(rng, index, size_scale)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)

    # world coordinates (mm) in a slightly rotated head frame (head pose), centred on the head
    centre = affine[:3, :3] @ ((np.array(shape) - 1) / 2.0) + np.array([rng.uniform(-3, 3), rng.uniform(-3, 3), 0])
    pose = rotation_matrix((rng.uniform(-6, 6), rng.uniform(-3, 3), rng.uniform(-5, 5)))
    to_head = (pose.T @ affine[:3, :3]).astype(np.float32)
    offset = (pose.T @ centre).astype(np.float32)
    # the voxels that may lie in the brain: inside an ellipsoid that holds the largest brain of _brain_radii with
    # a margin of 19 mm for the deformations of _anatomy (and the brainstem, below)
    ijk = np.indices(shape, dtype=np.float32).reshape(3, -1)
    p_all = to_head @ ijk - offset[:, None]
    z_scale = np.where(p_all[2] < 0, 1.0 / 1.3, 1.0).astype(np.float32)
    candidate = ((p_all[0] / 88.0) ** 2 + (p_all[1] / 102.0) ** 2 + (p_all[2] * z_scale / 78.0) ** 2) <= 1.0
    flat = np.flatnonzero(candidate)
    p = np.ascontiguousarray(p_all[:, candidate])
    del ijk, p_all, z_scale
    noise = _Field(rng, shape, spacing, flat)

    tissue_p, mask_p = _anatomy(rng, p, noise)
    field = 3.0 if rng.random() < 0.6 else 1.5
    textures = [noise(8.0)[mask_p] for _ in range(3)]
    signals = _signals(rng, tissue_p[mask_p], field, textures)  # brain voxels only: the rest is background

    tissue = np.zeros(shape, dtype=np.uint8)
    tissue.reshape(-1)[flat] = tissue_p
    brain = flat[mask_p]
    n_brain = int(mask_p.sum())
    wm = tissue_p[mask_p] == 3
    sigma = np.maximum(0.7 / spacing, 0.3)  # partial-volume blur, 0.7 mm, in voxels
    images = {}
    for name in DEMO_MRI_CONTRASTS:
        s = np.zeros(shape, dtype=np.float32)
        s.reshape(-1)[brain] = signals[name]
        s = ndimage.gaussian_filter(s, sigma=sigma, mode="nearest", truncate=3.0).reshape(-1)[brain]
        gain = float(rng.uniform(2500.0, 6000.0))
        bias = np.exp(float(rng.uniform(0.08, 0.18)) * noise(70.0)[mask_p])  # receive-coil shading
        s *= gain * bias
        noise_sd = float(rng.uniform(0.015, 0.03)) * (float(np.median(s[wm])) if wm.any() else gain * 0.3)
        real = s + noise_sd * rng.standard_normal(n_brain, dtype=np.float32)
        imag = noise_sd * rng.standard_normal(n_brain, dtype=np.float32)
        image = np.zeros(shape, dtype=np.int16)  # skull-stripped: 0 outside the brain mask
        image.reshape(-1)[brain] = np.clip(np.rint(np.sqrt(real * real + imag * imag)), 0, 32767)  # Rician magnitude
        images[name] = image
    return DemoMRICase(images, _SEG_OF_TISSUE[tissue], tissue, affine)


# ----------------------------------------------------------------------------------------------------------------
# the data set on disk


def _case_name(case: int) -> str:
    return f"mri_{case:03d}"


def ensure_demo_mri_dataset(
    root_dir: str | os.PathLike,
    num_train: int = 8,
    num_val: int = 2,
    num_test: int = 3,
    seed: int = 0,
    overwrite: bool = False,
    size_scale: float = 1.0,
    drop_in_test: Sequence[str] = ("t2", "flair"),
) -> str:
    """Write the synthetic brain MRI data set under ``root_dir`` unless a complete one with the same parameters is
    there.

    Layout (BraTS 2018-2021 case folders, one folder per split)::

        root_dir/
            train/mri_000/mri_000_t1.nii.gz    training cases: _t1, _t1ce, _t2, _flair (int16) and _seg (uint8,
                          mri_000_t1ce.nii.gz  DEMO_MRI_LABELS)
                          ...
            val/mri_008/...                    validation cases
            test/mri_010/...                   test cases; the i-th lacks the contrast ``drop_in_test[i]``
            dataset_0.json                     optional datalist: "training", "validation", "test" lists of
                                               {"case", "t1", "t1ce", "t2", "flair", "seg"} (paths relative
                                               to root_dir; a missing contrast is absent)
            .complete                          written last: generator version, parameters and file list

    Point :func:`mamba_monai.data.find_mri_cases` at ``root_dir/train`` (etc.) to read a split. A missing or
    different ``.complete`` makes the whole set be written again; otherwise the call touches nothing. Concurrent
    callers are serialised (see :func:`mamba_monai.data.demo.ensure_demo_dataset`); case folders of an earlier,
    different demo set that are not part of this one are removed.

    Args:
        root_dir: the data set folder (created if needed). It must be empty or hold a demo set written here.
        num_train: training cases. Default 8.
        num_val: validation cases. Default 2.
        num_test: test cases. Default 3.
        seed: data set seed. Default 0.
        overwrite: rewrite even a complete set. Default False.
        size_scale: voxel-count factor of :func:`generate_demo_mri_case` (e.g. 0.4 for quick tests). Default 1.0.
        drop_in_test: contrasts left out of the first test cases, one per case, to exercise the handling of
            incomplete cases: by default the first test case has no ``t2`` (a missing input) and the second no
            ``flair`` (a missing target for the usual T1, T1ce, T2 -> FLAIR task). Default ``("t2", "flair")``.

    Returns:
        the path of ``root_dir/dataset_0.json``.
    """
    demo_splits(num_train, num_val, num_test)  # checks the counts
    if not size_scale > 0:
        raise ValueError(f"`size_scale` must be positive, got {size_scale!r}.")
    drop = [drop_in_test] if isinstance(drop_in_test, str) else list(drop_in_test)
    bad = [c for c in drop if c not in DEMO_MRI_CONTRASTS]
    if bad:
        raise ValueError(f"`drop_in_test` must name contrasts of {DEMO_MRI_CONTRASTS}, got {bad}.")
    root_dir = os.path.abspath(os.fspath(root_dir))
    params = {
        "generator": "mamba_monai.data.demo_mri",
        "version": DEMO_MRI_VERSION,
        "num_train": int(num_train),
        "num_val": int(num_val),
        "num_test": int(num_test),
        "seed": int(seed),
        "size_scale": float(size_scale),
        "drop_in_test": drop,
    }
    splits = demo_splits(params["num_train"], params["num_val"], params["num_test"])
    subdirs = list(DEMO_MRI_SPLITS.values()) + [
        f"{DEMO_MRI_SPLITS[split]}/{_case_name(case)}" for split, cases in splits.items() for case in cases
    ]
    return ensure_demo_dataset(
        root_dir,
        params,
        lambda root: _write_dataset(root, params, splits),
        subdirs=subdirs,
        case_prefixes=("mri_",),
        overwrite=overwrite,
    )


def _remove_stale_cases(root_dir: str, splits: dict[str, list[int]]) -> None:
    """Remove case folders of an earlier demo set that are not in this one (only the generator's own files)."""
    for split, cases in splits.items():
        folder = os.path.join(root_dir, DEMO_MRI_SPLITS[split])
        keep = {_case_name(c) for c in cases}
        for entry in sorted(os.listdir(folder)):
            path = os.path.join(folder, entry)
            if entry in keep or not entry.startswith("mri_") or not os.path.isdir(path):
                continue
            for n in os.listdir(path):
                if n.startswith((entry, f".{entry}")) and os.path.isfile(os.path.join(path, n)):
                    os.remove(os.path.join(path, n))
            if not os.listdir(path):
                shutil.rmtree(path)


def _write_dataset(root_dir: str, params: dict, splits: dict[str, list[int]]) -> list[str]:
    """Write every case and the datalist; return the written paths relative to ``root_dir``."""
    _remove_stale_cases(root_dir, splits)
    lists: dict[str, list[dict]] = {}
    files: list[str] = []
    for split, cases in splits.items():
        lists[split] = []
        for position, case in enumerate(cases):
            name = _case_name(case)
            folder = f"{DEMO_MRI_SPLITS[split]}/{name}"
            result = generate_demo_mri_case(case, params["seed"], params["size_scale"])
            drop = params["drop_in_test"]
            dropped = drop[position] if split == "test" and position < len(drop) else None
            item = {"case": name}
            for contrast in DEMO_MRI_CONTRASTS:
                if contrast == dropped:
                    continue
                rel = f"{folder}/{name}_{contrast}.nii.gz"
                write_nifti(result.images[contrast], result.affine, os.path.join(root_dir, rel), dtype=np.int16)
                item[contrast] = rel
                files.append(rel)
            rel = f"{folder}/{name}_seg.nii.gz"
            write_nifti(result.seg, result.affine, os.path.join(root_dir, rel), dtype=np.uint8)
            item["seg"] = rel
            files.append(rel)
            lists[split].append(item)
    write_demo_datalist(
        root_dir,
        lists,
        unlabeled_test=False,
        name="mamba_monai demo MRI",
        description="Synthetic skull-stripped multi-contrast brain MRI with a glioma-like lesion (deterministic), "
        "BraTS 2018-2021 layout, written by mamba_monai.data.ensure_demo_mri_dataset.",
        reference="synthetic",
        licence="Apache-2.0",
        release=f"demo_mri v{DEMO_MRI_VERSION}",
        tensorImageSize="3D",
        modality={str(i): c for i, c in enumerate(DEMO_MRI_CONTRASTS)},
        labels={str(k): v for k, v in DEMO_MRI_LABELS.items()},
    )
    return files + [DATALIST_NAME]
