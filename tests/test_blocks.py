"""Tests for the N-D blocks: cross-scan helpers, SSND, VSSBlock, SpectralGating, SpectralVSSBlock."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.bundle import ConfigParser

from mamba_monai.blocks import SSND, SpectralGating, SpectralVSSBlock, VSSBlock, resize_complex_filter, rfft_grid_shape
from mamba_monai.ops import selective_scan_ref
from mamba_monai.ops.cross_scan import cross_merge, cross_scan, num_scan_directions, scan_orders

SHAPES = [(2, (7, 9)), (2, (4, 4)), (3, (5, 6, 7)), (3, (3, 4, 2))]
# the scan orders written out by hand, as dims of a (B, C, *spatial) tensor, outer to inner
PERMS = {2: [(2, 3), (3, 2)], 3: [(2, 3, 4), (3, 4, 2), (4, 2, 3)]}


def _seed(value: int = 0) -> None:
    torch.manual_seed(value)


# --------------------------------------------------------------------------------------------- cross scan


def test_scan_orders_each_axis_innermost_once():
    assert scan_orders(2) == [(0, 1), (1, 0)]
    assert scan_orders(3) == [(0, 1, 2), (1, 2, 0), (2, 0, 1)]
    assert sorted(order[-1] for order in scan_orders(3)) == [0, 1, 2]
    assert num_scan_directions(2) == 4 and num_scan_directions(3) == 6


@pytest.mark.parametrize("spatial_dims,spatial", SHAPES)
def test_cross_scan_round_trip(spatial_dims, spatial):
    _seed()
    x = torch.randn(2, 3, *spatial)
    xs = cross_scan(x, spatial_dims)
    k = 2 * spatial_dims
    assert xs.shape == (2, k, 3, int(np.prod(spatial)))
    merged = cross_merge(xs, spatial)
    assert merged.shape == (2, 3, int(np.prod(spatial)))
    torch.testing.assert_close(merged, k * x.flatten(2))


@pytest.mark.parametrize("spatial_dims,spatial", SHAPES)
def test_cross_scan_sequences_are_permutations_in_expected_order(spatial_dims, spatial):
    length = int(np.prod(spatial))
    x = torch.arange(length, dtype=torch.float32).reshape(1, 1, *spatial)
    xs = cross_scan(x, spatial_dims)[0, :, 0]  # (K, L) of token indices
    for k in range(2 * spatial_dims):
        assert torch.equal(xs[k].sort().values, torch.arange(length, dtype=torch.float32))
    # explicit sequences: permute the axes by hand, flatten, and reverse for the second half
    for k, perm in enumerate(PERMS[spatial_dims]):
        expected = x.permute(0, 1, *perm).flatten()
        assert torch.equal(xs[k], expected)
        assert torch.equal(xs[spatial_dims + k], expected.flip(0))
    # first and second tokens: the innermost axis of each order moves first
    if spatial_dims == 2:
        h, w = spatial
        strides = [1, w]  # (H, W) moves along W; (W, H) moves along H
    else:
        d, h, w = spatial
        strides = [1, h * w, w]  # (D, H, W) -> W; (H, W, D) -> D; (W, D, H) -> H
    for k, stride in enumerate(strides):
        assert xs[k, 0] == 0 and xs[k, 1] == stride
        assert xs[spatial_dims + k, 0] == length - 1 and xs[spatial_dims + k, 1] == length - 1 - stride


def test_cross_scan_2d_matches_vmamba_layout_and_backprops():
    _seed()
    x = torch.randn(2, 3, 5, 6, requires_grad=True)
    xs = cross_scan(x, 2)
    hw = x.flatten(2)
    wh = x.transpose(2, 3).flatten(2)
    torch.testing.assert_close(xs, torch.stack([hw, wh, hw.flip(-1), wh.flip(-1)], dim=1))
    xs.sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, 4.0))


def test_cross_scan_errors():
    with pytest.raises(ValueError, match=r"2 spatial axes, got shape \(2, 3, 4\)"):
        cross_scan(torch.zeros(2, 3, 4), 2)
    with pytest.raises(ValueError, match=r"\(B, 4, C, 20\).*got shape \(1, 6, 3, 20\)"):
        cross_merge(torch.zeros(1, 6, 3, 20), (4, 5))


# --------------------------------------------------------------------------------------------- SSND


def _ssnd_reference(m: SSND, x: torch.Tensor) -> torch.Tensor:
    """SSND by hand: a loop over directions, one selective_scan_ref call per direction."""
    sd = m.spatial_dims
    t = x.movedim(1, -1)
    x_in, z = m.in_proj(t).chunk(2, dim=-1)
    x_in = F.silu(m.conv(x_in.movedim(-1, 1)))
    b, d = x_in.shape[:2]
    k_total, n = 2 * sd, m.d_state
    A = -torch.exp(m.A_logs).reshape(k_total, d, n)
    Ds = m.Ds.reshape(k_total, d)
    out = torch.zeros_like(x_in)
    for k in range(k_total):
        perm = PERMS[sd][k % sd]
        seq = x_in.permute(0, 1, *perm).reshape(b, d, -1)
        if k >= sd:
            seq = seq.flip(-1)
        dbl = torch.einsum("bdl,cd->bcl", seq, m.x_proj_weight[k])
        dt, Bk, Ck = torch.split(dbl, [m.dt_rank, n, n], dim=1)
        dt = torch.einsum("brl,dr->bdl", dt, m.dt_proj_weight[k])
        y = selective_scan_ref(seq, dt, A[k], Bk, Ck, Ds[k], delta_bias=m.dt_proj_bias[k], delta_softplus=True)
        if k >= sd:
            y = y.flip(-1)
        grid = y.reshape(b, d, *(x_in.shape[p] for p in perm))
        inverse = [2 + perm.index(axis) for axis in range(2, 2 + sd)]
        out = out + grid.permute(0, 1, *inverse)
    y = m.out_norm(out.movedim(1, -1)) * F.silu(z)
    return m.out_proj(y).movedim(-1, 1)


@pytest.mark.parametrize("spatial_dims,spatial", [(2, (5, 7)), (3, (3, 4, 5))])
def test_ssnd_matches_per_direction_reference(spatial_dims, spatial):
    _seed(1)
    m = SSND(spatial_dims, 6, d_state=4, d_conv=3, expand=2, dt_rank=2, bias=True)
    with torch.no_grad():  # make every direction's A, D and dt bias distinct
        m.A_logs.add_(0.3 * torch.randn_like(m.A_logs))
        m.Ds.add_(0.5 * torch.randn_like(m.Ds))
        m.dt_proj_bias.add_(0.5 * torch.randn_like(m.dt_proj_bias))
    x = torch.randn(2, 6, *spatial)
    with torch.no_grad():
        torch.testing.assert_close(m(x), _ssnd_reference(m, x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("spatial_dims,spatial", SHAPES)
def test_ssnd_shapes_and_grads(spatial_dims, spatial):
    _seed()
    m = SSND(spatial_dims, 4, d_state=4)
    x = torch.randn(2, 4, *spatial, requires_grad=True)
    y = m(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    y.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_ssnd_parameter_layout():
    m = SSND(3, 8, d_state=5, expand=2, dt_rank="auto")
    k, d = 6, 16
    assert m.x_proj_weight.shape == (k, 1 + 2 * 5, d)
    assert m.dt_proj_weight.shape == (k, d, 1)
    assert m.dt_proj_bias.shape == (k, d)
    assert m.A_logs.shape == (k * d, 5)
    assert m.Ds.shape == (k * d,)
    assert m.conv.weight.shape == (d, 1, 3, 3, 3)


def test_ssnd_errors():
    m = SSND(2, 4, d_state=4)
    with pytest.raises(ValueError, match=r"C=4 and 2 spatial dims, got shape \(2, 5, 6, 6\)"):
        m(torch.zeros(2, 5, 6, 6))
    with pytest.raises(ValueError, match=r"got shape \(2, 4, 6, 6, 6\)"):
        m(torch.zeros(2, 4, 6, 6, 6))
    with pytest.raises(ValueError, match="`spatial_dims` can only be 2 or 3, got 1"):
        SSND(1, 4)
    with pytest.raises(ValueError, match="dt_rank"):
        SSND(2, 4, dt_rank="big")


# --------------------------------------------------------------------------------------------- VSSBlock


@pytest.mark.parametrize("spatial_dims,spatial", SHAPES)
@pytest.mark.parametrize("mlp_ratio", [0.0, 2.0])
def test_vss_block_shapes_and_grads(spatial_dims, spatial, mlp_ratio):
    _seed()
    m = VSSBlock(spatial_dims, 4, d_state=4, mlp_ratio=mlp_ratio, drop_path=0.1)
    assert (m.mlp is None) == (mlp_ratio == 0)
    x = torch.randn(2, 4, *spatial, requires_grad=True)
    y = m(x)
    assert y.shape == x.shape
    y.square().mean().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_vss_block_is_residual_over_ssnd():
    _seed()
    m = VSSBlock(2, 4, d_state=4, mlp_ratio=0).eval()
    x = torch.randn(1, 4, 5, 6)
    with torch.no_grad():
        h = m.norm(x.movedim(1, -1)).movedim(-1, 1)
        torch.testing.assert_close(m(x), x + m.mixer(h))


@pytest.mark.parametrize("block", ["vss", "spectral"])
def test_gradient_checkpointing_gives_same_gradients(block):
    def build(use_checkpoint):
        _seed(3)
        if block == "vss":
            return VSSBlock(3, 4, d_state=4, mlp_ratio=2.0, drop_path=0.2, use_checkpoint=use_checkpoint)
        return SpectralVSSBlock(
            3, 4, d_state=4, mlp_ratio=2.0, drop_path=0.2, filter_size=4, use_checkpoint=use_checkpoint
        )

    plain, ckpt = build(False).train(), build(True).train()
    x = torch.randn(2, 4, 3, 4, 5)
    grads = []
    for m in (plain, ckpt):
        _seed(7)  # same drop-path masks
        xi = x.clone().requires_grad_(True)
        m(xi).square().mean().backward()
        grads.append([xi.grad] + [p.grad for p in m.parameters()])
    for g_plain, g_ckpt in zip(*grads):
        torch.testing.assert_close(g_plain, g_ckpt)


def test_vss_block_errors():
    m = VSSBlock(3, 4, d_state=4)
    with pytest.raises(ValueError, match=r"VSSBlock expects .*C=4 and 3 spatial dims, got shape \(1, 3, 4, 4, 4\)"):
        m(torch.zeros(1, 3, 4, 4, 4))
    with pytest.raises(ValueError, match=r"got shape \(1, 4, 4, 4\)"):
        m(torch.zeros(1, 4, 4, 4))
    with pytest.raises(ValueError, match="`mlp_ratio` must be >= 0"):
        VSSBlock(2, 4, mlp_ratio=-1)
    with pytest.raises(ValueError, match="`spatial_dims` can only be 2 or 3, got 4"):
        VSSBlock(4, 4)


# --------------------------------------------------------------------------------------------- spectral


@pytest.mark.parametrize("spatial_dims,spatial", [(2, (6, 8)), (2, (7, 5)), (3, (4, 6, 5))])
def test_spectral_gating_matches_numpy_reference_at_grid_size(spatial_dims, spatial):
    _seed()
    m = SpectralGating(spatial_dims, 3, filter_size=spatial)
    with torch.no_grad():
        m.weight.normal_()
    assert m.weight.shape == (3, *rfft_grid_shape(spatial), 2)
    x = torch.randn(2, 3, *spatial)
    w = m.weight.detach().numpy()
    w = w[..., 0] + 1j * w[..., 1]
    axes = tuple(range(2, 2 + spatial_dims))
    ref = np.fft.irfftn(np.fft.rfftn(x.numpy(), axes=axes, norm="ortho") * w, s=spatial, axes=axes, norm="ortho")
    y = m(x)
    assert y.dtype == torch.float32
    np.testing.assert_allclose(y.detach().numpy(), ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("spatial_dims,spatial", SHAPES)
def test_spectral_gating_any_size_and_grads(spatial_dims, spatial):
    _seed()
    m = SpectralGating(spatial_dims, 4, filter_size=6)
    x = torch.randn(2, 4, *spatial, requires_grad=True)
    y = m(x)
    assert y.shape == x.shape and not torch.is_complex(y)
    y.square().mean().backward()
    assert m.weight.grad is not None and m.weight.grad.abs().sum() > 0
    assert torch.isfinite(x.grad).all()


def test_spectral_gating_constant_filter_is_scaling_at_any_size():
    m = SpectralGating(3, 2, filter_size=(4, 6, 8))
    with torch.no_grad():
        m.weight.zero_()
        m.weight[..., 0] = 1.5
    x = torch.randn(1, 2, 5, 3, 7)
    torch.testing.assert_close(m(x), 1.5 * x, atol=1e-5, rtol=1e-5)


def test_spectral_gating_starts_near_identity():
    _seed()
    m = SpectralGating(2, 8)
    assert m.filter_size == (16, 16) and m.weight.shape == (8, 16, 9, 2)
    x = torch.randn(2, 8, 16, 16)
    rel = (m(x) - x).norm() / x.norm()
    assert 0 < rel < 0.1


def test_resize_complex_filter():
    _seed()
    w = torch.randn(3, 6, 4, dtype=torch.complex64)
    assert resize_complex_filter(w, (6, 4)) is w  # no interpolation at the same grid
    out = resize_complex_filter(torch.view_as_real(w), (9, 5))
    assert out.shape == (3, 9, 5) and out.dtype == torch.complex64
    # on the rfft axis, align_corners keeps frequency 0 and the last frequency; the centred full axis
    # keeps its two ends: check on a filter constant along the full axis
    w_last = torch.randn(2, 1, 4, dtype=torch.complex64).expand(2, 6, 4)
    out = resize_complex_filter(w_last, (10, 7))
    torch.testing.assert_close(out[:, :, 0], w_last[:, :, 0][:, :1].expand(2, 10))
    torch.testing.assert_close(out[:, :, -1], w_last[:, :, -1][:, :1].expand(2, 10))
    # a filter linear in the centred frequency of the full axis stays linear in it (low stays low)
    freqs = torch.fft.fftfreq(5) * 5  # 0, 1, 2, -2, -1
    ramp = (freqs.abs()[None, :, None] + 0j).to(torch.complex64).expand(1, 5, 3)
    out = resize_complex_filter(ramp, (9, 3))
    new_abs = (torch.fft.fftfreq(9) * 9).abs()  # 0, 1, 2, 3, 4, -4, ...
    torch.testing.assert_close(out[0, :, 0].real, new_abs / 2)  # 2 (max |f|) -> 4: scaled by 2
    with pytest.raises(ValueError, match=r"2 frequency axes .*got target size \(4,\)"):
        resize_complex_filter(w, (4,))
    with pytest.raises(ValueError, match=r"real \(C, \*freq, 2\) weight, got shape \(3, 6, 4\)"):
        resize_complex_filter(torch.zeros(3, 6, 4), (3, 3))


def test_spectral_gating_float32_under_bf16_autocast():
    _seed()
    m = SpectralGating(2, 4, filter_size=8)
    x = torch.randn(1, 4, 8, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x)
        block_out = SpectralVSSBlock(2, 4, d_state=4, filter_size=8)(x)
    assert y.dtype == torch.float32 and not torch.is_complex(y)
    torch.testing.assert_close(y, m(x))
    assert block_out.shape == x.shape and torch.isfinite(block_out).all()


def test_spectral_gating_errors():
    m = SpectralGating(2, 4)
    with pytest.raises(ValueError, match=r"C=4 and 2 spatial dims, got shape \(1, 3, 8, 8\)"):
        m(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"`filter_size` must be a positive int or 3 positive ints, got \(8, 8\)"):
        SpectralGating(3, 4, filter_size=(8, 8))
    with pytest.raises(ValueError, match="`spatial_dims` can only be 2 or 3, got 1"):
        SpectralGating(1, 4)


# --------------------------------------------------------------------------------------------- SpectralVSSBlock


@pytest.mark.parametrize("spatial_dims,spatial", SHAPES)
def test_spectral_vss_block_shapes_and_grads(spatial_dims, spatial):
    _seed()
    m = SpectralVSSBlock(spatial_dims, 4, d_state=4, mlp_ratio=2.0, drop_path=0.1, filter_size=4)
    x = torch.randn(2, 4, *spatial, requires_grad=True)
    y = m(x)
    assert y.shape == x.shape
    y.square().mean().backward()
    names = {name for name, _ in m.named_parameters()}
    assert {"gate", "spectral.weight"} <= names
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_spectral_vss_block_fusion_and_ablation():
    _seed()
    m = SpectralVSSBlock(2, 4, d_state=4, mlp_ratio=0, filter_size=6).eval()
    x = torch.randn(1, 4, 6, 6)
    with torch.no_grad():
        m.gate.copy_(torch.tensor([-1.0, 0.0, 0.5, 2.0]))
        h = m.norm(x.movedim(1, -1)).movedim(-1, 1)
        a = torch.sigmoid(m.gate)[None, :, None, None]
        expected = x + a * m.mixer(h) + (1 - a) * m.spectral(h)
        torch.testing.assert_close(m(x), expected)
    # use_spectral=False: no frequency path, and the same function as a VSSBlock with the same weights
    _seed(5)
    ablated = SpectralVSSBlock(2, 4, d_state=4, mlp_ratio=2.0, use_spectral=False).eval()
    assert ablated.spectral is None and ablated.gate is None
    plain = VSSBlock(2, 4, d_state=4, mlp_ratio=2.0).eval()
    plain.load_state_dict(ablated.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(ablated(x), plain(x))


# --------------------------------------------------------------------------------------------- bundle configs


@pytest.mark.parametrize(
    "target,args,shape",
    [
        (
            "mamba_monai.blocks.VSSBlock",
            {"spatial_dims": 2, "channels": 4, "d_state": 4, "mlp_ratio": 2.0},
            (1, 4, 5, 6),
        ),
        ("mamba_monai.blocks.SSND", {"spatial_dims": 3, "d_model": 4, "d_state": 4}, (1, 4, 3, 4, 5)),
        (
            "mamba_monai.blocks.SpectralGating",
            {"spatial_dims": 3, "channels": 4, "filter_size": [4, 4, 6]},
            (1, 4, 3, 4, 5),
        ),
        (
            "mamba_monai.blocks.SpectralVSSBlock",
            {"spatial_dims": 2, "channels": 4, "d_state": 4, "filter_size": 8, "use_spectral": True, "drop_path": 0.1},
            (1, 4, 5, 6),
        ),
    ],
)
def test_config_parser_instantiation(target, args, shape):
    parser = ConfigParser({"net": {"_target_": target, **args}})
    net = parser.get_parsed_content("net")
    assert type(net).__name__ == target.rsplit(".", 1)[-1]
    with torch.no_grad():
        assert net(torch.randn(*shape)).shape == shape
