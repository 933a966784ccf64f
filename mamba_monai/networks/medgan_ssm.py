"""MedGAN-SSM generator: missing-MRI-modality synthesis with state-space modelling (2D slices and 3D volumes)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
from monai.networks.blocks.dynunet_block import UnetOutBlock, UnetUpBlock
from monai.networks.layers.utils import get_act_layer

from mamba_monai.blocks.medgan import MedGANSSMStage, infer_modality_mask, random_modality_dropout
from mamba_monai.networks.utils import divisible_size_hint
from mamba_monai.ops.utils import format_shape

__all__ = ["MedGANSSMGenerator"]


class MedGANSSMGenerator(nn.Module):
    """
    Generator of MedGAN-SSM, "Medical Image Synthesis with State Space Modeling" (Charles-wmz/MedGAN-SSM,
    https://github.com/Charles-wmz/MedGAN-SSM): one model that synthesises missing MRI contrasts (e.g. FLAIR) from any
    non-empty subset of the configured input contrasts (e.g. T1, T1ce, T2). Supports 2D (axial slices, as published
    synthesis work trains) and 3D inputs. Train it with MONAI's ``PatchDiscriminator`` (conditional PatchGAN),
    ``PatchAdversarialLoss`` and an L1 term, with :meth:`random_modality_dropout` on the inputs.

    Missing contrasts: the input has one channel per configured contrast, missing ones zero-filled; the (B, M)
    availability mask (1 = present) is passed to ``forward`` or, when None, inferred from the input (a channel that is
    all zero in a sample counts as missing), so ``net(x)`` works in MONAI's engines, inferers and
    ``verify_net_in_out``. The network multiplies the input by the mask (a contrast marked missing is ignored whatever
    it holds), concatenates the mask as M constant channels, and feeds it to every dynamic gate.

    Encoder: level 0 at full resolution and ``len(features) - 1`` down-sampling levels (each x1/2), each a residual
    convolution block (strided from level 1) followed by ``ssm_depths[i]`` state-space blocks
    (:class:`~mamba_monai.blocks.medgan.MedGANSSMBlock`: multi-scale S6 — the VMamba cross-scan selective scan on the
    map and on ``num_scales - 1`` pooled copies — and a local convolution branch, mixed by dynamic gates conditioned
    on the features and the mask); the last (bottleneck) level ends with a non-local attention block when
    ``use_attention``. Decoder: per level a transposed convolution (x2), concatenation of the encoder skip and a
    convolution block (MONAI ``UnetUpBlock``). Head: a 1x1 convolution to one channel per target contrast and the
    output activation ``out_act`` (sigmoid for targets scaled to [0, 1]).

    Differences from the published code: the published "multi-scale S6" holds no selective scan (dilated
    convolutions and a non-local block at the 1/16 bottleneck, gates 0.6 spatial + 0.4 channel); here the global
    branches are real S6 scans at several scales and levels, the softmax gates also see the availability mask, one
    model serves every subset of inputs, and any input size divisible by ``2 ** (len(features) - 1)`` works.

    Args:
        spatial_dims: number of spatial dimensions, 2 or 3. Defaults to 2.
        in_channels: number of configured input contrasts M (one channel each). Defaults to 3.
        out_channels: number of synthesised contrasts (one channel each). Defaults to 1.
        features: channels per level, finest first; ``len(features) - 1`` down-samplings. Defaults to
            (32, 64, 128, 256).
        ssm_depths: state-space blocks per level (``len(features)`` values, >= 0). The scans cost grows with the
            number of voxels, so the default puts them on the coarse levels. Defaults to (0, 0, 1, 2).
        num_scales: S6 branches per block (scale ``s`` pools the map by ``2**s``). Defaults to 2.
        d_state: S6 state size N. Defaults to 16.
        expand: S6 inner width factor. Defaults to 1.
        mlp_ratio: hidden width factor of the state-space blocks' 1x1 MLP (0: none). Defaults to 2.0.
        use_attention: non-local attention at the bottleneck. Defaults to True.
        num_heads: attention heads (must divide ``features[-1]``). Defaults to 4.
        dropout: dropout rate in the convolution blocks, S6 outputs, MLPs and attention. Defaults to 0.0.
        act: MONAI activation name (``get_act_layer``). Defaults to ("leakyrelu", {"negative_slope": 0.2}).
        norm: MONAI normalisation name (``get_norm_layer``). Defaults to "instance".
        out_act: MONAI activation name of the output ("sigmoid" for [0, 1] images, "tanh" for [-1, 1]); None gives
            an unbounded output. Defaults to "sigmoid".
        use_checkpoint: gradient checkpointing of the state-space blocks while training. Defaults to False.

    Shapes:
        ``forward(x, mask=None)``: x (B, in_channels, *S) with every S divisible by ``2 ** (len(features) - 1)``,
        mask (B, in_channels), (1, in_channels) (shared by the batch) or None -> (B, out_channels, *S).
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 1,
        features: Sequence[int] = (32, 64, 128, 256),
        ssm_depths: Sequence[int] = (0, 0, 1, 2),
        num_scales: int = 2,
        d_state: int = 16,
        expand: int = 1,
        mlp_ratio: float = 2.0,
        use_attention: bool = True,
        num_heads: int = 4,
        dropout: float = 0.0,
        act: tuple | str = ("leakyrelu", {"negative_slope": 0.2}),
        norm: tuple | str = "instance",
        out_act: tuple | str | None = "sigmoid",
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        features, ssm_depths = tuple(int(f) for f in features), tuple(int(d) for d in ssm_depths)
        self._check_args(spatial_dims, in_channels, out_channels, features, ssm_depths, num_scales, d_state, expand,
                         mlp_ratio, use_attention, num_heads, dropout)
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_downsamples = len(features) - 1
        self.divisor = 2**self.num_downsamples
        self.encoder = nn.ModuleList(
            [
                MedGANSSMStage(
                    spatial_dims,
                    2 * in_channels if i == 0 else features[i - 1],  # level 0 also takes the mask channels
                    features[i],
                    stride=1 if i == 0 else 2,
                    num_blocks=ssm_depths[i],
                    use_attention=use_attention and i == len(features) - 1,
                    cond_channels=in_channels,
                    num_scales=num_scales,
                    d_state=d_state,
                    expand=expand,
                    mlp_ratio=mlp_ratio,
                    num_heads=num_heads,
                    dropout=dropout,
                    act=act,
                    norm=norm,
                    use_checkpoint=use_checkpoint,
                )
                for i in range(len(features))
            ]
        )
        self.decoder = nn.ModuleList(
            [
                UnetUpBlock(spatial_dims, features[i], features[i - 1], kernel_size=3, stride=1,
                            upsample_kernel_size=2, norm_name=norm, act_name=act,
                            dropout=dropout if dropout > 0 else None)
                for i in reversed(range(1, len(features)))
            ]
        )
        self.head = UnetOutBlock(spatial_dims, features[0], out_channels)
        self.out_act = get_act_layer(out_act) if out_act is not None else nn.Identity()

    @staticmethod
    def _check_args(spatial_dims, in_channels, out_channels, features, ssm_depths, num_scales, d_state, expand,
                    mlp_ratio, use_attention, num_heads, dropout) -> None:
        if spatial_dims not in (2, 3):
            raise ValueError(f"`spatial_dims` can only be 2 or 3, got {spatial_dims}.")
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("num_scales", num_scales),
                            ("d_state", d_state), ("expand", expand), ("num_heads", num_heads)):
            if int(value) < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value}.")
        if len(features) < 2 or any(f < 1 for f in features):
            raise ValueError(f"`features` must have at least 2 positive widths (one per level), got {features}.")
        if len(ssm_depths) != len(features) or any(d < 0 for d in ssm_depths):
            raise ValueError(
                f"`ssm_depths` must have len(features) = {len(features)} non-negative values, got {ssm_depths}."
            )
        if mlp_ratio < 0:
            raise ValueError(f"`mlp_ratio` must be >= 0 (0 disables the MLP), got {mlp_ratio}.")
        if use_attention and features[-1] % num_heads:
            raise ValueError(
                f"`num_heads` ({num_heads}) must divide the bottleneck width features[-1] ({features[-1]})."
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1), got {dropout}.")

    @staticmethod
    def random_modality_dropout(
        x: torch.Tensor,
        mask: Optional[torch.Tensor] = None,
        drop_prob: float = 0.5,
        generator: Optional[torch.Generator] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Random modality dropout for training: see :func:`mamba_monai.blocks.medgan.random_modality_dropout`."""
        return random_modality_dropout(x, mask, drop_prob=drop_prob, generator=generator)

    def _check_input(self, x: torch.Tensor) -> None:
        shape = x.shape
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(
                f"MedGANSSMGenerator expects a (B, C, *spatial) input with {self.spatial_dims} spatial dims, "
                f"got shape {shape}."
            )
        if shape[1] != self.in_channels:
            raise ValueError(
                f"MedGANSSMGenerator expects {self.in_channels} input channels (one per configured contrast, missing "
                f"ones zero-filled), got {shape[1]} (shape {shape})."
            )
        spatial = shape[2:]
        bad = False
        for s in spatial:
            if s % self.divisor != 0:
                bad = True
        if bad:
            raise ValueError(
                f"MedGANSSMGenerator needs every spatial size divisible by {self.divisor} (2 ** {self.num_downsamples} "
                f"down-samplings), got spatial shape {format_shape(spatial)} (input shape {format_shape(shape)}): use "
                f"{divisible_size_hint(spatial, self.divisor)}. Pad with DivisiblePadd(k={self.divisor}) or use a "
                f"roi_size that is a multiple of {self.divisor}."
            )

    def _check_mask(self, mask: torch.Tensor, x: torch.Tensor) -> None:
        if mask.dim() != 2 or mask.shape[0] not in (1, x.shape[0]) or mask.shape[1] != self.in_channels:
            raise ValueError(
                f"MedGANSSMGenerator expects `mask` of shape (B, M) = ({x.shape[0]}, {self.in_channels}) or "
                f"(1, {self.in_channels}) (1 = contrast present, one row shared by the batch), got {mask.shape}."
            )

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        Args:
            x: (B, M, *S) input contrasts, missing ones zero-filled.
            mask: (B, M) availability, 1 = present, or (1, M) shared by the batch (as MONAI's inferers pass it with
                ``sw_batch_size`` > 1); None infers it from ``x`` (all-zero channel = missing).

        Returns:
            (B, out_channels, *S) synthesised contrasts.
        """
        self._check_input(x)
        if mask is None:
            mask = infer_modality_mask(x)
        else:
            self._check_mask(mask, x)
        b, m = x.shape[0], x.shape[1]
        # a (1, M) mask is shared by the batch: MONAI's sliding-window and slice inferers pass the case's mask
        # unchanged with sw_batch_size windows or slices of it
        mask = mask.to(device=x.device, dtype=x.dtype).expand(b, m)
        ones: List[int] = [1] * self.spatial_dims
        mask_map = mask.view([b, m] + ones)
        h = torch.cat([x * mask_map, mask_map.expand(x.shape)], dim=1)

        skips: List[torch.Tensor] = []
        for stage in self.encoder:
            h = stage(h, mask)
            skips.append(h)
        for i, up in enumerate(self.decoder):
            h = up(h, skips[-2 - i])
        return self.out_act(self.head(h))
