"""Small helpers shared by kernels, layers and losses."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from monai.utils import optional_import

__all__ = [
    "autocast_disabled",
    "format_shape",
    "mamba_ssm_scan_fn",
    "MAMBA_SSM_DTYPES",
    "has_numba",
    "numba_jit",
    "numba_launch",
    "numba_threads",
]

numba, has_numba = optional_import("numba")

_AUTOCAST_DEVICES = ("cpu", "cuda", "xpu", "mps", "hpu")

MAMBA_SSM_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
"""Input dtypes mamba_ssm's CUDA selective scan supports."""

_mamba_ssm_scan = None
_mamba_ssm_checked = False


def mamba_ssm_scan_fn():
    """mamba_ssm's ``selective_scan_fn`` (CUDA kernels), or None when it cannot be imported; looked up once, on first
    need."""
    global _mamba_ssm_scan, _mamba_ssm_checked
    if not _mamba_ssm_checked:
        fn, ok = optional_import("mamba_ssm.ops.selective_scan_interface", name="selective_scan_fn")
        _mamba_ssm_scan = fn if ok else None
        _mamba_ssm_checked = True
    return _mamba_ssm_scan


def format_shape(sizes: list[int]) -> str:
    """Sizes (a shape, list or tuple) written as Python writes a tuple, ``(2, 4)``, ``(3,)``, ``()``, for error
    messages; TorchScript compiles it (``tuple(x.shape)`` it cannot)."""
    if len(sizes) == 1:
        return f"({sizes[0]},)"
    return "(" + ", ".join([str(s) for s in sizes]) + ")"


def autocast_disabled(device: torch.device) -> contextlib.AbstractContextManager:
    """A context where ``torch.autocast`` is off for ``device``, so FFTs and reductions run in the inputs' own
    (float32) precision; a no-op for devices autocast does not know (e.g. ``meta``, used for FLOP counting)."""
    if device.type in _AUTOCAST_DEVICES:
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def numba_jit(fn):
    """``njit(parallel=True, fastmath=True, cache=True)``; without the on-disk cache where it cannot be written."""
    try:
        return numba.njit(parallel=True, fastmath=True, cache=True)(fn)
    except RuntimeError:  # no writable cache location (read-only install)
        return numba.njit(parallel=True, fastmath=True, cache=False)(fn)


def numba_threads() -> int:
    """Our numba kernels run with torch's intra-op thread count, capped by numba's pool size."""
    return max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))


@contextlib.contextmanager
def numba_launch() -> Iterator[None]:
    """A numba kernel launch with :func:`numba_threads` threads. The first launch starts numba's OpenMP pool, which
    resets the OpenMP thread count torch uses (to ``NUMBA_NUM_THREADS``): a process that asked torch for 1 thread
    would run every later torch op on all cores. torch's count is put back afterwards."""
    torch_threads = torch.get_num_threads()
    numba.set_num_threads(numba_threads())
    try:
        yield
    finally:
        if torch.get_num_threads() != torch_threads:
            torch.set_num_threads(torch_threads)
