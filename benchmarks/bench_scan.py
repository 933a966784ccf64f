"""
Benchmark of the selective scan on CPU: our fused numba backend against a per-step autograd loop
and against a memory floor, all measured in the same run.

    python benchmarks/bench_scan.py                      # b=1, d=192, L=4096, N=16; loop at L=512
    python benchmarks/bench_scan.py --full-loop          # also the loop at full L (minutes: 291 s measured)
    python benchmarks/bench_scan.py --threads 2 --repeats 5

What is timed (forward + backward of sum(y * w), inputs with softplus(delta + bias), D and z gate):

- ours: ``selective_scan(..., backend="cpu")`` (numba kernels, checkpointed reverse scan), and the same under
  ``pointwise_in_kernel()``: mamba-monai 0.3's path, with softplus and the gate computed per step inside the kernels
  rather than by vectorised torch ops around them; and under ``per_channel_kernels()``: mamba-monai 0.3.7's kernels
  (one recurrence per task, its N states as the inner loop) instead of the lane kernels (a block of channels as the
  vector lanes).
- loop: the naive reference mamba_ssm and VMamba ship, written here: materialise exp(delta * A) and
  delta * B * u as (b, d, L, N) tensors, then a Python loop that indexes ``[:, :, i]`` each step under
  autograd. Indexing makes autograd's backward quadratic in L, so it runs at ``--loop-length``
  (default 512) and the ratio is taken against ours at that same L.
- floor: the cost of streaming ONE (b, d, L, N) float32 tensor, the unit any implementation that
  materialises the discretised inputs pays per intermediate: (i) ``torch.exp(X)`` into a fresh
  allocation (page faults included), (ii) ``torch.exp(X, out=Y)`` into a preallocated tensor.
  Our kernel never builds such a tensor; "ours / floor" says how many such passes our whole
  forward + backward costs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from mamba_monai.ops import selective_scan  # noqa: E402
from mamba_monai.ops.selective_scan_cpu import per_channel_kernels, pointwise_in_kernel  # noqa: E402


def make_inputs(b: int, d: int, length: int, n: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "u": torch.randn(b, d, length, generator=g),
        "delta": torch.randn(b, d, length, generator=g) * 0.5,
        "A": -torch.rand(d, n, generator=g) * 2 - 0.1,
        "B": torch.randn(b, n, length, generator=g),
        "C": torch.randn(b, n, length, generator=g),
        "D": torch.randn(d, generator=g),
        "z": torch.randn(b, d, length, generator=g),
        "delta_bias": torch.randn(d, generator=g) * 0.3,
    }


def loop_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus=True):
    """Per-step autograd loop with per-step indexing (the usual torch reference of the scan)."""
    delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    deltaA = torch.exp(delta.unsqueeze(-1) * A[None, :, None, :])  # (b, d, L, N)
    deltaBu = (delta * u).unsqueeze(-1) * B.transpose(1, 2).unsqueeze(1)  # (b, d, L, N)
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for i in range(u.shape[2]):
        h = deltaA[:, :, i] * h + deltaBu[:, :, i]
        ys.append(torch.einsum("bdn,bn->bd", h, C[:, :, i]))
    y = torch.stack(ys, dim=2) + u * D[:, None]
    return y * F.silu(z)


def ours(inputs: dict):
    return selective_scan(**inputs, delta_softplus=True, backend="cpu")


def time_fwd_bwd(fn, inputs: dict, repeats: int) -> tuple[float, float]:
    """Median seconds of (forward, forward + backward) over ``repeats`` runs."""
    fwd, tot = [], []
    w = torch.randn(inputs["u"].shape, generator=torch.Generator().manual_seed(1))
    for _ in range(repeats):
        leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
        t0 = time.perf_counter()
        y = fn(leaves)
        t1 = time.perf_counter()
        (y * w).sum().backward()
        t2 = time.perf_counter()
        fwd.append(t1 - t0)
        tot.append(t2 - t0)
    return statistics.median(fwd), statistics.median(tot)


def time_floor(b: int, d: int, length: int, n: int, repeats: int) -> tuple[float, float]:
    """Median seconds of one exp pass over a (b, d, L, N) float32 tensor: fresh output, preallocated output."""
    x = -torch.rand(b, d, length, n)
    y = torch.empty_like(x)
    fresh, pre = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = torch.exp(x)
        t1 = time.perf_counter()
        torch.exp(x, out=y)
        t2 = time.perf_counter()
        del out
        fresh.append(t1 - t0)
        pre.append(t2 - t1)
    return statistics.median(fresh), statistics.median(pre)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--b", type=int, default=1)
    p.add_argument("--d", type=int, default=192)
    p.add_argument("--L", type=int, default=4096)
    p.add_argument("--N", type=int, default=16)
    p.add_argument(
        "--loop-length", type=int, default=512, help="L at which the autograd loop is timed (its backward is quadratic in L)"
    )
    p.add_argument("--full-loop", action="store_true", help="also time the autograd loop at the full L (slow)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch (and numba) threads; default: torch's")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}; b={a.b} d={a.d} L={a.L} N={a.N}, float32")

    full = make_inputs(a.b, a.d, a.L, a.N)
    t0 = time.perf_counter()
    time_fwd_bwd(ours, make_inputs(1, 2, 8, 2), 1)  # compile or load the numba kernels
    print(f"numba kernels ready in {time.perf_counter() - t0:.2f} s (first use: compile, then on-disk cache)")

    f_ours, t_ours = time_fwd_bwd(ours, full, a.repeats)
    print(f"ours  L={a.L}: forward {f_ours * 1e3:.1f} ms, forward+backward {t_ours * 1e3:.1f} ms")
    with per_channel_kernels():  # mamba-monai 0.3.7: states, not channels, as the kernels' inner loop
        f_pc, t_pc = time_fwd_bwd(ours, full, a.repeats)
    print(
        f"0.3.7 per-channel kernels L={a.L}: forward {f_pc * 1e3:.1f} ms, forward+backward {t_pc * 1e3:.1f} ms "
        f"-> the lane kernels are {f_pc / f_ours:.2f}x faster forward, {t_pc / t_ours:.2f}x forward+backward"
    )
    with pointwise_in_kernel():  # mamba-monai 0.3: softplus and gate per step inside the kernels
        f_v03, t_v03 = time_fwd_bwd(ours, full, a.repeats)
    print(
        f"0.3 kernel path L={a.L}: forward {f_v03 * 1e3:.1f} ms, forward+backward {t_v03 * 1e3:.1f} ms "
        f"-> today's is {f_v03 / f_ours:.2f}x faster forward, {t_v03 / t_ours:.2f}x forward+backward"
    )

    fresh, pre = time_floor(a.b, a.d, a.L, a.N, a.repeats)
    print(
        f"floor (one exp pass over a ({a.b}, {a.d}, {a.L}, {a.N}) float32 tensor): "
        f"fresh allocation {fresh * 1e3:.2f} ms, preallocated {pre * 1e3:.2f} ms"
    )
    print(
        f"ours fwd+bwd / floor: {t_ours / fresh:.1f}x the fresh-allocation pass, "
        f"{t_ours / pre:.1f}x the preallocated pass (forward alone: {f_ours / fresh:.1f}x, {f_ours / pre:.1f}x)"
    )

    lengths = [a.loop_length] + ([a.L] if a.full_loop and a.L != a.loop_length else [])
    for length in lengths:
        small = make_inputs(a.b, a.d, length, a.N)
        f_loop, t_loop = time_fwd_bwd(lambda x: loop_scan(**x), small, 1)
        f_o, t_o = (f_ours, t_ours) if length == a.L else time_fwd_bwd(ours, small, a.repeats)
        print(
            f"autograd loop L={length}: forward {f_loop:.3f} s, forward+backward {t_loop:.3f} s (measured); "
            f"ours at L={length}: {t_o * 1e3:.1f} ms -> speedup {t_loop / t_o:.0f}x fwd+bwd, {f_loop / f_o:.0f}x fwd"
        )
    if not a.full_loop:
        est = t_loop * a.L / a.loop_length
        print(
            f"autograd loop at L={a.L}, linear extrapolation from L={a.loop_length}: >= {est:.1f} s "
            f"(a lower bound: its backward grows quadratically; DESIGN.md measured 291 s at d=192, L=4096) "
            f"-> speedup >= {est / t_ours:.0f}x (run --full-loop to measure)"
        )


if __name__ == "__main__":
    main()
