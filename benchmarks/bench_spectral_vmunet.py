"""Peak training memory and step time of SpectralVMUNet with and without gradient checkpointing, in one run.

One training step = forward + DiceCE loss + backward (no optimizer, so no optimizer state) on a random batch
(default: batch 8 of 1-channel 256x256 images, 3 classes), in training mode, at the bundle-size configuration
given by the arguments (default ``base_channels=32, num_stages=4, depth=2``). Each variant
(``use_checkpoint=False`` / ``True``) runs in its own fresh subprocess, one after the other, so that the
memory high-water marks do not mix:

- CPU: peak resident set size of the subprocess (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) after the
  measured steps, and the same minus the resident size just before them (model, libraries and compiled kernels
  excluded: what the step itself adds). Before measuring, one small step (batch 1, 64x64) loads the lazily
  compiled numba scan kernels, whose compiler memory would otherwise count.
- CUDA: ``torch.cuda.max_memory_allocated`` over the measured steps (after ``reset_peak_memory_stats``), and
  the same minus the memory allocated before them.

Step time is the median over ``--steps`` steps (wall clock; ``torch.cuda.synchronize`` on CUDA). The table
prints both variants and the ratios (memory without / with checkpointing, time with / without). Machines here
are shared and noisy: compare figures only within one run.

Run (about 5-10 minutes on a 2-core CPU at the defaults)::

    python benchmarks/bench_spectral_vmunet.py [--batch 8] [--size 256] [--base_channels 32] [--num_stages 4]
        [--depth 2] [--spatial_dims 2] [--num_scales 1] [--steps 1] [--device cpu|cuda] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

MIB = 1024.0 * 1024.0


def _rss_mib() -> float:
    """Current resident set size of this process (Linux /proc), MiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / MIB


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # ru_maxrss is KiB on Linux


def _build(args: argparse.Namespace, use_checkpoint: bool) -> torch.nn.Module:
    from mamba_monai.networks import SpectralVMUNet

    return SpectralVMUNet(
        in_channels=1,
        out_channels=3,
        img_size=args.size,
        base_channels=args.base_channels,
        num_stages=args.num_stages,
        depth=args.depth,
        spatial_dims=args.spatial_dims,
        num_scales=args.num_scales,
        use_checkpoint=use_checkpoint,
    )


def _step(net: torch.nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor) -> None:
    loss = loss_fn(net(x), y)
    loss.backward()
    net.zero_grad(set_to_none=True)


def worker(args: argparse.Namespace) -> dict:
    """One variant in this (fresh) process; returns its figures."""
    from monai.losses import DiceCELoss

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    net = _build(args, bool(args.use_checkpoint)).to(device).train()
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    spatial = (args.size,) * args.spatial_dims
    small = (4 * 2 ** (args.num_stages - 1) * 2,) * args.spatial_dims
    # warm-up: compile / load the scan kernels (and CUDA context) at a small size
    _step(net, loss_fn, torch.randn(1, 1, *small, device=device), torch.randint(0, 3, (1, 1, *small), device=device))
    x = torch.randn(args.batch, 1, *spatial, device=device)
    y = torch.randint(0, 3, (args.batch, 1, *spatial), device=device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / MIB
    else:
        base = _rss_mib()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        _step(net, loss_fn, x, y)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / MIB if device.type == "cuda" else _peak_rss_mib()
    return {
        "use_checkpoint": bool(args.use_checkpoint),
        "params": sum(p.numel() for p in net.parameters()),
        "peak_mib": peak,
        "base_mib": base,
        "step_mib": peak - base,
        "step_s": statistics.median(times),
        "threads": torch.get_num_threads(),
        "device": str(device),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=256, help="spatial size on every axis (and img_size)")
    parser.add_argument("--base_channels", type=int, default=32)
    parser.add_argument("--num_stages", type=int, default=4)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--spatial_dims", type=int, default=2)
    parser.add_argument("--num_scales", type=int, default=1)
    parser.add_argument("--steps", type=int, default=1, help="measured steps per variant (median time)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--use_checkpoint", type=int, default=None, help=argparse.SUPPRESS)  # worker mode
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()

    if args.use_checkpoint is not None:  # worker: print one JSON line
        print("RESULT " + json.dumps(worker(args)), flush=True)
        return

    unit = "peak RSS" if args.device == "cpu" else "max_memory_allocated"
    print(
        f"SpectralVMUNet training step (forward + DiceCE + backward), batch {args.batch}, "
        f"{'x'.join([str(args.size)] * args.spatial_dims)}, base_channels={args.base_channels}, "
        f"num_stages={args.num_stages}, depth={args.depth}, num_scales={args.num_scales}, device={args.device}; "
        f"memory = {unit}, each variant in its own subprocess",
        flush=True,
    )
    results = []
    for use_checkpoint in (0, 1):
        cmd = [sys.executable, os.path.abspath(__file__), "--use_checkpoint", str(use_checkpoint)]
        for key in ("batch", "size", "base_channels", "num_stages", "depth", "spatial_dims", "num_scales", "steps",
                    "device", "threads"):
            cmd += [f"--{key}", str(getattr(args, key))]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"worker (use_checkpoint={use_checkpoint}) failed:\n{proc.stdout}\n{proc.stderr}")
        results.append(json.loads(lines[-1][len("RESULT "):]))
        r = results[-1]
        print(f"  done: use_checkpoint={r['use_checkpoint']} in {r['step_s']:.1f} s/step", flush=True)

    print(f"\nparams: {results[0]['params'] / 1e6:.2f}M, torch threads: {results[0]['threads']}")
    header = (f"{'use_checkpoint':>15} | {'peak MiB':>9} | {'before step MiB':>15} | {'step adds MiB':>13} | "
              f"{'step s':>7}")
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{str(r['use_checkpoint']):>15} | {r['peak_mib']:9.0f} | {r['base_mib']:15.0f} | "
              f"{r['step_mib']:13.0f} | {r['step_s']:7.2f}")
    plain, ckpt = results
    print(f"\npeak memory ratio  (no checkpoint / checkpoint): {plain['peak_mib'] / ckpt['peak_mib']:.2f}x")
    print(f"memory the step adds, ratio                      : {plain['step_mib'] / max(ckpt['step_mib'], 1e-9):.2f}x")
    print(f"step time ratio    (checkpoint / no checkpoint)  : {ckpt['step_s'] / plain['step_s']:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=4)


if __name__ == "__main__":
    main()
