"""Convolutions computed in bfloat16 on a CPU (blocks/bfloat16_conv.py) against float64 convolutions of the same
bfloat16-rounded values, and EMNet's ``full_res_bfloat16`` against the float32 network."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mamba_monai.blocks import CPUBFloat16Conv, cpu_bfloat16_convs
from mamba_monai.networks import EMNet


def _rounded(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach().to(torch.bfloat16).double().requires_grad_()


def _reference_conv(conv: nn.modules.conv._ConvNd, x: torch.Tensor, weight, bias) -> torch.Tensor:
    dims = x.dim() - 2
    if conv.transposed:
        functional = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[dims - 1]
        return functional(x, weight, bias, conv.stride, conv.padding, conv.output_padding, conv.groups, conv.dilation)
    functional = (F.conv1d, F.conv2d, F.conv3d)[dims - 1]
    return functional(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def _assert_bfloat16_close(actual: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    """Within bfloat16's rounding of each element (2 ** -8 relative) plus float32 accumulation of the sums."""
    actual, expected = actual.detach(), expected.detach()
    scale = float(expected.abs().max())
    torch.testing.assert_close(actual.double(), expected, rtol=2**-7, atol=1e-3 * scale, msg=lambda m: f"{name}: {m}")


CONVS = [  # the convolution, the input shape, channels-last input
    (lambda: nn.Conv3d(8, 8, 3, padding=1), (2, 8, 12, 10, 6), True),
    (lambda: nn.Conv3d(16, 8, 3, padding=1, bias=False), (1, 16, 8, 8, 4), False),
    (lambda: nn.ConvTranspose3d(16, 8, 2, stride=2), (2, 16, 5, 4, 3), True),
    (lambda: nn.Conv2d(6, 4, 3, stride=2, padding=1), (3, 6, 11, 9), False),
    (lambda: nn.ConvTranspose2d(4, 5, 3, stride=2, padding=1, output_padding=1), (2, 4, 6, 7), True),
    (lambda: nn.Conv1d(5, 3, 3, padding=2, dilation=2), (2, 5, 17), False),
]


@pytest.mark.parametrize("make_conv,shape,channels_last", CONVS)
def test_values_and_gradients_are_float64_convolutions_of_bfloat16_rounded_values(make_conv, shape, channels_last):
    """Forward: the float64 convolution of the bfloat16-rounded input, weight and bias, rounded once more. Backward:
    the float64 gradients for the bfloat16-rounded output gradient. Output, gradients and parameters stay float32."""
    torch.manual_seed(0)
    conv = make_conv()
    module = CPUBFloat16Conv(conv)
    x = torch.randn(shape)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d if x.dim() == 5 else torch.channels_last)
    x.requires_grad_()
    out = module(x)
    x64, w64, b64 = _rounded(x), _rounded(conv.weight), _rounded(conv.bias)
    expected = _reference_conv(conv, x64, w64, b64)
    assert out.dtype == torch.float32 and out.shape == expected.shape
    _assert_bfloat16_close(out, expected, "output")

    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    expected.backward(grad_out.to(torch.bfloat16).double())
    assert x.grad.dtype == conv.weight.grad.dtype == torch.float32
    _assert_bfloat16_close(x.grad, x64.grad, "input gradient")
    _assert_bfloat16_close(conv.weight.grad, w64.grad, "weight gradient")
    if conv.bias is not None:
        _assert_bfloat16_close(conv.bias.grad, b64.grad, "bias gradient")


def test_other_dtypes_run_the_plain_convolution_and_the_state_dict_is_the_convolutions():
    torch.manual_seed(0)
    conv = nn.Conv3d(4, 6, 3, padding=1)
    module = CPUBFloat16Conv(conv)
    assert module.state_dict().keys() == conv.state_dict().keys()
    assert module.weight is conv.weight and module.bias is conv.bias
    x = torch.randn(1, 4, 6, 6, 6, dtype=torch.float64)
    conv64 = copy.deepcopy(conv).double()
    torch.testing.assert_close(copy.deepcopy(module).double()(x), conv64(x), rtol=0, atol=0)
    # float32 differs from the float32 convolution by bfloat16's rounding: the bfloat16 path did run
    x32 = x.float()
    diff = (module(x32) - conv(x32)).abs().max()
    assert 0 < diff < 0.05 * conv(x32).abs().max()


def test_cpu_bfloat16_convs_replaces_convolutions_reading_several_channels():
    block = nn.Sequential(nn.Conv3d(1, 8, 3, padding=1), nn.ReLU(), nn.Sequential(nn.ConvTranspose3d(8, 4, 2, stride=2)))
    keys = block.state_dict().keys()
    out = cpu_bfloat16_convs(block)
    assert out is block and isinstance(block[0], nn.Conv3d) and isinstance(block[2][0], CPUBFloat16Conv)
    assert block.state_dict().keys() == keys
    bare = nn.Conv2d(3, 3, 1)
    assert isinstance(cpu_bfloat16_convs(bare), CPUBFloat16Conv)
    assert isinstance(cpu_bfloat16_convs(nn.Conv2d(1, 3, 1), min_in_channels=1), CPUBFloat16Conv)


def test_rejects_padding_it_does_not_compute():
    with pytest.raises(ValueError, match="zero-padded convolution with numeric padding.*padding_mode='reflect'"):
        CPUBFloat16Conv(nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"))
    with pytest.raises(ValueError, match="padding='same'"):
        CPUBFloat16Conv(nn.Conv2d(2, 2, 3, padding="same"))


BUNDLE_LIKE = dict(out_channels=3, feature_size=8, depths=(1, 1, 1, 1), decoder_depths=(1, 1, 0), fft_nums=(0, 0, 1, 1),
                   d_state=1, expand=1, full_res_channels=4, half_res_channels=8, full_res_convs=(2, 1), logit_scale=8.0)


@pytest.mark.parametrize("spatial_dims", [3, 2])
def test_emnet_full_res_bfloat16_loads_float32_weights_and_matches_float64_within_bfloat16(spatial_dims):
    """``full_res_bfloat16``: every full- and half-resolution convolution but the one on the 1-channel image computes
    in bfloat16 (channels-last weights kept), the state dict is the float32 network's, outputs and gradients are
    those of the same weights in float64 within bfloat16's rounding, float64 runs exactly as the plain network, and
    TorchScript scripts it."""
    torch.manual_seed(0)
    kwargs = dict(BUNDLE_LIKE, spatial_dims=spatial_dims)
    plain = EMNet(**kwargs)
    net = EMNet(**kwargs, full_res_bfloat16=True)
    net.load_state_dict(plain.state_dict())  # strict: the same keys
    layout = torch.channels_last_3d if spatial_dims == 3 else torch.channels_last
    full_res = [m for b in net._full_res_blocks() for m in b.modules()]
    bf16 = [m for m in full_res if isinstance(m, CPUBFloat16Conv)]
    left = [m for m in full_res if isinstance(m, nn.modules.conv._ConvNd)]
    assert len(bf16) == 10 and all(m.weight.is_contiguous(memory_format=layout) for m in bf16)
    assert [m.in_channels for m in left] == [1, 1]  # the image's 3x3(x3) and residual 1x1 convolutions
    assert not any(isinstance(m, CPUBFloat16Conv) for m in net.stages.modules())

    x = torch.randn(2, 1, *([32, 64, 32][:spatial_dims]))
    reference = copy.deepcopy(plain).double()
    out, expected = net(x), reference(x.double())
    logits_scale = float(expected.detach().abs().max())
    assert float((out.double() - expected).detach().abs().max()) < 0.03 * logits_scale
    assert float((plain(x).double() - expected).detach().abs().max()) < 1e-4 * logits_scale  # float32: far closer
    # the gradients of all parameters together; single ones that cancel to near zero through the instance norms
    # and the layer scales carry bfloat16's rounding of the activations as relative noise (the block tests above
    # check each convolution's gradients elementwise)
    for output in (out, plain(x), expected):
        output.square().mean().backward()
    grads = [torch.cat([p.grad.double().flatten() for p in m.parameters()]) for m in (net, plain, reference)]
    assert float((grads[0] - grads[2]).norm() / grads[2].norm()) < 0.05
    assert float((grads[1] - grads[2]).norm() / grads[2].norm()) < 1e-4

    with torch.no_grad():
        torch.testing.assert_close(copy.deepcopy(net).double()(x.double()), reference(x.double()), rtol=0, atol=0)
        scripted = torch.jit.script(copy.deepcopy(net).eval())
        torch.testing.assert_close(scripted(x), net.eval()(x), rtol=0, atol=0)
