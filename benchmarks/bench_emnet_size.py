"""Parameter count and FLOPs of EMNet (default, published configuration) beside the published figures.

EM-Net (Chang et al., MICCAI 2024, https://arxiv.org/abs/2409.17675) reports 39.4M parameters and 898 GFLOPs
for one 1x1x128^3 input. No forward is run on real data here: the network is moved to the meta device and
``torch.utils.flop_counter.FlopCounterMode`` counts convolutions, transposed convolutions and matrix products
(2 FLOPs per multiply-add). Three parts are not aten matmul/conv ops and are counted analytically:

- selective scans: the Mamba scan is replaced, for this count only, by a stub that returns a tensor of the right
  shape and adds ``9 * b * d * L * N`` FLOPs per scan (per state element and step: exp(dt*A) 2, dt*B*u 2,
  h = dA*h + dBu 2, y += C*h 2, plus about 1 for softplus(dt), D*u and the silu(z) gate spread over N);
- FFTs of the EFL layers (``SpectralGating`` is stubbed the same way): ``2.5 * n * log2(n)`` per real FFT of n points (half of a complex FFT), for the forward
  and the inverse transform, per batch element and channel, plus 6 FLOPs per complex filter multiply;
- element-wise ops (norms, activations, residual additions) are not counted, as in most published FLOP counts.

Run: ``python benchmarks/bench_emnet_size.py [--roi 128] [--spatial_dims 3]``.
"""

from __future__ import annotations

import argparse
import math

import torch
from torch.utils.flop_counter import FlopCounterMode

import mamba_monai.blocks.mamba as mamba_module
from mamba_monai.blocks.spectral import SpectralGating
from mamba_monai.networks import EMNet

PUBLISHED_PARAMS = 39.4e6
PUBLISHED_GFLOPS = 898.0


def _published_pos_embed_params(net: EMNet, roi: int = 128) -> int:
    """Parameters the published code adds as positional embeddings (one (L, C) table per CSR Mamba layer at its
    training ROI of 128^3); this implementation has none, so any ROI works."""
    from mamba_monai.blocks.emnet import CSRMambaLayer

    total = 0
    for stride_blocks in ((net.stages, [4 * 2**i for i in range(net.num_stages)]),
                          (net.up_blocks, [4 * 2**i for i in reversed(range(net.num_stages - 1))])):
        for block, stride in zip(*stride_blocks):
            layers = block.layers if hasattr(block, "layers") else getattr(block.block, "layers", [])
            for layer in layers:
                if isinstance(layer, CSRMambaLayer):
                    total += layer.channels * (roi // stride) ** net.spatial_dims
    return total


def count(roi: int, spatial_dims: int) -> dict[str, float]:
    net = EMNet(spatial_dims=spatial_dims)
    params = sum(p.numel() for p in net.parameters())
    pos = _published_pos_embed_params(net) if spatial_dims == 3 else 0
    net = net.to("meta").eval()
    counts = {"scan": 0.0, "fft": 0.0}

    def scan_stub(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, **kwargs):
        b, d, length = u.shape
        counts["scan"] += 9.0 * b * d * length * A.shape[1]
        return torch.empty_like(u)

    def fft_stub(x):
        # the flop counter does not count FFTs: count them analytically here
        n = math.prod(x.shape[2:])
        bc = x.shape[0] * x.shape[1]
        n_freq = math.prod(x.shape[2:-1]) * (x.shape[-1] // 2 + 1)
        counts["fft"] += bc * (2 * 2.5 * n * math.log2(n) + 6 * n_freq)
        return torch.empty_like(x)

    for m in net.modules():
        if isinstance(m, SpectralGating):
            m.forward = fft_stub
    original = mamba_module.selective_scan
    mamba_module.selective_scan = scan_stub
    try:
        x = torch.empty(1, 1, *([roi] * spatial_dims), device="meta")
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            net(x)
    finally:
        mamba_module.selective_scan = original
    return {"params": params, "pos": pos, "matmul": float(fc.get_total_flops()), **counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--roi", type=int, default=128, help="cubic (square) input size, a multiple of 32")
    parser.add_argument("--spatial_dims", type=int, default=3)
    args = parser.parse_args()
    c = count(args.roi, args.spatial_dims)
    shape = "x".join([str(args.roi)] * args.spatial_dims)
    total = c["matmul"] + c["fft"] + c["scan"]
    print(f"EMNet default config (feature_size 48, depths 3,3,3,3, fft_nums 0,0,2,2, decoder 3,3,3), input 1x1x{shape}")
    print(f"  parameters            : {c['params'] / 1e6:8.2f} M   (published 39.4 M)")
    if c["pos"]:
        print(f"  + published pos. emb. : {c['pos'] / 1e6:8.2f} M   (tables tied to the 128^3 ROI; not used here)")
        print(f"  = published-equivalent: {(c['params'] + c['pos']) / 1e6:8.2f} M   "
              f"({100 * ((c['params'] + c['pos']) / PUBLISHED_PARAMS - 1):+.1f}% vs published)")
    print(f"  conv/linear (FlopCounterMode): {c['matmul'] / 1e9:9.1f} GFLOPs ({c['matmul'] / 2e9:.1f} GMACs)")
    print(f"  fft (analytic)               : {c['fft'] / 1e9:9.3f} GFLOPs")
    print(f"  scan (analytic, 9*b*d*L*N)   : {c['scan'] / 1e9:9.1f} GFLOPs")
    print(f"  total                        : {total / 1e9:9.1f} GFLOPs   (published {PUBLISHED_GFLOPS:.0f} GFLOPs at 128^3)")


if __name__ == "__main__":
    main()
