"""Spectral (FFT) blocks: a resolution-free GFNet global filter and the dual-path SpectralVSSBlock."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from mamba_monai.ops.utils import autocast_disabled, format_shape
from mamba_monai.blocks.vss import VSSBlock

__all__ = ["SpectralGating", "SpectralVSSBlock", "resize_complex_filter", "rfft_grid_shape"]


def rfft_grid_shape(spatial_shape: Sequence[int]) -> tuple[int, ...]:
    """Shape of ``torch.fft.rfftn`` over ``spatial_shape``: full axes, then ``n // 2 + 1`` on the last one."""
    return tuple(_rfft_grid(list(spatial_shape)))


def _rfft_grid(spatial_shape: list[int]) -> list[int]:
    """:func:`rfft_grid_shape` as a list (the form TorchScript compiles)."""
    sizes = [int(s) for s in spatial_shape]
    return sizes[:-1] + [sizes[-1] // 2 + 1]


def resize_complex_filter(weight: torch.Tensor, size: list[int]) -> torch.Tensor:
    """
    Resample a complex filter defined on one rfft frequency grid onto another.

    Real and imaginary parts are interpolated linearly (bilinear in 2D, trilinear in 3D, ``align_corners=True``).
    The full (non-rfft) axes are interpolated in centred order (``fftshift``) so that low frequencies land on
    low frequencies and the highest frequencies on the highest; on the last (rfft) axis, frequency 0 maps to 0
    and the end of the grid to the end. When the grid already has ``size`` the weight is returned unchanged.

    Args:
        weight: complex (C, *freq) tensor, or real (C, *freq, 2) (real, imag) tensor; 1 to 3 frequency axes.
        size: target frequency grid (a sequence of ints), ``len(size) == weight`` frequency axes; use
            :func:`rfft_grid_shape` to get it from a spatial size.

    Returns:
        complex (C, *size) tensor (float32 or float64 parts, as the input).
    """
    if not torch.is_complex(weight):
        if weight.shape[-1] != 2:
            raise ValueError(
                "resize_complex_filter expects a complex (C, *freq) or real (C, *freq, 2) weight, "
                f"got shape {format_shape(weight.shape)}."
            )
        weight = torch.view_as_complex(weight.contiguous())
    size = [int(s) for s in size]
    n = weight.dim() - 1
    if len(size) != n or n not in [1, 2, 3] or min(size) < 1:
        raise ValueError(
            f"resize_complex_filter: weight has {n} frequency axes (shape {format_shape(weight.shape)}), "
            f"got target size {format_shape(size)}; expected {n} positive sizes with 1 <= {n} <= 3."
        )
    if list(weight.shape[1:]) == size:
        return weight
    full_axes = list(range(1, n))  # every frequency axis but the last (rfft) one
    src = torch.fft.fftshift(weight, dim=full_axes) if len(full_axes) > 0 else weight
    parts = torch.view_as_real(src).movedim(-1, 1).reshape([1, -1] + list(src.shape[1:]))  # (1, C * 2, *freq)
    mode = ["linear", "bilinear", "trilinear"][n - 1]
    out = F.interpolate(parts, size=size, mode=mode, align_corners=True)
    out = torch.view_as_complex(out.reshape([weight.shape[0], 2] + size).movedim(1, -1).contiguous())
    return torch.fft.ifftshift(out, dim=full_axes) if len(full_axes) > 0 else out


class _CoarseScales(nn.Module):
    """Scales 1 .. S-1 of a multi-scale :class:`SpectralGating` (own filter per pooled copy) and the softmax fusion
    of all S scales; the formula is in :class:`SpectralGating`."""

    def __init__(self, spatial_dims: int, channels: int, filter_size: tuple[int, ...], num_scales: int) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        self.channels = channels
        self.mode = "bilinear" if spatial_dims == 2 else "trilinear"
        weights = []
        for s in range(1, num_scales):
            grid = rfft_grid_shape([-(-f // 2**s) for f in filter_size])  # filter_size / 2**s, rounded up
            weight = torch.randn(channels, *grid, 2) * 0.02
            weight[..., 0] += 1.0
            weights.append(nn.Parameter(weight))
        self.weights = nn.ParameterList(weights)  # (C, *grid_s, 2) each
        self.logits = nn.Parameter(torch.zeros(num_scales, channels))  # beta: softmax over scales, per channel

    def forward(self, x: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
        """x: input (B, C, *spatial); y0: float32 scale-0 output -> fused float32 (B, C, *spatial)."""
        spatial = list(x.shape[2:])
        axes = list(range(2, x.dim()))
        mix = torch.softmax(self.logits.float(), dim=0)
        shape = [1, self.channels] + [1] * self.spatial_dims
        out = y0 * mix[0].reshape(shape)
        for i, w in enumerate(self.weights):
            factor = 2 << i  # 2, 4, 8, ...
            size = [(n + factor - 1) // factor for n in spatial]
            if self.spatial_dims == 2:
                xs = F.adaptive_avg_pool2d(x.float(), size)
            else:
                xs = F.adaptive_avg_pool3d(x.float(), size)
            freq = torch.fft.rfftn(xs, dim=axes, norm="ortho")
            freq = freq * resize_complex_filter(torch.view_as_complex(w.float()), _rfft_grid(size))
            ys = torch.fft.irfftn(freq, s=size, dim=axes, norm="ortho")
            ys = F.interpolate(ys, size=spatial, mode=self.mode, align_corners=False)
            out = out + ys * mix[i + 1].reshape(shape)
        return out


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

    Multi-scale filtering (``num_scales = S > 1``): the same global filter is applied to the input and to
    ``S - 1`` average-pooled copies of it, each scale with its own learned filter, and the outputs are upsampled
    back and fused by learned per-channel softmax weights::

        x_0 = x,   x_s = AdaptiveAvgPool(x, ceil(spatial / 2**s))                   s = 1 .. S-1
        y_s = irfftn(rfftn(x_s, norm="ortho") * W_s, s=size(x_s), norm="ortho")      W_s: own filter of scale s
        y   = sum_s softmax(beta, over s)[s, c] * Up(y_s)                           Up: (bi/tri)linear to spatial

    ``W_s`` is stored on the rfft grid of ``ceil(filter_size / 2**s)`` and resampled like ``W``; ``beta``
    (S, C) starts at 0 (equal weights). Adaptive pooling makes it work at any size, also sizes that are not
    divisible by ``2**(S - 1)`` (a pooled axis never gets shorter than 1). The coarse scales see a smoothed,
    aliasing-reduced copy of the map and add a cheap, low-frequency-biased path; all FFTs run in float32.
    ``num_scales=1`` is the single-scale layer above exactly (same parameters, same output).

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3.
        channels: number of input and output channels C.
        filter_size: spatial size the weight is defined for, an int (same on every axis) or one per axis.
            The stored grid is ``(*filter_size[:-1], filter_size[-1] // 2 + 1)``. Defaults to 16.
        num_scales: number of resolutions S the filter is applied at (input, then pooled by 2, 4, ...).
            Defaults to 1.

    Shapes:
        (B, C, *spatial) -> (B, C, *spatial), real.
    """

    def __init__(
        self, spatial_dims: int, channels: int, filter_size: int | Sequence[int] = 16, num_scales: int = 1
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"`spatial_dims` can only be 2 or 3, got {spatial_dims}.")
        if channels < 1:
            raise ValueError(f"`channels` must be positive, got {channels}.")
        if isinstance(num_scales, bool) or not isinstance(num_scales, int) or num_scales < 1:
            raise ValueError(f"`num_scales` must be an int >= 1 (1 = single-scale filter), got {num_scales!r}.")
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
        self.num_scales = num_scales
        # scales 1 .. S-1 and the fusion weights; None for a single-scale layer (state dict as before)
        self.coarse: _CoarseScales | None = None
        if num_scales > 1:
            self.coarse = _CoarseScales(spatial_dims, channels, self.filter_size, num_scales)

    def complex_weight(self, spatial_shape: list[int] | None = None) -> torch.Tensor:
        """The complex (C, *rfft grid) filter for an input of ``spatial_shape`` (a sequence of ints; the stored
        grid when None)."""
        w = torch.view_as_complex(self.weight.float())
        if spatial_shape is None:
            return w
        return resize_complex_filter(w, _rfft_grid(spatial_shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *spatial) -> (B, C, *spatial)."""
        if x.dim() != self.spatial_dims + 2 or x.shape[1] != self.channels:
            raise ValueError(
                f"SpectralGating expects a (B, C, *spatial) tensor with C={self.channels} and "
                f"{self.spatial_dims} spatial dims, got shape {format_shape(x.shape)}."
            )
        if torch.jit.is_scripting():  # TorchScript has no autocast context; x.float() keeps the FFTs in float32
            y = self._filter_scales(x)
        else:
            with autocast_disabled(x.device):
                y = self._filter_scales(x)
        return y.to(x.dtype)

    def _filter_scales(self, x: torch.Tensor) -> torch.Tensor:
        """The float32 global filter of ``x``, fused with the coarse scales when ``num_scales > 1``."""
        y = self._filter(x)
        if self.coarse is not None:
            y = self.coarse(x, y)
        return y

    def _filter(self, x: torch.Tensor) -> torch.Tensor:
        """The float32 global filter of ``x`` (B, C, *spatial)."""
        spatial = list(x.shape[2:])
        axes = list(range(2, x.dim()))
        freq = torch.fft.rfftn(x.float(), dim=axes, norm="ortho")
        freq = freq * self.complex_weight(spatial)
        return torch.fft.irfftn(freq, s=spatial, dim=axes, norm="ortho")


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
        num_scales: resolutions the global filter is applied at (see :class:`SpectralGating`); 1 is the
            single-scale filter. Defaults to 1.

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
        num_scales: int = 1,
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
            self.spectral = SpectralGating(spatial_dims, channels, filter_size, num_scales=num_scales)
            self.gate = nn.Parameter(torch.zeros(channels))

    def _mix(self, h: torch.Tensor) -> torch.Tensor:
        spatial = self.mixer.forward_channels_last(h)
        if self.spectral is None or self.gate is None:
            return spatial
        freq = self.spectral(h.movedim(-1, 1)).movedim(1, -1)
        alpha = torch.sigmoid(self.gate).to(spatial.dtype)
        return alpha * spatial + (1.0 - alpha) * freq.to(spatial.dtype)
