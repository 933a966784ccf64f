"""Spectral (FFT) blocks: a resolution-free GFNet global filter and the dual-path SpectralVSSBlock."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from mamba_monai.ops.utils import autocast_disabled
from mamba_monai.blocks.vss import VSSBlock

__all__ = ["SpectralGating", "SpectralVSSBlock", "resize_complex_filter", "rfft_grid_shape"]


def rfft_grid_shape(spatial_shape: Sequence[int]) -> tuple[int, ...]:
    """Shape of ``torch.fft.rfftn`` over ``spatial_shape``: full axes, then ``n // 2 + 1`` on the last one."""
    spatial_shape = tuple(int(s) for s in spatial_shape)
    return spatial_shape[:-1] + (spatial_shape[-1] // 2 + 1,)


def resize_complex_filter(weight: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """
    Resample a complex filter defined on one rfft frequency grid onto another.

    Real and imaginary parts are interpolated linearly (bilinear in 2D, trilinear in 3D, ``align_corners=True``).
    The full (non-rfft) axes are interpolated in centred order (``fftshift``) so that low frequencies land on
    low frequencies and the highest frequencies on the highest; on the last (rfft) axis, frequency 0 maps to 0
    and the end of the grid to the end. When the grid already has ``size`` the weight is returned unchanged.

    Args:
        weight: complex (C, *freq) tensor, or real (C, *freq, 2) (real, imag) tensor; 1 to 3 frequency axes.
        size: target frequency grid, ``len(size) == weight`` frequency axes; use :func:`rfft_grid_shape`
            to get it from a spatial size.

    Returns:
        complex (C, *size) tensor (float32 or float64 parts, as the input).
    """
    if not torch.is_complex(weight):
        if weight.shape[-1] != 2:
            raise ValueError(
                "resize_complex_filter expects a complex (C, *freq) or real (C, *freq, 2) weight, "
                f"got shape {tuple(weight.shape)}."
            )
        weight = torch.view_as_complex(weight.contiguous())
    size = tuple(int(s) for s in size)
    n = weight.dim() - 1
    if len(size) != n or n not in (1, 2, 3) or min(size) < 1:
        raise ValueError(
            f"resize_complex_filter: weight has {n} frequency axes (shape {tuple(weight.shape)}), "
            f"got target size {size}; expected {n} positive sizes with 1 <= {n} <= 3."
        )
    if tuple(weight.shape[1:]) == size:
        return weight
    full_axes = tuple(range(1, n))  # every frequency axis but the last (rfft) one
    src = torch.fft.fftshift(weight, dim=full_axes) if full_axes else weight
    parts = torch.view_as_real(src).movedim(-1, 1).reshape(1, -1, *src.shape[1:])  # (1, C * 2, *freq)
    mode = ("linear", "bilinear", "trilinear")[n - 1]
    out = F.interpolate(parts, size=size, mode=mode, align_corners=True)
    out = torch.view_as_complex(out.reshape(weight.shape[0], 2, *size).movedim(1, -1).contiguous())
    return torch.fft.ifftshift(out, dim=full_axes) if full_axes else out


class SpectralGating(nn.Module):
    """
    Global filter layer of "Global Filter Networks for Image Classification" (Rao et al., NeurIPS 2021,
    https://arxiv.org/abs/2107.00645) for 2D and 3D maps, at any spatial size::

        y = irfftn(rfftn(x, norm="ortho") * W, s=spatial, norm="ortho")

    ``W`` is a learnable complex weight per channel and frequency, stored on the rfft grid of the spatial
    size ``filter_size``. For an input of another size it is resampled by :func:`resize_complex_filter`
    to that input's grid (no interpolation when the sizes match), so sliding-window inference and other
    patch sizes work. The FFTs are computed in float32 even under ``torch.autocast``; the output is cast
    back to the input's dtype. The weight starts near identity (real part 1 + N(0, 0.02), imaginary part
    N(0, 0.02)), so the layer starts as a mild filter.

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        channels: number of input and output channels C.
        filter_size: spatial size the weight is defined for, an int (same on every axis) or one per axis.
            The stored grid is ``(*filter_size[:-1], filter_size[-1] // 2 + 1)``. Defaults to 16.

    Shapes:
        (B, C, *spatial) -> (B, C, *spatial), real.
    """

    def __init__(self, spatial_dims: int, channels: int, filter_size: int | Sequence[int] = 16) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"`spatial_dims` can only be 2 or 3, got {spatial_dims}.")
        if channels < 1:
            raise ValueError(f"`channels` must be positive, got {channels}.")
        sizes = (filter_size,) * spatial_dims if isinstance(filter_size, int) else tuple(filter_size)
        if len(sizes) != spatial_dims or any(int(s) < 1 for s in sizes):
            raise ValueError(
                f"`filter_size` must be a positive int or {spatial_dims} positive ints, got {filter_size!r}."
            )
        self.spatial_dims = spatial_dims
        self.channels = channels
        self.filter_size = tuple(int(s) for s in sizes)
        grid = rfft_grid_shape(self.filter_size)
        weight = torch.randn(channels, *grid, 2) * 0.02
        weight[..., 0] += 1.0
        self.weight = nn.Parameter(weight)  # (C, *grid, 2): real and imaginary parts

    def complex_weight(self, spatial_shape: Sequence[int] | None = None) -> torch.Tensor:
        """The complex (C, *rfft grid) filter for an input of ``spatial_shape`` (the stored grid when None)."""
        w = torch.view_as_complex(self.weight.float())
        if spatial_shape is None:
            return w
        return resize_complex_filter(w, rfft_grid_shape(spatial_shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *spatial) -> (B, C, *spatial)."""
        if x.dim() != self.spatial_dims + 2 or x.shape[1] != self.channels:
            raise ValueError(
                f"SpectralGating expects a (B, C, *spatial) tensor with C={self.channels} and "
                f"{self.spatial_dims} spatial dims, got shape {tuple(x.shape)}."
            )
        spatial = tuple(x.shape[2:])
        axes = tuple(range(2, x.dim()))
        with autocast_disabled(x.device):
            freq = torch.fft.rfftn(x.float(), dim=axes, norm="ortho")
            freq = freq * self.complex_weight(spatial)
            y = torch.fft.irfftn(freq, s=spatial, dim=axes, norm="ortho")
        return y.to(x.dtype)


class SpectralVSSBlock(VSSBlock):
    """
    Dual-path visual state-space block: the spatial SSND path of :class:`~mamba_monai.blocks.VSSBlock`
    beside a frequency path (:class:`SpectralGating`, a GFNet global filter), both on the same normalised
    input and fused by a learnable per-channel gate::

        h = LayerNorm(x)
        a = sigmoid(gate)                                    # (C,), gate starts at 0 -> a = 0.5
        x = x + DropPath(a * SSND(h) + (1 - a) * SpectralGating(h))
        x = x + DropPath(MLP(LayerNorm(x)))                  # only when mlp_ratio > 0

    With ``a -> 0`` the block is a GFNet block, with ``a -> 1`` a VSSBlock. With ``use_spectral=False``
    (ablation) the frequency path and the gate are left out and the block equals a :class:`VSSBlock`.

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        channels: number of input and output channels C.
        d_state: SSND state size N. Defaults to 16.
        mlp_ratio: MLP hidden width is ``int(mlp_ratio * channels)``; 0 leaves the MLP out. Defaults to 4.0.
        drop_path: stochastic depth rate of both residual branches. Defaults to 0.0.
        filter_size: spatial size the global filter is defined for (see :class:`SpectralGating`). Defaults to 16.
        use_spectral: build the frequency path. Defaults to True.
        use_checkpoint: gradient checkpointing in training (see :class:`VSSBlock`). Defaults to False.
        d_conv: SSND depthwise convolution size. Defaults to 3.
        expand: SSND inner width factor. Defaults to 2.
        dt_rank: SSND step-size rank. Defaults to "auto".
        dropout: dropout rate inside SSND's output and the MLP. Defaults to 0.0.
        norm_eps: epsilon of the LayerNorms. Defaults to 1e-6.

    Shapes:
        (B, C, *spatial) -> (B, C, *spatial).
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        d_state: int = 16,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        filter_size: int | Sequence[int] = 16,
        use_spectral: bool = True,
        use_checkpoint: bool = False,
        d_conv: int = 3,
        expand: int = 2,
        dt_rank: int | str = "auto",
        dropout: float = 0.0,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__(
            spatial_dims,
            channels,
            d_state=d_state,
            d_conv=d_conv,
            expand=expand,
            dt_rank=dt_rank,
            mlp_ratio=mlp_ratio,
            drop_path=drop_path,
            dropout=dropout,
            norm_eps=norm_eps,
            use_checkpoint=use_checkpoint,
        )
        self.use_spectral = use_spectral
        self.spectral: SpectralGating | None = None
        self.gate: nn.Parameter | None = None
        if use_spectral:
            self.spectral = SpectralGating(spatial_dims, channels, filter_size)
            self.gate = nn.Parameter(torch.zeros(channels))

    def _mix(self, h: torch.Tensor) -> torch.Tensor:
        spatial = self.mixer.forward_channels_last(h)
        if self.spectral is None or self.gate is None:
            return spatial
        freq = self.spectral(h.movedim(-1, 1)).movedim(1, -1)
        alpha = torch.sigmoid(self.gate).to(spatial.dtype)
        return alpha * spatial + (1.0 - alpha) * freq.to(spatial.dtype)
