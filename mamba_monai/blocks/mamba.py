"""Mamba (S6) mixer over token sequences, built on :func:`mamba_monai.ops.selective_scan`."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from mamba_monai.ops import scriptable_selective_scan
from mamba_monai.ops.utils import format_shape

__all__ = ["MambaMixer", "init_dt_bias", "init_A_log"]


def init_dt_bias(d_inner: int, dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4) -> torch.Tensor:
    """Bias whose softplus is log-uniform in [dt_min, dt_max], as in the Mamba paper."""
    dt = torch.exp(torch.rand(d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = dt.clamp(min=dt_init_floor)
    return dt + torch.log(-torch.expm1(-dt))  # inverse of softplus


def init_A_log(d_inner: int, d_state: int) -> torch.Tensor:
    """S4D-real initialisation: A = -(1, 2, ..., d_state) for every channel, stored as log(-A)."""
    return torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d_inner, 1)


class _ScanBranch(nn.Module):
    """Causal depthwise conv + input-dependent (dt, B, C) + selective scan, for one scan direction."""

    def __init__(self, d_inner: int, d_state: int, d_conv: int, dt_rank: int, conv_bias: bool) -> None:
        super().__init__()
        self.d_state = d_state
        self.dt_rank = dt_rank
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1, bias=conv_bias)
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, d_inner, bias=True)
        nn.init.uniform_(self.dt_proj.weight, -(dt_rank**-0.5), dt_rank**-0.5)
        with torch.no_grad():
            self.dt_proj.bias.copy_(init_dt_bias(d_inner))
        self.A_log = nn.Parameter(init_A_log(d_inner, d_state))
        self.D = nn.Parameter(torch.ones(d_inner))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """x, z: (b, d_inner, L) -> (b, d_inner, L)."""
        length = x.shape[-1]
        # time-major (b, L, d) from here on, the layout of the projections and of the CPU scan's kernels
        x = F.silu(self.conv1d(x)[..., :length]).transpose(1, 2).contiguous()
        x_dbl = self.x_proj(x)  # (b, L, r + 2n)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.linear(dt, self.dt_proj.weight).transpose(1, 2)  # bias goes in as delta_bias
        A = -torch.exp(self.A_log.float())
        return scriptable_selective_scan(
            x.transpose(1, 2),
            dt,
            A,
            B.transpose(1, 2),
            C.transpose(1, 2),
            self.D.float(),
            z=z,
            delta_bias=self.dt_proj.bias.float(),
            delta_softplus=True,
        )


class MambaMixer(nn.Module):
    """
    The Mamba (S6) selective state-space mixer of Gu & Dao, "Mamba: Linear-Time Sequence Modeling with
    Selective State Spaces" (https://arxiv.org/abs/2312.00752), over a sequence of tokens.

    With ``bidirectional=True`` a second branch (own conv, projections, A and D) scans the flipped
    sequence and the two outputs are averaged before the output projection, as in Vision Mamba / SegMamba.

    Args:
        d_model: token channels C.
        d_state: state size N per channel. Defaults to 16.
        d_conv: width of the causal depthwise convolution. Defaults to 4.
        expand: inner width = ``expand * d_model``. Defaults to 2.
        dt_rank: rank of the step-size projection; ``"auto"`` is ``ceil(d_model / 16)``.
        bidirectional: also scan the reversed sequence. Defaults to False.
        bias: bias in the input and output projections. Defaults to False.
        conv_bias: bias in the depthwise convolution. Defaults to True.

    Shapes:
        input (B, L, C) -> output (B, L, C).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        bidirectional: bool = False,
        bias: bool = False,
        conv_bias: bool = True,
    ) -> None:
        super().__init__()
        if d_model < 1 or d_state < 1 or d_conv < 1 or expand < 1:
            raise ValueError(f"d_model, d_state, d_conv and expand must be positive, got {d_model}, {d_state}, {d_conv}, {expand}.")
        self.d_model = d_model
        self.d_inner = int(expand * d_model)
        dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias)
        self.forward_branch = _ScanBranch(self.d_inner, d_state, d_conv, dt_rank, conv_bias)
        self.backward_branch = _ScanBranch(self.d_inner, d_state, d_conv, dt_rank, conv_bias) if bidirectional else None
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"MambaMixer expects (B, L, {self.d_model}) tokens, got shape {format_shape(x.shape)}.")
        xz = self.in_proj(x).transpose(1, 2)  # (b, 2 * d_inner, L)
        x_in, z = xz.chunk(2, dim=1)
        y = self.forward_branch(x_in, z)
        if self.backward_branch is not None:
            y_rev = self.backward_branch(x_in.flip(-1), z.flip(-1)).flip(-1)
            y = 0.5 * (y + y_rev)
        return self.out_proj(y.transpose(1, 2))
