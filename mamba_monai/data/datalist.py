"""Decathlon-style datalists: writing them, building them from folders, and loading them with clear errors."""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
from collections.abc import Sequence
from typing import Any

from monai.data import load_decathlon_datalist

from mamba_monai.data.nifti import atomic_write_text

__all__ = [
    "segmentation_lists",
    "write_datalist",
    "datalist_from_folder",
    "datalist_from_image_label_folders",
    "load_datalist",
    "missing_files",
]

logger = logging.getLogger(__name__)

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


# 2D image/label folders -------------------------------------------------------------------------------------------

# image folder -> label folder names of common layouts, tried in this order inside `image_dir`
_FOLDER_PAIRS = (
    ("imagesTr", "labelsTr"), ("images", "masks"), ("images", "labels"), ("image", "mask"), ("img", "mask")
)
# "<stem><sep><tag>[_<n>]": ISIC's "_segmentation", BUSI's "_mask" / "_mask_1", and other usual label suffixes
_LABEL_NAME = re.compile(
    r"^(?P<base>.+?)(?P<tag>[_\-. ](?:mask|segmentation|seg|label|labels|gt|groundtruth|annotation|anno))"
    r"(?:_(?P<n>\d+))?$",
    re.IGNORECASE,
)
_IGNORED_NAME = re.compile(r"_superpixels$", re.IGNORECASE)  # ISIC 2017 inputs ship superpixel maps beside images


def _natural_key(path: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path)]


def _split_suffix(name: str, suffixes: Sequence[str]) -> tuple[str, str] | None:
    low = name.lower()
    for s in sorted(suffixes, key=len, reverse=True):
        if low.endswith(s):
            return name[: -len(s)], s
    return None


def _list_2d_files(folder: str, recursive: bool, suffixes: Sequence[str]) -> dict[str, list[str]]:
    """Relative sub-folder -> file names with an image suffix (hidden files skipped)."""
    out: dict[str, list[str]] = {}
    walker = os.walk(folder) if recursive else [(folder, [], os.listdir(folder))]
    for root, dirs, names in walker:
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel = os.path.relpath(root, folder)
        keep = [
            n for n in names
            if not n.startswith(".") and _split_suffix(n, suffixes) and os.path.isfile(os.path.join(root, n))
        ]
        if keep:
            out["" if rel == "." else rel] = sorted(keep)
    return out


def _shown(paths: Sequence[str]) -> str:
    listed = ", ".join(f"'{p}'" for p in list(paths)[:_MAX_LISTED])
    return listed + (f" and {len(paths) - _MAX_LISTED} more" if len(paths) > _MAX_LISTED else "")


def datalist_from_image_label_folders(
    image_dir: str | os.PathLike,
    label_dir: str | os.PathLike | None = None,
    missing_labels: str = "warn",
    recursive: bool = False,
) -> list[dict]:
    """Pair 2D images with their label masks by file name, for data sets that come as folders, not datalists.

    Reads PNG, JPEG, BMP, TIFF, GIF, WebP, NIfTI and ``.dcm`` files (hidden files and other files are skipped).
    An image ``<stem>.<ext>`` is paired with the label file of the same stem (any supported extension: image
    ``.jpg``, mask ``.png`` is fine) or with ``<stem><tag>`` where the tag is a usual mask suffix: ``_mask``,
    ``_segmentation``, ``_seg``, ``_label``, ``_gt``, ``_annotation`` (also with ``-``/``.``/space, any case).
    This covers, among others:

    - ISIC: ``ISIC_0000000.jpg`` with ``ISIC_0000000_segmentation.png`` (ISIC 2017's ``*_superpixels.png`` in
      the input folder are skipped);
    - BUSI: ``benign (1).png`` with ``benign (1)_mask.png`` in the same folder. BUSI gives a second (third...)
      lesion of an image as ``benign (1)_mask_1.png`` (``_mask_2``...): all of them are listed as one label,
      ``"label": [".._mask.png", ".._mask_1.png"]``, which :class:`~mamba_monai.data.LoadImage2Dd` merges into one
      mask (pixel-wise maximum). Pass ``recursive=True`` on the BUSI root to take benign/, malignant/ and normal/;
    - plain pairs: ``case1.png`` / ``case1.png``, ``x.nii.gz`` / ``x.nii.gz`` in separate folders.

    Where the labels are:

    - ``label_dir`` given: there (with ``recursive``, in the same relative sub-folder as the image);
    - else, when ``image_dir`` holds one of the usual folder pairs ``imagesTr/`` + ``labelsTr/``, ``images/`` +
      ``masks/``, ``images/`` + ``labels/``, ``image/`` + ``mask/``, ``img/`` + ``mask/``: that pair;
    - else in ``image_dir`` itself, beside the images (BUSI): a file there is a label when its name is another
      file's stem plus a mask tag.

    Args:
        image_dir: folder of images, or a data set folder with one of the folder pairs above.
        label_dir: folder of labels. Default None (see above).
        missing_labels: what to do with images that have no label: ``"warn"`` lists them without ``"label"``
            (inference) and logs one warning naming them; ``"skip"`` leaves them out, with the warning;
            ``"error"`` raises (training). Default ``"warn"``.
        recursive: walk the sub-folders of ``image_dir`` too. Default False.

    Returns:
        items ``{"image": path}`` or ``{"image": path, "label": path or [paths]}``, absolute paths, in natural
        order of the image paths (``benign (2)`` before ``benign (10)``); write them with
        :func:`write_datalist`.

    Raises:
        FileNotFoundError: a folder does not exist, or ``image_dir`` holds no image.
        ValueError: an ambiguous match (two label files for one image, such as ``x.png`` and ``x_mask.png``, or two
            images with one stem, such as ``x.png`` and ``x.jpg``), naming the files; or unlabelled images with
            ``missing_labels="error"``.
    """
    from mamba_monai.data.image2d import IMAGE_2D_SUFFIXES  # here: image2d imports this module's package

    if missing_labels not in ("warn", "skip", "error"):
        raise ValueError(f"`missing_labels` must be 'warn', 'skip' or 'error', got {missing_labels!r}.")
    image_dir = os.path.abspath(os.fspath(image_dir))
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"Image folder '{image_dir}' does not exist.")
    if label_dir is None:
        for img_sub, lab_sub in _FOLDER_PAIRS:
            if os.path.isdir(os.path.join(image_dir, img_sub)) and os.path.isdir(os.path.join(image_dir, lab_sub)):
                image_dir, label_dir = os.path.join(image_dir, img_sub), os.path.join(image_dir, lab_sub)
                break
    if label_dir is not None:
        label_dir = os.path.abspath(os.fspath(label_dir))
        if not os.path.isdir(label_dir):
            raise FileNotFoundError(f"Label folder '{label_dir}' does not exist.")
    same_folder = label_dir is None or os.path.samefile(label_dir, image_dir)
    image_files = _list_2d_files(image_dir, recursive, IMAGE_2D_SUFFIXES)
    label_files = image_files if same_folder else _list_2d_files(label_dir, recursive, IMAGE_2D_SUFFIXES)

    items: list[dict] = []
    unlabelled: list[str] = []
    used: set[str] = set()
    for rel in sorted(set(image_files) | set(label_files)):
        img_folder = os.path.join(image_dir, rel)
        lab_folder = img_folder if same_folder else os.path.join(label_dir, rel)  # type: ignore[arg-type]
        names = image_files.get(rel, [])
        stems = {n: _split_suffix(n, IMAGE_2D_SUFFIXES)[0] for n in names}  # type: ignore[index]
        # labels of this folder: stem -> names (plain pairs) and base -> [(tag, n, name)] (suffixed pairs)
        by_stem: dict[str, list[str]] = {}
        by_base: dict[str, list[tuple[str, int, str]]] = {}
        label_names = set()
        for n in label_files.get(rel, []):
            stem = _split_suffix(n, IMAGE_2D_SUFFIXES)[0]  # type: ignore[index]
            m = _LABEL_NAME.match(stem)
            if same_folder:
                if m is None or m.group("base") not in stems.values():
                    continue  # an image, not a label
                label_names.add(n)
            else:
                by_stem.setdefault(stem, []).append(n)
            if m is not None:
                by_base.setdefault(m.group("base"), []).append((m.group("tag").lower()[1:], int(m.group("n") or 0), n))
        images = [n for n in names if n not in label_names and not _IGNORED_NAME.search(stems[n])]
        seen: dict[str, str] = {}
        for n in images:
            if stems[n] in seen:
                raise ValueError(
                    f"Images '{os.path.join(img_folder, seen[stems[n]])}' and '{os.path.join(img_folder, n)}' share "
                    "the name stem: their labels and outputs cannot be told apart; keep one of them."
                )
            seen[stems[n]] = n
        for n in images:
            stem = stems[n]
            plain = [x for x in by_stem.get(stem, []) if not (same_folder and x == n)]
            groups: dict[str, dict[int, list[str]]] = {}
            for tag, idx, x in by_base.get(stem, []):
                groups.setdefault(tag, {}).setdefault(idx, []).append(x)
            candidates = [[x] for x in plain] + [sum((v for _, v in sorted(g.items())), []) for g in groups.values()]
            duplicates = [x for g in groups.values() for v in g.values() if len(v) > 1 for x in v]
            if len(candidates) > 1 or duplicates:
                found = sorted({x for c in candidates for x in c})
                raise ValueError(
                    f"Image '{os.path.join(img_folder, n)}' matches several label files in '{lab_folder}': "
                    f"{_shown(found)}; keep one label per image (several lesion masks may be numbered "
                    "'<stem>_mask.png', '<stem>_mask_1.png', ...)."
                )
            item: dict[str, Any] = {"image": os.path.join(img_folder, n)}
            if candidates:
                paths = [os.path.join(lab_folder, x) for x in candidates[0]]
                item["label"] = paths[0] if len(paths) == 1 else paths
                used.update(paths)
            else:
                unlabelled.append(item["image"])
            items.append(item)
        if not same_folder:
            orphans = [p for p in (os.path.join(lab_folder, x) for x in label_files.get(rel, [])) if p not in used]
            if orphans:
                logger.warning("%d label file(s) in '%s' match no image: %s", len(orphans), lab_folder, _shown(orphans))
    if not items:
        raise FileNotFoundError(
            f"No image in '{image_dir}'{' or its sub-folders' if recursive else ''} (looked for "
            f"{', '.join(IMAGE_2D_SUFFIXES)}); check the folder{'' if recursive else ', or pass recursive=True'}."
        )
    if unlabelled:
        where = f"'{label_dir}'" if label_dir is not None else f"'{image_dir}' (beside the images)"
        message = (
            f"{len(unlabelled)} of {len(items)} image(s) have no label in {where}: {_shown(unlabelled)}. Labels are "
            "matched by name: '<stem>.<ext>' or '<stem>_mask', '_segmentation', '_seg', '_label', '_gt'."
        )
        if missing_labels == "error":
            raise ValueError(message + " Add their labels, or drop them from the training images.")
        logger.warning("%s %s", message, "They are left out." if missing_labels == "skip" else "Listed without label.")
        if missing_labels == "skip":
            items = [i for i in items if "label" in i]
    return sorted(items, key=lambda i: _natural_key(i["image"]))


def segmentation_lists(
    dataset_dir: str | os.PathLike,
    keys: Sequence[str] = ("training", "validation"),
    datalist: str | os.PathLike | None = None,
    val_fraction: float = 0.2,
) -> dict[str, list[dict]]:
    """The image/label lists of a segmentation data set folder, whichever way it comes.

    - With a Decathlon datalist (``datalist``, or ``dataset_dir/dataset_0.json`` when it exists): its lists
      ``keys``, read with :func:`load_datalist` (missing files are left to the per-case checks).
    - Without one: the images and labels paired by file name (:func:`datalist_from_image_label_folders`:
      ``imagesTr/`` + ``labelsTr/``, ``images/`` + ``masks/``, the ISIC and BUSI conventions...), unlabelled
      images left out with a warning, split deterministically: every ``round(1 / val_fraction)``-th pair (in
      natural name order) is ``"validation"``, the rest ``"training"``. Other keys get an empty list.

    Args:
        dataset_dir: the data set folder.
        keys: the lists to return. Default ``("training", "validation")``.
        datalist: a datalist JSON; None looks for ``dataset_dir/dataset_0.json``. Default None.
        val_fraction: share of the pairs held out for validation when there is no datalist. Default 0.2.

    Returns:
        list name -> items ``{"image": path, "label": path}`` (absolute paths).
    """
    dataset_dir = os.fspath(dataset_dir)
    path = os.fspath(datalist) if datalist is not None else os.path.join(dataset_dir, "dataset_0.json")
    if os.path.isfile(path):
        return {key: load_datalist(path, key, base_dir=dataset_dir, check_files=False) for key in keys}
    if datalist is not None:
        raise FileNotFoundError(f"Datalist '{path}' does not exist; check the `datalist` override.")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"`val_fraction` must be in (0, 1), got {val_fraction!r}.")
    pairs = datalist_from_image_label_folders(dataset_dir, missing_labels="skip")
    every = max(2, round(1.0 / val_fraction))
    split = {
        "training": [p for i, p in enumerate(pairs) if i % every != every - 1],
        "validation": [p for i, p in enumerate(pairs) if i % every == every - 1],
    }
    logger.info(
        "no datalist in %s: %d image/label pairs found by file name, %d for training and %d for validation",
        dataset_dir, len(pairs), len(split["training"]), len(split["validation"]),
    )
    return {key: split.get(key, []) for key in keys}


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
    datalist_path: str | os.PathLike,
    key: str = "training",
    base_dir: str | os.PathLike | None = None,
    check_files: bool = True,
) -> list[dict]:
    """Load one list of a Decathlon datalist with MONAI's ``load_decathlon_datalist`` and check its files exist.

    Args:
        datalist_path: the datalist JSON file.
        key: the list to read, e.g. ``"training"``, ``"validation"``, ``"test"``. Default ``"training"``.
        base_dir: folder that relative paths are resolved against. Default: the datalist's folder.
        check_files: raise when listed files are missing. False leaves them to the per-case checks (an
            evaluation then skips and names each missing case, see :class:`~mamba_monai.data.IsolatedDataset`).
            Default True.

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
    missing = missing_files(items) if check_files else []
    if missing:
        shown = ", ".join(f"'{p}'" for p in missing[:_MAX_LISTED])
        more = f" and {len(missing) - _MAX_LISTED} more" if len(missing) > _MAX_LISTED else ""
        resolved = os.fspath(base_dir) if base_dir is not None else os.path.dirname(os.path.abspath(datalist_path))
        raise FileNotFoundError(
            f"{len(missing)} file(s) listed under '{key}' in datalist '{datalist_path}' do not exist: {shown}{more} "
            f"(relative paths are resolved against '{resolved}'); check the `dataset_dir` / `datalist` overrides."
        )
    return items
