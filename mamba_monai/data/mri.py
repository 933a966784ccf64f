"""Multi-contrast MRI cases for missing-contrast synthesis: case discovery from BraTS / IXI folders and transforms.

Discovery (:func:`find_mri_cases`) reads a data set folder as it is distributed, with no hand-made lists:

- BraTS 2018-2021: ``<case>/<case>_t1.nii.gz``, ``_t1ce``, ``_t2``, ``_flair`` (and ``_seg``).
- BraTS 2023 (and 2024): ``<case>/<case>-t1n.nii.gz``, ``-t1c``, ``-t2w``, ``-t2f`` (and ``-seg``), read as
  ``t1``, ``t1ce``, ``t2``, ``flair``.
- IXI: ``IXI-T1/``, ``IXI-T2/``, ``IXI-PD/`` folders of ``IXI<id>-<site>-<n>-<T1|T2|PD>.nii.gz``, grouped by
  subject, read as ``t1``, ``t2``, ``pd`` (other IXI modalities are ignored).

Every case is a dict ``{"case": id, "layout": ..., "<contrast>": path}`` with canonical contrast names
(:data:`MRI_CONTRASTS`); a contrast the case lacks is absent. :func:`split_mri_cases` / :func:`select_mri_cases`
then keep the cases usable for a given input list and target, with a warning for each case left out.

Transforms (usable in bundle configs by dotted ``_target_``, e.g. ``mamba_monai.data.LoadMRIContrastsd``):

- :class:`LoadMRIContrastsd`: the configured input contrasts of a case -> ``image`` (M, *spatial) with missing
  ones zero-filled, ``mask`` (M,) availability, ``target`` (1, *spatial), all on one grid.
- :class:`ScaleIntensityPercentiled`: per-channel division by a high percentile of the brain (e.g. 99.5th) and
  clipping to [0, 1]; keeps the factors in ``<key>_scale`` and is invertible (``Invertd``).
- :class:`RestoreIntensityd` / :func:`restore_intensity`: put a synthesis back in the target contrast's scale.
- :class:`RandDropContrastsd` / :class:`DropContrastsd`: hide available inputs (training on random subsets, or
  evaluating a fixed subset), updating ``mask``.

2D training on axial slices needs no new transform: after ``Orientationd(axcodes="RAS")`` the last spatial axis
is axial, ``RandCropByPosNegLabeld(keys=["image", "target"], label_key="target", spatial_size=[-1, -1, 1],
pos=1, neg=0, num_samples=n)`` takes ``n`` whole axial slices through the brain (never an empty target slice;
``mask`` is copied to every sample), and ``SqueezeDimd(keys=["image", "target"], dim=-1)`` makes them 2D
(and drops the slice axis from the affine). ``RandSpatialCropd(roi_size=[-1, -1, 1], random_size=False)`` takes
any slice, empty ones included. For whole-volume inference with a 2D network, MONAI's ``SliceInferer``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform, LoadImage, MapTransform, Randomizable, ResampleToMatch
from monai.utils import TraceKeys, optional_import

from mamba_monai.data.dicom import DicomSeriesReader
from mamba_monai.data.validation import (
    AFFINE_FIX,
    ImageReadError,
    InvalidCaseError,
    ValidateImaged,
    nifti_header_problem,
    note_dicom_source,
)

pydicom, _ = optional_import("pydicom")

__all__ = [
    "MRI_CONTRASTS",
    "dicom_contrast",
    "CONTRAST_ALIASES",
    "canonical_contrast",
    "find_mri_cases",
    "mri_dataset_splits",
    "split_mri_cases",
    "select_mri_cases",
    "LoadMRIContrastsd",
    "ScaleIntensityPercentiled",
    "RestoreIntensityd",
    "restore_intensity",
    "DropContrastsd",
    "RandDropContrastsd",
    "ZeroOutsideInputsd",
]

logger = logging.getLogger(__name__)

MRI_CONTRASTS: tuple[str, ...] = ("t1", "t1ce", "t2", "flair", "pd")
"""Canonical contrast names: T1-weighted, T1 after gadolinium, T2-weighted, T2-FLAIR, proton density."""

CONTRAST_ALIASES: dict[str, str] = {
    "t1n": "t1",
    "t1w": "t1",
    "t1c": "t1ce",
    "t1gd": "t1ce",
    "t1-gd": "t1ce",
    "t2w": "t2",
    "t2f": "flair",
    "t2-flair": "flair",
    "pdw": "pd",
}
"""Other names of the canonical contrasts (BraTS 2023 file suffixes, BIDS-like names), lower case."""

_NII = r"\.nii(?:\.gz)?"
_BRATS2023_SUFFIX = {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f"}
_IXI_SUFFIX = {"t1": "T1", "t2": "T2", "pd": "PD"}
# (layout, pattern); the first that matches a file name wins. ``case`` names the case, ``contrast`` the contrast
# in the layout's own spelling (mapped by the dict), ``seg`` a segmentation.
_LAYOUTS: tuple[tuple[str, re.Pattern, dict[str, str]], ...] = (
    (
        "ixi",
        re.compile(
            rf"^(?P<case>(?P<subject>IXI\d+)-[A-Za-z]+-\d+)-(?:(?P<contrast>T1|T2|PD)|(?P<other>[A-Za-z0-9-]+)){_NII}$"
        ),
        {v: k for k, v in _IXI_SUFFIX.items()},
    ),
    (
        "brats2023",
        re.compile(rf"^(?P<case>.+)-(?:(?P<contrast>t1n|t1c|t2w|t2f)|(?P<seg>seg)){_NII}$"),
        {v: k for k, v in _BRATS2023_SUFFIX.items()},
    ),
    (
        "brats2021",
        re.compile(rf"^(?P<case>.+)_(?:(?P<contrast>t1|t1ce|t2|flair)|(?P<seg>seg)){_NII}$"),
        {c: c for c in ("t1", "t1ce", "t2", "flair")},
    ),
)
_LAYOUT_NAMES = {"brats2021": "BraTS 2018-2021", "brats2023": "BraTS 2023", "ixi": "IXI"}
_MAX_LISTED = 5


def canonical_contrast(name: str) -> str:
    """The canonical name (one of :data:`MRI_CONTRASTS`) of a contrast name or alias, case-insensitive.

    Raises:
        ValueError: for an unknown name; the message lists the accepted names.
    """
    key = str(name).strip().lower()
    key = CONTRAST_ALIASES.get(key, key)
    if key not in MRI_CONTRASTS:
        raise ValueError(
            f"Unknown MRI contrast {name!r}; use one of {list(MRI_CONTRASTS)} or an alias of "
            f"{sorted(CONTRAST_ALIASES)}."
        )
    return key


def _canonical_list(names: str | Sequence[str], arg: str) -> list[str]:
    names = [names] if isinstance(names, str) else list(names)
    out = [canonical_contrast(n) for n in names]
    if len(set(out)) != len(out):
        raise ValueError(f"`{arg}` names a contrast twice: {names!r} (canonical {out}).")
    return out


# ----------------------------------------------------------------------------------------------------------------
# discovery


def find_mri_cases(
    dataset_dir: str | os.PathLike, contrasts: Sequence[str] | None = None, include_seg: bool = False
) -> list[dict[str, str]]:
    """Find the multi-contrast MRI cases under ``dataset_dir`` (searched recursively) from their file names.

    Recognised layouts (see the module docstring): BraTS 2018-2021 (``<case>_t1.nii.gz``...), BraTS 2023
    (``<case>-t1n.nii.gz``...) and IXI (``IXI002-Guys-0828-T1.nii.gz``..., grouped by subject across the
    ``IXI-T1``/``IXI-T2``/``IXI-PD`` folders). Hidden files and folders (such as temporary files of an
    interrupted write) are skipped, as are files of no recognised layout.

    Args:
        dataset_dir: the data set folder, e.g. ``BraTS2021_Training_Data`` or the folder above it, or the IXI
            folder holding ``IXI-T1/`` etc.
        contrasts: the contrasts to report, canonical names or aliases (e.g. ``["t1", "t2", "flair"]``); others
            are left out of the dicts, and cases with none of them are dropped. Default None: every contrast found.
        include_seg: add ``"seg"`` (the path of the BraTS segmentation) to the cases that have one. Default False.

    Returns:
        one dict per case, sorted by case id: ``{"case": id, "layout": "brats2021" | "brats2023" | "ixi",
        "<contrast>": absolute path, ...}`` with canonical contrast names; a contrast the case lacks is absent.

    Raises:
        FileNotFoundError: ``dataset_dir`` does not exist or holds no case of a recognised layout.
        ValueError: a case has two files for one contrast, or files of two layouts.
    """
    root = os.path.abspath(os.fspath(dataset_dir))
    if not os.path.isdir(root):
        raise FileNotFoundError(f"MRI data set folder '{root}' does not exist; check `dataset_dir`.")
    wanted = None if contrasts is None else set(_canonical_list(contrasts, "contrasts"))
    cases: dict[str, dict[str, str]] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            for layout, pattern, mapping in _LAYOUTS:
                m = pattern.match(name)
                if m is None:
                    continue
                groups = m.groupdict()
                if groups.get("contrast"):
                    key = mapping[groups["contrast"]]
                elif groups.get("seg"):
                    key = "seg"
                else:
                    break  # a file of this layout that holds no contrast we read (e.g. IXI MRA, DTI)
                case_id = groups["case"] if layout != "ixi" else groups["subject"]
                case = cases.setdefault(case_id, {"case": groups["case"], "layout": layout})
                path = os.path.join(folder, name)
                if case["layout"] != layout:
                    raise ValueError(
                        f"Case '{case_id}' has files of two layouts ({_LAYOUT_NAMES[case['layout']]} and "
                        f"{_LAYOUT_NAMES[layout]}), e.g. '{path}'; keep one layout per data set folder."
                    )
                if key in case:
                    raise ValueError(
                        f"Case '{case['case']}' has two '{key}' files: '{case[key]}' and '{path}'; remove one "
                        "(or point `dataset_dir` at one copy of the data)."
                    )
                case[key] = path
                break
    for case_id, case in _dicom_cases(root).items():
        if case_id in cases:
            raise ValueError(f"Case '{case_id}' is both a NIfTI case and a DICOM study; keep one per data set folder.")
        cases[case_id] = case
    if not cases:
        raise FileNotFoundError(
            f"No MRI case found under '{root}': expected BraTS 2018-2021 files '<case>/<case>_t1.nii.gz' "
            "(_t1ce, _t2, _flair), BraTS 2023 files '<case>/<case>-t1n.nii.gz' (-t1c, -t2w, -t2f), IXI files "
            "'IXI-T1/IXI<id>-<site>-<n>-T1.nii.gz' (T2, PD) or DICOM series whose SeriesDescription names the "
            "contrast ('T1', 'T1 POST GD', 'T2', 'T2 FLAIR', 'PD'); check `dataset_dir`."
        )
    out = []
    for case_id in sorted(cases):
        case = cases[case_id]
        keep = {k: v for k, v in case.items() if k in ("case", "layout") or (k == "seg" and include_seg)}
        found = {k: v for k, v in case.items() if k in MRI_CONTRASTS and (wanted is None or k in wanted)}
        if not found:
            logger.debug("Case '%s' has none of the contrasts %s; left out.", case["case"], sorted(wanted or ()))
            continue
        keep.update(sorted(found.items(), key=lambda kv: MRI_CONTRASTS.index(kv[0])))
        out.append(keep)
    return out


def dicom_contrast(description: str) -> str | None:
    """The canonical contrast that a DICOM series' ``SeriesDescription`` (or ``ProtocolName``) names, as scanners
    and PACS exports word it: ``"AX T2 FLAIR"`` -> ``flair``, ``"T1 POST GD"`` / ``"T1+C"`` -> ``t1ce``,
    ``"T1 MPRAGE"`` -> ``t1``, ``"AX T2 TSE"`` -> ``t2``, ``"PD"`` -> ``pd``; None for anything else (a localiser,
    a DWI)."""
    text = description.lower()
    if "flair" in text or re.search(r"\bt2f\b", text):
        return "flair"
    if re.search(r"\bt1\s*(\+\s*c|ce|c|gd|-gd)\b|\bt1\b.*(\bpost\b|\bgad|\bgd\b|contrast|\+\s*c\b)", text):
        return "t1ce"
    if re.search(r"\bt2(w)?\b", text):
        return "t2"
    if re.search(r"\bt1(w|n)?\b|mprage", text):
        return "t1"
    if re.search(r"\bpd(w)?\b|proton density", text):
        return "pd"
    return None


def _dicom_cases(root: str) -> dict[str, dict[str, Any]]:
    """The DICOM studies under ``root`` as cases: one per StudyInstanceUID, named after the study's top folder
    under ``root`` (else its PatientID), a contrast per series whose description names one
    (:func:`dicom_contrast`); each contrast is a series folder or a list of slice files
    (:func:`~mamba_monai.data.series_source`)."""
    from mamba_monai.data.dicom import find_dicom_series, series_source

    cases: dict[str, dict[str, Any]] = {}
    names: dict[str, str] = {}
    for files in find_dicom_series(root):
        try:
            ds = pydicom.dcmread(files[0], stop_before_pixels=True)
        except Exception:  # unreadable: named when a case lists it, never here
            continue
        contrast = dicom_contrast(f"{getattr(ds, 'SeriesDescription', '')} {getattr(ds, 'ProtocolName', '')}")
        if contrast is None:
            logger.debug("DICOM series %s (%s) names no MRI contrast; left out.", files[0],
                         getattr(ds, "SeriesDescription", ""))
            continue
        study = str(getattr(ds, "StudyInstanceUID", "") or files[0])
        rel = os.path.relpath(os.path.dirname(files[0]), root)
        name = names.setdefault(study, rel.split(os.sep)[0] if rel != "." else str(getattr(ds, "PatientID", "study")))
        case = cases.setdefault(name, {"case": name, "layout": "dicom"})
        if contrast in case:
            raise ValueError(
                f"DICOM study '{name}' has two '{contrast}' series ({case[contrast]!r} and {files[0]!r}); keep one "
                "(or give the other a SeriesDescription that names another contrast)."
            )
        case[contrast] = series_source(files, root)
    return cases


def _expected_file(case: Mapping[str, Any], contrast: str) -> str:
    """Where ``case``'s ``contrast`` file would be in its layout (for messages), or why it cannot be."""
    present = [v for k, v in case.items() if k in MRI_CONTRASTS and isinstance(v, (str, os.PathLike))]
    layout, cid = case.get("layout"), case.get("case", "?")
    if layout == "dicom":
        return f"a DICOM series whose SeriesDescription names '{contrast}' in study '{cid}'"
    if layout is None or not present:
        return f"no '{contrast}' entry"
    folder = os.path.dirname(os.fspath(present[0]))
    if layout == "brats2021":
        name = f"{cid}_{contrast}.nii.gz" if contrast in ("t1", "t1ce", "t2", "flair") else None
    elif layout == "brats2023":
        name = f"{cid}-{_BRATS2023_SUFFIX[contrast]}.nii.gz" if contrast in _BRATS2023_SUFFIX else None
    else:
        name = f"{cid}-{_IXI_SUFFIX[contrast]}.nii.gz" if contrast in _IXI_SUFFIX else None
        if name is not None and os.path.basename(folder).startswith("IXI-"):
            folder = os.path.join(os.path.dirname(folder), f"IXI-{_IXI_SUFFIX[contrast]}")
    if name is None:
        return f"the {_LAYOUT_NAMES.get(str(layout), layout)} layout has no '{contrast}' images"
    return f"expected '{os.path.join(folder, name)}'"


def _has(case: Mapping[str, Any], contrast: str) -> bool:
    """Whether the case's ``contrast`` exists: a file, a DICOM series folder, or a list of slice files."""
    value = case.get(contrast)
    if isinstance(value, (list, tuple)):
        return bool(value) and all(os.path.isfile(v) for v in value)
    return isinstance(value, (str, os.PathLike)) and (os.path.isfile(value) or os.path.isdir(value))


def split_mri_cases(
    cases: Sequence[Mapping[str, Any]],
    inputs: str | Sequence[str],
    target: str | None = None,
    require_inputs: bool = True,
) -> tuple[list[dict], list[dict]]:
    """Split cases into those usable to synthesise ``target`` from ``inputs`` and those left out.

    A case is left out, with a warning that names it and the missing file, when it lacks the ``target`` (it can
    be neither trained on nor evaluated), has none of the ``inputs``, or lists an input or target file that does
    not exist (a stale list). A case that lacks some inputs is kept: :class:`LoadMRIContrastsd` zero-fills them
    and marks them unavailable.

    Args:
        cases: dicts as :func:`find_mri_cases` returns (or any dicts with contrast keys holding paths).
        inputs: the input contrasts, canonical names or aliases, e.g. ``["t1", "t1ce", "t2"]``.
        target: the contrast to synthesise, e.g. ``"flair"``; None (inference) keeps cases without it.
            Default None.
        require_inputs: leave out cases with none of the ``inputs``. Default True; False keeps them, so that a
            per-case isolating evaluation (:class:`~mamba_monai.engines.CaseIsolatingEvaluator`) names them in its
            ``skipped.csv`` when :class:`LoadMRIContrastsd` refuses them.

    Returns:
        ``(kept, skipped)``: the kept cases (the input dicts, in order), and for each case left out a dict
        ``{"case", "reason", "item"}``.
    """
    inputs_ = _canonical_list(inputs, "inputs")
    if not inputs_:
        raise ValueError("`inputs` must name at least one contrast.")
    target_ = None if target is None else canonical_contrast(target)
    if target_ is not None and target_ in inputs_:
        raise ValueError(f"`target` {target!r} is also one of the `inputs` {inputs_}; synthesise a missing one.")
    kept: list[dict] = []
    skipped: list[dict] = []
    for case in cases:
        cid = case.get("case", "<no 'case' id>")
        reason = None
        broken = [
            os.fspath(case[c])
            for c in inputs_ + ([target_] if target_ else [])
            if isinstance(case.get(c), (str, os.PathLike)) and not os.path.isfile(case[c])
        ]
        if broken:
            reason = "listed file(s) do not exist: " + ", ".join(f"'{p}'" for p in broken)
        elif target_ is not None and not _has(case, target_):
            reason = f"no target '{target_}' image ({_expected_file(case, target_)})"
        elif require_inputs and not any(_has(case, c) for c in inputs_):
            where = "; ".join(_expected_file(case, c) for c in inputs_)
            reason = f"none of the input contrasts {inputs_} ({where})"
        if reason is None:
            kept.append(case)  # type: ignore[arg-type]
            continue
        logger.warning("Skipping case '%s': %s.", cid, reason)
        skipped.append({"case": cid, "reason": reason, "item": case})
    if skipped:
        logger.warning(
            "%d of %d case(s) skipped for %s -> %s.", len(skipped), len(cases), "+".join(inputs_), target_ or "(none)"
        )
    return kept, skipped


def select_mri_cases(
    cases: Sequence[Mapping[str, Any]],
    inputs: str | Sequence[str],
    target: str | None = None,
    require_inputs: bool = True,
) -> list[dict]:
    """The cases of :func:`split_mri_cases` that are kept (the others are logged as warnings): a form for bundle
    configs, e.g. ``"$mamba_monai.data.select_mri_cases(mamba_monai.data.find_mri_cases(@dataset_dir),
    @inputs, @target)"``."""
    return split_mri_cases(cases, inputs, target, require_inputs=require_inputs)[0]


_SPLIT_FOLDERS: dict[str, tuple[str, ...]] = {
    "training": ("train", "training", "Training", "TrainingData"),
    "validation": ("val", "validation", "Validation", "ValidationData"),
    "test": ("test", "testing", "Test", "Testing", "TestingData"),
}
"""Sub-folder names read as a split by :func:`mri_dataset_splits` (the demo set uses ``train``, ``val``, ``test``)."""


def _unit_hash(seed: int, case_id: str) -> float:
    """A number in [0, 1) fixed by ``(seed, case_id)`` alone (SHA-256), the same on every machine and run."""
    digest = hashlib.sha256(f"{int(seed)}:{case_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _cases_in(folder: str | None, contrasts: Sequence[str] | None, include_seg: bool) -> list[dict[str, str]]:
    """The cases of a split folder; an absent or empty one (e.g. a demo set without test cases) has none."""
    if folder is None or not any(not n.startswith(".") for n in os.listdir(folder)):
        return []
    return find_mri_cases(folder, contrasts, include_seg)


def mri_dataset_splits(
    dataset_dir: str | os.PathLike,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 0,
    contrasts: Sequence[str] | None = None,
    include_seg: bool = False,
) -> dict[str, list[dict[str, str]]]:
    """The training, validation and test cases of an MRI data set folder, read with :func:`find_mri_cases`.

    - A folder with split sub-folders (``train``/``training``, ``val``/``validation``, ``test``/``testing``, as
      the demo set of :func:`~mamba_monai.data.ensure_demo_mri_dataset`): each split is the cases of its folder
      (an absent or empty folder gives an empty list).
    - Otherwise (a BraTS or IXI folder as distributed: one folder of cases) the cases are split deterministically:
      case ``c`` goes to validation when ``h(seed, c) < val_fraction``, to test when it falls in the next
      ``test_fraction``, else to training, with ``h`` a SHA-256 hash of the seed and the case id mapped to [0, 1).
      A case's split depends only on its id and the seed: it does not move when cases are added or removed, on
      any machine. When the hash leaves a requested split empty (few cases), the training case with the smallest
      hash goes there, as long as training keeps at least one case.

    Args:
        dataset_dir: the data set folder.
        val_fraction: expected share of validation cases, in [0, 1). Default 0.2.
        test_fraction: expected share of test cases, in [0, 1 - val_fraction). Default 0.0.
        seed: split seed. Default 0.
        contrasts: passed to :func:`find_mri_cases`. Default None: every contrast found.
        include_seg: passed to :func:`find_mri_cases`. Default False.

    Returns:
        ``{"training": [...], "validation": [...], "test": [...]}``, each a list of case dicts sorted by case id.
    """
    if not 0.0 <= val_fraction < 1.0 or not 0.0 <= test_fraction < 1.0 or val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"`val_fraction` ({val_fraction!r}) and `test_fraction` ({test_fraction!r}) must be in [0, 1) with a sum "
            "below 1 (training needs cases)."
        )
    root = os.fspath(dataset_dir)
    found = {
        split: next((os.path.join(root, n) for n in names if os.path.isdir(os.path.join(root, n))), None)
        for split, names in _SPLIT_FOLDERS.items()
    }
    if any(found.values()):
        out = {split: _cases_in(folder, contrasts, include_seg) for split, folder in found.items()}
        if not any(out.values()):
            find_mri_cases(root, contrasts, include_seg)  # raises, naming the layouts looked for
        logger.info(
            "MRI splits from the sub-folders of '%s': %s.", root,
            ", ".join(f"{k} {len(v)} ({os.path.basename(found[k]) if found[k] else 'none'})" for k, v in out.items()),
        )
        return out
    cases = find_mri_cases(root, contrasts, include_seg)
    scored = sorted(((_unit_hash(seed, c["case"]), c) for c in cases), key=lambda hc: (hc[0], hc[1]["case"]))
    out = {"training": [], "validation": [], "test": []}
    for h, case in scored:
        split = "validation" if h < val_fraction else "test" if h < val_fraction + test_fraction else "training"
        out[split].append(case)
    for split, fraction in (("validation", val_fraction), ("test", test_fraction)):
        if fraction > 0 and not out[split] and len(out["training"]) > 1:
            moved = min(out["training"], key=lambda c: _unit_hash(seed, c["case"]))
            out["training"].remove(moved)
            out[split].append(moved)
    out = {k: sorted(v, key=lambda c: c["case"]) for k, v in out.items()}
    logger.info(
        "MRI splits of '%s' (seed %d, hash of the case id): training %d, validation %d, test %d.",
        root, seed, len(out["training"]), len(out["validation"]), len(out["test"]),
    )
    return out


# ----------------------------------------------------------------------------------------------------------------
# loading


def _same_grid(a: MetaTensor, b: MetaTensor, atol: float) -> bool:
    if tuple(a.shape[1:]) != tuple(b.shape[1:]):
        return False
    return bool(torch.allclose(a.affine.to(torch.float64), b.affine.to(torch.float64), atol=atol))


class LoadMRIContrastsd(MapTransform):
    """Load a case's input contrasts into one multi-channel image with an availability mask, and its target
    contrast on the same voxel grid.

    The case dict holds one path per contrast (as :func:`find_mri_cases` gives); missing inputs are allowed.
    The **reference grid** is the target's when the case has it, else the first available input's (in the order
    of ``keys``); every other contrast is resampled onto it through the affines (MONAI's ``ResampleToMatch``,
    trilinear, zeros outside its field of view) unless it is already on that grid (same shape, affines equal
    within ``atol``), as BraTS contrasts are. IXI contrasts are not: T1 is sagittal, T2 and PD axial.

    Produces (data dict keys):

    - ``image_key`` (default ``"image"``): float MetaTensor (M, *spatial), channel ``i`` = ``keys[i]``, zeros
      for a missing input; its metadata (affine, file name) are the reference's.
    - ``mask_key`` (default ``"mask"``): float tensor (M,), 1 for an available input, 0 for a missing one.
    - ``target_key`` (default ``"target"``): float MetaTensor (1, *spatial) of the target (when ``target`` is
      set and the case has it).

    Args:
        keys: the input contrasts, i.e. the case-dict keys of their paths, in channel order (e.g.
            ``["t1", "t1ce", "t2"]``).
        target: the case-dict key of the target contrast (e.g. ``"flair"``). Default None: no target.
        image_key: output key of the stacked inputs. Default ``"image"``.
        mask_key: output key of the availability vector. Default ``"mask"``.
        target_key: output key of the target. Default ``"target"``.
        allow_missing_target: accept a case without the target (inference); then ``target_key`` is not set.
            Default False: raise, naming the case.
        mode: interpolation of the resampling (``"bilinear"`` is trilinear in 3D, or ``"nearest"``).
            Default ``"bilinear"``.
        atol: tolerance (mm) on the affines of contrasts considered to share a grid. Default 1e-3.
        reader: image reader for MONAI's ``LoadImage`` (e.g. ``"NibabelReader"``). Default None: by suffix.
        dtype: output data type. Default ``torch.float32``.
        validate: check every file as it is read and raise an :class:`~mamba_monai.data.InvalidCaseError` that
            names it: a NIfTI header with a non-finite or degenerate affine (MONAI's reader would silently put an
            identity in its place), ``spatial_dims`` spatial dimensions (a 2D slice among 3D volumes), finite
            values. Default False.
        spatial_dims: the spatial dimensions every file must have when ``validate``. Default 3.
    """

    def __init__(
        self,
        keys: KeysCollection,
        target: str | None = None,
        image_key: str = "image",
        mask_key: str = "mask",
        target_key: str = "target",
        allow_missing_target: bool = False,
        mode: str = "bilinear",
        atol: float = 1e-3,
        reader: Any = None,
        dtype: torch.dtype = torch.float32,
        validate: bool = False,
        spatial_dims: int = 3,
    ) -> None:
        super().__init__(keys, allow_missing_keys=True)
        if len(set(self.keys)) != len(self.keys):
            raise ValueError(f"`keys` names a contrast twice: {list(self.keys)}.")
        outputs = [image_key, mask_key] + ([target_key] if target is not None else [])
        clash = [k for k in outputs if k in self.keys or k == target]
        if len(set(outputs)) != len(outputs) or clash:
            raise ValueError(
                f"Output keys image_key={image_key!r}, mask_key={mask_key!r}, target_key={target_key!r} must be "
                f"distinct and differ from the contrast keys {list(self.keys)} and target {target!r}."
            )
        if target is not None and target in self.keys:
            raise ValueError(f"`target` {target!r} is also one of the input `keys` {list(self.keys)}.")
        if mode not in ("bilinear", "nearest"):
            raise ValueError(f"`mode` must be 'bilinear' or 'nearest', got {mode!r}.")
        self.target = target
        self.image_key, self.mask_key, self.target_key = image_key, mask_key, target_key
        self.allow_missing_target = bool(allow_missing_target)
        self.atol = float(atol)
        self.dtype = dtype
        self._loader = LoadImage(reader=reader, image_only=True, ensure_channel_first=True, dtype=np.float32)
        self._loader.register(DicomSeriesReader())  # a contrast may be a DICOM series (folder or slice files)
        self._resample = ResampleToMatch(mode=mode, padding_mode="zeros", dtype=np.float32)
        if spatial_dims not in (2, 3):
            raise ValueError(f"`spatial_dims` must be 2 or 3, got {spatial_dims!r}.")
        self.validate = bool(validate)
        self.spatial_dims = int(spatial_dims)

    def _load(self, path: Any, key: Hashable) -> MetaTensor:
        source = [os.fspath(p) for p in path] if isinstance(path, (list, tuple)) else os.fspath(path)
        path = source[0] if isinstance(source, list) else source  # named in messages
        missing = [p for p in (source if isinstance(source, list) else [source]) if not os.path.exists(p)]
        if missing:
            raise FileNotFoundError(f"'{key}' file '{missing[0]}' does not exist.")
        if self.validate and os.path.isfile(path):
            problem = nifti_header_problem(path)
            if problem is not None:
                raise InvalidCaseError(f"'{key}' of {path} has {problem} in its header", AFFINE_FIX, path)
        try:
            img = self._loader(source)
        except Exception as err:
            raise ImageReadError(
                f"Cannot read '{key}' from '{path}': {type(err).__name__}: {err}",
                "the file may be truncated or corrupt: re-export it, or drop the case",
                path,
            ) from err
        if img.shape[0] != 1:
            message = (
                f"'{key}' file '{path}' has {img.shape[0]} channels (shape {tuple(img.shape)}); one contrast per "
                "file is expected."
            )
            if self.validate:
                raise InvalidCaseError(message.rstrip("."), "keep one volume (one contrast) per file", path)
            raise ValueError(message)
        if self.validate:
            ValidateImaged(key, num_channels=1, spatial_dims=self.spatial_dims)({key: img})
        note_dicom_source(img, source)
        return img

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        case = d.get("case", "<no 'case' id>")
        present = {k: d[k] for k in self.keys if d.get(k) is not None}
        if not present:
            paths = [os.fspath(v) for v in d.values() if isinstance(v, (str, os.PathLike)) and os.path.isfile(v)]
            raise InvalidCaseError(
                f"Case '{case}' has none of the input contrasts {list(self.keys)} (keys found: {sorted(map(str, d))})",
                "add an input contrast to the case, leave it out (`mamba_monai.data.select_mri_cases`) or check the "
                "contrast names",
                os.path.dirname(paths[0]) if paths else "",
            )
        has_target = self.target is not None and d.get(self.target) is not None
        if self.target is not None and not has_target and not self.allow_missing_target:
            raise ValueError(
                f"Case '{case}' has no target '{self.target}' image; leave it out (`select_mri_cases` with the "
                "target) or pass `allow_missing_target=True` for inference."
            )
        loaded = {k: self._load(v, k) for k, v in present.items()}
        target = self._load(d[self.target], self.target) if has_target else None
        ref = target if target is not None else loaded[next(iter(loaded))]
        spatial = tuple(ref.shape[1:])
        stacked = torch.zeros((len(self.keys), *spatial), dtype=self.dtype)
        mask = torch.zeros(len(self.keys), dtype=self.dtype)
        for i, key in enumerate(self.keys):
            if key not in loaded:
                continue
            img = loaded[key]
            if img is not ref and not _same_grid(img, ref, self.atol):
                img = self._resample(img, img_dst=ref)
            stacked[i] = torch.as_tensor(img.as_tensor()[0], dtype=self.dtype)
            mask[i] = 1.0
        meta = {k: v for k, v in ref.meta.items() if k != "affine"}
        d[self.image_key] = MetaTensor(stacked, affine=ref.affine.clone(), meta=meta)
        d[self.mask_key] = mask
        if target is not None:
            d[self.target_key] = target.to(self.dtype)
        return d


# ----------------------------------------------------------------------------------------------------------------
# intensity


def restore_intensity(x: Any, scale: Any) -> Any:
    """Undo :class:`ScaleIntensityPercentiled`: multiply each channel of ``x`` by its scale factor.

    Args:
        x: (C, *spatial) for one item, or (B, C, *spatial) for a batch (tensor or array).
        scale: a number, (C,) for one item, or (B, C) for a batch (e.g. the ``target_scale`` entries).

    Returns:
        ``x * scale`` broadcast over the spatial dims, of ``x``'s type (a MetaTensor keeps its metadata).
    """
    if isinstance(x, torch.Tensor):
        s = torch.as_tensor(scale, dtype=x.dtype if x.is_floating_point() else torch.float32, device=x.device)
    else:
        s = np.asarray(scale, dtype=np.float32)
    if s.ndim == 0:
        return x * s
    if s.ndim > 2 or s.shape[-1] not in (1, x.shape[s.ndim - 1]):
        raise ValueError(
            f"`scale` of shape {tuple(s.shape)} does not match `x` of shape {tuple(x.shape)}: expected (C,) with "
            "x (C, *spatial), or (B, C) with x (B, C, *spatial)."
        )
    return x * s.reshape(*s.shape, *([1] * (x.ndim - s.ndim)))


class ScaleIntensityPercentiled(MapTransform, InvertibleTransform):
    """Scale each channel by a high percentile of its brain voxels to about [0, 1], clipped, and keep the factor.

    For every channel: ``scale = percentile(x[x > threshold], percentile)``, ``x / scale`` clipped to
    ``[0, 1]``. Skull-stripped images (BraTS) have a zero background, so the default ``threshold=0`` selects the
    brain; for unmasked images (IXI) raise it above the background noise. A channel with no voxel above the
    threshold (a zero-filled missing input) is left as it is, with scale 1.

    The factors go to ``<key>_<scale_postfix>`` (default ``"<key>_scale"``), a float tensor (C,), so that a
    synthesis can be put back in the target contrast's scale with :class:`RestoreIntensityd` (or
    :func:`restore_intensity`); the transform is also invertible through MONAI's ``Invertd`` (values clipped at 1
    stay at the scale, the rest round-trip exactly).

    Args:
        keys: keys of the channel-first images, e.g. ``["image", "target"]``.
        percentile: the percentile in (0, 100] mapped to 1. Default 99.5.
        threshold: voxels above it make the brain. Default 0.0.
        clip: clip the result to [0, 1]. Default True.
        scale_postfix: postfix of the keys holding the factors. Default ``"scale"``.
        allow_missing_keys: don't raise when a key is absent (e.g. no target at inference). Default False.
    """

    def __init__(
        self,
        keys: KeysCollection,
        percentile: float = 99.5,
        threshold: float = 0.0,
        clip: bool = True,
        scale_postfix: str = "scale",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if not 0 < percentile <= 100:
            raise ValueError(f"`percentile` must be in (0, 100], got {percentile!r}.")
        self.percentile = float(percentile)
        self.threshold = float(threshold)
        self.clip = bool(clip)
        self.scale_postfix = str(scale_postfix)

    def scales(self, img: Any) -> list[float]:
        """The per-channel factors of a channel-first image."""
        arr = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
        out = []
        for channel in arr:
            brain = channel[channel > self.threshold]
            s = float(np.percentile(brain, self.percentile)) if brain.size else 1.0
            out.append(s if s > 0 and np.isfinite(s) else 1.0)
        return out

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            if img.ndim < 2:
                raise ValueError(f"'{key}' must be channel-first (C, *spatial), got shape {tuple(img.shape)}.")
            scales = self.scales(img)
            out = restore_intensity(img, [1.0 / s for s in scales])
            if self.clip:
                out = out.clamp(0.0, 1.0) if isinstance(out, torch.Tensor) else np.clip(out, 0.0, 1.0)
            if isinstance(out, MetaTensor):
                self.push_transform(out, extra_info={"scale": scales})
            d[key] = out
            d[f"{key}_{self.scale_postfix}"] = torch.tensor(scales, dtype=torch.float32)
        return d

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            xform = self.pop_transform(d[key])
            scales = xform[TraceKeys.EXTRA_INFO]["scale"]
            d[key] = restore_intensity(d[key], scales)
        return d


class RestoreIntensityd(MapTransform):
    """Multiply ``keys`` (e.g. the synthesis ``"pred"``, channel-first, one item) by the factors that
    :class:`ScaleIntensityPercentiled` stored under ``scale_key`` (e.g. ``"target_scale"``), putting the
    synthesis back in the target contrast's scale before it is written.

    Args:
        keys: keys of the images to restore.
        scale_key: key of the factors, a number or (C,) (one per channel; one value for all). Default
            ``"target_scale"``.
        default_scale: factor used when ``scale_key`` is absent, as at inference without a target (e.g. the
            median target scale of the training set). Default None: raise a KeyError then.
        allow_missing_keys: don't raise when a key is absent. Default False.
    """

    def __init__(
        self,
        keys: KeysCollection,
        scale_key: str = "target_scale",
        default_scale: float | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if default_scale is not None and not default_scale > 0:
            raise ValueError(f"`default_scale` must be positive or None, got {default_scale!r}.")
        self.scale_key = scale_key
        self.default_scale = default_scale

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.scale_key in d:
            scale = d[self.scale_key]
        elif self.default_scale is not None:
            scale = self.default_scale
        else:
            raise KeyError(
                f"No '{self.scale_key}' in the data (keys {sorted(map(str, d))}): the case had no target to take "
                "the scale from; set `default_scale` (e.g. the training set's median target scale)."
            )
        for key in self.key_iterator(d):
            d[key] = restore_intensity(d[key], scale)
        return d


# ----------------------------------------------------------------------------------------------------------------
# hiding inputs


def _drop(d: dict, image_key: Hashable, mask_key: Hashable, channels: Sequence[int]) -> dict:
    """Zero ``channels`` of ``d[image_key]`` and of ``d[mask_key]`` in new tensors (cached inputs stay intact)."""
    if not len(channels):
        return d
    img, mask = d[image_key], d[mask_key]
    img = img.clone() if isinstance(img, torch.Tensor) else np.array(img, copy=True)
    mask = mask.clone() if isinstance(mask, torch.Tensor) else np.array(mask, copy=True)
    for c in channels:
        img[c] = 0
        mask[c] = 0
    d[image_key], d[mask_key] = img, mask
    return d


def _check_image_mask(d: Mapping, image_key: Hashable, mask_key: Hashable) -> int:
    if image_key not in d or mask_key not in d:
        raise KeyError(
            f"Expected '{image_key}' and '{mask_key}' in the data (from LoadMRIContrastsd), got {sorted(map(str, d))}."
        )
    n = int(d[mask_key].shape[-1])
    if d[image_key].shape[0] != n:
        raise ValueError(
            f"'{image_key}' has {d[image_key].shape[0]} channels but '{mask_key}' has {n} entries; they must match."
        )
    return n


class DropContrastsd(MapTransform):
    """Hide the given input channels (zero them, mask 0): evaluate the model on a fixed subset of the inputs.

    Args:
        keys: the image key (one), e.g. ``"image"``.
        channels: indices of the channels to hide (positions in :class:`LoadMRIContrastsd`'s ``keys``).
        mask_key: key of the availability vector. Default ``"mask"``.
    """

    def __init__(self, keys: KeysCollection, channels: Sequence[int], mask_key: str = "mask") -> None:
        super().__init__(keys)
        if len(self.keys) != 1:
            raise ValueError(f"`keys` must name one image, got {list(self.keys)}.")
        self.channels = [int(c) for c in ([channels] if isinstance(channels, int) else channels)]
        self.mask_key = mask_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        key = self.keys[0]
        n = _check_image_mask(d, key, self.mask_key)
        bad = [c for c in self.channels if not -n <= c < n]
        if bad:
            raise ValueError(f"`channels` {bad} out of range for '{key}' with {n} channels.")
        return _drop(d, key, self.mask_key, [c % n for c in self.channels])


class RandDropContrastsd(Randomizable, MapTransform):
    """Randomly hide some of the available inputs, so that one model learns to synthesise from any non-empty
    subset (as in multi-input synthesis with missing modalities, e.g. MM-GAN, Sharma & Hamarneh, IEEE TMI 2020).

    With probability ``prob`` (and when more than ``min_keep`` inputs are available), keep a random subset of the
    available channels: its size is drawn uniformly from ``min_keep`` to (available - 1), its members uniformly;
    the others are zeroed and their mask entries set to 0. Inputs already missing stay missing.

    Args:
        keys: the image key (one), e.g. ``"image"``.
        prob: probability of hiding anything. Default 0.5.
        min_keep: the fewest inputs kept (>= 1). Default 1.
        mask_key: key of the availability vector. Default ``"mask"``.
    """

    def __init__(self, keys: KeysCollection, prob: float = 0.5, min_keep: int = 1, mask_key: str = "mask") -> None:
        MapTransform.__init__(self, keys)
        if len(self.keys) != 1:
            raise ValueError(f"`keys` must name one image, got {list(self.keys)}.")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"`prob` must be in [0, 1], got {prob!r}.")
        if not isinstance(min_keep, (int, np.integer)) or min_keep < 1:
            raise ValueError(f"`min_keep` must be an int >= 1, got {min_keep!r}.")
        self.prob = float(prob)
        self.min_keep = int(min_keep)
        self.mask_key = mask_key
        self._drop: list[int] = []

    def randomize(self, available: Sequence[int]) -> None:  # type: ignore[override]
        self._drop = []
        if len(available) <= self.min_keep or self.R.rand() >= self.prob:
            return
        n_keep = int(self.R.randint(self.min_keep, len(available)))  # min_keep .. available - 1
        keep = set(self.R.choice(np.asarray(available), size=n_keep, replace=False).tolist())
        self._drop = [c for c in available if c not in keep]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        key = self.keys[0]
        _check_image_mask(d, key, self.mask_key)
        mask = d[self.mask_key]
        mask = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
        self.randomize([int(i) for i in np.flatnonzero(mask > 0)])
        return _drop(d, key, self.mask_key, self._drop)


class ZeroOutsideInputsd(MapTransform):
    """Zero a synthesis where none of the inputs has signal: outside the brain of skull-stripped images (BraTS), whose
    background is exactly 0 in every contrast, so that the synthesis carries no stray background intensity. Use it on
    the network's output before ``Invertd``, with the stacked inputs of :class:`LoadMRIContrastsd` on the same grid.
    For images that are not skull-stripped (IXI), the background noise is above 0 and nothing is zeroed unless
    ``threshold`` is raised above it.

    Args:
        keys: keys of the images to mask, channel-first (C, *spatial), e.g. ``"pred"``.
        image_key: key of the inputs (M, *spatial); missing inputs are zero-filled, so they do not count. Default
            ``"image"``.
        threshold: a voxel is kept where any input channel is above it. Default 0.0.
        allow_missing_keys: don't raise when a key is absent. Default False.
    """

    def __init__(
        self, keys: KeysCollection, image_key: str = "image", threshold: float = 0.0, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.image_key = image_key
        self.threshold = float(threshold)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.image_key not in d:
            raise KeyError(f"ZeroOutsideInputsd needs the inputs '{self.image_key}', got keys {sorted(map(str, d))}.")
        image = d[self.image_key]
        inside = (torch.as_tensor(image) > self.threshold).any(dim=0, keepdim=True)
        for key in self.key_iterator(d):
            img = d[key]
            if tuple(img.shape[1:]) != tuple(inside.shape[1:]):
                raise ValueError(
                    f"'{key}' of shape {tuple(img.shape)} and '{self.image_key}' of shape {tuple(image.shape)} are not "
                    "on one grid: mask before Invertd."
                )
            d[key] = img * inside.to(device=img.device, dtype=img.dtype)
        return d
