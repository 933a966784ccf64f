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
    "ImageReadError",
    "SafeLoadImaged",
    "ValidateImaged",
    "ValidateLabelsd",
    "filter_readable",
    "check_readable",
    "source_filename",
]

logger = logging.getLogger(__name__)

_MAX_LISTED = 10
_NIFTI_SUFFIXES = (".nii.gz", ".nii", ".hdr", ".img")


class ImageReadError(RuntimeError):
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


class ValidateImaged(MapTransform):
    """Check channel-first images (C, H, W[, D]) before they reach the network: channel count, NaN/Inf and
    minimum spatial size. Data pass through unchanged; every error names the file (from the MetaTensor's
    ``filename_or_obj``), what was found and what to change.

    Args:
        keys: keys of the images to check.
        num_channels: channels the network expects (its ``in_channels``). Default None: not checked.
        min_spatial_size: the smallest spatial size accepted, e.g. the training ``roi_size``; an int applies to
            every spatial dim, values <= 0 are not checked. Default None: not checked.
        allow_nan: accept NaN/Inf values. Default False.
        allow_missing_keys: don't raise when a key is absent. Default False.
    """

    def __init__(
        self,
        keys: KeysCollection,
        num_channels: int | None = None,
        min_spatial_size: int | Sequence[int] | None = None,
        allow_nan: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if num_channels is not None and (not isinstance(num_channels, (int, np.integer)) or num_channels < 1):
            raise ValueError(f"`num_channels` must be a positive int or None, got {num_channels!r}.")
        self.num_channels = None if num_channels is None else int(num_channels)
        self.min_spatial_size = (
            None if min_spatial_size is None else _ensure_tuple_of_ints(min_spatial_size, "min_spatial_size")
        )
        self.allow_nan = bool(allow_nan)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            filename = source_filename(d, key)
            img = _as_tensor(d[key])
            self._check_channels(img, key, filename)
            if not self.allow_nan:
                self._check_finite(img, key, filename)
            if self.min_spatial_size is not None:
                self._check_size(img, key, filename)
        return d

    def _check_channels(self, img: torch.Tensor, key: Hashable, filename: str) -> None:
        if img.ndim < 3:
            raise ValueError(
                f"'{key}' of {filename} has shape {tuple(img.shape)}, expected channel-first (C, H, W[, D]); "
                "add `EnsureChannelFirstd` after `LoadImaged`."
            )
        if self.num_channels is not None and img.shape[0] != self.num_channels:
            raise ValueError(
                f"'{key}' of {filename} has {img.shape[0]} channel(s) (shape {tuple(img.shape)}), the network "
                f"expects {self.num_channels}; set the network's `in_channels` to {img.shape[0]}, or select "
                f"{self.num_channels} channel(s) in the preprocessing (e.g. `SplitDimd` or `Lambdad`)."
            )

    def _check_finite(self, img: torch.Tensor, key: Hashable, filename: str) -> None:
        if not torch.is_floating_point(img) and not torch.is_complex(img):
            return
        n_nan = int(torch.isnan(img).sum())
        n_inf = int(torch.isinf(img).sum())
        if n_nan or n_inf:
            raise ValueError(
                f"'{key}' of {filename} has {n_nan} NaN and {n_inf} Inf value(s) out of {img.numel()}; repair "
                "the file, or replace them in the preprocessing (e.g. `Lambdad` with `torch.nan_to_num`), or "
                "pass `allow_nan=True`."
            )

    def _check_size(self, img: torch.Tensor, key: Hashable, filename: str) -> None:
        spatial = tuple(img.shape[1:])
        need = self.min_spatial_size
        assert need is not None
        if len(need) == 1:
            need = need * len(spatial)
        if len(need) != len(spatial):
            raise ValueError(
                f"'{key}' of {filename} has {len(spatial)} spatial dims (shape {tuple(img.shape)}), but "
                f"`min_spatial_size` {self.min_spatial_size} has {len(need)}; check `spatial_dims` / the data."
            )
        small = [i for i, (s, m) in enumerate(zip(spatial, need)) if m > 0 and s < m]
        if small:
            raise ValueError(
                f"'{key}' of {filename} has spatial shape {spatial}, smaller than the {tuple(need)} required "
                f"in dim(s) {small}; pad it first, e.g. `SpatialPadd(keys, spatial_size={list(need)})` or "
                "`DivisiblePadd`, or use a smaller `roi_size`."
            )


class ValidateLabelsd(MapTransform):
    """Check class-index label maps: every value an integer in ``[0, num_classes)``. Data pass through
    unchanged; the error lists the unexpected values (up to 10, with voxel counts) and the file.

    Args:
        keys: keys of the labels to check.
        num_classes: number of classes including background (the network's ``out_channels``).
        allow_missing_keys: don't raise when a key is absent. Default False.
    """

    def __init__(self, keys: KeysCollection, num_classes: int, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise ValueError(f"`num_classes` must be a positive int, got {num_classes!r}.")
        self.num_classes = int(num_classes)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            lab = _as_tensor(d[key])
            values, counts = torch.unique(lab, return_counts=True)
            if torch.is_floating_point(values):
                bad = ~torch.isfinite(values) | (values != torch.round(values))
                bad |= (values < 0) | (values >= self.num_classes)
            else:
                bad = (values < 0) | (values >= self.num_classes)
            if bool(bad.any()):
                filename = source_filename(d, key)
                bad_values, bad_counts = values[bad].tolist(), counts[bad].tolist()
                listed = ", ".join(f"{v:g} ({c} voxels)" for v, c in zip(bad_values[:_MAX_LISTED], bad_counts))
                more = f" and {len(bad_values) - _MAX_LISTED} more" if len(bad_values) > _MAX_LISTED else ""
                raise ValueError(
                    f"'{key}' of {filename} has unexpected label value(s) {listed}{more}; expected integers in "
                    f"[0, {self.num_classes}) (`num_classes`={self.num_classes}). Check the number of classes "
                    "(`out_channels`), remap the labels (e.g. `MapLabelValued`), or resample labels with "
                    "mode='nearest'."
                )
        return d


class SafeLoadImaged(LoadImaged):
    """``monai.transforms.LoadImaged`` whose read errors name the file: a truncated ``.nii.gz`` otherwise
    raises a bare ``EOFError`` that says nothing of which case failed. Same arguments as ``LoadImaged``.

    Raises:
        ImageReadError: when a file exists but cannot be read; the message names the key, the file(s), the
            original error (chained as ``__cause__``) and the fix. A missing file keeps MONAI's own error.
    """

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
                    f"Cannot read '{key}' from {files}: {type(err).__name__}: {err}. The file may be truncated or "
                    "corrupt: re-export it, or drop it from the datalist (`mamba_monai.data.filter_readable`)."
                ) from err
            if self._loader.image_only:
                d[key] = loaded
                continue
            d[key] = loaded[0]
            meta_key = meta_key or f"{key}_{meta_key_postfix}"
            if meta_key in d and not self.overwriting:
                raise KeyError(f"Metadata with key {meta_key} already exists and overwriting=False.")
            d[meta_key] = loaded[1]
        return d


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
        raise ImageReadError(f"Cannot read '{path}': {type(err).__name__}: {err}") from err


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
