"""Transforms and helpers that check inputs early and name the offending file in every message.

Usable in bundle configs by dotted ``_target_`` (``mamba_monai.data.ValidateImaged``), between
``LoadImaged``/``EnsureChannelFirstd`` and the rest of the preprocessing.

Measured with MONAI 1.6.1 (see ``tests/test_data.py``):

- ``LoadImaged`` on a truncated ``.nii.gz`` raises ``EOFError: Compressed file ended before the
  end-of-stream marker was reached`` without the file name (and ``Compose`` wraps it in a bare
  ``RuntimeError: applying transform ...``): :class:`SafeLoadImaged` re-raises with the file name.
- ``EnsureChannelFirstd`` turns a 4D NIfTI of shape (X, Y, Z, 1) into (1, X, Y, Z) by itself (the NIfTI
  reader reports ``original_channel_dim=-1``), so no squeeze transform is needed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import LoadImaged, MapTransform

from mamba_monai.data.datalist import _paths_of

__all__ = [
    "CaseError",
    "InvalidCaseError",
    "ImageReadError",
    "SafeLoadImaged",
    "ValidateImaged",
    "ValidateLabelsd",
    "filter_readable",
    "check_readable",
    "source_filename",
    "affine_problem",
    "nifti_header_problem",
]

logger = logging.getLogger(__name__)

_MAX_LISTED = 10
_NIFTI_SUFFIXES = (".nii.gz", ".nii", ".hdr", ".img")


class CaseError(Exception):
    """
    An input case that cannot be used. The message says what is wrong and how to fix it; the parts are also
    kept apart (``file``, ``problem``, ``fix``) so that reports such as a bundle's ``skipped.csv`` can list them.
    """

    def __init__(self, problem: str, fix: str = "", file: str = "") -> None:
        self.problem, self.fix, self.file = problem, fix, file
        super().__init__(f"{problem}; {fix}" if fix else problem)

    def __reduce__(self):  # keep the parts when the error crosses a DataLoader worker process
        return type(self), (self.problem, self.fix, self.file)


class InvalidCaseError(CaseError, ValueError):
    """A file that reads but holds data the network cannot take: wrong dimensions or channels, NaN/Inf values,
    a degenerate affine, label values outside the classes, an image and label of different shapes."""


class ImageReadError(CaseError, RuntimeError):
    """An image or label file exists but cannot be read (truncated, corrupt or of an unknown format)."""


def source_filename(data: Mapping[Hashable, Any], key: Hashable) -> str:
    """The file an item's ``key`` was loaded from: the MetaTensor's ``filename_or_obj`` (or the
    ``{key}_meta_dict`` entry when images are loaded with ``image_only=False``), else a placeholder."""
    value = data[key]
    name = None
    if isinstance(value, MetaTensor):
        name = value.meta.get("filename_or_obj")
    if name is None:
        meta = data.get(f"{key}_meta_dict")
        if isinstance(meta, Mapping):
            name = meta.get("filename_or_obj")
    if name is None and isinstance(value, (str, os.PathLike)):
        name = os.fspath(value)
    if name is None or (isinstance(name, str) and not name):
        return "<unknown file: no 'filename_or_obj' in the metadata>"
    return str(name)


def _as_tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.as_tensor() if isinstance(value, MetaTensor) else value
    return torch.as_tensor(np.asarray(value))


def _ensure_tuple_of_ints(value: int | Sequence[int], name: str) -> tuple[int, ...]:
    values = (value,) if isinstance(value, int) else tuple(value)
    if not values or not all(isinstance(v, (int, np.integer)) for v in values):
        raise ValueError(f"`{name}` must be an int or a sequence of ints, got {value!r}.")
    return tuple(int(v) for v in values)


AFFINE_FIX = (
    "repair the header (qform/sform, or PixelSpacing and ImageOrientationPatient for DICOM), e.g. with nibabel's "
    "`img.set_sform(affine, code=1)`"
)


def affine_problem(affine: np.ndarray, rank: int) -> str | None:
    """What is wrong with a voxel-to-world ``affine`` for ``rank`` spatial axes, or None: NaN/Inf entries, a
    zero-length axis, or axes that collapse onto each other (near-zero determinant)."""
    affine = np.asarray(affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)):
        return "a non-finite affine (NaN/Inf in the header's orientation or origin)"
    if rank < 1:
        return None
    linear = affine[:rank, :rank]
    spacing = np.linalg.norm(linear, axis=0)
    det = abs(float(np.linalg.det(linear)))
    if float(spacing.min()) <= 0 or det <= 1e-6 * float(np.prod(spacing)):
        return (
            f"a degenerate affine (voxel spacing {[round(float(v), 4) for v in spacing]}, determinant {det:.3g}): "
            "its axes are zero-length or collapse onto each other"
        )
    return None


def nifti_header_problem(path: str) -> str | None:
    """A NIfTI header whose stored affine is unusable (MONAI's reader silently puts an identity in its place)."""
    if not path.lower().endswith(_NIFTI_SUFFIXES):
        return None
    try:
        header = nib.load(path).header
    except Exception:  # noqa: BLE001 - unreadable headers are reported by the loader itself
        return None
    for getter in (header.get_sform, header.get_qform):
        affine, code = getter(coded=True)
        if affine is not None and code > 0:
            rank = min(int(header["dim"][0]), 3)
            return affine_problem(affine, rank)
    return None


class ValidateImaged(MapTransform):
    """Check channel-first images (C, H, W[, D]) before they reach the network: number of spatial dimensions,
    channel count, NaN/Inf, a usable affine and minimum spatial size; a constant image passes with a warning.
    Data pass through unchanged; every error is an :class:`InvalidCaseError` that names the file (from the
    MetaTensor's ``filename_or_obj``), what was found and what to change.

    Args:
        keys: keys of the images to check.
        num_channels: channels the network expects (its ``in_channels``). Default None: not checked.
        min_spatial_size: the smallest spatial size accepted, e.g. the training ``roi_size``; an int applies to
            every spatial dim, values <= 0 are not checked. Default None: not checked (sliding-window inference
            pads smaller inputs by itself).
        allow_nan: accept NaN/Inf values. Default False.
        spatial_dims: the number of spatial dimensions the bundle takes (2 or 3), so that a 2D file given to a 3D
            network (or the reverse) is named instead of failing deep inside the inferer. Default None: not checked.
        check_affine: reject a non-finite or singular affine (zero spacing, collapsed axes), which would break
            resampling. Default True.
        allow_missing_keys: don't raise when a key is absent. Default False.
    """

    def __init__(
        self,
        keys: KeysCollection,
        num_channels: int | None = None,
        min_spatial_size: int | Sequence[int] | None = None,
        allow_nan: bool = False,
        spatial_dims: int | None = None,
        check_affine: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if num_channels is not None and (not isinstance(num_channels, (int, np.integer)) or num_channels < 1):
            raise ValueError(f"`num_channels` must be a positive int or None, got {num_channels!r}.")
        if spatial_dims is not None and spatial_dims not in (1, 2, 3):
            raise ValueError(f"`spatial_dims` must be 1, 2, 3 or None, got {spatial_dims!r}.")
        self.num_channels = None if num_channels is None else int(num_channels)
        self.min_spatial_size = (
            None if min_spatial_size is None else _ensure_tuple_of_ints(min_spatial_size, "min_spatial_size")
        )
        self.allow_nan = bool(allow_nan)
        self.spatial_dims = spatial_dims
        self.check_affine = bool(check_affine)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            filename = source_filename(d, key)
            img = _as_tensor(d[key])
            self._check_dims(img, key, filename)
            self._check_channels(img, key, filename)
            if not self.allow_nan:
                self._check_finite(img, key, filename)
            self._warn_if_constant(img, key, filename)
            if self.check_affine and isinstance(d[key], MetaTensor):
                self._check_affine(d[key], key, filename)
            if self.min_spatial_size is not None:
                self._check_size(img, key, filename)
        return d

    def _check_dims(self, img: torch.Tensor, key: Hashable, filename: str) -> None:
        if img.ndim < 2 or (img.ndim < 3 and self.spatial_dims != 1):
            raise InvalidCaseError(
                f"'{key}' of {filename} has shape {tuple(img.shape)}, expected channel-first (C, H, W[, D])",
                "add `EnsureChannelFirstd` after `LoadImaged` (or `ensure_channel_first=True`)",
                filename,
            )
        found = img.ndim - 1
        if self.spatial_dims is None or found == self.spatial_dims:
            return
        shape = tuple(img.shape)
        if found < self.spatial_dims:
            problem = f"'{key}' of {filename} is a {found}D image (channel-first shape {shape}), this bundle takes {self.spatial_dims}D"
            fix = (
                "use a 2D bundle (e.g. spectral_vmamba_seg2d) for 2D images, or stack the slices into one volume"
                if found == 2
                else f"give a {self.spatial_dims}D image"
            )
        else:
            problem = (
                f"'{key}' of {filename} has {found} spatial dimensions (channel-first shape {shape}), this bundle "
                f"takes {self.spatial_dims}D images"
            )
            fix = (
                "extract 2D slices first, or use a 3D bundle (e.g. emnet_seg3d)"
                if self.spatial_dims == 2
                else "drop the extra dimensions (e.g. keep one time point or echo of a 4D/5D series)"
            )
        raise InvalidCaseError(problem, fix, filename)

    def _check_channels(self, img: torch.Tensor, key: Hashable, filename: str) -> None:
        if self.num_channels is not None and img.shape[0] != self.num_channels:
            raise InvalidCaseError(
                f"'{key}' of {filename} has {img.shape[0]} channel(s) (shape {tuple(img.shape)}), the network "
                f"expects {self.num_channels}",
                f"set the network's `in_channels` to {img.shape[0]}, or select {self.num_channels} channel(s) in the "
                "preprocessing (e.g. `SplitDimd` or `Lambdad`); a 4D series needs one volume per case",
                filename,
            )

    def _check_finite(self, img: torch.Tensor, key: Hashable, filename: str) -> None:
        if not torch.is_floating_point(img) and not torch.is_complex(img):
            return
        n_nan = int(torch.isnan(img).sum())
        n_inf = int(torch.isinf(img).sum())
        if n_nan or n_inf:
            raise InvalidCaseError(
                f"'{key}' of {filename} has {n_nan} NaN and {n_inf} Inf value(s) out of {img.numel()}",
                "repair the file, or replace them in the preprocessing (e.g. `Lambdad` with `torch.nan_to_num`), "
                "or pass `allow_nan=True`",
                filename,
            )

    @staticmethod
    def _warn_if_constant(img: torch.Tensor, key: Hashable, filename: str) -> None:
        if img.numel() == 0:
            return
        lo, hi = img.min(), img.max()
        if bool(lo == hi):
            logger.warning(
                "'%s' of %s is constant (every voxel is %g): its prediction carries no information; check the file.",
                key, filename, float(lo),
            )

    def _check_affine(self, img: MetaTensor, key: Hashable, filename: str) -> None:
        affine = torch.as_tensor(img.affine, dtype=torch.float64)
        problem = affine_problem(affine.numpy(), min(img.ndim - 1, affine.shape[-1] - 1))
        if problem is not None:
            raise InvalidCaseError(f"'{key}' of {filename} has {problem}", AFFINE_FIX, filename)

    def _check_size(self, img: torch.Tensor, key: Hashable, filename: str) -> None:
        spatial = tuple(img.shape[1:])
        need = self.min_spatial_size
        assert need is not None
        if len(need) == 1:
            need = need * len(spatial)
        if len(need) != len(spatial):
            raise InvalidCaseError(
                f"'{key}' of {filename} has {len(spatial)} spatial dims (shape {tuple(img.shape)}), but "
                f"`min_spatial_size` {self.min_spatial_size} has {len(need)}",
                "check `spatial_dims` / the data",
                filename,
            )
        small = [i for i, (s, m) in enumerate(zip(spatial, need)) if m > 0 and s < m]
        if small:
            raise InvalidCaseError(
                f"'{key}' of {filename} has spatial shape {spatial}, smaller than the {tuple(need)} required "
                f"in dim(s) {small}",
                f"pad it first, e.g. `SpatialPadd(keys, spatial_size={list(need)})` or `DivisiblePadd`, or use a "
                "smaller `roi_size`",
                filename,
            )


class ValidateLabelsd(MapTransform):
    """Check class-index label maps: every value an integer in ``[0, num_classes)`` and, with ``image_key``, the
    same spatial shape as the image. Data pass through unchanged; an :class:`InvalidCaseError` lists the
    unexpected values (up to 10, with voxel counts) and names the file.

    Args:
        keys: keys of the labels to check.
        num_classes: number of classes including background (the network's ``out_channels``).
        image_key: key of the image the labels belong to; when given, their spatial shapes must match.
            Default None: not checked.
        allow_missing_keys: don't raise when a key is absent. Default False.
    """

    def __init__(
        self,
        keys: KeysCollection,
        num_classes: int,
        image_key: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise ValueError(f"`num_classes` must be a positive int, got {num_classes!r}.")
        self.num_classes = int(num_classes)
        self.image_key = image_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            lab = _as_tensor(d[key])
            self._check_values(lab, key, source_filename(d, key))
            if self.image_key is not None and self.image_key in d:
                self._check_shape(d, key, lab)
        return d

    def _check_values(self, lab: torch.Tensor, key: Hashable, filename: str) -> None:
        values, counts = torch.unique(lab, return_counts=True)
        if torch.is_floating_point(values):
            bad = ~torch.isfinite(values) | (values != torch.round(values))
            bad |= (values < 0) | (values >= self.num_classes)
        else:
            bad = (values < 0) | (values >= self.num_classes)
        if not bool(bad.any()):
            return
        bad_values, bad_counts = values[bad].tolist(), counts[bad].tolist()
        listed = ", ".join(f"{v:g} ({c} voxels)" for v, c in zip(bad_values[:_MAX_LISTED], bad_counts))
        more = f" and {len(bad_values) - _MAX_LISTED} more" if len(bad_values) > _MAX_LISTED else ""
        raise InvalidCaseError(
            f"'{key}' of {filename} has unexpected label value(s) {listed}{more}; expected integers in "
            f"[0, {self.num_classes}) (`num_classes`={self.num_classes})",
            "check the number of classes (`out_channels`), remap the labels (e.g. `MapLabelValued`), or resample "
            "labels with mode='nearest'",
            filename,
        )

    def _check_shape(self, d: Mapping[Hashable, Any], key: Hashable, lab: torch.Tensor) -> None:
        img = _as_tensor(d[self.image_key])
        if tuple(img.shape[1:]) != tuple(lab.shape[1:]):
            filename = source_filename(d, key)
            raise InvalidCaseError(
                f"'{key}' of {filename} has spatial shape {tuple(lab.shape[1:])}, its image "
                f"{source_filename(d, self.image_key)} has {tuple(img.shape[1:])}",
                "pair each image with its own label map (check the datalist), or resample the label onto the "
                "image grid (e.g. `ResampleToMatchd` with mode='nearest')",
                filename,
            )


class SafeLoadImaged(LoadImaged):
    """``monai.transforms.LoadImaged`` whose read errors name the file: a truncated ``.nii.gz`` otherwise
    raises a bare ``EOFError`` that says nothing of which case failed. It also rejects a NIfTI whose header
    affine is degenerate (zero-length or collapsed axes), which MONAI's reader silently replaces by an identity
    (the output would then be written with a wrong geometry). Same arguments as ``LoadImaged``.

    Raises:
        ImageReadError: when a file exists but cannot be read; the message names the key, the file(s), the
            original error (chained as ``__cause__``) and the fix. A missing file keeps MONAI's own error.
        InvalidCaseError: a NIfTI header with an unusable affine.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from mamba_monai.data.dicom import DicomSeriesReader

        self._loader.register(DicomSeriesReader())  # a series folder or a list of slice files is one volume

    def __call__(self, data, reader=None):  # type: ignore[override]
        d = dict(data)
        for key, meta_key, meta_key_postfix in self.key_iterator(d, self.meta_keys, self.meta_key_postfix):
            try:
                loaded = self._loader(d[key], reader)
            except Exception as err:
                if isinstance(err, FileNotFoundError) or any(p in str(err) for p in _paths_of(d[key])):
                    raise  # MONAI's message already names the file
                files = ", ".join(f"'{p}'" for p in _paths_of(d[key])) or repr(d[key])
                raise ImageReadError(
                    f"Cannot read '{key}' from {files}: {type(err).__name__}: {err}",
                    "the file may be truncated or corrupt: re-export it, or drop it from the datalist",
                    _paths_of(d[key])[0] if _paths_of(d[key]) else "",
                ) from err
            for path in _paths_of(d[key]):
                problem = nifti_header_problem(path)
                if problem is not None:
                    raise InvalidCaseError(f"'{key}' of {path} has {problem} in its header", AFFINE_FIX, path)
            note_dicom_source(loaded if self._loader.image_only else loaded[1], d[key])
            if self._loader.image_only:
                d[key] = loaded
                continue
            d[key] = loaded[0]
            meta_key = meta_key or f"{key}_{meta_key_postfix}"
            if meta_key in d and not self.overwriting:
                raise KeyError(f"Metadata with key {meta_key} already exists and overwriting=False.")
            d[meta_key] = loaded[1]
        return d


def note_dicom_source(loaded: Any, source: Any) -> None:
    """For a DICOM input, record its slice files (``meta["dicom_files"]``, newline-separated, for a DICOM SEG
    writer) and name a series given as a list of files after its folder and series number (MONAI would name it
    after its first slice file)."""
    from mamba_monai.data.dicom import dicom_files_in, series_name
    from mamba_monai.data.image2d import is_dicom_file

    meta = loaded.meta if isinstance(loaded, MetaTensor) else loaded
    paths = _paths_of(source)
    if not isinstance(meta, dict) or not paths:
        return
    if len(paths) == 1 and os.path.isdir(paths[0]):
        files = dicom_files_in(paths[0])  # one series: the reader has checked it
    elif all(is_dicom_file(p) for p in paths):
        files = list(paths)
    else:
        return
    meta["dicom_files"] = "\n".join(os.path.abspath(f) for f in files)
    if len(paths) > 1:
        meta["filename_or_obj"] = os.path.join(os.path.dirname(os.path.abspath(paths[0])), series_name(paths))


def check_readable(path: str | os.PathLike) -> None:
    """Read a whole image file and raise if it is unusable.

    NIfTI (``.nii``, ``.nii.gz``, Analyze) goes through ``nibabel``: header, a positive shape, a numeric dtype,
    then all the voxel data (decompressing a ``.nii.gz`` to its end is what catches a truncated file). Any other
    format is read with MONAI's ``LoadImage``.

    Raises:
        FileNotFoundError: the file does not exist.
        ImageReadError: the file cannot be read; the message names it and says why.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such file: '{path}'.")
    try:
        if path.lower().endswith(_NIFTI_SUFFIXES):
            img = nib.load(path)
            shape = tuple(img.shape)
            if len(shape) < 2 or min(shape) < 1:
                raise ValueError(f"invalid shape {shape}")
            dtype = img.get_data_dtype()
            if not (np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.bool_)):
                raise ValueError(f"non-numeric data type {dtype}")
            np.asanyarray(img.dataobj)
        else:
            from monai.transforms import LoadImage

            LoadImage(image_only=True)(path)
    except Exception as err:
        raise ImageReadError(
            f"Cannot read '{path}': {type(err).__name__}: {err}", "re-export the file or drop it from the list", path
        ) from err


def filter_readable(
    datalist: Sequence[dict], keys: KeysCollection = ("image",)
) -> tuple[list[dict], list[dict[str, str]]]:
    """Split a datalist into the items whose files can all be read and those that cannot, so that inference can
    go on with the good cases. Every file under ``keys`` (a path or a list of paths) is read in full with
    :func:`check_readable`; a warning names each bad file and the reason.

    Args:
        datalist: items such as ``{"image": "/data/ct_001.nii.gz"}`` (resolved paths, as ``load_datalist`` gives).
        keys: the keys whose files are checked. Default ``("image",)``. Items lacking a key are bad.

    Returns:
        ``(good_items, errors)``: the readable items in their order, and one dict per bad file with ``"file"``,
        ``"key"``, ``"error"`` and the offending ``"item"``.
    """
    keys = (keys,) if isinstance(keys, str) else tuple(keys)
    good: list[dict] = []
    errors: list[dict[str, Any]] = []
    for item in datalist:
        item_errors = []
        for key in keys:
            if key not in item:
                item_errors.append({"file": "", "key": key, "error": f"the item has no '{key}'", "item": item})
                continue
            for path in _paths_of(item[key]) or [repr(item[key])]:
                try:
                    check_readable(path)
                except (FileNotFoundError, ImageReadError) as err:
                    item_errors.append({"file": path, "key": key, "error": str(err), "item": item})
        if item_errors:
            for e in item_errors:
                logger.warning("Skipping case %s: %s", e["file"] or repr(item), e["error"])
            errors.extend(item_errors)
        else:
            good.append(item)
    return good, errors
