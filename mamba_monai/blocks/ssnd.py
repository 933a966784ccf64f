"""SSND: VMamba's 2D selective-scan mixer (SS2D) generalised to 2D and 3D maps."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from mamba_monai.blocks.mamba import init_A_log, init_dt_bias
from mamba_monai.ops import scriptable_selective_scan
from mamba_monai.ops.cross_scan import cross_merge, cross_scan, num_scan_directions
from mamba_monai.ops.utils import format_shape

__all__ = ["SSND"]


class SSND(nn.Module):
    """
    N-D selective-scan (S6) mixer: the SS2D module of "VMamba: Visual State Space Model"
    (Liu et al., https://arxiv.org/abs/2401.10166) for 2D and 3D feature maps.

    The map is projected to an inner width ``d_inner = expand * d_model`` (branch ``x`` and gate ``z``),
    ``x`` goes through a depthwise convolution and SiLU, is flattened into ``K = 2 * spatial_dims`` token
    sequences by :func:`mamba_monai.ops.cross_scan.cross_scan` (each spatial axis innermost once, forwards
    and reversed), and each direction gets its own input-dependent step size, B and C projections, A and D.
    All directions go through ONE :func:`mamba_monai.ops.selective_scan` call (grouped B/C; through
    :func:`~mamba_monai.ops.scriptable_selective_scan`, so the module compiles with ``torch.jit.script``), are summed
    back into the map's token order, layer-normalised, gated by ``SiLU(z)`` and projected back to ``d_model``.

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        d_model: number of input and output channels C.
        d_state: state size N per inner channel. Defaults to 16.
        d_conv: kernel size of the depthwise convolution ('same' padding). Defaults to 3.
        expand: inner width is ``expand * d_model``. Defaults to 2.
        dt_rank: rank of the step-size projection; ``"auto"`` is ``ceil(d_model / 16)``. Defaults to "auto".
        dropout: dropout rate on the output. Defaults to 0.0.
        bias: bias in the input and output projections. Defaults to False.
        conv_bias: bias in the depthwise convolution. Defaults to True.

    Shapes:
        ``forward``: (B, C, *spatial) -> (B, C, *spatial) (channels-first, as MONAI);
        ``forward_channels_last``: (B, *spatial, C) -> (B, *spatial, C) (used inside the blocks).
    """

    def __init__(
        self,
        spatial_dims: int,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 3,
        expand: int = 2,
        dt_rank: int | str = "auto",
        dropout: float = 0.0,
        bias: bool = False,
        conv_bias: bool = True,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"`spatial_dims` can only be 2 or 3, got {spatial_dims}.")
        if d_model < 1 or d_state < 1 or d_conv < 1 or expand < 1:
            raise ValueError(
                "`d_model`, `d_state`, `d_conv` and `expand` must be positive, "
                f"got {d_model}, {d_state}, {d_conv}, {expand}."
            )
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"`dropout` must be in [0, 1], got {dropout}.")
        if dt_rank == "auto":
            dt_rank = math.ceil(d_model / 16)
        elif isinstance(dt_rank, str) or int(dt_rank) < 1:
            raise ValueError(f"`dt_rank` must be 'auto' or a positive int, got {dt_rank!r}.")
        self.spatial_dims = spatial_dims
        self.d_model = d_model
        self.d_state = d_state
        self.d_inner = int(expand * d_model)
        self.dt_rank = int(dt_rank)
        self.num_directions = num_scan_directions(spatial_dims)

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias)
        conv_type = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.conv = conv_type(
            self.d_inner, self.d_inner, d_conv, padding="same", groups=self.d_inner, bias=conv_bias
        )
        self._make_scan_parameters()
        self.out_norm = nn.LayerNorm(self.d_inner)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def _make_scan_parameters(self) -> None:
        """Per-direction projections (dt, B, C), step-size projection and bias, A (as log) and D."""
        k, d, r, n = self.num_directions, self.d_inner, self.dt_rank, self.d_state
        x_bound = d**-0.5  # nn.Linear's default range for a d -> r + 2n projection
        self.x_proj_weight = nn.Parameter(torch.empty(k, r + 2 * n, d).uniform_(-x_bound, x_bound))
        dt_bound = r**-0.5
        self.dt_proj_weight = nn.Parameter(torch.empty(k, d, r).uniform_(-dt_bound, dt_bound))
        self.dt_proj_bias = nn.Parameter(torch.stack([init_dt_bias(d) for _ in range(k)]))  # (K, d)
        self.A_logs = nn.Parameter(init_A_log(k * d, n))  # (K * d, N)
        self.Ds = nn.Parameter(torch.ones(k * d))

    def _check_input(self, x: torch.Tensor, channel_dim: int) -> None:
        if x.dim() != self.spatial_dims + 2 or x.shape[channel_dim] != self.d_model:
            layout = "(B, C, *spatial)" if channel_dim == 1 else "(B, *spatial, C)"
            raise ValueError(
                f"SSND expects a {layout} tensor with C={self.d_model} and {self.spatial_dims} spatial dims, "
                f"got shape {format_shape(x.shape)}."
            )

    def _scan(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, d_inner, *spatial) after conv and SiLU -> (B, d_inner, L) merged over the K directions."""
        b, d = x.shape[0], x.shape[1]
        spatial = x.shape[2:]
        k, n = self.num_directions, self.d_state
        xs = cross_scan(x, self.spatial_dims)  # (B, K, d, L)
        length = xs.shape[-1]
        x_dbl = torch.einsum("bkdl,kcd->bkcl", xs, self.x_proj_weight)
        dts, Bs, Cs = torch.split(x_dbl, [self.dt_rank, n, n], dim=2)
        dts = torch.einsum("bkrl,kdr->bkdl", dts, self.dt_proj_weight)
        y = scriptable_selective_scan(
            xs.reshape(b, k * d, length),
            dts.reshape(b, k * d, length),
            -torch.exp(self.A_logs.float()),
            Bs.contiguous(),  # grouped: (B, K, N, L), group k drives channels [k*d, (k+1)*d)
            Cs.contiguous(),
            self.Ds.float(),
            delta_bias=self.dt_proj_bias.float().reshape(-1),
            delta_softplus=True,
        )
        return cross_merge(y.reshape(b, k, d, length), spatial)

    def forward_channels_last(self, x: torch.Tensor) -> torch.Tensor:
        """(B, *spatial, C) -> (B, *spatial, C)."""
        self._check_input(x, channel_dim=-1)
        spatial = x.shape[1:-1]
        x_in, z = self.in_proj(x).chunk(2, dim=-1)  # (B, *S, d_inner) each
        x_in = F.silu(self.conv(x_in.movedim(-1, 1).contiguous()))
        y = self._scan(x_in)  # (B, d_inner, L)
        y = y.transpose(1, 2).reshape([x.shape[0]] + list(spatial) + [self.d_inner])
        y = self.out_norm(y) * F.silu(z)
        return self.dropout(self.out_proj(y))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *spatial) -> (B, C, *spatial)."""
        self._check_input(x, channel_dim=1)
        return self.forward_channels_last(x.movedim(1, -1)).movedim(-1, 1)
