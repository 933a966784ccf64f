"""Layers of EM-Net (Chang et al., MICCAI 2024): the CSR Mamba layer, the EFL layer and the blocks built from them.

"EM-Net: Efficient Channel and Frequency Learning with Mamba for 3D Medical Image Segmentation",
https://arxiv.org/abs/2409.17675
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks.dynunet_block import UnetBasicBlock, UnetResBlock, get_conv_layer
from monai.networks.layers import DropPath
from monai.networks.layers.factories import Conv
from monai.networks.layers.utils import get_act_layer, get_norm_layer
from torch.utils.checkpoint import checkpoint

from mamba_monai.blocks.mamba import MambaMixer
from mamba_monai.blocks.spectral import SpectralGating
from mamba_monai.blocks.utils import check_positive, check_spatial_dims

__all__ = ["LayerNormNd", "ChannelMLP", "CSRMambaLayer", "EFLLayer", "CSRMBlock", "EMNetUpBlock", "UnetConvBlock"]


class LayerNormNd(nn.Module):
    """
    Layer normalisation over the channel axis of a channels-first tensor (B, C, *S), as ConvNeXt's
    "channels_first" LayerNorm: every voxel's C-vector is normalised on its own.

    Args:
        num_channels: C.
        eps: added to the variance. Defaults to 1e-6.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.movedim(1, -1), (self.num_channels,), self.weight, self.bias, self.eps)
        return y.movedim(-1, 1)


class ChannelMLP(nn.Module):
    """
    Point-wise (1x1 convolution) MLP over a channels-first tensor: C -> hidden -> C with GELU between.

    Args:
        spatial_dims: 2 or 3.
        channels: C, input and output channels.
        hidden_channels: width of the hidden layer.
    """

    def __init__(self, spatial_dims: int, channels: int, hidden_channels: int) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.fc1 = conv(channels, hidden_channels, kernel_size=1)
        self.act = nn.GELU()
        self.fc2 = conv(hidden_channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class CSRMambaLayer(nn.Module):
    """
    The channel squeeze-reinforce (CSR) Mamba layer of EM-Net, "EM-Net: Efficient Channel and Frequency Learning
    with Mamba for 3D Medical Image Segmentation" (https://arxiv.org/abs/2409.17675). 2D and 3D.

    The feature map is flattened to tokens and layer-normalised (``x``). One bidirectional Mamba mixer serves two
    branches: the reinforce branch ``a = LN(Mamba(x))`` and the squeeze branch ``b = LN(Mamba(MLP(x)))``, where the
    MLP squeezes the channels C -> C/``squeeze_ratio`` -> C. Both branches run in one mixer call (stacked along the
    batch axis, shared weights). The tokens are updated with a layer scale, ``t + gamma * (a + b)``, reshaped back and
    refined by a residual convolution block (MONAI ``UnetResBlock``, k=3) followed by channel dropout and a 1x1
    convolution, added residually. No positional embedding is used, so any spatial size is accepted.

    Args:
        spatial_dims: 2 or 3.
        channels: C, input and output channels.
        d_state: Mamba state size N. Defaults to 16.
        d_conv: Mamba causal convolution width. Defaults to 4.
        expand: Mamba inner width factor. Defaults to 2.
        squeeze_ratio: channel reduction of the squeeze MLP. Defaults to 4.
        layer_scale_init: initial value of the per-channel layer scale ``gamma``. Defaults to 1e-6.
        norm_name: normalisation of the residual convolution block (MONAI factory name). Defaults to "instance"
            (the published code used "batch").
        dropout_rate: channel dropout before the 1x1 convolution (published: 0.1). Defaults to 0.0.
        drop_path_rate: stochastic depth on both residual branches. Defaults to 0.0.
        bidirectional: scan the token sequence both ways. Defaults to True.

    Shapes:
        input (B, C, *S) -> output (B, C, *S).
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        squeeze_ratio: int = 4,
        layer_scale_init: float = 1e-6,
        norm_name: tuple | str = "instance",
        dropout_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        bidirectional: bool = True,
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, "CSRMambaLayer")
        check_positive("CSRMambaLayer", channels=channels, squeeze_ratio=squeeze_ratio)
        if not 0.0 <= dropout_rate < 1.0:
            raise ValueError(f"CSRMambaLayer: `dropout_rate` must be in [0, 1), got {dropout_rate}.")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"CSRMambaLayer: `drop_path_rate` must be in [0, 1), got {drop_path_rate}.")
        self.spatial_dims = spatial_dims
        self.channels = channels
        self.norm = nn.LayerNorm(channels)
        self.mamba = MambaMixer(channels, d_state=d_state, d_conv=d_conv, expand=expand, bidirectional=bidirectional)
        self.norm_reinforce = nn.LayerNorm(channels)
        self.norm_squeeze = nn.LayerNorm(channels)
        hidden = max(1, channels // squeeze_ratio)
        self.squeeze = nn.Sequential(nn.Linear(channels, hidden), nn.GELU(), nn.Linear(hidden, channels))
        self.gamma = nn.Parameter(torch.full((channels,), float(layer_scale_init)))
        self.conv_block = UnetResBlock(spatial_dims, channels, channels, kernel_size=3, stride=1, norm_name=norm_name)
        drop = nn.Dropout3d if spatial_dims == 3 else nn.Dropout2d
        self.conv_proj = nn.Sequential(drop(dropout_rate), Conv[Conv.CONV, spatial_dims](channels, channels, kernel_size=1))
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[0], x.shape[1]
        spatial = list(x.shape[2:])
        tokens = x.flatten(2).transpose(1, 2)  # (B, L, C)
        xn = self.norm(tokens)
        # reinforce (xn) and squeeze (MLP(xn)) branches share the Mamba weights: run them as one batch of 2B
        mixed = self.mamba(torch.cat([xn, self.squeeze(xn)], dim=0))
        reinforce, squeezed = mixed[:b], mixed[b:]
        update = self.norm_reinforce(reinforce) + self.norm_squeeze(squeezed)
        tokens = tokens + self.drop_path(self.gamma * update)
        out = tokens.transpose(1, 2).reshape([b, c] + spatial)
        return out + self.drop_path(self.conv_proj(self.conv_block(out)))


class EFLLayer(nn.Module):
    """
    The efficient frequency learning (EFL) layer of EM-Net, "EM-Net: Efficient Channel and Frequency Learning with
    Mamba for 3D Medical Image Segmentation" (https://arxiv.org/abs/2409.17675). 2D and 3D.

    ``x + MLP(LN(SpectralGating(LN(x))))``: a GFNet-style global filter (real FFT, learned complex weight per
    channel and frequency, inverse FFT; :class:`mamba_monai.blocks.spectral.SpectralGating`), then a point-wise MLP
    C -> C * ``mlp_ratio`` -> C. The filter is defined on a fixed frequency grid and interpolated to the input size,
    so any spatial size is accepted.

    Args:
        spatial_dims: 2 or 3.
        channels: C, input and output channels.
        mlp_ratio: hidden width of the MLP relative to C. Defaults to 0.5 (as published).
        filter_size: frequency grid of the learned filter (see ``SpectralGating``); None keeps its default.
        drop_path_rate: stochastic depth on the residual branch. Defaults to 0.0.

    Shapes:
        input (B, C, *S) -> output (B, C, *S).
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        mlp_ratio: float = 0.5,
        filter_size: int | Sequence[int] | None = None,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, "EFLLayer")
        check_positive("EFLLayer", channels=channels)
        if mlp_ratio <= 0:
            raise ValueError(f"EFLLayer: `mlp_ratio` must be positive, got {mlp_ratio}.")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"EFLLayer: `drop_path_rate` must be in [0, 1), got {drop_path_rate}.")
        self.norm1 = LayerNormNd(channels)
        if filter_size is None:
            self.spectral = SpectralGating(spatial_dims, channels)
        else:
            self.spectral = SpectralGating(spatial_dims, channels, filter_size=filter_size)
        self.norm2 = LayerNormNd(channels)
        self.mlp = ChannelMLP(spatial_dims, channels, max(1, int(channels * mlp_ratio)))
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.spectral(self.norm1(x)).to(x.dtype)
        return x + self.drop_path(self.mlp(self.norm2(y)))


class CSRMBlock(nn.Module):
    """
    A stage of EM-Net: ``fft_num`` :class:`EFLLayer` followed by ``depth - fft_num`` :class:`CSRMambaLayer`.
    With ``fft_num == 0`` it is the paper's CSRM block, otherwise its CSRM-F block.

    Args:
        spatial_dims: 2 or 3.
        channels: C, input and output channels.
        depth: number of layers in all. May be 0 (identity).
        fft_num: how many of them are EFL layers (the first ones). Defaults to 0.
        d_state, d_conv, expand, layer_scale_init, norm_name, dropout_rate: see :class:`CSRMambaLayer`.
        filter_size: see :class:`EFLLayer`.
        drop_path_rates: stochastic depth per layer (``depth`` values) or one value for all. Defaults to 0.0.
        use_checkpoint: gradient checkpointing per layer while training (``torch.utils.checkpoint``,
            non-reentrant): activations inside a layer are recomputed in the backward pass. Eager Python only:
            a module compiled with ``torch.jit.script`` runs without it. Defaults to False.

    Shapes:
        input (B, C, *S) -> output (B, C, *S).
    """

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        depth: int,
        fft_num: int = 0,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        layer_scale_init: float = 1e-6,
        norm_name: tuple | str = "instance",
        dropout_rate: float = 0.0,
        filter_size: int | Sequence[int] | None = None,
        drop_path_rates: float | Sequence[float] = 0.0,
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        if depth < 0 or not 0 <= fft_num <= depth:
            raise ValueError(f"CSRMBlock: need 0 <= fft_num <= depth, got fft_num={fft_num}, depth={depth}.")
        rates = [float(drop_path_rates)] * depth if isinstance(drop_path_rates, (int, float)) else list(drop_path_rates)
        if len(rates) != depth:
            raise ValueError(f"CSRMBlock: `drop_path_rates` must have {depth} values (one per layer), got {len(rates)}.")
        self.use_checkpoint = use_checkpoint
        layers: list[nn.Module] = []
        for i in range(depth):
            if i < fft_num:
                layers.append(EFLLayer(spatial_dims, channels, filter_size=filter_size, drop_path_rate=rates[i]))
            else:
                layers.append(
                    CSRMambaLayer(
                        spatial_dims,
                        channels,
                        d_state=d_state,
                        d_conv=d_conv,
                        expand=expand,
                        layer_scale_init=layer_scale_init,
                        norm_name=norm_name,
                        dropout_rate=dropout_rate,
                        drop_path_rate=rates[i],
                    )
                )
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            if not torch.jit.is_scripting() and self.use_checkpoint and self.training and torch.is_grad_enabled():
                x = checkpoint(layer, x, use_reentrant=False)
            else:
                x = layer(x)
        return x


class UnetConvBlock(nn.Module):
    """
    One convolution, norm and activation: MONAI's ``UnetBasicBlock`` with its second convolution left out (the same
    ``conv1`` / ``norm1`` / ``lrelu`` modules and state dict keys as its first half).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: convolution kernel size.
        stride: convolution stride.
        norm_name: MONAI normalisation name.
        act_name: MONAI activation name. Defaults to leaky ReLU (negative slope 0.01), as ``UnetBasicBlock``.
        dropout: dropout of the convolution. Defaults to None.

    Shapes:
        input (B, in_channels, *S) -> output (B, out_channels, *S / stride).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: Sequence[int] | int,
        stride: Sequence[int] | int,
        norm_name: tuple | str,
        act_name: tuple | str = ("leakyrelu", {"inplace": True, "negative_slope": 0.01}),
        dropout: tuple | str | float | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = get_conv_layer(spatial_dims, in_channels, out_channels, kernel_size=kernel_size, stride=stride,
                                    dropout=dropout, act=None, norm=None, conv_only=False)
        self.lrelu = get_act_layer(name=act_name)
        self.norm1 = get_norm_layer(name=norm_name, spatial_dims=spatial_dims, channels=out_channels)

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        return self.lrelu(self.norm1(self.conv1(inp)))


class EMNetUpBlock(nn.Module):
    """
    EM-Net decoder stage: transposed convolution (kernel = stride = ``upsample_kernel_size``), the skip feature is
    ADDED (not concatenated), then a :class:`CSRMBlock` of ``depth`` CSR Mamba layers, or, with ``depth == 0``, a
    MONAI ``UnetBasicBlock`` (conv-norm-act x2) as in the published full-resolution stage (a :class:`UnetConvBlock`,
    conv-norm-act once, with ``num_convs`` 1).

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the coarse input.
        out_channels: channels of the skip and of the output.
        depth: CSR Mamba layers after the addition; 0 uses a convolution block instead.
        upsample_kernel_size: up-sampling factor. Defaults to 2.
        norm_name: MONAI norm name for the convolution blocks. Defaults to "instance".
        use_checkpoint: see :class:`CSRMBlock`.
        num_convs: convolutions of the block used when ``depth == 0``, 2 or 1. Defaults to 2.
        layer_kwargs: further keyword arguments of :class:`CSRMBlock` (d_state, layer_scale_init, ...).

    Shapes:
        inp (B, in_channels, *S), skip (B, out_channels, *S * k) -> (B, out_channels, *S * k).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        depth: int,
        upsample_kernel_size: int = 2,
        norm_name: tuple | str = "instance",
        use_checkpoint: bool = False,
        num_convs: int = 2,
        **layer_kwargs,
    ) -> None:
        super().__init__()
        if num_convs not in (1, 2):
            raise ValueError(f"EMNetUpBlock: `num_convs` must be 1 or 2, got {num_convs!r}.")
        self.transp_conv = get_conv_layer(
            spatial_dims,
            in_channels,
            out_channels,
            kernel_size=upsample_kernel_size,
            stride=upsample_kernel_size,
            conv_only=True,
            is_transposed=True,
        )
        self.block: nn.Module
        if depth > 0:
            self.block = CSRMBlock(
                spatial_dims, out_channels, depth, norm_name=norm_name, use_checkpoint=use_checkpoint, **layer_kwargs
            )
        else:
            conv_block = UnetBasicBlock if num_convs == 2 else UnetConvBlock
            self.block = conv_block(spatial_dims, out_channels, out_channels, kernel_size=3, stride=1, norm_name=norm_name)

    def forward(self, inp: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(self.transp_conv(inp) + skip)
