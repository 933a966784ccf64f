"""Generic NIfTI writing: affines built from spacing/rotation/origin/flips and atomic file writes.

These helpers are shared by every demo data generator in :mod:`mamba_monai.data` (CT, 2D slices, MRI),
and are usable on their own to write test volumes with a realistic geometry.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence

import nibabel as nib
import numpy as np
from numpy.typing import DTypeLike

__all__ = ["make_affine", "rotation_matrix", "write_nifti", "atomic_write_text"]

_NIFTI_SUFFIXES = (".nii.gz", ".nii")


def _as_3(value: float | Sequence[float], name: str, pad: float) -> np.ndarray:
    """Return ``value`` as 3 floats; a scalar is broadcast, 2 values are padded with ``pad`` (2D data)."""
    arr = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if arr.size == 1:
        arr = np.repeat(arr, 3)
    if arr.size == 2:
        arr = np.append(arr, pad)
    if arr.ndim != 1 or arr.size != 3:
        raise ValueError(f"`{name}` must be a scalar or a sequence of 2 or 3 values, got {value!r}.")
    return arr


def rotation_matrix(rotation_deg: float | Sequence[float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """A 3x3 rotation from Euler angles in degrees about the world x, y, then z axes: ``Rz @ Ry @ Rx``.

    Args:
        rotation_deg: angles about x, y and z in degrees; a scalar rotates about z only (in-plane, as for
            2D data). Default ``(0, 0, 0)``.
    """
    if np.isscalar(rotation_deg):
        rotation_deg = (0.0, 0.0, float(rotation_deg))  # type: ignore[arg-type]
    angles = np.deg2rad(np.asarray(rotation_deg, dtype=np.float64))
    if angles.shape != (3,):
        raise ValueError(f"`rotation_deg` must be a scalar or 3 angles (x, y, z) in degrees, got {rotation_deg!r}.")
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def make_affine(
    spacing: float | Sequence[float],
    rotation_deg: float | Sequence[float] = (0.0, 0.0, 0.0),
    origin: float | Sequence[float] = (0.0, 0.0, 0.0),
    flip: bool | Sequence[bool] = (False, False, False),
) -> np.ndarray:
    """Build a 4x4 voxel-to-world (RAS+, millimetres) affine as NIfTI stores it.

    ``affine[:3, :3] = R @ diag(sign * spacing)`` and ``affine[:3, 3] = origin``, where ``sign`` is -1 on the
    flipped axes. A CT exported from DICOM (LPS voxel order) has ``flip=(True, True, False)``; a gantry tilt is a
    small rotation about x. The columns' norms are the voxel spacing, as ``nibabel``'s ``header.get_zooms()``
    and MONAI's ``pixdim`` read it.

    Args:
        spacing: voxel size in mm per array axis (2 values for 2D data: the third axis gets 1.0 mm).
        rotation_deg: Euler angles (x, y, z) in degrees, see :func:`rotation_matrix`. Default no rotation.
        origin: world position (mm) of the centre of voxel (0, 0, 0). Default ``(0, 0, 0)``.
        flip: per-axis flags; a flipped axis runs towards -world (e.g. right-to-left). Default none.

    Returns:
        a float64 array of shape (4, 4).
    """
    spacing_ = _as_3(spacing, "spacing", 1.0)
    if np.any(spacing_ <= 0) or not np.all(np.isfinite(spacing_)):
        raise ValueError(f"`spacing` must be positive and finite, got {spacing!r}.")
    origin_ = _as_3(origin, "origin", 0.0)
    flip_ = np.atleast_1d(np.asarray(flip, dtype=bool))
    if flip_.size == 1:
        flip_ = np.repeat(flip_, 3)
    if flip_.size == 2:
        flip_ = np.append(flip_, False)
    if flip_.shape != (3,):
        raise ValueError(f"`flip` must be a bool or a sequence of 2 or 3 bools, got {flip!r}.")
    signs = np.where(flip_, -1.0, 1.0)
    affine = np.eye(4)
    affine[:3, :3] = rotation_matrix(rotation_deg) @ np.diag(signs * spacing_)
    affine[:3, 3] = origin_
    return affine


def _temp_path_beside(path: str, suffix: str) -> str:
    """A fresh hidden file name in the folder of ``path``, so that ``os.replace`` is atomic (same filesystem)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp" + suffix, dir=folder)
    os.close(fd)
    # mkstemp creates the file 0600; give the final file the permissions an ordinary ``open`` would
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return tmp


def atomic_write_text(text: str, path: str | os.PathLike) -> str:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``: readers never see half a file."""
    path = os.fspath(path)
    tmp = _temp_path_beside(path, "")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def write_nifti(
    array: np.ndarray,
    affine: np.ndarray,
    path: str | os.PathLike,
    dtype: DTypeLike | None = None,
    description: str | None = None,
) -> str:
    """Write ``array`` as a NIfTI-1 file with ``affine`` in both qform and sform (code 1, scanner), atomically.

    The data go to a hidden temporary file in the same folder, which is renamed onto ``path`` only once it is
    complete, so an interrupted run never leaves a truncated ``.nii.gz`` under the final name.

    Args:
        array: voxel data, 2D to 5D, in array-axis order (the order ``affine`` maps to world).
        affine: 4x4 voxel-to-world affine (RAS+, mm), e.g. from :func:`make_affine`.
        path: destination ending in ``.nii.gz`` (compressed) or ``.nii``.
        dtype: on-disk data type (e.g. ``np.int16`` for CT in HU, ``np.uint8`` for labels). Default: the
            array's own dtype. Values are cast without scaling (``scl_slope`` unset).
        description: text for the header's ``descrip`` field (ASCII; 79 characters at most, the field's 80 bytes
            end with a NUL). Default None.

    Returns:
        ``path`` as a string.
    """
    path = os.fspath(path)
    suffix = next((s for s in _NIFTI_SUFFIXES if path.endswith(s)), None)
    if suffix is None:
        raise ValueError(f"`path` must end with one of {_NIFTI_SUFFIXES}, got {path!r}.")
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"`affine` must be a 4x4 matrix, got shape {affine.shape}.")
    array = np.asarray(array)
    if not 2 <= array.ndim <= 5:
        raise ValueError(f"`array` must have 2 to 5 dimensions, got shape {array.shape}.")
    if dtype is not None:
        array = array.astype(dtype, copy=False)
    img = nib.Nifti1Image(array, affine)
    img.set_data_dtype(array.dtype)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    if description is not None:
        img.header["descrip"] = description.encode("ascii", "replace")[:79]
    tmp = _temp_path_beside(path, suffix)
    try:
        nib.save(img, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
