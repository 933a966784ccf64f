"""Spec-VMamba: a VM-UNet of dual-path (selective scan + FFT global filter) blocks for 2D and 3D segmentation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.blocks import UnetOutBlock, UnetrBasicBlock, UnetrUpBlock
from torch.utils.checkpoint import checkpoint

from mamba_monai.blocks.patch import PatchExpanding, ScriptablePatchEmbed, ScriptablePatchMerging
from mamba_monai.blocks.spectral import SpectralVSSBlock
from mamba_monai.networks.utils import divisible_size_hint
from mamba_monai.ops.utils import format_shape

__all__ = ["SpectralVMUNet"]


class _EncoderStage(nn.Module):
    """Optional :class:`ScriptablePatchMerging` (x1/2, C -> 2C), then SpectralVSSBlocks; channels-first."""

    def __init__(self, down: ScriptablePatchMerging | None, blocks: nn.Sequential) -> None:
        super().__init__()
        self.down = down
        self.blocks = blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down is not None:
            x = self.down(x.movedim(1, -1)).movedim(-1, 1)
        return self.blocks(x)


class _DecoderStage(nn.Module):
    """:class:`PatchExpanding` (x2, 2C -> C), skip fusion (concatenation + linear 2C -> C), SpectralVSSBlocks."""

    def __init__(self, spatial_dims: int, channels: int, blocks: nn.Sequential) -> None:
        super().__init__()
        self.expand = PatchExpanding(2 * channels, spatial_dims=spatial_dims)
        self.fuse = nn.Linear(2 * channels, channels, bias=False)
        self.blocks = blocks

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = self.expand(x.movedim(1, -1))  # (B, *2S, C)
        up = self.fuse(torch.cat([up, skip.movedim(1, -1)], dim=-1))
        return self.blocks(up.movedim(-1, 1))


class SpectralVMUNet(nn.Module):
    """
    Spec-VMamba ("Spectral Mamba"): a VM-UNet ("VM-UNet: Vision Mamba UNet for Medical Image Segmentation",
    Ruan and Xiang, https://arxiv.org/abs/2402.02491) whose blocks are dual-path
    :class:`~mamba_monai.blocks.SpectralVSSBlock` s: a VMamba selective scan over ``2 * spatial_dims`` directions
    (spatial global context) beside a GFNet global FFT filter (frequency global: edges and detail), fused by a
    learned per-channel gate. Supports 2D images and 3D volumes.

    Layout, for ``S = num_stages`` levels at strides ``4, 8, ..., 4 * 2**(S-1)`` with widths
    ``base_channels * 2**i``:

    - patch embedding: convolution with kernel = stride = 4 and LayerNorm (:class:`ScriptablePatchEmbed`);
    - encoder stage ``i``: :class:`ScriptablePatchMerging` (MONAI's ``PatchMergingV2``, x1/2, C -> 2C; not in
      stage 0) and ``depth[i]`` SpectralVSSBlocks;
    - bottleneck: ``depth[-1]`` more SpectralVSSBlocks at the coarsest level;
    - decoder stage ``i`` (``S - 2`` down to 0): :class:`~mamba_monai.blocks.PatchExpanding` (x2, 2C -> C), skip
      fusion (the encoder output of level ``i`` concatenated, linear 2C -> C) and ``depth[i]`` SpectralVSSBlocks;
    - segmentation head back to full resolution: MONAI's ``UnetrUpBlock`` (transposed convolution x4, concatenated
      with a full-resolution ``UnetrBasicBlock`` branch on the input, residual convolution block) and
      ``UnetOutBlock`` (1x1 convolution to ``out_channels`` logits).

    Each stage's global filter is stored for the spatial size ``img_size / stride`` (the training patch); other
    input sizes resample it (:class:`~mamba_monai.blocks.SpectralGating`), so any size divisible by the total
    stride ``4 * 2**(num_stages - 1)`` works (32 for four stages), also in sliding-window inference. The selective
    scans and FFTs run in float32 under ``torch.autocast``. The network compiles with ``torch.jit.script``
    (gradient checkpointing is then off).

    Args:
        in_channels: input channels. Defaults to 1.
        out_channels: output channels (classes incl. background). Defaults to 3.
        img_size: training patch size the spectral filters are defined for: an int (every axis) or one per axis,
            each divisible by ``4 * 2**(num_stages - 1)``. Defaults to 256.
        base_channels: channels of the first level; level ``i`` has ``base_channels * 2**i``. Defaults to 64.
        num_stages: number of levels (encoder stages) S >= 1. Defaults to 4.
        depth: SpectralVSSBlocks per encoder stage, per decoder stage and in the bottleneck: an int, or
            ``num_stages`` ints (level ``i``; the bottleneck uses the last). Defaults to 2.
        spatial_dims: 2 (images) or 3 (volumes). Defaults to 2.
        d_state: selective-scan state size N. Defaults to 16.
        mlp_ratio: MLP width factor of the blocks; 0 leaves the MLPs out. Defaults to 4.0.
        drop_path_rate: stochastic depth, rising linearly over the encoder and bottleneck blocks to this value;
            a decoder stage uses the rates of the encoder stage at its level. Defaults to 0.1.
        use_spectral: build the frequency path of the blocks (False: plain VSSBlocks, i.e. VM-UNet, the ablation).
            Defaults to True.
        num_scales: resolutions each global filter is applied at (input, pooled by 2, 4, ...; see
            :class:`~mamba_monai.blocks.SpectralGating`). Defaults to 1.
        norm_name: MONAI normalisation of the head's convolution blocks. Defaults to "instance".
        head_channels: channels of the full-resolution head; None uses ``max(base_channels // 2, 1)``.
            Defaults to None.
        use_checkpoint: gradient checkpointing in training (eager Python), per block and for the full-resolution
            head: activations are recomputed in the backward pass to save memory. Defaults to False.
        d_conv: depthwise convolution size inside the scans. Defaults to 3.
        expand: inner width factor of the scans. Defaults to 2.
        dropout: dropout inside the blocks. Defaults to 0.0.

    Shapes:
        input (B, in_channels, *S) with every S divisible by ``4 * 2**(num_stages - 1)`` ->
        logits (B, out_channels, *S).

    Example::

        >>> net = SpectralVMUNet(in_channels=1, out_channels=3, img_size=256)
        >>> net(torch.randn(1, 1, 256, 256)).shape
        torch.Size([1, 3, 256, 256])
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 3,
        img_size: int | Sequence[int] = 256,
        base_channels: int = 64,
        num_stages: int = 4,
        depth: int | Sequence[int] = 2,
        spatial_dims: int = 2,
        d_state: int = 16,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.1,
        use_spectral: bool = True,
        num_scales: int = 1,
        norm_name: tuple | str = "instance",
        head_channels: int | None = None,
        use_checkpoint: bool = False,
        d_conv: int = 3,
        expand: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"`spatial_dims` can only be 2 or 3, got {spatial_dims}.")
        if in_channels < 1 or out_channels < 1 or base_channels < 1:
            raise ValueError(
                "`in_channels`, `out_channels` and `base_channels` must be positive, "
                f"got {in_channels}, {out_channels}, {base_channels}."
            )
        if num_stages < 1:
            raise ValueError(f"`num_stages` must be >= 1, got {num_stages}.")
        depths = (depth,) * num_stages if isinstance(depth, int) else tuple(depth)
        if len(depths) != num_stages or any(int(d) < 1 for d in depths):
            raise ValueError(f"`depth` must be a positive int or {num_stages} positive ints, got {depth!r}.")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"`drop_path_rate` must be in [0, 1), got {drop_path_rate}.")
        self.divisor = 4 * 2 ** (num_stages - 1)
        sizes = (img_size,) * spatial_dims if isinstance(img_size, int) else tuple(img_size)
        if len(sizes) != spatial_dims or any(int(s) < 1 or int(s) % self.divisor for s in sizes):
            raise ValueError(
                f"`img_size` must be an int or {spatial_dims} ints, each divisible by {self.divisor} "
                f"(4 * 2**(num_stages - 1)), got {img_size!r}."
            )
        head = max(base_channels // 2, 1) if head_channels is None else head_channels
        if head < 1:
            raise ValueError(f"`head_channels` must be positive or None, got {head_channels}.")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_stages = num_stages
        self.img_size = tuple(int(s) for s in sizes)
        self.use_checkpoint = use_checkpoint
        self.widths = [base_channels * 2**i for i in range(num_stages)]
        block_kwargs = dict(d_state=d_state, mlp_ratio=mlp_ratio, use_spectral=use_spectral, num_scales=num_scales,
                            use_checkpoint=use_checkpoint, d_conv=d_conv, expand=expand, dropout=dropout)
        total = sum(depths) + depths[-1]
        rates = [drop_path_rate * k / max(total - 1, 1) for k in range(total)]

        self.embed = ScriptablePatchEmbed(4, in_channels, self.widths[0], nn.LayerNorm, spatial_dims)
        self.encoder = self._make_encoder(depths, rates, block_kwargs)
        self.bottleneck = self._make_blocks(num_stages - 1, rates[sum(depths):], block_kwargs)
        self.decoder = self._make_decoder(depths, rates, block_kwargs)
        self.encoder0 = UnetrBasicBlock(spatial_dims, in_channels, head, kernel_size=3, stride=1,
                                        norm_name=norm_name, res_block=True)
        self.up_full = UnetrUpBlock(spatial_dims, self.widths[0], head, kernel_size=3, upsample_kernel_size=4,
                                    norm_name=norm_name, res_block=True)
        self.out = UnetOutBlock(spatial_dims, head, out_channels)

    def _filter_size(self, level: int) -> tuple[int, ...]:
        stride = 4 * 2**level
        return tuple(s // stride for s in self.img_size)

    def _make_blocks(self, level: int, rates: Sequence[float], block_kwargs: dict) -> nn.Sequential:
        return nn.Sequential(
            *[
                SpectralVSSBlock(self.spatial_dims, self.widths[level], drop_path=r,
                                 filter_size=self._filter_size(level), **block_kwargs)
                for r in rates
            ]
        )

    def _make_encoder(self, depths: tuple[int, ...], rates: list[float], block_kwargs: dict) -> nn.ModuleList:
        stages, start = [], 0
        for i, d in enumerate(depths):
            down = ScriptablePatchMerging(self.widths[i - 1], spatial_dims=self.spatial_dims) if i > 0 else None
            stages.append(_EncoderStage(down, self._make_blocks(i, rates[start : start + d], block_kwargs)))
            start += d
        return nn.ModuleList(stages)

    def _make_decoder(self, depths: tuple[int, ...], rates: list[float], block_kwargs: dict) -> nn.ModuleList:
        starts = [sum(depths[:i]) for i in range(self.num_stages)]
        return nn.ModuleList(
            [
                _DecoderStage(self.spatial_dims, self.widths[i],
                              self._make_blocks(i, rates[starts[i] : starts[i] + depths[i]], block_kwargs))
                for i in reversed(range(self.num_stages - 1))
            ]
        )

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"SpectralVMUNet expects a (B, {self.in_channels}, *spatial) input with {self.spatial_dims} spatial "
                f"dims, got shape {format_shape(x.shape)}."
            )
        spatial = list(x.shape[2:])
        bad = False
        for s in spatial:
            if s % self.divisor != 0:
                bad = True
        if bad:
            got = "x".join([str(s) for s in spatial])
            raise ValueError(
                f"got {got}; SpectralVMUNet needs each spatial size divisible by {self.divisor} "
                f"(4 * 2**(num_stages - 1)): use {divisible_size_hint(spatial, self.divisor)} "
                f"(pad with DivisiblePadd(k={self.divisor}))."
            )

    def _head(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.up_full(h, self.encoder0(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, *S) -> (B, out_channels, *S) logits."""
        self._check_input(x)
        h = self.embed(x)
        skips: list[torch.Tensor] = []
        for stage in self.encoder:
            h = stage(h)
            skips.append(h)
        h = self.bottleneck(h)
        for j, stage in enumerate(self.decoder):
            h = stage(h, skips[-2 - j])
        if not torch.jit.is_scripting() and self.use_checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(self._head, h, x, use_reentrant=False)
        return self._head(h, x)
