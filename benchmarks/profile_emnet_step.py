"""Where one EMNet training step spends its time on a CPU: torch.profiler over forward + backward + optimizer step of
the emnet_seg3d bundle's network (its own ``network_def``), grouped into the parts a speed-up would target.

    python benchmarks/profile_emnet_step.py [--batch 2] [--roi 64 64 32] [--steps 3] [--threads N] [--trace OUT.json]
        [--config train network_large]  # the larger network, the default up to 0.3.11 (configs merged in order)

Prints the mean wall time of a step and a table of self CPU time per group (share of all operator time):
selective scan forward / backward (``mamba_monai::selective_scan_fwd`` / ``_bwd``), FFTs (EFL layers), convolutions
(forward and backward), normalisations, data movement (permute / copy / cat / flip: the cross-scan orderings and
layout changes), elementwise and the rest. Steps after the first (warm-up: numba compilation, allocator) are profiled.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import mamba_monai  # noqa: E402,F401  (its OpenMP spin count set before torch starts its pool)
import torch  # noqa: E402
from monai.losses import DiceCELoss  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from mamba_monai.bundle import bundle_workflow  # noqa: E402

GROUPS = (
    ("selective scan forward", ("selective_scan_fwd",)),
    ("selective scan backward", ("selective_scan_bwd",)),
    ("FFT (EFL)", ("fft_",)),
    ("convolution", ("conv", "mkldnn_convolution", "slow_conv")),
    ("normalisation", ("norm",)),
    ("data movement", ("copy_", "permute", "contiguous", "clone", "cat", "flip", "transpose", "stack", "index",
                       "gather", "scatter", "narrow", "slice", "expand", "as_strided", "view", "reshape")),
    ("matmul / linear", ("mm", "matmul", "linear", "addmm", "bmm", "einsum")),
    ("elementwise", ("mul", "add", "sub", "div", "exp", "silu", "sigmoid", "softplus", "gelu", "relu", "neg",
                     "pow", "sqrt", "where", "fill", "zero", "sum", "mean", "softmax", "log")),
)


def group_of(name: str) -> str:
    lowered = name.lower()
    if "selective_scan" in lowered:
        # "GeneratedBackwardFor_<op>_fwd_default" is autograd's kernel that runs the forward op (its self time is
        # the forward scan); the node named "...Backward" and the _bwd op are the backward
        return "selective scan backward" if lowered.endswith("backward") or "_bwd" in lowered else "selective scan forward"
    for group, keys in GROUPS:
        if any(k in lowered for k in keys):
            return group
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--roi", type=int, nargs=3, default=[64, 64, 32])
    parser.add_argument("--steps", type=int, default=3, help="profiled steps (after one warm-up step)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--trace", default=None, help="also write a Chrome trace here")
    parser.add_argument("--config", nargs="+", default=["train"],
                        help="bundle configs merged in order, e.g. train network_large (default: train)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    net = bundle_workflow("emnet_seg3d", args.config).parser.get_parsed_content("network_def").train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    x = torch.randn(args.batch, 1, *args.roi)
    y = torch.randint(0, 6, (args.batch, 1, *args.roi))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(net(x), y).backward()
        optimizer.step()

    step()  # warm-up
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    wall = (time.perf_counter() - start) / args.steps
    if args.trace:
        prof.export_chrome_trace(args.trace)

    totals: dict[str, float] = defaultdict(float)
    top: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for event in prof.key_averages():
        group = group_of(event.key)
        totals[group] += event.self_cpu_time_total
        top[group].append((event.self_cpu_time_total, event.key))
    all_time = sum(totals.values())
    print(f"EMNet (emnet_seg3d network_def of {'+'.join(args.config)}) training step, batch {args.batch}, ROI {tuple(args.roi)}, "
          f"{torch.get_num_threads()} threads: {wall:.2f} s per step (mean of {args.steps}, profiler on)")
    print(f"{'group':<26}{'self CPU s/step':>16}{'share':>8}  largest operators")
    for group, total in sorted(totals.items(), key=lambda kv: -kv[1]):
        ops = ", ".join(k for _, k in sorted(top[group], reverse=True)[:3])
        print(f"{group:<26}{total / 1e6 / args.steps:>16.3f}{100 * total / all_time:>7.1f}%  {ops}")


if __name__ == "__main__":
    main()
