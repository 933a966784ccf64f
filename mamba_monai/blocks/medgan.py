"""Layers of the MedGAN-SSM generator (missing-MRI-modality synthesis with state-space modelling).

MedGAN-SSM (Charles-wmz/MedGAN-SSM, "Medical Image Synthesis with State Space Modeling") synthesises a missing MRI
contrast from the available ones with a GAN whose generator has an encoder with a state-space module, a multi-scale
S6 module, a dynamic gating mechanism and non-local attention, and a decoder with skip connections. The layers here
are the pieces of :class:`mamba_monai.networks.MedGANSSMGenerator`:

- :class:`MultiScaleS6`: the N-D selective scan (:class:`~mamba_monai.blocks.ssnd.SSND`) over a feature map at its own
  resolution and over average-pooled copies (2x, 4x, ...), each brought back to the map's size;
- :class:`DynamicGate`: input-dependent softmax gates (one per branch, channel and voxel) computed from the branches'
  pooled features, the modality-availability mask and a spatial convolution, that mix the branches;
- :class:`MedGANSSMBlock`: pre-norm residual block ``x + gate([local conv, S6 at each scale])`` then a 1x1 MLP;
- :class:`NonLocalAttention`: a non-local (self-attention) block over all voxels, MONAI's
  :class:`~monai.networks.blocks.SABlock` on channel-normalised tokens with a residual;
- :class:`MedGANSSMStage`: one encoder level (residual convolution block, optionally strided, then the blocks above);
- :func:`infer_modality_mask` and :func:`random_modality_dropout`: the availability mask of zero-filled inputs and the
  random modality dropout used to train one model for every subset of available contrasts.

The published code's "multi-scale S6" holds no selective scan (dilated residual convolutions and a non-local block);
here the global branches are real S6 scans (VMamba-style cross scans) at several scales, and the gates also see which
contrasts are available.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import SABlock
from monai.networks.blocks.dynunet_block import UnetResBlock
from monai.networks.layers.factories import Conv, Pool
from monai.networks.layers.utils import get_act_layer, get_norm_layer
from torch.utils.checkpoint import checkpoint

from mamba_monai.blocks.emnet import LayerNormNd
from mamba_monai.blocks.ssnd import SSND
from mamba_monai.blocks.utils import check_positive, check_rate, check_spatial_dims

__all__ = [
    "infer_modality_mask",
    "random_modality_dropout",
    "MultiScaleS6",
    "DynamicGate",
    "NonLocalAttention",
    "MedGANSSMBlock",
    "MedGANSSMStage",
]


def infer_modality_mask(x: torch.Tensor) -> torch.Tensor:
    """
    Availability mask of a zero-filled multi-contrast input: a channel whose values are all zero in a sample counts
    as missing.

    Args:
        x: (B, M, *spatial), one channel per configured contrast, missing contrasts zero-filled.

    Returns:
        (B, M) float mask in ``x``'s dtype (float32 for integer inputs), 1 where the contrast is present.
    """
    if x.dim() < 3:
        raise ValueError(f"infer_modality_mask expects a (B, M, *spatial) tensor, got shape {list(x.shape)}.")
    dtype = x.dtype if x.is_floating_point() else torch.float32
    return (x.detach().flatten(2) != 0).any(dim=2).to(dtype)


def random_modality_dropout(
    x: torch.Tensor,
    mask: Optional[torch.Tensor] = None,
    drop_prob: float = 0.5,
    generator: Optional[torch.Generator] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """
    Random modality dropout for training one synthesis model on every subset of available input contrasts.

    Each present contrast of each sample is dropped (zero-filled, mask 0) independently with probability
    ``drop_prob``; a sample that would lose all its present contrasts keeps one of them, drawn uniformly. Contrasts
    that are already missing stay missing, and a sample with no present contrast at all (e.g. an empty slice above
    the head) is returned unchanged.

    Args:
        x: (B, M, *spatial) input contrasts, missing ones zero-filled.
        mask: (B, M) availability of ``x`` (1 = present); None infers it with :func:`infer_modality_mask`.
            Defaults to None.
        drop_prob: probability of dropping each present contrast, in [0, 1]. Defaults to 0.5.
        generator: ``torch.Generator`` that makes the draw reproducible (its device is used for the random numbers,
            which are then moved to ``x``'s device). Defaults to None (the global generator).

    Returns:
        ``(x_dropped, mask_dropped)``: ``x`` with the dropped contrasts zero-filled, and the (B, M) float mask of what
        is left (never all zero for a sample that had a present contrast).
    """
    if x.dim() < 3:
        raise ValueError(f"random_modality_dropout expects a (B, M, *spatial) tensor, got shape {list(x.shape)}.")
    if not 0.0 <= drop_prob <= 1.0:
        raise ValueError(f"random_modality_dropout: `drop_prob` must be in [0, 1], got {drop_prob}.")
    b, m = x.shape[0], x.shape[1]
    if mask is None:
        mask = infer_modality_mask(x)
    elif list(mask.shape) != [b, m]:
        raise ValueError(
            f"random_modality_dropout: `mask` must have shape (B, M) = ({b}, {m}) for input shape {list(x.shape)}, "
            f"got {list(mask.shape)}."
        )
    rand_device = generator.device if generator is not None else x.device
    present = mask.to(x.device) > 0
    keep = (torch.rand((b, m), generator=generator, device=rand_device).to(x.device) >= drop_prob) & present
    scores = torch.rand((b, m), generator=generator, device=rand_device).to(x.device).masked_fill(~present, -1.0)
    fallback = F.one_hot(scores.argmax(dim=1), m).bool() & present
    lost_all = ~keep.any(dim=1, keepdim=True)
    keep = torch.where(lost_all, fallback, keep)
    dtype = x.dtype if x.is_floating_point() else torch.float32
    new_mask = keep.to(dtype)
    x_dropped = x * new_mask.view([b, m] + [1] * (x.dim() - 2)).to(x.dtype)
    return x_dropped, new_mask


class MultiScaleS6(nn.Module):
    """
    Multi-scale selective scan: :class:`~mamba_monai.blocks.ssnd.SSND` (VMamba's cross-scan S6 mixer, 2D and 3D) on
    the feature map and on ``num_scales - 1`` average-pooled copies (by 2, 4, ...; ``ceil_mode`` so any size works),
    each with its own weights and brought back to the map's size by (bi/tri)linear interpolation. Coarse scales see
    long-range context along shorter sequences; the finest keeps detail.

    Args:
        spatial_dims: 2 or 3.
        channels: C, input and output channels of every branch.
        num_scales: number of branches (scale ``s`` pools by ``2**s``). Defaults to 2.
        d_state: SSND state size. Defaults to 16.
        expand: SSND inner width factor. Defaults to 1.
        dropout: SSND output dropout. Defaults to 0.0.

    Shapes:
        (B, C, *S) -> list of ``num_scales`` tensors (B, C, *S), finest first.
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        num_scales: int = 2,
        d_state: int = 16,
        expand: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, "MultiScaleS6")
        check_positive("MultiScaleS6", channels=channels, num_scales=num_scales, d_state=d_state, expand=expand)
        self.spatial_dims = spatial_dims
        self.num_scales = num_scales
        self.interp_mode = "bilinear" if spatial_dims == 2 else "trilinear"
        pool = Pool[Pool.AVG, spatial_dims]
        self.branches = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Identity() if s == 0 else pool(kernel_size=2**s, stride=2**s, ceil_mode=True),
                    SSND(spatial_dims, channels, d_state=d_state, expand=expand, dropout=dropout),
                )
                for s in range(num_scales)
            ]
        )

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        size = x.shape[2:]
        outs: List[torch.Tensor] = []
        for branch in self.branches:
            y = branch(x)
            if y.shape[2:] != size:
                y = F.interpolate(y, size=size, mode=self.interp_mode, align_corners=False)
            outs.append(y)
        return outs


class DynamicGate(nn.Module):
    """
    Dynamic gating of K branch outputs: input-dependent softmax weights over the branches, per sample, channel and
    voxel, that sum the branches. The weight logits are the sum of

    - a channel term (squeeze-excitation-like): an MLP on the branches' sum, average-pooled over space, concatenated
      with a conditioning vector (here the (B, M) modality-availability mask), giving (B, K, C);
    - a spatial term: a 3x3(x3) convolution of the branches' sum to K maps, giving (B, K, *S).

    Args:
        spatial_dims: 2 or 3.
        channels: C, channels of every branch.
        num_branches: K >= 1.
        cond_channels: length of the conditioning vector (0: none). Defaults to 0.
        reduction: hidden width of the channel MLP is ``max(channels // reduction, 8)``. Defaults to 4.
        act: MONAI activation name of the MLP's hidden layer. Defaults to "relu".

    Shapes:
        ``forward(branches, cond)``: K tensors (B, C, *S) and (B, cond_channels) (or None when cond_channels is 0)
        -> (B, C, *S).
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        num_branches: int,
        cond_channels: int = 0,
        reduction: int = 4,
        act: tuple | str = "relu",
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, "DynamicGate")
        check_positive("DynamicGate", channels=channels, num_branches=num_branches, reduction=reduction)
        if cond_channels < 0:
            raise ValueError(f"DynamicGate: `cond_channels` must be >= 0, got {cond_channels}.")
        self.spatial_dims = spatial_dims
        self.channels = channels
        self.num_branches = num_branches
        self.cond_channels = cond_channels
        hidden = max(channels // reduction, 8)
        self.channel_mlp = nn.Sequential(
            nn.Linear(channels + cond_channels, hidden), get_act_layer(act), nn.Linear(hidden, num_branches * channels)
        )
        self.spatial_conv = Conv[Conv.CONV, spatial_dims](channels, num_branches, kernel_size=3, padding=1)

    def gates(self, branches: List[torch.Tensor], cond: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Softmax weights (B, K, C, *S) over the K branches (they sum to 1 over dim 1)."""
        if len(branches) != self.num_branches:
            raise ValueError(f"DynamicGate expects {self.num_branches} branches, got {len(branches)}.")
        total = branches[0]
        for i in range(1, len(branches)):
            total = total + branches[i]
        b = total.shape[0]
        pooled = total.flatten(2).mean(dim=2)  # (B, C)
        if self.cond_channels > 0:
            if cond is None or list(cond.shape) != [b, self.cond_channels]:
                raise ValueError(
                    f"DynamicGate expects a (B, {self.cond_channels}) conditioning tensor for batch size {b}."
                )
            pooled = torch.cat([pooled, cond.to(pooled.dtype)], dim=1)
        ones: List[int] = [1] * self.spatial_dims
        channel_logits = self.channel_mlp(pooled).view([b, self.num_branches, self.channels] + ones)
        spatial_logits = self.spatial_conv(total).unsqueeze(2)  # (B, K, 1, *S)
        return torch.softmax(channel_logits + spatial_logits, dim=1)

    def forward(self, branches: List[torch.Tensor], cond: Optional[torch.Tensor] = None) -> torch.Tensor:
        weights = self.gates(branches, cond)
        return (weights * torch.stack(branches, dim=1)).sum(dim=1)


class NonLocalAttention(nn.Module):
    """
    Non-local block ("Non-local Neural Networks", Wang et al., CVPR 2018, https://arxiv.org/abs/1711.07971) for long-
    range dependencies: multi-head self-attention over all voxels of a channels-first map, ``x + Dropout(SA(LN(x)))``,
    with MONAI's :class:`~monai.networks.blocks.SABlock` (PyTorch's fused ``scaled_dot_product_attention``).
    Cost is quadratic in the number of voxels: use it at coarse resolutions.

    Args:
        spatial_dims: 2 or 3.
        channels: C, divisible by ``num_heads``.
        num_heads: attention heads. Defaults to 4.
        dropout: dropout on the attention output (applied in training only). Defaults to 0.0.

    Shapes:
        (B, C, *S) -> (B, C, *S).
    """

    def __init__(self, spatial_dims: int, channels: int, num_heads: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, "NonLocalAttention")
        check_positive("NonLocalAttention", channels=channels, num_heads=num_heads)
        if channels % num_heads:
            raise ValueError(
                f"NonLocalAttention: `channels` ({channels}) must be divisible by `num_heads` ({num_heads})."
            )
        check_rate("NonLocalAttention", "dropout", dropout)
        self.channels = channels
        self.norm = nn.LayerNorm(channels)
        # SABlock's fused path applies its own dropout_rate even in eval mode (MONAI 1.6): keep it 0, drop outside
        self.attn = SABlock(channels, num_heads, dropout_rate=0.0, qkv_bias=True, use_flash_attention=True)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.flatten(2).transpose(1, 2)  # (B, L, C)
        y = self.dropout(self.attn(self.norm(tokens)))
        return x + y.transpose(1, 2).reshape(x.shape)


class MedGANSSMBlock(nn.Module):
    """
    State-space block of the MedGAN-SSM encoder: multi-scale S6 and a local convolution branch mixed by dynamic
    gates that also see the modality-availability mask, in a pre-norm residual, followed by a 1x1 MLP residual::

        h = LN(x)
        x = x + DynamicGate([local(h), S6_1(h), S6_2(pool2(h)), ...], mask)
        x = x + MLP(LN(x))                        # when mlp_ratio > 0

    ``local`` is a depthwise 3x3(x3) convolution, normalisation, activation and a 1x1 convolution.

    Args:
        spatial_dims: 2 or 3.
        channels: C.
        cond_channels: length of the conditioning vector fed to the gates (the number of input contrasts M; 0 for
            none). Defaults to 0.
        num_scales: S6 branches (see :class:`MultiScaleS6`). Defaults to 2.
        d_state: SSND state size. Defaults to 16.
        expand: SSND inner width factor. Defaults to 1.
        mlp_ratio: hidden width of the MLP is ``int(mlp_ratio * channels)``; 0 leaves it out. Defaults to 2.0.
        dropout: dropout in the S6 output and the MLP. Defaults to 0.0.
        act: MONAI activation name (local branch, MLP, gate MLP). Defaults to "gelu".
        norm: MONAI normalisation name of the local branch. Defaults to "instance".
        use_checkpoint: in training, recompute the block in the backward pass (``use_reentrant=False``).
            Defaults to False.

    Shapes:
        ``forward(x, cond)``: (B, C, *S) and (B, cond_channels) -> (B, C, *S).
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        cond_channels: int = 0,
        num_scales: int = 2,
        d_state: int = 16,
        expand: int = 1,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        act: tuple | str = "gelu",
        norm: tuple | str = "instance",
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, "MedGANSSMBlock")
        check_positive("MedGANSSMBlock", channels=channels)
        check_rate("MedGANSSMBlock", "dropout", dropout)
        if mlp_ratio < 0:
            raise ValueError(f"MedGANSSMBlock: `mlp_ratio` must be >= 0 (0 disables the MLP), got {mlp_ratio}.")
        self.use_checkpoint = use_checkpoint
        conv = Conv[Conv.CONV, spatial_dims]
        self.norm = LayerNormNd(channels)
        self.local = nn.Sequential(
            conv(channels, channels, kernel_size=3, padding=1, groups=channels),
            get_norm_layer(norm, spatial_dims=spatial_dims, channels=channels),
            get_act_layer(act),
            conv(channels, channels, kernel_size=1),
        )
        self.s6 = MultiScaleS6(spatial_dims, channels, num_scales=num_scales, d_state=d_state, expand=expand,
                               dropout=dropout)
        self.gate = DynamicGate(spatial_dims, channels, num_scales + 1, cond_channels=cond_channels, act=act)
        hidden = int(mlp_ratio * channels)
        self.has_mlp = hidden > 0
        self.mlp_norm = LayerNormNd(channels) if self.has_mlp else nn.Identity()
        self.mlp = (
            nn.Sequential(
                conv(channels, hidden, kernel_size=1), get_act_layer(act), nn.Dropout(dropout),
                conv(hidden, channels, kernel_size=1), nn.Dropout(dropout),
            )
            if self.has_mlp
            else nn.Identity()
        )

    def _forward(self, x: torch.Tensor, cond: Optional[torch.Tensor]) -> torch.Tensor:
        h = self.norm(x)
        branches = [self.local(h)] + self.s6(h)
        x = x + self.gate(branches, cond)
        if self.has_mlp:
            x = x + self.mlp(self.mlp_norm(x))
        return x

    @torch.jit.unused
    def _checkpointed(self, x: torch.Tensor, cond: Optional[torch.Tensor]) -> torch.Tensor:
        return checkpoint(self._forward, x, cond, use_reentrant=False)

    def forward(self, x: torch.Tensor, cond: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.use_checkpoint and self.training and torch.is_grad_enabled() and not torch.jit.is_scripting():
            return self._checkpointed(x, cond)
        return self._forward(x, cond)


class MedGANSSMStage(nn.Module):
    """
    One encoder level of the MedGAN-SSM generator: a residual convolution block (MONAI
    :class:`~monai.networks.blocks.dynunet_block.UnetResBlock`, kernel 3, ``stride`` 2 to down-sample), then
    ``num_blocks`` :class:`MedGANSSMBlock` and, if ``use_attention``, a :class:`NonLocalAttention`.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels C.
        stride: 1 or 2 (halves every spatial size).
        num_blocks: state-space blocks (0: convolution only). Defaults to 1.
        use_attention: add a non-local attention block at the end. Defaults to False.
        cond_channels: length of the gates' conditioning vector. Defaults to 0.
        num_scales, d_state, expand, mlp_ratio: see :class:`MedGANSSMBlock`.
        num_heads: attention heads. Defaults to 4.
        dropout: dropout of the convolution block, the S6 blocks and the attention. Defaults to 0.0.
        act: MONAI activation name. Defaults to ("leakyrelu", {"negative_slope": 0.2}).
        norm: MONAI normalisation name. Defaults to "instance".
        use_checkpoint: gradient checkpointing of the state-space blocks while training. Defaults to False.

    Shapes:
        ``forward(x, cond)``: (B, in_channels, *S) and (B, cond_channels) -> (B, out_channels, *S / stride).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        num_blocks: int = 1,
        use_attention: bool = False,
        cond_channels: int = 0,
        num_scales: int = 2,
        d_state: int = 16,
        expand: int = 1,
        mlp_ratio: float = 2.0,
        num_heads: int = 4,
        dropout: float = 0.0,
        act: tuple | str = ("leakyrelu", {"negative_slope": 0.2}),
        norm: tuple | str = "instance",
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, "MedGANSSMStage")
        check_positive("MedGANSSMStage", in_channels=in_channels, out_channels=out_channels)
        if stride not in (1, 2):
            raise ValueError(f"MedGANSSMStage: `stride` can only be 1 or 2, got {stride}.")
        if num_blocks < 0:
            raise ValueError(f"MedGANSSMStage: `num_blocks` must be >= 0, got {num_blocks}.")
        self.conv = UnetResBlock(spatial_dims, in_channels, out_channels, kernel_size=3, stride=stride,
                                 norm_name=norm, act_name=act, dropout=dropout if dropout > 0 else None)
        self.blocks = nn.ModuleList(
            [
                MedGANSSMBlock(spatial_dims, out_channels, cond_channels=cond_channels, num_scales=num_scales,
                               d_state=d_state, expand=expand, mlp_ratio=mlp_ratio, dropout=dropout, act=act,
                               norm=norm, use_checkpoint=use_checkpoint)
                for _ in range(num_blocks)
            ]
        )
        self.attention = (
            NonLocalAttention(spatial_dims, out_channels, num_heads=num_heads, dropout=dropout)
            if use_attention
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor, cond: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = self.conv(x)
        for block in self.blocks:
            x = block(x, cond)
        return self.attention(x)
