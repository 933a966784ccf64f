"""Writing a deterministic demo data set on disk once, safely: what every demo generator shares.

A demo data set is a folder with case files in a few sub-folders, a Decathlon-style datalist and a
``.complete`` marker written last. :func:`ensure_demo_dataset` writes it unless a complete set with the same
parameters is already there, serialises concurrent callers (``torchrun`` ranks) with an ``fcntl`` lock, refuses
to write into a folder that holds someone else's data, and removes only its own files from an earlier set.
The task-specific generators (:mod:`~mamba_monai.data.demo_ct`, the 2D and MRI ones) supply the cases.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from mamba_monai.data.datalist import write_datalist
from mamba_monai.data.nifti import atomic_write_text

try:  # POSIX advisory locks; elsewhere concurrent callers are not serialised
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["ensure_demo_dataset", "demo_splits", "write_demo_datalist", "DATALIST_NAME"]

logger = logging.getLogger(__name__)

DATALIST_NAME = "dataset_0.json"
_MARKER_NAME = ".complete"
_CLAIM_NAME = ".demo_generator"
_LEGACY_CLAIM_NAMES = (".demo_ct_generator",)  # written by earlier releases
_LOCK_NAME = ".lock"


def demo_splits(num_train: int, num_val: int, num_test: int) -> dict[str, list[int]]:
    """Case numbers of each split of a demo set (training first, then validation, then test), after checking the
    counts: at least one training case, none negative."""
    for name, value, low in (("num_train", num_train, 1), ("num_val", num_val, 0), ("num_test", num_test, 0)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise ValueError(f"`{name}` must be an int >= {low}, got {value!r}.")
    return {
        "training": list(range(num_train)),
        "validation": list(range(num_train, num_train + num_val)),
        "test": list(range(num_train + num_val, num_train + num_val + num_test)),
    }


def write_demo_datalist(root_dir: str, lists: dict[str, list[dict]], unlabeled_test: bool = True, **extra: Any) -> str:
    """Write ``root_dir/dataset_0.json`` with the ``training``, ``validation`` and ``test`` lists of a demo set.
    With ``unlabeled_test`` the Decathlon form is used: ``test`` lists the images only and ``test_labeled`` the
    items with their labels. ``extra`` are the datalist's other keys (name, description, labels...)."""
    test = lists["test"]
    if unlabeled_test:
        extra["test_labeled"] = test
        test = [{"image": item["image"]} for item in test]
    return write_datalist(
        os.path.join(root_dir, DATALIST_NAME),
        training=lists["training"],
        validation=lists["validation"],
        test=test,
        numValidation=len(lists["validation"]),
        **extra,
    )


@contextlib.contextmanager
def _locked(root_dir: str) -> Iterator[None]:
    """An exclusive advisory lock on ``root_dir/.lock`` (blocks until other writers are done)."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(os.path.join(root_dir, _LOCK_NAME), "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _is_complete(root_dir: str, params: dict) -> bool:
    try:
        with open(os.path.join(root_dir, _MARKER_NAME), encoding="utf-8") as f:
            content = json.load(f)
    except (OSError, ValueError):
        return False
    if content.get("params") != params:
        return False
    return all(os.path.isfile(os.path.join(root_dir, rel)) for rel in content.get("files", []))


def _is_claimed(root_dir: str) -> bool:
    return any(os.path.exists(os.path.join(root_dir, n)) for n in (_CLAIM_NAME, *_LEGACY_CLAIM_NAMES))


def _check_ownership(root_dir: str, subdirs: Sequence[str], generator: str) -> None:
    """Refuse to write into a folder that holds case files not written by a demo generator."""
    if _is_claimed(root_dir):
        return
    foreign = [
        os.path.join(sub, n)
        for sub in subdirs
        if os.path.isdir(os.path.join(root_dir, sub))
        for n in os.listdir(os.path.join(root_dir, sub))
    ]
    if foreign or os.path.exists(os.path.join(root_dir, DATALIST_NAME)):
        raise FileExistsError(
            f"'{root_dir}' already holds a data set not written by {generator} "
            f"(e.g. {(foreign or [DATALIST_NAME])[0]!r}); pass an empty or demo folder as `root_dir`."
        )


def _remove_own_cases(root_dir: str, subdirs: Sequence[str], case_prefixes: Sequence[str]) -> None:
    """Drop the case files of an earlier, different set (only names a generator writes, and their temp files)."""
    prefixes = tuple(case_prefixes) + tuple(f".{p}" for p in case_prefixes)
    for sub in subdirs:
        folder = os.path.join(root_dir, sub)
        if os.path.isdir(folder):
            for n in os.listdir(folder):
                if n.startswith(prefixes):
                    path = os.path.join(folder, n)
                    if os.path.isfile(path):
                        os.remove(path)
        os.makedirs(folder, exist_ok=True)


def ensure_demo_dataset(
    root_dir: str | os.PathLike,
    params: dict,
    write_cases: Callable[[str], list[str]],
    subdirs: Sequence[str],
    case_prefixes: Sequence[str],
    overwrite: bool = False,
) -> str:
    """Write a demo data set under ``root_dir`` unless a complete one with the same ``params`` is there.

    A missing or different ``.complete`` marker (interrupted run, other parameters, other generator version) makes
    the whole set be written again; otherwise the call touches nothing. Concurrent callers are serialised by an
    ``fcntl`` lock on ``root_dir/.lock``: one writes, the others wait and then find the set complete.

    Args:
        root_dir: the data set folder (created if needed). It must be empty or hold a demo set.
        params: everything the content depends on, including ``"generator"`` (a name for messages) and
            ``"version"``; compared with the marker's copy.
        write_cases: called as ``write_cases(root_dir)`` under the lock after the sub-folders are cleaned; writes
            every case file and the datalist ``root_dir/dataset_0.json`` (atomically, e.g. with
            :func:`~mamba_monai.data.write_nifti`) and returns the written paths relative to ``root_dir``.
        subdirs: the sub-folders the cases go to (e.g. ``("imagesTr", "labelsTr")``).
        case_prefixes: file-name prefixes of the generator's case files; only those are removed from an earlier set.
        overwrite: rewrite even a complete set (call it from one process only). Default False.

    Returns:
        the path of ``root_dir/dataset_0.json``.
    """
    if "generator" not in params or "version" not in params:
        raise ValueError(f"`params` must hold 'generator' and 'version', got keys {sorted(params)}.")
    root_dir = os.path.abspath(os.fspath(root_dir))
    datalist_path = os.path.join(root_dir, DATALIST_NAME)
    if not overwrite and _is_complete(root_dir, params):
        return datalist_path
    os.makedirs(root_dir, exist_ok=True)
    with _locked(root_dir):
        if not overwrite and _is_complete(root_dir, params):  # another process finished it meanwhile
            return datalist_path
        _check_ownership(root_dir, subdirs, str(params["generator"]))
        start = time.perf_counter()
        marker = os.path.join(root_dir, _MARKER_NAME)
        if os.path.exists(marker):
            os.remove(marker)
        claim = json.dumps({"generator": params["generator"]}) + "\n"
        atomic_write_text(claim, os.path.join(root_dir, _CLAIM_NAME))
        _remove_own_cases(root_dir, subdirs, case_prefixes)
        files = list(write_cases(root_dir))
        if DATALIST_NAME not in files:
            files.append(DATALIST_NAME)
        marker_text = json.dumps({"params": params, "files": files}, indent=4) + "\n"
        atomic_write_text(marker_text, marker)  # last: the set is complete
        logger.info(
            "wrote demo data set %s (%d files) to %s in %.1f s",
            params["generator"], len(files), root_dir, time.perf_counter() - start,
        )
    return datalist_path
