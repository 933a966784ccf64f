"""Where a bundle's outputs go: never into the user's data folder, never over another input's output.

- :class:`UniqueNameFormatter`: an ``output_name_formatter`` for MONAI's ``SaveImage``/``SaveImaged``. It reads
  the mapping file that MONAI's ``WriteFileMappingd`` keeps (input -> output, one entry per written file) and,
  when the usual output name is taken by the output of ANOTHER input (two ``case1.nii.gz`` in different folders,
  or an earlier run on other data), writes ``<name>_<n>`` instead and says so. Re-running on the same input
  overwrites its own output, as expected.
- :class:`SaveLikeInputd`: MONAI's ``SaveImaged`` with the output format chosen per case from the input's (a
  PNG/JPEG/TIFF image gets a PNG label map, a NIfTI or DICOM input a NIfTI with its geometry).
- :func:`check_output_dir`: refuse an ``output_dir`` inside the data folder.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data.folder_layout import default_name_formatter
from monai.transforms import MapTransform, SaveImaged
from monai.utils import ImageMetaKey

from mamba_monai.data.validation import source_filename

__all__ = ["SaveLikeInputd", "UniqueNameFormatter", "check_output_dir", "output_ext_like"]

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

logger = logging.getLogger(__name__)


def _norm(path: Any) -> str:
    return os.path.normcase(os.path.abspath(os.fspath(path)))


class UniqueNameFormatter:
    """
    ``output_name_formatter`` for ``SaveImage(d)`` that never overwrites the output of another input.

    Use it with ``savepath_in_metadict=True`` on the saver and MONAI's ``WriteFileMappingd`` right after it,
    both pointing at the same ``mapping_file``::

        {"_target_": "SaveImaged", ..., "savepath_in_metadict": true,
         "output_name_formatter": "$mamba_monai.data.UniqueNameFormatter(@output_dir + '/mapping.json')"},
        {"_target_": "WriteFileMappingd", "keys": "pred", "mapping_file_path": "$@output_dir + '/mapping.json'"}

    Args:
        mapping_file: the JSON file of ``{"input": ..., "output": ...}`` entries written by ``WriteFileMappingd``.
            An existing output with no entry there (written by something else) is never overwritten either.
    """

    def __init__(self, mapping_file: str | os.PathLike) -> None:
        self.mapping_file = os.fspath(mapping_file)

    def _owners(self) -> dict[str, str]:
        """output -> input of the latest entry for each output in the mapping file."""
        try:
            with open(self.mapping_file, encoding="utf-8") as f:
                entries = json.load(f)
        except (OSError, ValueError):
            return {}
        return {_norm(e["output"]): _norm(e["input"]) for e in entries if isinstance(e, dict) and "output" in e}

    def __call__(self, metadict: dict, saver: Any) -> dict:
        kwargs = default_name_formatter(metadict, saver)
        source = (metadict or {}).get(ImageMetaKey.FILENAME_OR_OBJ)
        first = saver.folder_layout.filename(**kwargs)
        if not os.path.exists(first):
            return kwargs
        owners = self._owners()
        if source is not None and owners.get(_norm(first)) == _norm(source):
            return kwargs  # a re-run on the same input refreshes its own output
        base_idx = kwargs.get("idx")
        n = 2
        while True:
            candidate = dict(kwargs, idx=str(n) if base_idx is None else f"{base_idx}-{n}")
            path = saver.folder_layout.filename(**candidate)
            owner = owners.get(_norm(path))
            if not os.path.exists(path) or (source is not None and owner == _norm(source)):
                break
            n += 1
        previous = owners.get(_norm(first), "another run or program (not in the mapping file)")
        logger.warning(
            "Output name %s is taken by the output of %s; writing the output of %s to %s instead (see %s).",
            first, previous, source, path, self.mapping_file,
        )
        return candidate


def output_ext_like(source: str, image_ext: str = ".png", default_ext: str = ".nii.gz") -> str:
    """The output extension for a prediction of ``source``: ``image_ext`` for PNG/JPEG/BMP/TIFF inputs (formats
    without geometry), ``default_ext`` (NIfTI, which keeps the affine) for everything else (NIfTI, DICOM...)."""
    return image_ext if os.fspath(source).lower().endswith(_IMAGE_SUFFIXES) else default_ext


class SaveLikeInputd(MapTransform):
    """
    MONAI's ``SaveImaged`` whose output format follows each case's input (:func:`output_ext_like`): a label map
    for a PNG/JPEG/TIFF image is written as PNG, for a NIfTI or DICOM input as NIfTI with the
    input's affine. One ``SaveImaged`` per format is built on first use with the same arguments.

    Args:
        keys: keys of the images to save.
        image_ext: extension for inputs that are plain images. Default ``".png"``.
        default_ext: extension for every other input. Default ``".nii.gz"``.
        allow_missing_keys: don't raise when a key is absent. Default False.
        save_kwargs: the other ``SaveImaged`` arguments (``output_dir``, ``output_postfix``, ``output_dtype``,
            ``resample``, ``separate_folder``, ``output_name_formatter``, ``savepath_in_metadict``...).
    """

    def __init__(
        self,
        keys: KeysCollection,
        image_ext: str = ".png",
        default_ext: str = ".nii.gz",
        allow_missing_keys: bool = False,
        **save_kwargs: Any,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if "output_ext" in save_kwargs or "output_format" in save_kwargs:
            raise ValueError("SaveLikeInputd picks the format per case: use `image_ext` / `default_ext`.")
        self.image_ext, self.default_ext = image_ext, default_ext
        self.save_kwargs = save_kwargs
        self._savers: dict[tuple[Any, str], SaveImaged] = {}

    def _saver(self, key: Any, ext: str) -> SaveImaged:
        if (key, ext) not in self._savers:
            self._savers[(key, ext)] = SaveImaged(key, output_ext=ext, **self.save_kwargs)
        return self._savers[(key, ext)]

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            ext = output_ext_like(source_filename(d, key), self.image_ext, self.default_ext)
            if ext in (".nii", ".nii.gz"):
                d[key] = _with_file_affine(d[key])
            d = self._saver(key, ext)(d)
        return d


def _with_file_affine(img: Any) -> Any:
    """A 2D prediction back on its input's grid carries the 3x3 in-plane affine that
    :class:`~mamba_monai.data.LoadImage2Dd` works with; written as NIfTI it gets the file's own 4x4 affine back
    (the slice's position and orientation in the world), which the in-plane affine was cut from."""
    meta = getattr(img, "meta", None)
    if not isinstance(meta, dict) or img.ndim != 3:
        return img
    original, affine = meta.get("original_affine"), meta.get("affine")
    if original is None or affine is None or tuple(np.shape(original)) != (4, 4) or tuple(np.shape(affine)) != (3, 3):
        return img
    from mamba_monai.data.image2d import planar_affine

    if not np.allclose(np.asarray(planar_affine(original, (0, 1))), np.asarray(affine), atol=1e-4):
        return img  # the in-plane grid changed: keep what the pipeline says
    out = img.clone()
    out.affine = torch.as_tensor(np.asarray(original), dtype=torch.float64)
    return out


def _inside(path: str, folder: str) -> bool:
    path, folder = _norm(path), _norm(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_output_dir(output_dir: str | os.PathLike, *data_dirs: str | os.PathLike | None) -> str:
    """
    Raise a ``ValueError`` when ``output_dir`` is one of ``data_dirs`` or inside one of them: a bundle never
    writes into the user's data folder. Returns ``output_dir`` so that a config can use it in place.
    """
    for data_dir in data_dirs:
        if data_dir and _inside(os.fspath(output_dir), os.fspath(data_dir)):
            raise ValueError(
                f"`output_dir` {os.fspath(output_dir)!r} is inside the data folder {os.fspath(data_dir)!r}: "
                "bundles never write into the data folder. Pass `--output_dir` pointing elsewhere."
            )
    return os.fspath(output_dir)
