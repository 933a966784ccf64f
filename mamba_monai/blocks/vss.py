"""VSSBlock: VMamba's visual state-space block (pre-norm SSND + MLP residuals) for 2D and 3D maps."""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.blocks import MLPBlock
from monai.networks.layers import DropPath
from torch.utils.checkpoint import checkpoint

from mamba_monai.blocks.ssnd import SSND
from mamba_monai.ops.utils import format_shape

__all__ = ["VSSBlock"]


class VSSBlock(nn.Module):
    """
    Visual state-space block of "VMamba: Visual State Space Model" (Liu et al.,
    https://arxiv.org/abs/2401.10166), for 2D and 3D channels-first maps::

        x = x + DropPath(SSND(LayerNorm(x)))
        x = x + DropPath(MLP(LayerNorm(x)))      # only when mlp_ratio > 0

    LayerNorm runs over the channels of each voxel; the MLP is MONAI's :class:`~monai.networks.blocks.MLPBlock`
    (GELU) and the stochastic depth MONAI's :class:`~monai.networks.layers.DropPath`.
    All blocks in :mod:`mamba_monai.blocks` name their width ``channels`` (the SSND mixer keeps Mamba's ``d_model``).

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        channels: number of input and output channels C.
        d_state: SSND state size N. Defaults to 16.
        d_conv: SSND depthwise convolution size. Defaults to 3.
        expand: SSND inner width factor. Defaults to 2.
        dt_rank: SSND step-size rank, ``"auto"`` is ``ceil(channels / 16)``. Defaults to "auto".
        mlp_ratio: MLP hidden width is ``int(mlp_ratio * channels)``; 0 leaves the MLP out. Defaults to 4.0.
        drop_path: stochastic depth rate of both residual branches. Defaults to 0.0.
        dropout: dropout rate inside SSND's output and the MLP. Defaults to 0.0.
        norm_eps: epsilon of the LayerNorms. Defaults to 1e-6.
        use_checkpoint: in training, recompute the block in the backward pass
            (``torch.utils.checkpoint``, ``use_reentrant=False``) to save memory. Defaults to False.
            Eager Python only: a module compiled with ``torch.jit.script`` runs without it.

    Shapes:
        (B, C, *spatial) -> (B, C, *spatial).
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        d_state: int = 16,
        d_conv: int = 3,
        expand: int = 2,
        dt_rank: int | str = "auto",
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        dropout: float = 0.0,
        norm_eps: float = 1e-6,
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"`spatial_dims` can only be 2 or 3, got {spatial_dims}.")
        if channels < 1:
            raise ValueError(f"`channels` must be positive, got {channels}.")
        if mlp_ratio < 0:
            raise ValueError(f"`mlp_ratio` must be >= 0 (0 disables the MLP), got {mlp_ratio}.")
        if not 0.0 <= drop_path < 1.0:
            raise ValueError(f"`drop_path` must be in [0, 1), got {drop_path}.")
        self.spatial_dims = spatial_dims
        self.channels = channels
        self.use_checkpoint = use_checkpoint
        self._block_name = type(self).__name__  # for error messages (TorchScript cannot read type(self))
        self.norm = nn.LayerNorm(channels, eps=norm_eps)
        self.mixer = SSND(
            spatial_dims, channels, d_state=d_state, d_conv=d_conv, expand=expand, dt_rank=dt_rank, dropout=dropout
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.mlp_norm, self.mlp = self._make_mlp(channels, mlp_ratio, dropout, norm_eps)

    @staticmethod
    def _make_mlp(
        channels: int, mlp_ratio: float, dropout: float, norm_eps: float
    ) -> tuple[nn.Module | None, nn.Module | None]:
        hidden = int(mlp_ratio * channels)
        if hidden < 1:
            return None, None
        return nn.LayerNorm(channels, eps=norm_eps), MLPBlock(channels, hidden, dropout_rate=dropout, act="GELU")

    def _mix(self, h: torch.Tensor) -> torch.Tensor:
        """Token-mixing branch on normalised channels-last tokens h (B, *spatial, C)."""
        return self.mixer.forward_channels_last(h)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.movedim(1, -1)  # (B, *spatial, C)
        t = t + self.drop_path(self._mix(self.norm(t)))
        if self.mlp is not None:
            t = t + self.drop_path(self.mlp(self.mlp_norm(t)))
        return t.movedim(-1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *spatial) -> (B, C, *spatial)."""
        if x.dim() != self.spatial_dims + 2 or x.shape[1] != self.channels:
            raise ValueError(
                f"{self._block_name} expects a (B, C, *spatial) tensor with C={self.channels} and "
                f"{self.spatial_dims} spatial dims, got shape {format_shape(x.shape)}."
            )
        if not torch.jit.is_scripting() and self.use_checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)
