"""Convolutions of float32 CPU tensors computed in bfloat16 (oneDNN's AVX512-BF16 / AMX kernels), for the few-channel,
high-resolution convolutions that dominate a CPU training step."""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["CPUBFloat16Conv", "cpu_bfloat16_convs"]


class CPUBFloat16Conv(nn.Module):
    """
    A convolution (transposed or not, 1D to 3D) that computes in bfloat16 when its input is a float32 CPU tensor and
    returns float32: the input, weight and bias are rounded to bfloat16 for the convolution (oneDNN accumulates in
    float32), the output is cast back, and so are the gradients, so the parameters, the optimiser and everything
    around the convolution stay float32, as under ``torch.autocast("cpu", dtype=torch.bfloat16)``. Other devices and
    dtypes run the plain convolution. Built from an existing ``nn.Conv{1,2,3}d`` / ``nn.ConvTranspose{1,2,3}d``
    (zero padding), whose parameters it shares: the same ``weight`` / ``bias`` state dict keys.

    On CPUs with bfloat16 instructions (AVX512-BF16, AMX) a 3x3x3 convolution on 8-16 channels runs its forward and
    backward about 1.6x faster; elsewhere oneDNN emulates bfloat16 and it can be slower. The output differs from the
    float32 one by bfloat16's rounding (relative 2 ** -8 per element).

    Args:
        conv: the convolution to compute in bfloat16.
    """

    def __init__(self, conv: nn.modules.conv._ConvNd) -> None:
        super().__init__()
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(
                f"CPUBFloat16Conv needs a zero-padded convolution with numeric padding, got padding={conv.padding!r}, "
                f"padding_mode={conv.padding_mode!r}."
            )
        self.weight = conv.weight
        if conv.bias is None:
            self.register_parameter("bias", None)
        else:
            self.bias = conv.bias
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size = [int(k) for k in conv.kernel_size]
        self.stride = [int(s) for s in conv.stride]
        self.padding = [int(p) for p in conv.padding]
        self.dilation = [int(d) for d in conv.dilation]
        self.transposed = bool(conv.transposed)
        self.output_padding = [int(p) for p in conv.output_padding]
        self.groups = int(conv.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, in_channels, *spatial) -> (B, out_channels, *spatial'), as the convolution it was built from."""
        weight, bias = self.weight, self.bias
        if x.device.type == "cpu" and x.dtype == torch.float32:
            bias16 = None if bias is None else bias.to(torch.bfloat16)
            out = torch.convolution(x.to(torch.bfloat16), weight.to(torch.bfloat16), bias16, self.stride, self.padding,
                                    self.dilation, self.transposed, self.output_padding, self.groups)
            return out.to(torch.float32)
        return torch.convolution(x, weight, bias, self.stride, self.padding, self.dilation, self.transposed,
                                 self.output_padding, self.groups)

    def extra_repr(self) -> str:
        kind = "transposed, " if self.transposed else ""
        return (f"{self.in_channels}, {self.out_channels}, {kind}kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, bias={self.bias is not None}")


def cpu_bfloat16_convs(module: nn.Module, min_in_channels: int = 2) -> nn.Module:
    """
    Replace, in place, every ``nn.Conv{1,2,3}d`` / ``nn.ConvTranspose{1,2,3}d`` of ``module`` that reads at least
    ``min_in_channels`` channels by a :class:`CPUBFloat16Conv` sharing its parameters (the same state dict). The
    default of 2 leaves the convolutions of a 1-channel image in float32: they do little arithmetic per value read,
    and its raw intensities keep their precision. Returns ``module``, or its replacement when ``module`` is such a
    convolution itself.
    """
    for parent in module.modules():
        for name, child in list(parent.named_children()):
            setattr(parent, name, _bfloat16(child, min_in_channels))
    return _bfloat16(module, min_in_channels)


def _bfloat16(module: nn.Module, min_in_channels: int) -> nn.Module:
    if isinstance(module, nn.modules.conv._ConvNd) and module.in_channels >= min_in_channels:
        return CPUBFloat16Conv(module)
    return module
