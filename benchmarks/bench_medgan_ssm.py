"""Training-step cost of MedGANSSMGenerator beside MONAI's UNet at 2D synthesis size (CPU).

Usage (from the repository root):

    python benchmarks/bench_medgan_ssm.py [--batch 4] [--size 128] [--repeats 3] [--threads 2]

Prints the parameter count and forward+backward seconds (median of ``--repeats`` after one warm-up, which also
compiles the numba scan) of the default ``MedGANSSMGenerator(spatial_dims=2, in_channels=3)`` and of a MONAI
``UNet(2, 3, 1, channels=(32, 64, 128, 256), strides=(2, 2, 2), num_res_units=2)``, and their ratio; then the
generator again with the scan's mamba-monai 0.3 kernel path (``pointwise_in_kernel()``: softplus and gate inside the
kernels) and the speed-up of today's path over it. Machines here are shared: compare figures only within one run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from monai.networks.nets import UNet

from mamba_monai.networks import MedGANSSMGenerator
from mamba_monai.ops.selective_scan_cpu import pointwise_in_kernel


def step_seconds(net: torch.nn.Module, x: torch.Tensor, repeats: int) -> float:
    net.train()
    net(x).mean().backward()  # warm-up (numba compile / load from cache)
    times = []
    for _ in range(repeats):
        net.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        net(x).mean().backward()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.rand(args.batch, 3, args.size, args.size)
    nets = {
        "MedGANSSMGenerator": MedGANSSMGenerator(spatial_dims=2, in_channels=3),
        "UNet": UNet(2, 3, 1, channels=(32, 64, 128, 256), strides=(2, 2, 2), num_res_units=2),
    }
    results = {}
    for name, net in nets.items():
        params = sum(p.numel() for p in net.parameters())
        results[name] = step_seconds(net, x, args.repeats)
        print(f"{name:20s} params {params / 1e6:6.2f}M  fwd+bwd {results[name]:6.2f} s "
              f"(batch {args.batch}, {args.size}x{args.size}, {args.threads} threads)")
    print(f"ratio MedGANSSMGenerator / UNet: {results['MedGANSSMGenerator'] / results['UNet']:.2f}")
    with pointwise_in_kernel():
        v03 = step_seconds(nets["MedGANSSMGenerator"], x, args.repeats)
    print(f"MedGANSSMGenerator with the 0.3 scan path: fwd+bwd {v03:6.2f} s -> today's path is "
          f"{v03 / results['MedGANSSMGenerator']:.2f}x faster")


if __name__ == "__main__":
    main()
