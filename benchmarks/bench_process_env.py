"""
Process-wide settings that ``import mamba_monai`` makes for CPU work, against the alternatives: training step (and
inference) times of the fast EMNet and MONAI's UNet under

- OpenMP's wait: ``OMP_WAIT_POLICY=PASSIVE``, ``GOMP_SPINCOUNT=1000`` (what ``import mamba_monai`` sets when neither
  is set) and libgomp's own default (300,000 spins), on a quiet machine and beside busy-loop processes standing for
  another job;
- glibc's allocator: freed memory kept for reuse (:func:`mamba_monai.runtime.keep_freed_memory`, run at import)
  against glibc's defaults (``MAMBA_MONAI_KEEP_FREED_MEMORY=0``), which return large freed blocks to the system and
  fault their pages in again on the next step.

torch and the numba kernels each run a GNU OpenMP pool, and OpenMP reads these variables when its library loads, so
every setting runs ``benchmarks/bench_emnet.py --skip-train`` in a fresh process with the setting in its environment.
The table gives each net's median seconds per step (and per volume with ``--infer``) and the ratio to
mamba_monai's defaults (``spin 1000``); the nets are timed side by side in each process.

    python benchmarks/bench_process_env.py [--nets emnet_fast,unet] [--repeats 7] [--threads 2] [--busy 0,1] [--infer]
        [--settings "spin 1000,malloc default"]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

BENCH_EMNET = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench_emnet.py")
SETTINGS = {
    "PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "spin 1000": {"GOMP_SPINCOUNT": "1000"},  # mamba_monai's defaults
    "spin 300000": {"GOMP_SPINCOUNT": "300000"},  # libgomp's default when neither variable is set
    "malloc default": {"GOMP_SPINCOUNT": "1000", "MAMBA_MONAI_KEEP_FREED_MEMORY": "0"},  # glibc's own allocator settings
}
REFERENCE = "spin 1000"
# every variable a setting may name, and glibc's allocator variables (whose presence stops keep_freed_memory)
SETTING_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MAMBA_MONAI_KEEP_FREED_MEMORY", "MALLOC_TRIM_THRESHOLD_",
                     "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")


def setting_env(setting: dict[str, str], base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default ``os.environ``) without any variable the settings change, then ``setting``'s."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in SETTING_VARIABLES}
    env.update(setting)
    return env


@contextlib.contextmanager
def busy_loops(count: int) -> Iterator[None]:
    """``count`` single-threaded Python busy loops running for the duration of the block."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def run_setting(
    setting: dict[str, str], nets: str, repeats: int, threads: int, infer: bool, data_dir: str
) -> dict[str, Any]:
    """bench_emnet.py's step (and inference) figures from a fresh process with ``setting`` in its environment."""
    with tempfile.TemporaryDirectory(prefix="bench_env_") as tmp:
        out = os.path.join(tmp, "figures.json")
        cmd = [sys.executable, BENCH_EMNET, "--nets", nets, "--skip-train", "--repeats", str(repeats),
               "--threads", str(threads), "--data-dir", data_dir, "--json", out]
        if not infer:
            cmd.append("--skip-infer")
        done = subprocess.run(cmd, env=setting_env(setting), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(cmd)} failed (rc {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
        with open(out) as fh:
            return json.load(fh)["nets"]


def ratios(results: dict[str, dict[str, dict[str, Any]]], key: str) -> dict[str, dict[str, float]]:
    """``results[setting][net][key]`` divided by the reference setting's, per setting and net."""
    ref = results[REFERENCE]
    return {s: {n: f[key] / ref[n][key] for n, f in nets.items() if key in f} for s, nets in results.items()}


def print_table(report: dict[str, Any]) -> None:
    for busy, results in report["runs"].items():
        print(f"\nbeside {busy} busy loop(s): seconds (ratio to {REFERENCE})")
        for key, what in (("step_seconds", "s/step"), ("infer_seconds", "s/volume")):
            if not any(key in f for nets in results.values() for f in nets.values()):
                continue
            rel = ratios(results, key)
            for setting, nets in results.items():
                cells = "  ".join(f"{n} {f[key]:.3f} ({rel[setting][n]:.2f}x)" for n, f in nets.items() if key in f)
                print(f"  {what:<8} {setting:<15} {cells}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nets", default="emnet_fast,unet", help="bench_emnet.py nets (default emnet_fast,unet)")
    p.add_argument("--repeats", type=int, default=7, help="timed steps per net and setting (median; default 7)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--busy", default="0,1", help="busy-loop processes beside the run, one count per round (default 0,1)")
    p.add_argument("--infer", action="store_true", help="also time sliding-window inference per volume")
    p.add_argument("--settings", default=",".join(SETTINGS), help=f"subset of: {', '.join(SETTINGS)}")
    p.add_argument("--data-dir", default=None, help="demo CT folder (written if absent; default a temporary one)")
    p.add_argument("--json", default=None, help="write the figures to this JSON file")
    args = p.parse_args(argv)
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    if REFERENCE not in settings or set(settings) - set(SETTINGS):
        p.error(f"--settings must name some of {list(SETTINGS)}, {REFERENCE!r} among them; got {args.settings!r}")
    try:
        busy_counts = [int(b) for b in args.busy.split(",")]
    except ValueError:
        p.error(f"--busy expects comma-separated counts such as 0,1; got {args.busy!r}")
    report: dict[str, Any] = {"args": vars(args), "runs": {}}
    with tempfile.TemporaryDirectory(prefix="bench_env_data_") as tmp:
        data_dir = args.data_dir or os.path.join(tmp, "demo_ct")
        for busy in busy_counts:
            results = {}
            with busy_loops(busy):
                for setting in settings:
                    print(f"[beside {busy} busy loop(s)] {setting}: {SETTINGS[setting]}", flush=True)
                    results[setting] = run_setting(
                        SETTINGS[setting], args.nets, args.repeats, args.threads, args.infer, data_dir
                    )
            report["runs"][str(busy)] = results
            if args.json:  # nothing lost if a later round is interrupted
                with open(args.json, "w") as fh:
                    json.dump(report, fh, indent=2)
    print_table(report)
    return report


if __name__ == "__main__":
    main()
