"""The fused instance norm + leaky ReLU (ops/instance_norm_cpu.py) against PyTorch in float64, and the blocks built
on it (blocks/norm_act.py) against MONAI's."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from monai.networks.blocks.dynunet_block import UnetBasicBlock, UnetResBlock

from mamba_monai.blocks import (
    InstanceNormAct,
    NormActBasicBlock,
    NormActConvBlock,
    NormActResBlock,
    UnetConvBlock,
    fuse_norm_act,
    set_fused_norm_act,
)
from mamba_monai.ops import instance_norm_act


def _reference(x, weight, bias, eps, slope):
    return F.leaky_relu(F.group_norm(x, x.shape[1], weight, bias, eps), slope)


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.movedim(1, -1).contiguous().movedim(-1, 1)


CASES = [  # shape, affine, negative slope, channels-last input
    ((2, 3, 5, 6, 7), True, 0.01, True),
    ((3, 4, 9, 10), False, 1.0, False),
    ((1, 8, 16, 16, 8), True, 0.0, False),
    ((2, 1, 4, 4, 4), False, 0.2, True),
    ((2, 5, 33), True, 0.01, False),
]


@pytest.mark.parametrize("shape,affine,slope,channels_last", CASES)
def test_values_and_gradients_match_pytorch_in_float64(shape, affine, slope, channels_last):
    """Output and the gradients of x, weight and bias equal group_norm + leaky_relu computed in float64, for 1D, 2D and
    3D inputs in either layout; the output is channels-last."""
    torch.manual_seed(0)
    x = torch.randn(shape) * 3 + 2  # a mean and scale far from 0 and 1
    x = _channels_last(x) if channels_last else x
    weight = torch.rand(shape[1]) + 0.5 if affine else None
    bias = torch.randn(shape[1]) if affine else None
    leaves = [t.clone().requires_grad_() if t is not None else None for t in (x, weight, bias)]
    leaves64 = [t.double().requires_grad_() if t is not None else None for t in (x, weight, bias)]
    out = instance_norm_act(leaves[0], leaves[1], leaves[2], 1e-5, slope)
    expected = _reference(leaves64[0], leaves64[1], leaves64[2], 1e-5, slope)
    assert out.dtype == torch.float32 and out.shape == shape
    assert out.movedim(1, -1).is_contiguous()
    torch.testing.assert_close(out.double(), expected, atol=2e-6, rtol=1e-5)
    grad = torch.randn(shape)
    out.backward(grad)
    expected.backward(grad.double())
    for leaf, leaf64 in zip(leaves, leaves64):
        if leaf is not None:
            torch.testing.assert_close(leaf.grad.double(), leaf64.grad, atol=2e-5, rtol=1e-4)


def test_same_bits_whatever_the_thread_count():
    """One partial sum per (sample, chunk), chunks fixed by the thread count of the call: the same thread count gives
    the same bits; 1 and 2 threads agree to rounding."""
    torch.manual_seed(0)
    x = _channels_last(torch.randn(2, 4, 16, 16, 8)).requires_grad_()
    grad = torch.randn(2, 4, 16, 16, 8)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2, 2):
            torch.set_num_threads(n)
            x.grad = None
            out = instance_norm_act(x, negative_slope=0.01)
            out.backward(grad)
            results.append((out.detach().clone(), x.grad.clone()))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[1][0], results[2][0]) and torch.equal(results[1][1], results[2][1])
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"float32 \(B, C, \*spatial\)"):
        instance_norm_act(torch.randn(2, 3, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"float32 \(B, C, \*spatial\)"):
        instance_norm_act(torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"`weight` must have shape \(3,\), got \(4,\)"):
        instance_norm_act(torch.randn(2, 3, 4, 4), torch.ones(4), torch.zeros(3))


@pytest.mark.parametrize("affine", [False, True])
def test_module_fused_and_pytorch_paths_agree_and_keep_instance_norms_state_dict(affine):
    """InstanceNormAct.from_norm copies an InstanceNorm3d (state dict keys and values); its fused path, its PyTorch
    path (fused=False, also what float64 and non-CPU tensors take) and InstanceNorm + LeakyReLU give the same result."""
    torch.manual_seed(0)
    norm = torch.nn.InstanceNorm3d(4, affine=affine)
    if affine:
        with torch.no_grad():
            norm.weight.uniform_(0.5, 2.0)
            norm.bias.uniform_(-1.0, 1.0)
    module = InstanceNormAct.from_norm(norm, negative_slope=0.01)
    assert module.state_dict().keys() == norm.state_dict().keys()
    x = torch.randn(2, 4, 6, 5, 4) * 2 + 1
    expected = F.leaky_relu(norm(x), 0.01)
    torch.testing.assert_close(module(x), expected, atol=1e-5, rtol=1e-5)
    set_fused_norm_act(module, False)
    assert not module.fused
    torch.testing.assert_close(module(x), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(module.double()(x.double()), expected.double(), atol=1e-5, rtol=1e-5)
    with pytest.raises(TypeError, match="expected an instance norm"):
        InstanceNormAct.from_norm(torch.nn.BatchNorm3d(4))


@pytest.mark.parametrize("block_type,fused_type,in_channels,spatial_dims,stride", [
    (UnetResBlock, NormActResBlock, 1, 3, 1),  # with the 1x1 residual convolution
    (UnetResBlock, NormActResBlock, 4, 3, 1),  # identity residual
    (UnetBasicBlock, NormActBasicBlock, 3, 3, 1),
    (UnetResBlock, NormActResBlock, 1, 3, 2),  # strided: the residual scale samples every other position
    (UnetResBlock, NormActResBlock, 1, 2, 2),
    (UnetResBlock, NormActResBlock, 4, 2, 2),  # a strided 1x1 convolution of 4 channels stays a convolution
    (UnetBasicBlock, NormActBasicBlock, 3, 2, 2),
    (UnetConvBlock, NormActConvBlock, 1, 3, 1),
    (UnetConvBlock, NormActConvBlock, 3, 2, 2),
])
def test_fused_blocks_compute_monai_blocks(block_type, fused_type, in_channels, spatial_dims, stride):
    """fuse_norm_act swaps MONAI's blocks for ones with the same state dict keys, outputs and gradients (the original
    loads into the fused one; the residual convolution's weight gets its gradient through the scale too), and leaves
    blocks with another norm alone."""
    torch.manual_seed(0)
    original = torch.nn.Sequential(
        block_type(spatial_dims, in_channels, 4, kernel_size=3, stride=stride, norm_name="instance"),
        block_type(spatial_dims, 4, 4, kernel_size=3, stride=1, norm_name="batch"),
    )
    fused = fuse_norm_act(copy.deepcopy(original))
    assert isinstance(fused[0], fused_type) and isinstance(fused[1], block_type)
    # the 1 -> 4 1x1 residual convolution runs as a per-channel scale of the input
    assert getattr(fused[0], "scale_residual", False) == (in_channels == 1 and block_type is UnetResBlock)
    assert fused.state_dict().keys() == original.state_dict().keys()
    fused.load_state_dict(original.state_dict())
    x = torch.randn(2, in_channels, *(8, 8, 6)[:spatial_dims])
    x_fused = x.clone().requires_grad_()
    x_original = x.clone().requires_grad_()
    out, expected = fused(x_fused), original(x_original)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)
    grad = torch.randn_like(expected)
    out.backward(grad)
    expected.backward(grad)
    torch.testing.assert_close(x_fused.grad, x_original.grad, atol=1e-4, rtol=1e-3)
    for (name, p), q in zip(fused.named_parameters(), original.parameters()):
        if name == "0.conv3.conv.weight":  # 1 -> C 1x1 conv before an instance norm: zero gradient in exact
            continue  # arithmetic (scale invariance), rounding noise here
        scale = float(q.grad.abs().max()) + 1e-12
        torch.testing.assert_close(p.grad / scale, q.grad / scale, atol=1e-4, rtol=1e-3, msg=lambda m: f"{name}: {m}")


def test_fuse_norm_act_replaces_a_block_passed_itself():
    """A block given to fuse_norm_act as the module itself comes back as its fused replacement (sharing its
    convolution); any other module comes back as it was, its blocks fused in place."""
    block = UnetConvBlock(3, 1, 4, kernel_size=3, stride=1, norm_name="instance")
    fused = fuse_norm_act(block)
    assert isinstance(fused, NormActConvBlock) and fused.conv1 is block.conv1
    other = UnetConvBlock(3, 1, 4, kernel_size=3, stride=1, norm_name="batch")
    assert fuse_norm_act(other) is other
    container = torch.nn.Sequential(UnetConvBlock(3, 1, 4, kernel_size=3, stride=1, norm_name="instance"))
    assert fuse_norm_act(container) is container and isinstance(container[0], NormActConvBlock)


@pytest.mark.parametrize("stride", [1, 2])
def test_fused_block_scripts_saves_and_loads(stride):
    """A scripted fused block calls the registered operator: saved and loaded, it gives the eager values."""
    torch.manual_seed(0)
    block = fuse_norm_act(
        torch.nn.Sequential(UnetResBlock(3, 1, 4, kernel_size=3, stride=stride, norm_name="instance"))
    )
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(block), buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    x = torch.randn(2, 1, 8, 8, 6)
    torch.testing.assert_close(loaded(x), block(x))
