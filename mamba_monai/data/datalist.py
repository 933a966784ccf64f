"""Decathlon-style datalists: writing them, building them from folders, and loading them with clear errors."""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Sequence
from typing import Any

from monai.data import load_decathlon_datalist

from mamba_monai.data.nifti import atomic_write_text

__all__ = ["write_datalist", "datalist_from_folder", "load_datalist", "missing_files"]

_PATH_KEYS = ("image", "label")
_MAX_LISTED = 5


def write_datalist(
    path: str | os.PathLike,
    training: Sequence[dict] | None = None,
    validation: Sequence[dict] | None = None,
    test: Sequence[dict | str] | None = None,
    **extra: Any,
) -> str:
    """Write a Medical Segmentation Decathlon style datalist JSON (indent 4), atomically.

    Only the lists that are given are written. Paths are written as given: relative paths are resolved later
    against the datalist's folder (or ``base_dir``) by :func:`load_datalist` / MONAI's
    ``load_decathlon_datalist``.

    Args:
        path: destination JSON file.
        training: items such as ``{"image": "imagesTr/x.nii.gz", "label": "labelsTr/x.nii.gz"}``. Default None.
        validation: items in the same form as ``training``. Default None.
        test: items ``{"image": ...}`` or bare image paths (the Decathlon form). Default None.
        extra: further top-level keys, e.g. ``name``, ``description``, ``modality``, ``labels``,
            ``tensorImageSize``, or other lists (``numTraining`` / ``numTest`` are filled in when absent).

    Returns:
        ``path`` as a string.
    """
    # metadata first, then the lists, as in the Decathlon files
    data: dict[str, Any] = {k: v for k, v in extra.items() if not isinstance(v, (list, tuple))}
    for key, items in (("training", training), ("validation", validation), ("test", test)):
        if items is None:
            continue
        items = list(items)
        for i, item in enumerate(items):
            if not isinstance(item, (dict, str)):
                raise TypeError(
                    f"`{key}` items must be dicts (or image paths for `test`), got {type(item).__name__} at {i}."
                )
            if isinstance(item, str) and key != "test":
                raise TypeError(
                    f"`{key}` items must be dicts with 'image' (and 'label'), got the string {item!r} at {i}."
                )
        data[key] = items
    data.update((k, list(v)) for k, v in extra.items() if isinstance(v, (list, tuple)))
    if training is not None:
        data.setdefault("numTraining", len(data["training"]))
    if test is not None:
        data.setdefault("numTest", len(data["test"]))
    return atomic_write_text(json.dumps(data, indent=4) + "\n", path)


def _nifti_stem(name: str) -> str:
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return os.path.splitext(name)[0]


def datalist_from_folder(
    image_dir: str | os.PathLike, pattern: str = "*.nii.gz", label_dir: str | os.PathLike | None = None
) -> list[dict]:
    """List every file of ``image_dir`` matching ``pattern`` as ``{"image": path}``, sorted by name.

    When ``label_dir`` is given, an item gets ``"label"`` if ``label_dir`` holds a file of the same name (or,
    failing that, the same stem with another NIfTI suffix: ``x.nii`` for ``x.nii.gz``). Hidden files (such as
    the temporary files of an interrupted write) are skipped. Paths are absolute.

    Args:
        image_dir: folder of images, e.g. ``<dataset>/imagesTs``.
        pattern: ``fnmatch`` pattern of the file names to take. Default ``"*.nii.gz"``.
        label_dir: optional folder of labels with the same file names, e.g. ``<dataset>/labelsTs``.

    Raises:
        FileNotFoundError: when ``image_dir`` does not exist or nothing in it matches ``pattern``.
    """
    image_dir = os.path.abspath(os.fspath(image_dir))
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"Image folder '{image_dir}' does not exist (looking for '{pattern}').")
    names = sorted(
        n
        for n in os.listdir(image_dir)
        if not n.startswith(".") and fnmatch.fnmatch(n, pattern) and os.path.isfile(os.path.join(image_dir, n))
    )
    if not names:
        raise FileNotFoundError(
            f"No file matching '{pattern}' in folder '{image_dir}'; check the folder and the pattern "
            "(e.g. '*.nii.gz', '*.nii', '*.png')."
        )
    labels: dict[str, str] = {}
    if label_dir is not None:
        label_dir = os.path.abspath(os.fspath(label_dir))
        if not os.path.isdir(label_dir):
            raise FileNotFoundError(f"Label folder '{label_dir}' does not exist.")
        for n in sorted(os.listdir(label_dir)):
            if not n.startswith(".") and os.path.isfile(os.path.join(label_dir, n)):
                labels.setdefault(n, n)
                labels.setdefault(_nifti_stem(n), n)
    items = []
    for n in names:
        item = {"image": os.path.join(image_dir, n)}
        match = labels.get(n) or labels.get(_nifti_stem(n))
        if match is not None:
            item["label"] = os.path.join(os.fspath(label_dir), match)  # type: ignore[arg-type]
        items.append(item)
    return items


def _paths_of(value: Any) -> list[str]:
    if isinstance(value, (str, os.PathLike)):
        return [os.fspath(value)]
    if isinstance(value, (list, tuple)):
        return [os.fspath(v) for v in value if isinstance(v, (str, os.PathLike))]
    return []


def missing_files(items: Sequence[dict], keys: Sequence[str] = _PATH_KEYS) -> list[str]:
    """The paths under ``keys`` (a path or a list of paths per key) of ``items`` that are not existing files."""
    missing = []
    for item in items:
        for key in keys:
            if key in item:
                missing.extend(p for p in _paths_of(item[key]) if not os.path.isfile(p))
    return missing


def load_datalist(
    datalist_path: str | os.PathLike, key: str = "training", base_dir: str | os.PathLike | None = None
) -> list[dict]:
    """Load one list of a Decathlon datalist with MONAI's ``load_decathlon_datalist`` and check its files exist.

    Args:
        datalist_path: the datalist JSON file.
        key: the list to read, e.g. ``"training"``, ``"validation"``, ``"test"``. Default ``"training"``.
        base_dir: folder that relative paths are resolved against. Default: the datalist's folder.

    Returns:
        the items, with ``image``/``label`` paths resolved (absolute when ``base_dir`` or the datalist path is).

    Raises:
        FileNotFoundError: when the datalist is missing, or when files it lists are missing (the first few are
            named, with the count).
        ValueError: when ``key`` is not a list in the datalist (the available lists are named).
    """
    datalist_path = os.fspath(datalist_path)
    if not os.path.isfile(datalist_path):
        raise FileNotFoundError(
            f"Datalist '{datalist_path}' does not exist; check the `dataset_dir` / `datalist` overrides."
        )
    with open(datalist_path, encoding="utf-8") as f:
        try:
            content = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"Datalist '{datalist_path}' is not valid JSON: {err}.") from err
    lists = sorted(k for k, v in content.items() if isinstance(v, list))
    if key not in content or not isinstance(content[key], list):
        raise ValueError(f"Datalist '{datalist_path}' has no list '{key}'; its lists are {lists}.")
    if not content[key]:
        return []
    items = load_decathlon_datalist(datalist_path, is_segmentation=True, data_list_key=key, base_dir=base_dir)
    missing = missing_files(items)
    if missing:
        shown = ", ".join(f"'{p}'" for p in missing[:_MAX_LISTED])
        more = f" and {len(missing) - _MAX_LISTED} more" if len(missing) > _MAX_LISTED else ""
        resolved = os.fspath(base_dir) if base_dir is not None else os.path.dirname(os.path.abspath(datalist_path))
        raise FileNotFoundError(
            f"{len(missing)} file(s) listed under '{key}' in datalist '{datalist_path}' do not exist: {shown}{more} "
            f"(relative paths are resolved against '{resolved}'); check the `dataset_dir` / `datalist` overrides."
        )
    return items
