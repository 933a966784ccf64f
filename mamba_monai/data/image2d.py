"""Reading any 2D image a user has into one (C, H, W) form: loading, channel count and label values.

Usable in bundle configs by dotted ``_target_`` (``mamba_monai.data.LoadImage2Dd``)::

    LoadImage2Dd(keys=["image", "label"])                  PNG/JPEG/TIFF/BMP, 2D NIfTI, single-frame DICOM
    EnsureChannelsd(keys="image", num_channels=1 or 3)     gray <-> RGB, alpha dropped
    EnsureChannelsd(keys="label", label=True)              RGB copies of a mask -> one channel
    RemapLabelsd(keys="label", mapping={0: 0, 255: 1})     file values -> class indices, unknown values raise

What MONAI 1.6.1's ``LoadImage(ensure_channel_first=True)`` gives per format (measured in
``tests/test_data_2d.py``), and what :class:`LoadImage2Dd` adds:

- Every reader puts the image's x (column) axis first: a PNG of H rows and W columns loads as (C, W, H)
  (``PILReader(reverse_indexing=True)``), a DICOM of R rows and C columns as (1, C, R) (``PydicomReader(
  swap_ij=True)``), a NIfTI as its array axes (NIfTI's i is x). :class:`LoadImage2Dd` keeps that convention.
- PNG/JPEG/BMP (``PILReader``): gray (1, W, H); RGB (3, W, H); RGBA (4, W, H) and LA (2, W, H) with the alpha
  kept; palette PNGs give the palette indices; 16-bit PNGs their 16-bit values; the affine is the 3x3 identity
  (no spacing). TIFF is not picked by MONAI's suffix-based selection: with pydicom installed it goes to
  ``PydicomReader`` and fails (``InvalidDicomError``), without it no reader is found; :class:`LoadImage2Dd`
  reads ``.tif``/``.tiff`` with ``PILReader``. EXIF orientation tags are ignored by ``PILReader`` and applied
  here; 1-bit images (mode "1") load as 0/1 there and as 0/255 here, so a binary mask is 0/255 whatever its
  bit depth.
- NIfTI (``NibabelReader``): an (X, Y) file gives (1, X, Y) with a 4x4 affine; an (X, Y, 1) file, as many 2D
  exports are, gives (1, X, Y, 1); (X, Y, 1, 3) gives (3, X, Y, 1) (the last axis is taken as channels); an
  (X, Y, 3) file is indistinguishable from a 3-slice volume and gives (1, X, Y, 3). :class:`LoadImage2Dd`
  squeezes a singleton spatial axis and raises for a real volume.
- DICOM (``PydicomReader``, any file that is not a PNG/JPEG/NIfTI... when pydicom is installed): a
  single-frame MONOCHROME2 image gives (1, C, R), RescaleSlope/Intercept applied, spacing from PixelSpacing
  (x = column spacing), a 4x4 LPS->RAS affine from ImagePositionPatient/ImageOrientationPatient. An RGB
  image (SamplesPerPixel 3, ultrasound) gives (1, C, R, 3): :class:`LoadImage2Dd` reads it as (3, C, R).
  A multi-frame file gives a 3D array: :class:`LoadImage2Dd` raises. Without ImageOrientationPatient (most
  ultrasound) the reader's affine swaps the two axes; ultrasound spacing lives in SequenceOfUltrasoundRegions
  (PhysicalDeltaX/Y, cm), which the reader ignores. MONOCHROME1 (inverted gray, X-ray) is not inverted by the
  reader; :class:`LoadImage2Dd` inverts it.

The affine of every image :class:`LoadImage2Dd` returns is a 3x3 in-plane affine whose column norms are the
file's pixel spacing (1.0 for PNG/JPEG/TIFF): the file's affine restricted to the two image axes when the image
plane is a plane of the world axes (axial NIfTI/DICOM keep their flips and origin), else ``diag(spacing)``. The
file's own affine stays in ``meta["original_affine"]``. So ``Spacingd(pixdim=[sx, sy])`` works on every format.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Hashable, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor, NibabelReader, PILReader, PydicomReader
from monai.transforms import LoadImage, MapTransform
from monai.utils import convert_to_dst_type, optional_import

from mamba_monai.data.nifti import _temp_path_beside
from mamba_monai.data.validation import AFFINE_FIX, ImageReadError, InvalidCaseError, nifti_header_problem, source_filename

pydicom, has_pydicom = optional_import("pydicom")
PILImage, has_pil = optional_import("PIL.Image")
ImageOps, _ = optional_import("PIL.ImageOps")

__all__ = [
    "IMAGE_2D_SUFFIXES",
    "LoadImage2Dd",
    "EnsureChannelsd",
    "RemapLabelsd",
    "is_dicom_file",
    "write_image_2d",
]

logger = logging.getLogger(__name__)

_PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")
_NIFTI_SUFFIXES = (".nii.gz", ".nii")
_DICOM_SUFFIXES = (".dcm", ".dicom")
IMAGE_2D_SUFFIXES = _PIL_SUFFIXES + _NIFTI_SUFFIXES + _DICOM_SUFFIXES
"""File suffixes (lower case) :class:`LoadImage2Dd` reads with a chosen reader; folder pairing
(:func:`~mamba_monai.data.datalist_from_image_label_folders`) lists files with these suffixes."""

_ALPHA_MODES = ("RGBA", "LA", "PA", "La", "RGBa")
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL's convert("L")
_MAX_LISTED = 10


# ----------------------------------------------------------------------------------------------------------------
# helpers


def _suffix(path: str) -> str:
    name = os.path.basename(path).lower()
    for s in _NIFTI_SUFFIXES:
        if name.endswith(s):
            return s
    return os.path.splitext(name)[1]


def is_dicom_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a DICOM file: a ``.dcm``/``.dicom`` suffix, or no image suffix and the ``DICM``
    preamble (many scanners write files without a suffix)."""
    path = os.fspath(path)
    suffix = _suffix(path)
    if suffix in _DICOM_SUFFIXES:
        return True
    if suffix in _PIL_SUFFIXES or suffix in _NIFTI_SUFFIXES or not os.path.isfile(path):
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


@contextmanager
def _quiet_dicom_plugin() -> Iterator[None]:
    """MONAI 1.6.1 registers an ``NvImgCodecPydicomReader`` in every ``LoadImage`` when pydicom is installed,
    which logs a warning and warns twice that nvImageCodec is unavailable (a CUDA-only decoder): silence that."""
    plugin_logger = logging.getLogger("monai.data.nvimgcodec_pydicom_plugin")
    level = plugin_logger.level
    plugin_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*[nN]vImageCodec.*")
            warnings.filterwarnings("ignore", message=".*NvImgCodec.*")
            yield
    finally:
        plugin_logger.setLevel(level)


def _pil_image_converter(img):
    """Apply the EXIF orientation and bring exotic PIL modes to L/RGB(A): palette images to their colours,
    1-bit to 0/255, CMYK/YCbCr/LAB/HSV to RGB."""
    img = ImageOps.exif_transpose(img) or img
    if img.mode == "P":
        return img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode == "PA":
        return img.convert("RGBA")
    if img.mode == "1":
        return img.convert("L")
    if img.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        return img.convert("RGB")
    return img


def _pil_label_converter(img):
    """Labels: EXIF orientation applied, palette indices kept (class-index PNGs such as PASCAL VOC's), 1-bit
    masks as 0/255 (like 8-bit binary masks)."""
    img = ImageOps.exif_transpose(img) or img
    if img.mode == "1":
        return img.convert("L")
    if img.mode == "PA":
        return img.getchannel(0)
    return img


def _meta_of(img: Any) -> dict:
    return img.meta if isinstance(img, MetaTensor) else {}


def _with_data(img: Any, data: torch.Tensor, **meta_updates: Any) -> torch.Tensor:
    """``data`` as a MetaTensor carrying a copy of ``img``'s metadata (plus ``meta_updates``)."""
    if not isinstance(img, MetaTensor):
        return data
    meta = dict(img.meta)
    meta.update(meta_updates)
    return MetaTensor(data, meta=meta, applied_operations=list(img.applied_operations))


def planar_affine(affine: Any, axes: Sequence[int], spacing: Sequence[float] | None = None) -> torch.Tensor:
    """The 3x3 in-plane affine of a 2D image cut from an N-D ``affine`` along spatial ``axes``: the affine
    restricted to those rows and columns when that keeps the column norms (the plane is a plane of the world
    axes), else ``diag(spacing)`` with the norms of the full columns as spacing (or ``spacing`` when given)."""
    a = np.asarray(affine.detach().cpu() if isinstance(affine, torch.Tensor) else affine, dtype=np.float64)
    n = a.shape[0] - 1
    axes = list(axes)
    full = np.linalg.norm(a[:n, axes], axis=0) if spacing is None else np.asarray(spacing, dtype=np.float64)
    rows = axes + [n]
    cut = a[np.ix_(rows, axes + [n])]
    if spacing is None and np.allclose(np.linalg.norm(cut[:2, :2], axis=0), full, rtol=1e-4, atol=1e-6):
        return torch.as_tensor(cut, dtype=torch.float64)
    out = np.eye(3)
    out[0, 0], out[1, 1] = (float(s) if s > 0 else 1.0 for s in full)
    return torch.as_tensor(out, dtype=torch.float64)


def _volume_error(key: Hashable, filename: str, shape: tuple[int, ...], extra: str = "") -> InvalidCaseError:
    return InvalidCaseError(
        f"'{key}' of {filename} is a 3D volume of shape {shape}{extra}; the 2D bundle takes 2D images",
        "extract slices first (e.g. with monai.transforms.SplitDimd or a slice export), run a 2D network over the "
        "volume with monai.inferers.SliceInferer, or use bundles/emnet_seg3d",
        filename,
    )


def _as_2d(img: torch.Tensor, key: Hashable, filename: str) -> torch.Tensor:
    """(C, X, Y) as it is; (C, X, Y, Z) with one singleton spatial axis squeezed (in-plane affine kept);
    anything else raises a ValueError naming the file."""
    shape = tuple(img.shape)
    if img.ndim == 3:
        return img
    if img.ndim < 3:
        raise InvalidCaseError(
            f"'{key}' of {filename} has shape {shape}, expected channel-first (C, H, W)",
            "load it with `ensure_channel_first=True` (or use mamba_monai.data.LoadImage2Dd)",
            filename,
        )
    spatial = shape[1:]
    singleton = [i for i, s in enumerate(spatial) if s == 1]
    if img.ndim == 4 and len(singleton) >= 1 and sum(s > 1 for s in spatial) == 2:
        drop = singleton[0]
        keep = [i for i in range(3) if i != drop]
        data = (img.as_tensor() if isinstance(img, MetaTensor) else img).squeeze(drop + 1)
        meta = _meta_of(img)
        updates: dict[str, Any] = {"spatial_shape": np.asarray([spatial[i] for i in keep])}
        if "affine" in meta:
            updates["affine"] = planar_affine(meta["affine"], keep)
        return _with_data(img, data, **updates)
    extra = ""
    if img.ndim == 4 and spatial[-1] == 3:
        extra = " (if its last axis holds RGB colours, store the file as (X, Y, 1, 3) so that it is read as channels)"
    raise _volume_error(key, filename, spatial, extra)


def _has_alpha(img: torch.Tensor) -> bool:
    mode = _meta_of(img).get("mode")
    return isinstance(mode, str) and mode in _ALPHA_MODES and img.shape[0] in (2, 4)


def _label_to_one_channel(img: torch.Tensor, key: Hashable, filename: str) -> torch.Tensor:
    """One channel from a label map: alpha dropped, identical gray copies (RGB masks) reduced to one."""
    c = img.shape[0]
    if c == 1:
        return img
    data = img.as_tensor() if isinstance(img, MetaTensor) else img
    if _has_alpha(img):
        data = data[:-1]
    if data.shape[0] > 1 and not bool((data == data[:1]).all()):
        raise InvalidCaseError(
            f"'{key}' of {filename} has {data.shape[0]} different channels (shape {tuple(img.shape)}): a colour-"
            "coded mask? Labels must be class-index maps: one channel, or identical gray copies in RGB",
            "convert the colours to class indices (one value per class) before training",
            filename,
        )
    return _with_data(img, data[:1].clone(), mode="L")


def _to_channels(img: torch.Tensor, num_channels: int, key: Hashable, filename: str) -> torch.Tensor:
    c = img.shape[0]
    if c == num_channels:
        return img
    data = img.as_tensor() if isinstance(img, MetaTensor) else img
    if _has_alpha(img):
        data = data[:-1]
        c -= 1
    if c == num_channels:
        return _with_data(img, data.clone(), mode="RGB" if c == 3 else "L")
    if c == 1 and num_channels == 3:
        return _with_data(img, data.repeat(3, *([1] * (data.ndim - 1))), mode="RGB")
    if c == 3 and num_channels == 1:
        w = torch.as_tensor(_LUMA, dtype=data.dtype if data.is_floating_point() else torch.float32)
        luma = (data.to(w.dtype) * w.view(3, *([1] * (data.ndim - 1)))).sum(0, keepdim=True)
        return _with_data(img, luma.to(data.dtype) if data.is_floating_point() else luma, mode="L")
    mode = _meta_of(img).get("mode")
    found = f"{img.shape[0]} channel(s) (shape {tuple(img.shape)}" + (f", PIL mode {mode!r})" if mode else ")")
    raise InvalidCaseError(
        f"'{key}' of {filename} has {found}; the network takes {num_channels}. Only gray (1), RGB (3) and gray or "
        "RGB with an alpha channel (LA, RGBA: the alpha is dropped) are converted",
        "select the channels you want in the preprocessing, or set the network's `in_channels`",
        filename,
    )


# ----------------------------------------------------------------------------------------------------------------
# transforms


class LoadImage2Dd(MapTransform):
    """Load 2D images and label maps from PNG, JPEG, BMP, TIFF, NIfTI (2D, or 3D with one singleton axis) and
    single-frame DICOM into channel-first MetaTensors of shape (C, X, Y), the x (column) axis first as every
    MONAI reader gives it, with a 3x3 in-plane affine holding the file's pixel spacing (see the module notes).

    Format-specific work done here, beyond ``LoadImaged(ensure_channel_first=True)``: TIFF read with
    ``PILReader``; EXIF orientation applied; palette images to RGB (labels keep the palette indices); a
    singleton NIfTI axis squeezed; DICOM RGB read as 3 channels, MONOCHROME1 inverted, ultrasound spacing taken
    from SequenceOfUltrasoundRegions when PixelSpacing is absent; volumes and multi-frame DICOM rejected with a
    ValueError naming the file. Read errors name the file (:class:`~mamba_monai.data.ImageReadError`).

    A list of paths under a label key (BUSI's ``x_mask.png`` + ``x_mask_1.png``, as
    :func:`~mamba_monai.data.datalist_from_image_label_folders` lists them) is merged into one mask by the
    pixel-wise maximum (the union of the lesions; where class-index masks overlap the larger index wins). A
    list under an image key is stacked as channels (all parts must have the same size).

    Channel count and label values are left to :class:`EnsureChannelsd` and :class:`RemapLabelsd`.

    Args:
        keys: keys of the items to load, e.g. ``["image", "label"]``.
        label_keys: those of ``keys`` that hold label maps. Default ``"label"``.
        dtype: data type of the loaded arrays. Default ``np.float32``.
        allow_missing_keys: don't raise when a key is absent. Default False.
    """

    def __init__(
        self,
        keys: KeysCollection,
        label_keys: KeysCollection = "label",
        dtype: Any = np.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.label_keys = {label_keys} if isinstance(label_keys, (str, int)) else set(label_keys or ())
        with _quiet_dicom_plugin():
            self._loader = LoadImage(image_only=True, ensure_channel_first=True, dtype=dtype)
        self._pil_image = PILReader(converter=_pil_image_converter)
        self._pil_label = PILReader(converter=_pil_label_converter)
        self._nifti = NibabelReader()
        self._dicom = PydicomReader() if has_pydicom else None
        self._dicom_rgb = PydicomReader(channel_dim=-1) if has_pydicom else None

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            value = d[key]
            is_label = key in self.label_keys
            paths = [os.fspath(p) for p in value] if isinstance(value, (list, tuple)) else [os.fspath(value)]
            if not paths:
                raise ValueError(f"'{key}' is an empty list of files.")
            parts = [self._load_one(p, key, is_label) for p in paths]
            if len(parts) == 1:
                d[key] = parts[0]
                continue
            shapes = {tuple(p.shape[1:]) for p in parts}
            if len(shapes) > 1:
                listed = ", ".join(f"'{p}' {tuple(x.shape[1:])}" for p, x in zip(paths, parts))
                raise ValueError(f"The files of '{key}' differ in size and cannot be combined: {listed}.")
            if is_label:
                merged = torch.stack([_label_to_one_channel(p, key, f) for p, f in zip(parts, paths)]).amax(0)
                d[key] = _with_data(parts[0], merged.as_tensor() if isinstance(merged, MetaTensor) else merged)
            else:
                stacked = torch.cat([p.as_tensor() if isinstance(p, MetaTensor) else p for p in parts])
                d[key] = _with_data(parts[0], stacked)
        return d

    def _load_one(self, path: str, key: Hashable, is_label: bool) -> torch.Tensor:
        path = os.path.expanduser(path)
        if not os.path.isfile(path):
            if os.path.isdir(path):
                raise InvalidCaseError(
                    f"'{key}' path '{path}' is a folder (a DICOM series?); the 2D bundle takes one file per image",
                    "use bundles/emnet_seg3d for volumes",
                    path,
                )
            raise FileNotFoundError(f"'{key}' file '{path}' does not exist.")
        suffix = _suffix(path)
        dicom = None
        if suffix in _PIL_SUFFIXES:
            reader = self._pil_label if is_label else self._pil_image
        elif suffix in _NIFTI_SUFFIXES:
            reader = self._nifti
        elif is_dicom_file(path):
            if self._dicom is None:
                raise ImportError(f"Reading the DICOM file '{path}' needs pydicom: `pip install pydicom`.")
            dicom = self._dicom_header(path, key)
            reader = self._dicom_rgb if dicom["samples"] > 1 else self._dicom
        else:
            reader = None  # MONAI's own choice (e.g. .npy, .nrrd)
        try:
            with warnings.catch_warnings():
                if dicom is not None and not dicom["oriented"]:  # the affine is rebuilt from the spacing below
                    warnings.filterwarnings("ignore", message=".*ImageOrientationPatient.*")
                img = self._loader(path, reader)
        except Exception as err:
            raise ImageReadError(
                f"Cannot read '{key}' from '{path}': {type(err).__name__}: {err}",
                "the file may be truncated, corrupt or of an unsupported format (2D inputs: PNG, JPEG, BMP, TIFF, "
                "NIfTI, single-frame DICOM): re-export it",
                path,
            ) from err
        if dicom is not None:
            img = self._fix_dicom(img, dicom)
            if not is_label and isinstance(img, MetaTensor):
                img.meta["dicom_files"] = os.path.abspath(path)  # for a DICOM SEG writer (SaveDicomSegd)
        problem = nifti_header_problem(path)  # MONAI's reader would put an identity in place of a singular affine
        if problem is not None:
            raise InvalidCaseError(f"'{key}' of {path} has {problem} in its header", AFFINE_FIX, path)
        img = _as_2d(img, key, path)
        meta = _meta_of(img)
        if "affine" in meta and tuple(meta["affine"].shape) != (3, 3):
            img = _with_data(img, img.as_tensor(), affine=planar_affine(meta["affine"], (0, 1)))
        return img

    @staticmethod
    def _dicom_header(path: str, key: Hashable) -> dict:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except Exception as err:
            raise ImageReadError(
                f"Cannot read the DICOM header of '{key}' from '{path}': {err}", "re-export the DICOM file", path
            ) from err
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
        if frames > 1:
            raise _volume_error(
                key, path, (int(ds.Columns), int(ds.Rows), frames), f" (a multi-frame DICOM with {frames} frames)"
            )
        spacing = None
        for tag in ("PixelSpacing", "ImagerPixelSpacing"):
            value = getattr(ds, tag, None)
            if value is not None and len(value) == 2:
                spacing = (float(value[1]), float(value[0]))  # (x = column spacing, y = row spacing)
                break
        if spacing is None:
            for region in getattr(ds, "SequenceOfUltrasoundRegions", None) or []:
                # the first region measured in cm (PhysicalUnits 3) in both directions: the B-mode image
                units = tuple(getattr(region, f"PhysicalUnits{a}Direction", None) for a in "XY")
                if units == (3, 3):
                    spacing = (10.0 * float(region.PhysicalDeltaX), 10.0 * float(region.PhysicalDeltaY))
                    break
        bits = int(getattr(ds, "BitsStored", 8) or 8)
        signed = int(getattr(ds, "PixelRepresentation", 0) or 0) == 1
        stored = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
        intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
        return {
            "samples": int(getattr(ds, "SamplesPerPixel", 1) or 1),
            "photometric": str(getattr(ds, "PhotometricInterpretation", "")).upper(),
            "oriented": "ImageOrientationPatient" in ds and "PixelSpacing" in ds,
            "spacing": spacing,
            "range": (stored[0] * slope + intercept, stored[1] * slope + intercept),
        }

    @staticmethod
    def _fix_dicom(img: torch.Tensor, info: dict) -> torch.Tensor:
        updates: dict[str, Any] = {}
        data = img.as_tensor() if isinstance(img, MetaTensor) else img
        if info["photometric"] == "MONOCHROME1":  # 0 is white: invert over the stored range
            lo, hi = info["range"]
            data = (lo + hi) - data
            updates["photometric_interpretation"] = "MONOCHROME1 (inverted)"
        if not info["oriented"] and data.ndim == 3:
            spacing = info["spacing"] or (1.0, 1.0)
            updates["affine"] = planar_affine(np.eye(3), (0, 1), spacing)
        return _with_data(img, data, **updates) if updates else img


class EnsureChannelsd(MapTransform):
    """Give 2D images exactly ``num_channels`` channels, or make label maps one channel.

    Expects channel-first images (C, X, Y), e.g. from :class:`LoadImage2Dd` or ``LoadImaged(...,
    ensure_channel_first=True)``; a (C, X, Y, 1) image (a 2D NIfTI export) is squeezed to (C, X, Y), a real
    volume raises a ValueError naming the file ("is a 3D volume of shape ...; the 2D bundle takes 2D images").

    Images: gray -> RGB by repeating the channel; RGB -> gray by the ITU-R BT.601 luminance
    0.299 R + 0.587 G + 0.114 B (what PIL's ``convert("L")`` computes); the alpha channel of RGBA / LA images
    (known from the PIL mode in the metadata) is dropped, not composited. Any other channel count (a 4-channel
    image that is not RGBA, a 2-channel NIfTI) raises a ValueError naming the file, the shape and what is
    converted.

    Labels (``label=True``): one channel out; RGB(A) masks whose colour channels are identical copies (the usual
    "RGB" binary mask) are reduced to one channel; a colour-coded mask (channels that differ) raises.

    Args:
        keys: keys of the images (or label maps) to convert.
        num_channels: channels out: the network's ``in_channels`` (1 or 3 usually). Default 1.
        label: the keys hold label maps (see above); ``num_channels`` must then be 1. Default False.
        allow_missing_keys: don't raise when a key is absent. Default False.
    """

    def __init__(
        self, keys: KeysCollection, num_channels: int = 1, label: bool = False, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if not isinstance(num_channels, (int, np.integer)) or isinstance(num_channels, bool) or num_channels < 1:
            raise ValueError(f"`num_channels` must be a positive int, got {num_channels!r}.")
        if label and num_channels != 1:
            raise ValueError(
                f"Label maps have one channel: with `label=True`, `num_channels` must be 1, got {num_channels}."
            )
        self.num_channels = int(num_channels)
        self.label = bool(label)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            filename = source_filename(d, key)
            img = d[key] if isinstance(d[key], torch.Tensor) else torch.as_tensor(np.asarray(d[key]))
            img = _as_2d(img, key, filename)
            if self.label:
                d[key] = _label_to_one_channel(img, key, filename)
            else:
                d[key] = _to_channels(img, self.num_channels, key, filename)
        return d


class RemapLabelsd(MapTransform):
    """Map the values stored in label files to class indices, and raise on any value the mapping lacks.

    The mapping is the one place where a data set's label coding is set: ``{0: 0, 255: 1}`` for 0/255 binary
    masks (ISIC, BUSI, Kvasir), ``{0: 0, 128: 1, 255: 2}`` for a three-level PNG, ``{0: 0, 1: 1, 2: 2}`` for
    class-index maps (the demo data). MONAI's ``MapLabelValued`` leaves unmapped values as they are, so a stray
    value (an anti-aliased edge, a JPEG artefact, a forgotten class) would reach the loss silently; here it
    raises a ValueError that names the file, each unmapped value with its pixel count, and the mapping.

    Args:
        keys: keys of the label maps.
        mapping: file value -> class index. JSON keys are strings: ``{"0": 0, "255": 1}`` works as well.
        tolerance: a value within ``tolerance`` of a mapping key is mapped as that key (the nearest one): for
            masks stored lossily (JPEG masks, e.g. Kvasir-SEG's, hold values such as 3 or 251), e.g. 100 with
            ``{0: 0, 255: 1}``. Default 0: exact values only.
        allow_missing_keys: don't raise when a key is absent. Default False.
    """

    def __init__(
        self,
        keys: KeysCollection,
        mapping: Mapping[Any, int],
        tolerance: float = 0.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if not isinstance(mapping, Mapping) or not mapping:
            raise ValueError(f"`mapping` must be a non-empty dict of file value -> class index, got {mapping!r}.")
        items = []
        for k, v in mapping.items():
            try:
                src = float(k)
            except (TypeError, ValueError):
                raise ValueError(f"`mapping` keys must be numbers (or numeric strings), got {k!r}.") from None
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 0:
                raise ValueError(f"`mapping` values must be class indices (ints >= 0), got {k!r}: {v!r}.")
            items.append((src, int(v)))
        if not tolerance >= 0:
            raise ValueError(f"`tolerance` must be >= 0, got {tolerance!r}.")
        self.mapping = dict(sorted(items))
        self.tolerance = float(tolerance)
        self._src = np.asarray(list(self.mapping), dtype=np.float64)
        self._dst = np.asarray(list(self.mapping.values()), dtype=np.int64)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key] if isinstance(d[key], torch.Tensor) else torch.as_tensor(np.asarray(d[key]))
            raw = img.as_tensor() if isinstance(img, MetaTensor) else img
            values, inverse, counts = torch.unique(raw, return_inverse=True, return_counts=True)
            v = values.double().cpu().numpy()
            dist = np.abs(v[:, None] - self._src[None, :])
            nearest = dist.argmin(axis=1)
            ok = dist[np.arange(v.size), nearest] <= self.tolerance
            if not ok.all():
                bad, bad_counts = v[~ok], counts.cpu().numpy()[~ok]
                listed = ", ".join(f"{x:g} ({c} pixels)" for x, c in zip(bad[:_MAX_LISTED], bad_counts))
                more = f" and {bad.size - _MAX_LISTED} more" if bad.size > _MAX_LISTED else ""
                shown = "{" + ", ".join(f"{k:g}: {t}" for k, t in self.mapping.items()) + "}"
                hint = " (a lossy JPEG mask? set `tolerance`)" if bad.size > 2 else ""
                raise InvalidCaseError(
                    f"'{key}' of {source_filename(d, key)} has value(s) {listed}{more} that the label mapping {shown} "
                    f"does not cover{hint}",
                    "add them to the mapping (the bundle's `label_mapping`) with their class",
                    source_filename(d, key),
                )
            table = torch.as_tensor(self._dst[nearest], device=raw.device)
            out = table[inverse].to(raw.dtype if raw.is_floating_point() else torch.int64)
            d[key] = convert_to_dst_type(out, dst=img, dtype=out.dtype)[0] if isinstance(img, MetaTensor) else out
        return d


# ----------------------------------------------------------------------------------------------------------------
# writing


def write_image_2d(array: np.ndarray, path: str | os.PathLike, quality: int = 95) -> str:
    """Write a row-major 2D image (PNG, JPEG, BMP or TIFF by the suffix of ``path``) atomically, with PIL.

    Args:
        array: (H, W) gray, (H, W, 3) RGB or (H, W, 4) RGBA; uint8, or uint16 gray for PNG/TIFF. Row-major as
            images are stored: MONAI's ``PILReader`` loads it as (C, W, H).
        path: destination; the suffix picks the format.
        quality: JPEG quality. Default 95.

    Returns:
        ``path`` as a string.
    """
    path = os.fspath(path)
    suffix = _suffix(path)
    if suffix not in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"):
        raise ValueError(f"`path` must end with .png, .jpg, .jpeg, .bmp, .tif or .tiff, got {path!r}.")
    array = np.asarray(array)
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ValueError(f"`array` must be (H, W), (H, W, 3) or (H, W, 4), got shape {array.shape}.")
    if array.dtype not in (np.uint8, np.uint16) or (array.dtype == np.uint16 and array.ndim != 2):
        raise ValueError(f"`array` must be uint8 (or uint16 gray), got {array.dtype} of shape {array.shape}.")
    if array.dtype == np.uint16 and suffix not in (".png", ".tif", ".tiff"):
        raise ValueError(f"16-bit images can be written as PNG or TIFF only, got {path!r}.")
    img = PILImage.fromarray(array)
    options: dict[str, Any] = {"format": {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}.get(
        suffix, suffix[1:].upper()
    )}
    if options["format"] == "JPEG":
        options["quality"] = int(quality)
    tmp = _temp_path_beside(path, suffix)
    try:
        img.save(tmp, **options)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
