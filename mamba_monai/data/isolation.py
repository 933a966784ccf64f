"""Per-case isolation of bad inputs: one unreadable or invalid file never stops the other cases.

- :class:`IsolatedDataset`: a ``monai.data.Dataset`` whose items that fail in the transforms (a corrupt file, a
  4D series, NaNs, a 2D slice given to a 3D bundle...) come out as a failure record instead of raising, so that
  :class:`mamba_monai.engines.CaseIsolatingEvaluator` skips them, names them and goes on.
- :func:`validate_cases`: run the loading and validation transforms over a whole datalist before training, and
  report every bad case at once (or drop them with ``skip_bad_cases=True``).
- :class:`CaseFailure` / :func:`describe_failure`: the one-line account of a failed case (file, stage, reason,
  fix) that the logs and ``skipped.csv`` show, found in the chain of exceptions MONAI's ``Compose`` wraps.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

from monai.data import Dataset, list_data_collate

from mamba_monai.data.datalist import _paths_of
from mamba_monai.data.validation import CaseError, ImageReadError

__all__ = [
    "CASE_FAILURE_KEY",
    "CaseFailure",
    "InvalidCasesError",
    "IsolatedDataset",
    "describe_failure",
    "isolated_collate",
    "validate_cases",
    "validate_datalist",
]

logger = logging.getLogger(__name__)

CASE_FAILURE_KEY = "case_failure"
"""Key of the failure record that :class:`IsolatedDataset` returns in place of a case that failed."""

_MAX_REASON = 400
_GENERIC_FIX = {
    "read": "check that the file opens in a viewer (e.g. ITK-SNAP, 3D Slicer) and re-export it",
    "validate": "see the reason",
    "preprocess": "check the file's header and content (orientation, spacing, data type); run with DEBUG logging "
    "for the traceback",
    "inference": "run with DEBUG logging for the traceback; if memory ran out, lower `sw_batch_size` or `roi_size`",
    "postprocess": "check that `output_dir` is writable and has free space; run with DEBUG logging for the traceback",
}


@dataclasses.dataclass
class CaseFailure:
    """What went wrong with one case: the file, the stage (read, validate, preprocess, inference, postprocess),
    the reason and the fix. Serialises to one JSON string so it can travel through a DataLoader's collate."""

    file: str
    stage: str
    reason: str
    fix: str

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> CaseFailure:
        return cls(**json.loads(text))

    def log_line(self) -> str:
        return f"Skipping case {self.file} ({self.stage}): {self.reason}. Fix: {self.fix}."


class InvalidCasesError(ValueError):
    """Raised by :func:`validate_cases` when cases fail and ``skip_bad_cases`` is False; ``failures`` lists them."""

    def __init__(self, message: str, failures: Sequence[CaseFailure]) -> None:
        super().__init__(message)
        self.failures = list(failures)


def _exception_chain(err: BaseException) -> list[BaseException]:
    chain, seen = [], set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _first_line(text: str) -> str:
    line = next((part.strip() for part in str(text).splitlines() if part.strip()), "")
    return line if len(line) <= _MAX_REASON else line[: _MAX_REASON - 3] + "..."


def describe_failure(err: BaseException, files: Sequence[str] = (), stage: str = "preprocess") -> CaseFailure:
    """
    The :class:`CaseFailure` for an exception raised while processing a case.

    MONAI's ``Compose`` wraps a transform's error in ``RuntimeError("applying transform ...")``; the cause chain is
    searched for the package's own :class:`~mamba_monai.data.CaseError` (which carries the file, the problem and
    the fix); otherwise the innermost error gives the reason and the stage a generic fix.

    Args:
        err: the exception.
        files: the case's file(s), used when the error does not name its own.
        stage: where it happened when the error does not tell: ``"read"``, ``"validate"``, ``"preprocess"``,
            ``"inference"`` or ``"postprocess"``. Default ``"preprocess"``.
    """
    file = files[0] if files else "<unknown file>"
    chain = _exception_chain(err)
    case_error = next((e for e in chain if isinstance(e, CaseError)), None)
    if case_error is not None:
        found_stage = "read" if isinstance(case_error, ImageReadError) else "validate"
        return CaseFailure(case_error.file or file, found_stage, _first_line(case_error.problem), case_error.fix)
    root = chain[-1]
    if isinstance(root, FileNotFoundError):
        missing = root.filename or file
        return CaseFailure(
            str(missing), "read", _first_line(str(root)), "check the path, `dataset_dir` and the datalist"
        )
    reason = _first_line(f"{type(root).__name__}: {root}")
    return CaseFailure(file, stage, reason, _GENERIC_FIX.get(stage, _GENERIC_FIX["preprocess"]))


def case_files(item: Any, keys: Sequence[Hashable] = ("image", "label")) -> list[str]:
    """The file paths of a datalist item under ``keys`` (image first), for messages."""
    if not isinstance(item, Mapping):
        return _paths_of(item)
    return [p for key in keys if key in item for p in _paths_of(item[key])]


class IsolatedDataset(Dataset):
    """
    ``monai.data.Dataset`` that isolates each case: when the transforms fail on an item, the item comes out as
    ``{CASE_FAILURE_KEY: CaseFailure(...).to_json()}`` instead of raising, and the next items load as usual.
    :class:`mamba_monai.engines.CaseIsolatingEvaluator` logs and skips such records and lists them in its
    ``skipped.csv``.

    Use it with ``batch_size=1`` (the usual for whole-volume inference and evaluation), or with
    ``collate_fn=mamba_monai.data.isolated_collate`` so that a batch mixing good and failed items collates.

    Args:
        data: the datalist, e.g. ``[{"image": "/data/ct_001.nii.gz"}, ...]``.
        transform: the preprocessing (loading, validation, resampling...).
        file_keys: the item keys whose paths name the case in messages. Default ``("image", "label")``.
    """

    def __init__(
        self,
        data: Sequence,
        transform: Callable | None = None,
        file_keys: Sequence[Hashable] = ("image", "label"),
    ) -> None:
        super().__init__(data=data, transform=transform)
        self.file_keys = tuple(file_keys)

    def _transform(self, index: int):
        try:
            return super()._transform(index)
        except Exception as err:  # noqa: BLE001 - every failure of one case is isolated; the cause is logged
            logger.debug("case %d failed in the preprocessing", index, exc_info=True)
            failure = describe_failure(err, case_files(self.data[index], self.file_keys), stage="preprocess")
            return {CASE_FAILURE_KEY: failure.to_json()}


def _is_failure(item: Any) -> bool:
    return isinstance(item, Mapping) and CASE_FAILURE_KEY in item


def isolated_collate(batch: Sequence) -> dict:
    """
    ``collate_fn`` for batches that may hold failure records of :class:`IsolatedDataset`: the good items are
    collated with MONAI's ``list_data_collate`` and the failures added as a list of JSON strings under
    ``CASE_FAILURE_KEY`` (the same form that default collation gives a batch of one failed item).
    """
    failures = [item[CASE_FAILURE_KEY] for item in batch if _is_failure(item)]
    good = [item for item in batch if not _is_failure(item)]
    out = list_data_collate(good) if good else {}
    if failures:
        out[CASE_FAILURE_KEY] = failures
    return out


def _check_items(
    data: Sequence, transform: Callable, what: str, file_keys: Sequence[Hashable]
) -> tuple[list, list[CaseFailure]]:
    good: list = []
    failures: list[CaseFailure] = []
    for index, item in enumerate(data):
        try:
            transform(dict(item) if isinstance(item, Mapping) else item)
        except Exception as err:  # noqa: BLE001 - collected and reported together
            logger.debug("%s case %d failed validation", what, index, exc_info=True)
            failures.append(describe_failure(err, case_files(item, file_keys), stage="preprocess"))
        else:
            good.append(item)
    return good, failures


def _report(failures: Sequence[CaseFailure], total: int, what: str, skip_bad_cases: bool, usable: int) -> None:
    if not failures:
        logger.info("checked %d %s case(s): all usable", total, what)
        return
    lines = "\n".join(f"  - {f.file} ({f.stage}): {f.reason}. Fix: {f.fix}." for f in failures)
    if not skip_bad_cases:
        message = (
            f"{len(failures)} of {total} {what} case(s) cannot be used:\n{lines}\n"
            f"Fix or remove them, or pass `--skip_bad_cases True` to go on with the other {usable}."
        )
        logger.error(message)
        raise InvalidCasesError(message, failures)
    for failure in failures:
        logger.warning(failure.log_line())
    logger.warning("skip_bad_cases: using %d of %d %s case(s).", usable, total, what)


def validate_cases(
    data: Sequence[Mapping],
    transform: Callable,
    skip_bad_cases: bool = False,
    what: str = "datalist",
    file_keys: Sequence[Hashable] = ("image", "label"),
) -> list:
    """
    Run ``transform`` (typically loading + :class:`~mamba_monai.data.ValidateImaged` /
    :class:`~mamba_monai.data.ValidateLabelsd`) on every item of ``data`` and report every bad case at once,
    before training starts.

    Args:
        data: datalist items.
        transform: the checks, called on each item; its output is discarded.
        skip_bad_cases: drop the bad cases with a warning each instead of raising. Default False.
        what: the list's name in messages (e.g. ``"training"``). Default ``"datalist"``.
        file_keys: item keys whose paths name a case. Default ``("image", "label")``.

    Returns:
        the good items, in order.

    Raises:
        InvalidCasesError: some cases failed and ``skip_bad_cases`` is False (the message lists every one), or
            no case is usable.
    """
    return validate_datalist({what: data}, transform, skip_bad_cases=skip_bad_cases, file_keys=file_keys)[what]


def validate_datalist(
    datalist: str | os.PathLike | Mapping[str, Sequence[Mapping]],
    transform: Callable,
    keys: Sequence[str] = ("training", "validation"),
    base_dir: str | os.PathLike | None = None,
    skip_bad_cases: bool = False,
    file_keys: Sequence[Hashable] = ("image", "label"),
) -> dict[str, list]:
    """
    :func:`validate_cases` over several lists of a datalist at once, so that a training run names every bad case
    of its training AND validation lists in one error, before any epoch starts.

    Args:
        datalist: a Decathlon datalist JSON file (read with :func:`~mamba_monai.data.load_datalist`) or a mapping
            of list name -> items (then ``keys`` defaults to all of them).
        transform: the checks, called on each item.
        keys: the lists to read and check. Default ``("training", "validation")``.
        base_dir: folder that relative paths in the JSON are resolved against. Default: the datalist's folder.
        skip_bad_cases: drop the bad cases (each named in a warning) instead of raising. Default False.
        file_keys: item keys whose paths name a case. Default ``("image", "label")``.

    Returns:
        list name -> its usable items.
    """
    if isinstance(datalist, Mapping):
        lists = {k: list(v) for k, v in datalist.items()}
    else:
        from mamba_monai.data.datalist import load_datalist

        lists = {k: load_datalist(datalist, k, base_dir=base_dir, check_files=False) for k in keys}
    checked: dict[str, list] = {}
    failures: list[CaseFailure] = []
    for name, items in lists.items():
        checked[name], bad = _check_items(items, transform, name, file_keys)
        failures.extend(bad)
    total = sum(len(v) for v in lists.values())
    what = "/".join(lists)
    _report(failures, total, what, skip_bad_cases, total - len(failures))
    for name, items in lists.items():
        if items and not checked[name]:
            raise InvalidCasesError(f"none of the {len(items)} {name} case(s) can be used (see the warnings above).", failures)
    return checked
