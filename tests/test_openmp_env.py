"""The OpenMP spin count ``import mamba_monai`` sets reaches torch's thread pool and never overrides a user's setting.

libgomp prints the settings it started with when ``OMP_DISPLAY_ENV=VERBOSE``: that is what these tests read, in a
fresh interpreter each (OpenMP reads its environment once, when its library loads)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OMP_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def _openmp_start(code: str, **env: str) -> tuple[dict[str, str], str]:
    """Run ``code`` in a fresh interpreter; returns the spin count of every OpenMP runtime that started, and stdout."""
    child_env = {k: v for k, v in os.environ.items() if k not in OMP_VARIABLES}
    child_env.update(env, OMP_DISPLAY_ENV="VERBOSE")
    done = subprocess.run([sys.executable, "-c", code], env=child_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return re.findall(r"GOMP_SPINCOUNT = '(\d+)'", done.stdout + done.stderr), done.stdout


def test_import_before_torch_sets_1000_spins_for_torch_and_the_environment():
    spins, out = _openmp_start("import mamba_monai, os; print('env', os.environ.get('GOMP_SPINCOUNT'))")
    assert spins == ["1000"], f"torch's OpenMP runtime started with spin counts {spins}"
    assert "env 1000" in out  # inherited by the processes a bundle run starts (DataLoader workers, torchrun)


@pytest.mark.parametrize("env,expected", [
    ({"OMP_WAIT_POLICY": "PASSIVE"}, "0"),
    ({"OMP_WAIT_POLICY": "ACTIVE"}, None),  # libgomp's ACTIVE: a very large count
    ({"GOMP_SPINCOUNT": "20000"}, "20000"),
])
def test_a_setting_in_the_environment_is_kept(env, expected):
    spins, out = _openmp_start("import mamba_monai, os; print('env', os.environ.get('GOMP_SPINCOUNT'))", **env)
    assert len(spins) == 1
    if expected is None:
        assert int(spins[0]) > 10**9
    else:
        assert spins[0] == expected
    assert f"env {env.get('GOMP_SPINCOUNT')}" in out


def test_numba_kernels_runtime_gets_the_spin_count_when_torch_came_first():
    code = (
        "import torch, mamba_monai\n"
        "from mamba_monai.ops.instance_norm_cpu import instance_norm_act\n"
        "instance_norm_act(torch.randn(1, 2, 4, 4, 4), None, None, 1e-5, 0.01)\n"
    )
    spins, _ = _openmp_start(code)
    # torch's runtime loaded before mamba_monai could set anything (libgomp's default); numba's loads on first use
    assert spins == ["300000", "1000"], spins


def test_bench_process_env_gives_each_setting_alone():
    spec = importlib.util.spec_from_file_location(
        "bench_process_env", os.path.join(ROOT, "benchmarks", "bench_process_env.py")
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    base = {"PATH": "/bin", "OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "7", "MALLOC_TRIM_THRESHOLD_": "0"}
    assert bench.setting_env(bench.SETTINGS["spin 1000"], base) == {"PATH": "/bin", "GOMP_SPINCOUNT": "1000"}
    assert bench.setting_env(bench.SETTINGS["PASSIVE"], base) == {"PATH": "/bin", "OMP_WAIT_POLICY": "PASSIVE"}
    assert bench.setting_env(bench.SETTINGS["malloc default"], base) == {
        "PATH": "/bin", "GOMP_SPINCOUNT": "1000", "MAMBA_MONAI_KEEP_FREED_MEMORY": "0"
    }
    results = {"spin 1000": {"unet": {"step_seconds": 0.5}}, "PASSIVE": {"unet": {"step_seconds": 0.75}}}
    assert bench.ratios(results, "step_seconds") == {"spin 1000": {"unet": 1.0}, "PASSIVE": {"unet": 1.5}}
