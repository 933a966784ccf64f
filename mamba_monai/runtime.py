"""Process-wide settings that make CPU training faster: how glibc's allocator hands memory back to the system.

A training step on a CPU allocates and frees the same large activations every step (16 MB each for EM-Net's
full-resolution branch at batch 4 of 64x64x32). glibc's defaults return part of that freed memory to the system
(``munmap`` of blocks above its adaptive threshold, trims of its heap's top), and the next step faults those pages in
again: 20,000-60,000 page faults per step for EM-Net and MONAI's UNet alike on this project's 2-core machines, up to
16% of a step (``benchmarks/bench_process_env.py``). :func:`keep_freed_memory` keeps freed memory in the heap for
reuse, as jemalloc or tcmalloc (PyTorch's advice for CPU training) do, without preloading a library. The process
then keeps its peak memory use between steps instead of returning it.
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["keep_freed_memory", "MALLOC_ENV_VARS", "OPT_OUT_ENV"]

# glibc's own tunables: when a user sets one, their choice stands and keep_freed_memory changes nothing
MALLOC_ENV_VARS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")
OPT_OUT_ENV = "MAMBA_MONAI_KEEP_FREED_MEMORY"

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3  # mallopt parameters, malloc.h
_MIB = 1 << 20


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)  # the symbols already loaded: no library search (find_library runs ldconfig)
        libc.gnu_get_libc_version  # noqa: B018  (absent in musl and other C libraries)
    except (OSError, AttributeError):
        return None
    return libc


def keep_freed_memory(mmap_threshold_mib: int = 1024, trim_threshold_mib: int = 1024, top_pad_mib: int = 64) -> bool:
    """
    Make glibc serve allocations below ``mmap_threshold_mib`` from its heap and keep up to ``trim_threshold_mib`` of
    free memory at the heap's top instead of returning it to the system, growing the heap ``top_pad_mib`` at a time.

    ``import mamba_monai`` calls this with the defaults. It changes nothing (and returns False) on a C library other
    than glibc, when one of :data:`MALLOC_ENV_VARS` or a ``glibc.malloc`` tunable in ``GLIBC_TUNABLES`` is set (the
    user's allocator settings stand), or when the
    environment variable ``MAMBA_MONAI_KEEP_FREED_MEMORY`` is ``0``.

    Args:
        mmap_threshold_mib: allocations at least this large get their own ``mmap`` (returned at ``free``).
        trim_threshold_mib: free memory at the heap's top beyond this is returned to the system.
        top_pad_mib: extra memory requested each time the heap grows.

    Returns:
        True when the settings were applied.
    """
    if os.environ.get(OPT_OUT_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if any(name in os.environ for name in MALLOC_ENV_VARS) or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    libc = _glibc()
    if libc is None:
        return False
    settings = ((_M_MMAP_THRESHOLD, mmap_threshold_mib), (_M_TRIM_THRESHOLD, trim_threshold_mib), (_M_TOP_PAD, top_pad_mib))
    return all(libc.mallopt(param, int(mib) * _MIB) == 1 for param, mib in settings)
