"""Instance normalisation fused with its leaky ReLU (``mamba_monai.ops.instance_norm_cpu``), and MONAI's residual and
basic U-Net blocks rebuilt around it."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks.dynunet_block import UnetBasicBlock, UnetResBlock

from mamba_monai.blocks.emnet import UnetConvBlock
from mamba_monai.ops.instance_norm_cpu import has_numba

__all__ = ["InstanceNormAct", "NormActResBlock", "NormActBasicBlock", "NormActConvBlock", "fuse_norm_act",
           "set_fused_norm_act"]


class InstanceNormAct(nn.Module):
    """
    Instance normalisation (per sample and channel, over space; no running statistics), optionally followed by a
    leaky ReLU, in one module. Float32 CPU tensors go through the fused numba kernels (one autograd node, output
    channels-last; ``mamba_monai::instance_norm_act_fwd``); every other tensor, and all tensors when ``fused`` is
    False, through ``F.group_norm`` and ``F.leaky_relu``. Both give the same values; the state dict is that of
    ``nn.InstanceNorm{1,2,3}d`` (``weight`` and ``bias`` when affine).

    Args:
        num_channels: C of the (B, C, *spatial) input.
        eps: added to the variance.
        affine: learn a per-channel scale and shift.
        negative_slope: slope of the leaky ReLU for negative inputs; 1.0 is no activation, 0.0 a ReLU.
        fused: use the fused kernels where they apply (numba importable).
    """

    def __init__(
        self,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = False,
        negative_slope: float = 1.0,
        fused: bool = True,
    ) -> None:
        super().__init__()
        self.num_channels = int(num_channels)
        self.eps = float(eps)
        self.negative_slope = float(negative_slope)
        self.fused = bool(fused) and has_numba
        if affine:
            self.weight = nn.Parameter(torch.ones(self.num_channels))
            self.bias = nn.Parameter(torch.zeros(self.num_channels))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    @classmethod
    def from_norm(cls, norm: nn.Module, negative_slope: float = 1.0) -> InstanceNormAct:
        """The same normalisation as ``norm`` (an instance norm without running statistics, or a ``GroupNorm`` with one
        channel per group), its affine parameters copied, followed by a leaky ReLU of ``negative_slope``."""
        if not is_instance_norm(norm):
            raise TypeError(f"InstanceNormAct.from_norm: expected an instance norm, got {norm}.")
        channels = norm.num_channels if isinstance(norm, nn.GroupNorm) else norm.num_features
        fused = cls(channels, eps=norm.eps, affine=norm.affine, negative_slope=negative_slope)
        if norm.affine:
            fused.to(norm.weight.device).load_state_dict(norm.state_dict())
        return fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, *spatial); returns the same shape."""
        if self.fused and x.device.type == "cpu" and x.dtype == torch.float32:
            return torch.ops.mamba_monai.instance_norm_act_fwd(x, self.weight, self.bias, self.eps, self.negative_slope)[0]
        y = F.group_norm(x, self.num_channels, self.weight, self.bias, self.eps)
        if self.negative_slope == 1.0:
            return y
        return F.leaky_relu(y, self.negative_slope)

    def extra_repr(self) -> str:
        return (f"{self.num_channels}, eps={self.eps}, affine={self.weight is not None}, "
                f"negative_slope={self.negative_slope}, fused={self.fused}")


def is_instance_norm(norm: nn.Module) -> bool:
    """An instance norm without running statistics, or a ``GroupNorm`` with one channel per group."""
    if isinstance(norm, nn.modules.instancenorm._InstanceNorm):
        return not norm.track_running_stats
    return isinstance(norm, nn.GroupNorm) and norm.num_groups == norm.num_channels


def _slope(act: nn.Module) -> float | None:
    """The negative slope of a (leaky) ReLU, None for any other activation."""
    if isinstance(act, nn.LeakyReLU):
        return float(act.negative_slope)
    if isinstance(act, nn.ReLU):
        return 0.0
    return None


class NormActResBlock(nn.Module):
    """
    MONAI's ``UnetResBlock`` (conv, norm, act, conv, norm, + residual (1x1 conv, norm), act) with its first norm and
    act as one :class:`InstanceNormAct`; built from an existing block, whose convolutions it shares. Same state dict,
    same values. Input (B, C_in, *spatial), output (B, C_out, *spatial / stride).
    """

    def __init__(self, block: UnetResBlock) -> None:
        super().__init__()
        slope = _slope(block.lrelu)
        self.conv1, self.conv2, self.lrelu = block.conv1, block.conv2, block.lrelu
        self.norm1 = InstanceNormAct.from_norm(block.norm1, negative_slope=slope)
        self.norm2 = InstanceNormAct.from_norm(block.norm2)
        self.downsample = block.downsample
        self.scale_residual = False
        self.residual_stride: list[int] = []
        if hasattr(block, "conv3"):
            self.conv3 = block.conv3
            self.norm3 = InstanceNormAct.from_norm(block.norm3)
            self.scale_residual = _is_channel_scale(block.conv3)
            self.residual_stride = [int(st) for st in block.conv3.conv.stride]

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        out = self.norm2(self.conv2(self.norm1(self.conv1(inp))))
        residual = inp
        if hasattr(self, "conv3"):
            if self.scale_residual:  # a 1x1 convolution of one channel: the input times each output channel's weight
                for axis, step in enumerate(self.residual_stride):  # a strided one samples every step-th position
                    if step > 1:
                        residual = torch.ops.aten.slice(residual, axis + 2, 0, None, step)
                weight = self.conv3.conv.weight
                residual = residual * weight.reshape([1, weight.shape[0]] + [1] * (inp.dim() - 2))
            else:
                residual = self.conv3(residual)
        if hasattr(self, "norm3"):
            residual = self.norm3(residual)
        out += residual
        return self.lrelu(out)


def _is_channel_scale(conv_block: nn.Module) -> bool:
    """Whether a MONAI ``Convolution`` is a bare 1x1 convolution from one channel, without bias (then
    ``x * weight`` per output channel, of every ``stride``-th position; oneDNN took as long for it as for a 3x3x3
    convolution on 8 channels, and PyTorch 2.13's backward of a strided 2D one on a channels-last 1-channel input
    corrupts the heap)."""
    conv = getattr(conv_block, "conv", None)
    if not isinstance(conv, nn.modules.conv._ConvNd) or len(conv_block) != 1 or conv.transposed:
        return False
    no_padding = conv.padding == "valid" or (not isinstance(conv.padding, str) and all(p == 0 for p in conv.padding))
    return (conv.in_channels == 1 and conv.bias is None and conv.groups == 1 and no_padding
            and all(k == 1 for k in conv.kernel_size))


class NormActBasicBlock(nn.Module):
    """
    MONAI's ``UnetBasicBlock`` (conv, norm, act, conv, norm, act) with each norm and act as one
    :class:`InstanceNormAct`; built from an existing block, whose convolutions it shares. Same state dict, same
    values. Input (B, C_in, *spatial), output (B, C_out, *spatial / stride).
    """

    def __init__(self, block: UnetBasicBlock) -> None:
        super().__init__()
        slope = _slope(block.lrelu)
        self.conv1, self.conv2 = block.conv1, block.conv2
        self.norm1 = InstanceNormAct.from_norm(block.norm1, negative_slope=slope)
        self.norm2 = InstanceNormAct.from_norm(block.norm2, negative_slope=slope)

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        return self.norm2(self.conv2(self.norm1(self.conv1(inp))))


class NormActConvBlock(nn.Module):
    """
    :class:`~mamba_monai.blocks.UnetConvBlock` (conv, norm, act) with its norm and act as one :class:`InstanceNormAct`;
    built from an existing block, whose convolution it shares. Same state dict, same values.
    """

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.conv1 = block.conv1
        self.norm1 = InstanceNormAct.from_norm(block.norm1, negative_slope=_slope(block.lrelu))

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        return self.norm1(self.conv1(inp))


def _fusable(block: nn.Module) -> bool:
    norms = [getattr(block, name) for name in ("norm1", "norm2", "norm3") if hasattr(block, name)]
    return _slope(block.lrelu) is not None and all(is_instance_norm(n) for n in norms)


def fuse_norm_act(module: nn.Module) -> nn.Module:
    """
    Replace, in place, every ``UnetResBlock`` / ``UnetBasicBlock`` / :class:`~mamba_monai.blocks.UnetConvBlock` in
    ``module`` whose norms are instance norms and whose activation is a (leaky) ReLU by :class:`NormActResBlock` /
    :class:`NormActBasicBlock` / :class:`NormActConvBlock` (the same weights and state dict keys). Returns ``module``,
    or its replacement when ``module`` is such a block itself.
    """
    for parent in module.modules():
        for name, child in list(parent.named_children()):
            setattr(parent, name, _fused(child))
    return _fused(module)


def _fused(block: nn.Module) -> nn.Module:
    """The fused counterpart of a MONAI block with instance norms and a (leaky) ReLU; other modules unchanged."""
    for monai_type, fused_type in ((UnetResBlock, NormActResBlock), (UnetBasicBlock, NormActBasicBlock),
                                   (UnetConvBlock, NormActConvBlock)):
        if isinstance(block, monai_type) and _fusable(block):
            return fused_type(block)
    return block


def set_fused_norm_act(module: nn.Module, enabled: bool) -> nn.Module:
    """Switch every :class:`InstanceNormAct` in ``module`` to the fused kernels (``enabled``, where numba imports) or to
    PyTorch's ``group_norm`` + ``leaky_relu``, e.g. to time both in one run. Returns ``module``."""
    for m in module.modules():
        if isinstance(m, InstanceNormAct):
            m.fused = bool(enabled) and has_numba
    return module
