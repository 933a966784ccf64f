"""``import mamba_monai`` keeps freed memory for reuse (glibc), so a training step does not fault its activations'
pages in again every step; a user's own allocator settings, or ``MAMBA_MONAI_KEEP_FREED_MEMORY=0``, stand."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mamba_monai import runtime

ALLOCATOR_VARIABLES = (*runtime.MALLOC_ENV_VARS, "GLIBC_TUNABLES", runtime.OPT_OUT_ENV)
GLIBC = runtime._glibc() is not None

# 64 MiB allocated, filled and freed 10 times: the page faults of the last 5 (4 KiB pages: 16,384 per refault); the
# first few lay the heap out (one of cycles 2-3 still faults), as a training run's first steps do
CYCLES = 5
REALLOC_FAULTS = f"""
import resource, torch, mamba_monai
def cycle():
    torch.empty(16 << 20).fill_(1.0)
for _ in range(5):
    cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range({CYCLES}):
    cycle()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(**env: str) -> int:
    child_env = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_VARIABLES}
    child_env.update(env)
    done = subprocess.run([sys.executable, "-c", REALLOC_FAULTS], env=child_env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.split()[-1])


def _thp_always() -> bool:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as fh:
            return "[always]" in fh.read()
    except OSError:
        return False


@pytest.mark.skipif(not GLIBC, reason="glibc's allocator only")
def test_import_keeps_freed_memory_and_a_users_settings_stand():
    kept = _faults()
    assert kept < 2000, f"{kept} page faults re-allocating a freed 64 MiB block {CYCLES} times after import mamba_monai"
    if _thp_always():  # 2 MiB pages: too few faults either way to tell the settings apart
        return
    for env in ({runtime.OPT_OUT_ENV: "0"}, {"MALLOC_TRIM_THRESHOLD_": "131072"}):
        returned = _faults(**env)
        assert returned > CYCLES * 16384 // 2 and returned > 20 * kept, (env, returned, kept)


@pytest.mark.skipif(not GLIBC, reason="glibc's allocator only")
def test_keep_freed_memory_applies_only_without_user_settings(monkeypatch):
    for name in ALLOCATOR_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert runtime.keep_freed_memory() is True
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.cpu.hwcaps=-AVX512F")  # not an allocator tunable
    assert runtime.keep_freed_memory() is True
    for name, value in (("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0"), ("MALLOC_MMAP_THRESHOLD_", "65536"),
                        (runtime.OPT_OUT_ENV, "0"), (runtime.OPT_OUT_ENV, "off")):
        with monkeypatch.context() as m:
            m.setenv(name, value)
            assert runtime.keep_freed_memory() is False, (name, value)
