"""Tests for SpectralVMUNet (Spec-VMamba), its patch blocks and multi-scale SpectralGating."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.bundle import ConfigParser
from monai.inferers import sliding_window_inference
from monai.networks.blocks import PatchEmbed
from monai.networks.nets.swin_unetr import PatchMergingV2

from mamba_monai.blocks import (
    PatchExpanding,
    ScriptablePatchEmbed,
    ScriptablePatchMerging,
    SpectralGating,
    SpectralVSSBlock,
    resize_complex_filter,
    rfft_grid_shape,
)
from mamba_monai.networks import SpectralVMUNet

# three levels (strides 4, 8, 16): sizes divisible by 16
TINY = dict(in_channels=1, out_channels=3, base_channels=8, num_stages=3, depth=1, d_state=4, mlp_ratio=2.0)


def _net(spatial_dims: int = 2, seed: int = 0, **kwargs) -> SpectralVMUNet:
    torch.manual_seed(seed)
    args = {**TINY, "img_size": 64 if spatial_dims == 2 else 32, "spatial_dims": spatial_dims, **kwargs}
    return SpectralVMUNet(**args)


# --------------------------------------------------------------------------------------------- patch blocks


@pytest.mark.parametrize("spatial_dims, shape", [(2, (2, 7, 10, 6)), (3, (2, 5, 4, 7, 6))])
def test_scriptable_patch_merging_equals_monai_patch_merging_v2(spatial_dims, shape):
    torch.manual_seed(0)
    ours = ScriptablePatchMerging(6, spatial_dims=spatial_dims)
    monai_merging = PatchMergingV2(6, spatial_dims=spatial_dims)
    monai_merging.load_state_dict(ours.state_dict())
    x = torch.randn(*shape)
    expected = monai_merging(x)  # odd sizes are padded by both
    assert expected.shape == (shape[0], *[(s + 1) // 2 for s in shape[1:-1]], 12)
    torch.testing.assert_close(ours(x), expected, rtol=0, atol=0)
    torch.testing.assert_close(torch.jit.script(ours)(x), expected, rtol=0, atol=0)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_patch_embed_equals_monai_patch_embed(spatial_dims):
    torch.manual_seed(0)
    ours = ScriptablePatchEmbed(4, 3, 8, nn.LayerNorm, spatial_dims)
    reference = PatchEmbed(4, 3, 8, nn.LayerNorm, spatial_dims)
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(2, 3, *([10, 13, 8][:spatial_dims]))  # not multiples of 4: padded
    expected = reference(x)
    assert expected.shape == (2, 8, *([3, 4, 2][:spatial_dims]))
    torch.testing.assert_close(ours(x), expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(torch.jit.script(ours)(x), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("spatial_dims, spatial", [(2, (6, 10)), (3, (4, 6, 2))])
def test_patch_expanding_inverts_patch_merging(spatial_dims, spatial):
    torch.manual_seed(0)
    merging = ScriptablePatchMerging(8, spatial_dims=spatial_dims)
    expanding = PatchExpanding(16, spatial_dims=spatial_dims)
    x = torch.randn(2, *spatial, 8, requires_grad=True)
    merged = merging(x)
    assert merged.shape == (2, *[s // 2 for s in spatial], 16)
    restored = expanding(merged)
    assert restored.shape == x.shape  # resolution and width back
    restored.square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in expanding.parameters())
    # the layout: shuffling back MONAI's neighbourhood concatenation (norm and projection removed) is the identity
    concat = PatchMergingV2(8, spatial_dims=spatial_dims)
    concat.norm, concat.reduction = nn.Identity(), nn.Identity()
    y = torch.randn(3, *spatial, 8)
    assert torch.equal(expanding.shuffle(concat(y)), y)
    torch.testing.assert_close(torch.jit.script(expanding)(merged), expanding(merged), rtol=0, atol=0)


def test_patch_block_errors():
    with pytest.raises(ValueError, match="even"):
        PatchExpanding(7, spatial_dims=2)
    with pytest.raises(ValueError, match="spatial_dims"):
        PatchExpanding(8, spatial_dims=1)
    with pytest.raises(ValueError, match="spatial_dims"):
        ScriptablePatchMerging(8, spatial_dims=4)
    with pytest.raises(ValueError, match=r"C=16 and 2 spatial dims, got shape \(2, 4, 4, 8\)"):
        PatchExpanding(16, spatial_dims=2)(torch.randn(2, 4, 4, 8))
    with pytest.raises(ValueError, match="channels-last"):
        ScriptablePatchMerging(8, spatial_dims=3)(torch.randn(1, 4, 4, 8))


# --------------------------------------------------------------------------------------------- multi-scale gating


@pytest.mark.parametrize("spatial_dims, spatial", [(2, (8, 8)), (2, (6, 10)), (3, (5, 6, 7))])
def test_spectral_gating_one_scale_is_the_single_scale_filter_exactly(spatial_dims, spatial):
    torch.manual_seed(0)
    default = SpectralGating(spatial_dims, 4, filter_size=8)
    torch.manual_seed(0)
    one = SpectralGating(spatial_dims, 4, filter_size=8, num_scales=1)
    assert list(one.state_dict()) == ["weight"]  # same parameters as before the option existed
    assert torch.equal(one.weight, default.weight)
    x = torch.randn(2, 4, *spatial)
    # the single-scale formula, written out (the filter resampled to the input's rfft grid)
    axes = tuple(range(2, 2 + spatial_dims))
    w = resize_complex_filter(torch.view_as_complex(one.weight), rfft_grid_shape(spatial))
    expected = torch.fft.irfftn(torch.fft.rfftn(x, dim=axes, norm="ortho") * w, s=spatial, dim=axes, norm="ortho")
    assert torch.equal(one(x), expected)
    assert torch.equal(default(x), expected)
    torch.manual_seed(1)
    block_default = SpectralVSSBlock(spatial_dims, 4, d_state=4, filter_size=8).eval()
    torch.manual_seed(1)
    block_one = SpectralVSSBlock(spatial_dims, 4, d_state=4, filter_size=8, num_scales=1).eval()
    assert torch.equal(block_one(x), block_default(x))


def _multi_scale_reference(m: SpectralGating, x: torch.Tensor) -> torch.Tensor:
    """The documented formula with avg_pool (kernel = stride = 2**s; sizes here are divisible by 2**(S-1))."""
    spatial = tuple(x.shape[2:])
    axes = tuple(range(2, x.dim()))
    pool = F.avg_pool2d if x.dim() == 4 else F.avg_pool3d
    mode = "bilinear" if x.dim() == 4 else "trilinear"
    mix = torch.softmax(m.coarse.logits, dim=0)
    filters = [m.weight] + list(m.coarse.weights)
    out = torch.zeros_like(x)
    for s, weight in enumerate(filters):
        xs = pool(x, 2**s) if s else x
        size = tuple(xs.shape[2:])
        w = resize_complex_filter(torch.view_as_complex(weight), rfft_grid_shape(size))
        ys = torch.fft.irfftn(torch.fft.rfftn(xs, dim=axes, norm="ortho") * w, s=size, dim=axes, norm="ortho")
        if s:
            ys = F.interpolate(ys, size=spatial, mode=mode, align_corners=False)
        out = out + mix[s].reshape(1, -1, *[1] * len(spatial)) * ys
    return out


@pytest.mark.parametrize("spatial_dims, spatial", [(2, (12, 20)), (3, (4, 12, 20))])
def test_spectral_gating_multi_scale_matches_formula_at_non_power_of_two_sizes(spatial_dims, spatial):
    torch.manual_seed(0)
    m = SpectralGating(spatial_dims, 3, filter_size=8, num_scales=3)
    grids = [tuple(w.shape[1:-1]) for w in m.coarse.weights]
    assert grids == [rfft_grid_shape((4,) * spatial_dims), rfft_grid_shape((2,) * spatial_dims)]
    with torch.no_grad():
        m.coarse.logits.normal_()  # unequal, per-channel scale weights
    x = torch.randn(2, 3, *spatial, requires_grad=True)
    y = m(x)
    torch.testing.assert_close(y, _multi_scale_reference(m, x), rtol=1e-5, atol=1e-5)
    y.square().sum().backward()
    assert torch.isfinite(x.grad).all()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    torch.testing.assert_close(torch.jit.script(m)(x), y, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("spatial_dims, spatial", [(2, (7, 9)), (3, (3, 5, 1))])
def test_spectral_gating_multi_scale_any_size_and_bf16(spatial_dims, spatial):
    torch.manual_seed(0)
    m = SpectralGating(spatial_dims, 4, filter_size=6, num_scales=3)
    x = torch.randn(1, 4, *spatial)
    y = m(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_bf16 = m(x.bfloat16())
    assert y_bf16.dtype == torch.bfloat16
    torch.testing.assert_close(y_bf16.float(), m(x.bfloat16().float()), rtol=1e-2, atol=1e-2)
    with pytest.raises(ValueError, match="num_scales"):
        SpectralGating(spatial_dims, 4, num_scales=0)


# --------------------------------------------------------------------------------------------- network


def test_seed_api_and_parameter_count():
    """The seed's call: 1 -> 3 channels at 256x256 (the forward runs in the sliding-window and shape tests below
    at small sizes; only parameters are counted here). The seed says ~15-30M parameters for typical configs."""
    net = SpectralVMUNet(in_channels=1, out_channels=3, img_size=256)
    assert (net.spatial_dims, net.num_stages, net.widths, net.divisor) == (2, 4, [64, 128, 256, 512], 32)
    n_params = sum(p.numel() for p in net.parameters())
    assert 15e6 < n_params < 30e6, n_params


@pytest.mark.parametrize("spatial_dims, sizes", [(2, [(64, 64), (48, 80)]), (3, [(32, 32, 32), (16, 32, 48)])])
def test_output_shapes_at_img_size_and_other_divisible_sizes(spatial_dims, sizes):
    net = _net(spatial_dims, in_channels=2).eval()
    with torch.no_grad():
        for size in sizes:
            assert net(torch.randn(1, 2, *size)).shape == (1, 3, *size)


@pytest.mark.parametrize("spatial_dims, size, num_scales", [(2, (48, 80), 2), (3, (32, 16, 32), 1)])
def test_backward_gives_finite_gradients_for_all_parameters(spatial_dims, size, num_scales):
    net = _net(spatial_dims, num_scales=num_scales).train()
    x = torch.randn(1, 1, *size)
    loss = net(x).square().mean()
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    assert sum(p.grad.abs().sum() for p in net.parameters()) > 0


def test_non_divisible_size_error_names_nearest_valid_sizes():
    net = _net(2).eval()
    with pytest.raises(ValueError, match=r"got 50x64; SpectralVMUNet needs each spatial size divisible by 16 .*use "
                                         r"48x64 or 64x64 \(pad with DivisiblePadd\(k=16\)\)"):
        net(torch.randn(1, 1, 50, 64))
    with pytest.raises(ValueError, match=r"got 8x40; .* use 16x48 "):  # no valid size below 8
        net(torch.randn(1, 1, 8, 40))
    big = SpectralVMUNet(in_channels=1, out_channels=3, img_size=256, base_channels=4, depth=1)
    with pytest.raises(ValueError, match=r"got 250x250; SpectralVMUNet needs each spatial size divisible by 32.*"
                                         r"use 224x224 or 256x256 \(pad with DivisiblePadd\(k=32\)\)"):
        big(torch.randn(1, 1, 250, 250))
    with pytest.raises(ValueError, match=r"expects a \(B, 1, \*spatial\) input with 2 spatial dims"):
        net(torch.randn(1, 2, 64, 64))


def test_constructor_errors():
    with pytest.raises(ValueError, match="spatial_dims"):
        SpectralVMUNet(spatial_dims=1)
    with pytest.raises(ValueError, match=r"`img_size` .* divisible by 32"):
        SpectralVMUNet(img_size=250)
    with pytest.raises(ValueError, match="depth"):
        SpectralVMUNet(num_stages=3, depth=(2, 2))
    with pytest.raises(ValueError, match="num_stages"):
        SpectralVMUNet(num_stages=0)
    with pytest.raises(ValueError, match="num_scales"):
        SpectralVMUNet(img_size=64, base_channels=4, num_scales=0)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_gradient_checkpointing_gives_same_outputs_and_gradients(spatial_dims):
    size = (48, 64) if spatial_dims == 2 else (16, 16, 32)
    x = torch.randn(1, 1, *size)
    results = []
    for use_checkpoint in (False, True):
        net = _net(spatial_dims, drop_path_rate=0.2, use_checkpoint=use_checkpoint).train()
        torch.manual_seed(7)  # the same stochastic depth draws in both runs
        y = net(x)
        y.square().mean().backward()
        results.append((y.detach(), {n: p.grad for n, p in net.named_parameters()}))
    (y0, g0), (y1, g1) = results
    torch.testing.assert_close(y1, y0, rtol=1e-5, atol=1e-6)
    assert g0.keys() == g1.keys()
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_bf16_autocast_stays_close_to_float32(spatial_dims):
    net = _net(spatial_dims, num_scales=2).eval()
    x = torch.randn(1, 1, *((64, 64) if spatial_dims == 2 else (32, 32, 32)))
    with torch.no_grad():
        y32 = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y16 = net(x)
    assert torch.isfinite(y16).all()
    rel = ((y16.float() - y32).norm() / y32.norm()).item()
    assert rel < 0.03, rel  # bf16 has 8 mantissa bits; scans and FFTs stay float32


def test_sliding_window_inference_3d_on_a_volume_larger_than_the_roi():
    net = _net(3).eval()
    roi = (32, 32, 32)
    with torch.no_grad():
        window = torch.randn(1, 1, *roi)
        # a single window covering the volume gives the network's own output
        torch.testing.assert_close(sliding_window_inference(window, roi, 1, net), net(window), rtol=1e-5, atol=1e-5)
        volume = torch.randn(1, 1, 44, 32, 36)  # sizes need not be multiples of 16: each window is the ROI
        out = sliding_window_inference(volume, roi, 4, net, overlap=0.25, mode="gaussian")
    assert out.shape == (1, 3, 44, 32, 36)
    assert torch.isfinite(out).all()


def test_torchscript_export_matches_eager(tmp_path):
    net = _net(2, num_scales=2).eval()
    scripted = torch.jit.script(net)
    path = tmp_path / "spectral_vmunet.ts"
    torch.jit.save(scripted, str(path))
    loaded = torch.jit.load(str(path))
    x = torch.randn(1, 1, 48, 80)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(Exception, match=r"got 50x64; .*use 48x64 or 64x64"):
        loaded(torch.randn(1, 1, 50, 64))


def test_ablation_without_spectral_path_and_config_parser():
    net = ConfigParser(
        {
            "net": {
                "_target_": "mamba_monai.networks.SpectralVMUNet",
                "spatial_dims": 2,
                "in_channels": 1,
                "out_channels": 2,
                "img_size": [32, 64],
                "base_channels": 4,
                "num_stages": 2,
                "depth": [1, 2],
                "use_spectral": False,
            }
        }
    ).get_parsed_content("net")
    assert not any(isinstance(m, SpectralGating) for m in net.modules())
    assert len(net.bottleneck) == 2 and len(net.decoder) == 1
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 1, 32, 64)).shape == (1, 2, 32, 64)
    # the spectral filters are defined for img_size / stride per level
    spectral = _net(2, img_size=(64, 128))
    sizes = [m.filter_size for m in spectral.modules() if isinstance(m, SpectralGating)]
    assert sizes[0] == (16, 32) and (4, 8) in sizes
