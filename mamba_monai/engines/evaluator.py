"""An evaluator that isolates each case: a bad file is named, skipped and listed; every other case is done."""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from monai.engines import SupervisedEvaluator
from monai.engines.utils import IterationEvents
from monai.utils import min_version, optional_import

from mamba_monai.data.isolation import CASE_FAILURE_KEY, CaseFailure, describe_failure, isolated_collate
from mamba_monai.data.nifti import atomic_write_text

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")
idist, _ = optional_import("ignite.distributed")

__all__ = ["CaseIsolatingEvaluator", "CasesSkippedError", "CaseReport"]

logger = logging.getLogger(__name__)

_SKIPPED: dict = {}
"""The iteration output of a skipped case (compared by identity): its ITERATION_COMPLETED handlers do not run."""


class CasesSkippedError(SystemExit):
    """Raised at the end of a run in which some cases were skipped, after every other case was done, so that a
    pipeline calling ``python -m monai.bundle run`` sees exit status 1. It derives from ``SystemExit`` so that the
    command ends with the summary on stderr instead of a traceback (MONAI's config parser re-wraps any
    ``Exception`` raised in a ``run`` expression, hiding the message); catch it by name in Python.
    ``failures`` lists the skipped cases."""

    def __init__(self, message: str, failures: Sequence[CaseFailure]) -> None:
        super().__init__(message)
        self.failures = list(failures)


class CaseReport:
    """
    The cases a run did and skipped. Each skip is logged at once (one line: file, stage, reason, fix) and
    ``skipped.csv`` (columns ``file, stage, reason, fix``) is rewritten atomically, so an interrupted run keeps
    its list; :meth:`summary` gives the closing account.

    Args:
        report_dir: folder of ``skipped.csv``; None writes no file.
        filename: the report's file name. Default ``"skipped.csv"`` (``skipped_rank<r>.csv`` on ranks > 0).
    """

    FIELDS = ("file", "stage", "reason", "fix")

    def __init__(self, report_dir: str | None = None, filename: str = "skipped.csv") -> None:
        self.report_dir = report_dir
        self.filename = filename
        self.done: list[str] = []
        self.skipped: list[CaseFailure] = []

    @property
    def path(self) -> str | None:
        if self.report_dir is None:
            return None
        rank = idist.get_rank() if idist.get_world_size() > 1 else 0
        name = self.filename if rank == 0 else f"{os.path.splitext(self.filename)[0]}_rank{rank}.csv"
        return os.path.join(self.report_dir, name)

    def reset(self) -> None:
        self.done, self.skipped = [], []

    def add_done(self, files: Sequence[str]) -> None:
        self.done.extend(files)

    def add_skipped(self, failure: CaseFailure) -> None:
        self.skipped.append(failure)
        logger.warning(failure.log_line())
        self.write()

    def write(self) -> None:
        path = self.path
        if path is None:
            return
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.FIELDS)
        writer.writeheader()
        writer.writerows({k: getattr(f, k) for k in self.FIELDS} for f in self.skipped)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        atomic_write_text(buffer.getvalue(), path)

    def summary(self, verb: str = "done") -> str:
        total = len(self.done) + len(self.skipped)
        text = f"{len(self.done)} of {total} case(s) {verb}"
        if not self.skipped:
            return text + ", none skipped."
        where = f" (listed in {self.path})" if self.path else ""
        lines = "\n".join(f"  - {f.file} ({f.stage}): {f.reason}. Fix: {f.fix}." for f in self.skipped)
        return f"{text}, {len(self.skipped)} skipped{where}:\n{lines}"


def _batch_files(batchdata: Any) -> list[str]:
    """The source files of the images in a collated batch (``filename_or_obj`` of the first tensor's metadata)."""
    if not isinstance(batchdata, Mapping):
        return []
    for value in batchdata.values():
        meta = getattr(value, "meta", None)
        if isinstance(meta, Mapping) and "filename_or_obj" in meta:
            names = meta["filename_or_obj"]
            return [str(n) for n in names] if isinstance(names, (list, tuple)) else [str(names)]
    return []


class CaseIsolatingEvaluator(SupervisedEvaluator):
    """
    ``monai.engines.SupervisedEvaluator`` that never lets one case stop the others. A case fails:

    - in its preprocessing (unreadable file, a validation error...): its :class:`~mamba_monai.data.IsolatedDataset`
      item arrives as a failure record;
    - in the forward pass or the postprocessing (inversion, writing): the error is caught here.

    Either way the case is skipped with one log line (file, stage, reason, fix), its ``ITERATION_COMPLETED``
    handlers (metrics, savers) do not run for it, and it is listed in ``report_dir/skipped.csv``. At the end of
    :meth:`run` the summary is logged (cases done and skipped) and, if any case was skipped and
    ``raise_on_skipped``, :class:`CasesSkippedError` is raised: ``python -m monai.bundle run`` then exits non-zero
    after every good case was written. ``KeyboardInterrupt`` is not caught.

    Args:
        args: as ``SupervisedEvaluator`` (device, val_data_loader, network, ...).
        report_dir: where ``skipped.csv`` goes (the bundle's ``output_dir``). Default None: no file.
        raise_on_skipped: raise :class:`CasesSkippedError` at the end when a case was skipped. Default True.
        summary_verb: how the summary calls a finished case, e.g. ``"written"``. Default ``"done"``.
        kwargs: as ``SupervisedEvaluator``.
    """

    def __init__(
        self,
        *args: Any,
        report_dir: str | None = None,
        raise_on_skipped: bool = True,
        summary_verb: str = "done",
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.report = CaseReport(report_dir)
        self.raise_on_skipped = raise_on_skipped
        self.summary_verb = summary_verb
        self._stage = "inference"
        self._done_in_epoch = 0
        self.add_event_handler(IterationEvents.FORWARD_COMPLETED, self._set_stage, "postprocess")
        loader = self.data_loader
        batch_size = getattr(loader, "batch_size", 1) or 1
        if batch_size > 1 and getattr(loader, "collate_fn", None) is not isolated_collate:
            logger.warning(
                "CaseIsolatingEvaluator: batch_size %d without `collate_fn=mamba_monai.data.isolated_collate`: "
                "a batch that mixes a failed case with good ones cannot be collated.", batch_size,
            )

    def _set_stage(self, engine: Any, stage: str) -> None:
        self._stage = stage

    def _fire_event(self, event_name: Any, *event_args: Any, **event_kwargs: Any) -> None:
        # a skipped case has no output for the metrics and savers; an epoch without any good case has no metrics
        if event_name == Events.ITERATION_COMPLETED and self.state.output is _SKIPPED:
            return
        if event_name == Events.EPOCH_STARTED:
            self._done_in_epoch = 0
        if event_name == Events.EPOCH_COMPLETED and self._done_in_epoch == 0 and self.report.skipped:
            return
        super()._fire_event(event_name, *event_args, **event_kwargs)

    def _iteration(self, engine: Any, batchdata: dict) -> dict:
        failures = batchdata.pop(CASE_FAILURE_KEY, None) if isinstance(batchdata, dict) else None
        for failure in failures or ():
            self.report.add_skipped(CaseFailure.from_json(failure))
        if isinstance(batchdata, dict) and not batchdata:
            return _SKIPPED
        files = _batch_files(batchdata)
        self._stage = "inference"
        try:
            output = super()._iteration(engine, batchdata)
        except Exception as err:  # noqa: BLE001 - the case is skipped and named; the others go on
            logger.debug("case(s) %s failed in %s", files, self._stage, exc_info=True)
            for file in files or ["<unknown file>"]:
                self.report.add_skipped(describe_failure(err, [file], stage=self._stage))
            return _SKIPPED
        self.report.add_done(files)
        self._done_in_epoch += 1
        return output

    def run(self, global_epoch: int = 1) -> None:  # type: ignore[override]
        self.report.reset()
        self.report.write()  # a fresh (empty) list: a stale one from an earlier run never lingers
        super().run(global_epoch)
        summary = self.report.summary(self.summary_verb)
        if not self.report.skipped:
            logger.info("Summary: %s", summary)
            return
        logger.warning("Summary: %s", summary)
        if self.raise_on_skipped:
            where = f"; listed in {self.report.path}" if self.report.path else ""
            total = len(self.report.done) + len(self.report.skipped)
            raise CasesSkippedError(
                f"{len(self.report.skipped)} of {total} case(s) skipped{where} (see the summary above).",
                self.report.skipped,
            )
