"""Tests for mamba_monai.losses: FrequencyLoss, BoundaryAwareLoss, boundary_band, SpectralDualLoss."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.bundle import ConfigParser
from monai.losses import DiceFocalLoss, DiceLoss, FocalLoss
from monai.networks import one_hot

from mamba_monai.losses import BoundaryAwareLoss, FrequencyLoss, SpectralDualLoss, boundary_band


def _labels(shape, n_classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, n_classes, shape, generator=g)


def _randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ----------------------------------------------------------------------------------------------------
# independent numpy references


def _np_frequency_loss(pred, target, alpha=1.0, log_weight=False, radial_weight=0.0, batch_weight=False):
    """Focal frequency loss on the FULL spectrum with numpy's fftn (ortho); per-(b, c) values (B, C)."""
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    axes = tuple(range(2, pred.ndim))
    d = np.fft.fftn(pred, axes=axes, norm="ortho") - np.fft.fftn(target, axes=axes, norm="ortho")
    mag = np.abs(d)
    m = mag**alpha
    if log_weight:
        m = np.log1p(m)
    if batch_weight:
        peak = m.max()
    else:
        peak = m.reshape(m.shape[0], m.shape[1], -1).max(-1).reshape(m.shape[:2] + (1,) * len(axes))
    w = np.where(peak > 0, m / np.where(peak > 0, peak, 1.0), 0.0)
    if radial_weight:
        grids = np.meshgrid(*[np.fft.fftfreq(n) for n in pred.shape[2:]], indexing="ij")
        r = np.sqrt(sum((g / 0.5) ** 2 for g in grids) / len(axes))
        w = w * (1 + radial_weight * r)
    return (w * mag**2).reshape(pred.shape[0], pred.shape[1], -1).mean(-1)


def _np_band(label):
    """1 where the (clipped) 3^n neighbourhood of a voxel in an integer label map holds > 1 label."""
    out = np.zeros(label.shape, np.float64)
    for idx in itertools.product(*[range(n) for n in label.shape]):
        sl = tuple(slice(max(i - 1, 0), i + 2) for i in idx)
        out[idx] = float(len(np.unique(label[sl])) > 1)
    return out


# ----------------------------------------------------------------------------------------------------
# FrequencyLoss


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"alpha": 2.0},
        {"alpha": 1.0, "log_weight": True},
        {"alpha": 1.0, "radial_weight": 2.0},
        {"alpha": 0.5, "batch_weight": True},
    ],
)
@pytest.mark.parametrize("shape", [(2, 2, 6, 5), (1, 2, 4, 5, 6)])
def test_frequency_matches_numpy_full_fft(kwargs, shape):
    pred, target = _randn(*shape, seed=1), _randn(*shape, seed=2)
    ref = _np_frequency_loss(pred.numpy(), target.numpy(), **kwargs)
    out = FrequencyLoss(reduction="none", **kwargs)(pred.double(), target.double())
    assert out.shape == shape[:2] + (1,) * (len(shape) - 2)
    np.testing.assert_allclose(out.flatten(1).numpy(), ref, rtol=1e-10, atol=1e-12)
    assert FrequencyLoss(**kwargs)(pred, target).item() == pytest.approx(ref.mean(), rel=1e-5)
    assert FrequencyLoss(reduction="sum", **kwargs)(pred, target).item() == pytest.approx(ref.sum(), rel=1e-5)


@pytest.mark.parametrize("shape", [(2, 3, 7, 6), (1, 2, 5, 4, 3)])
def test_frequency_unweighted_is_parseval_mse(shape):
    """alpha=0 and no radial weight: plain L2 between ortho spectra == spatial MSE (why we weigh)."""
    pred, target = _randn(*shape, seed=3), _randn(*shape, seed=4)
    out = FrequencyLoss(alpha=0.0)(pred, target)
    assert out.item() == pytest.approx(F.mse_loss(pred, target).item(), rel=1e-5)
    # the other normalisations scale it by N and 1/N
    n = float(np.prod(shape[2:]))
    assert FrequencyLoss(alpha=0.0, norm="backward")(pred, target).item() == pytest.approx(out.item() * n, rel=1e-5)
    assert FrequencyLoss(alpha=0.0, norm="forward")(pred, target).item() == pytest.approx(out.item() / n, rel=1e-5)


def test_frequency_not_reducible_to_spatial_l2():
    target = torch.zeros(1, 1, 16, 16)
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    low = target + 0.1 * torch.cos(2 * torch.pi * xx / 16)[None, None]
    high = target + 0.1 * torch.cos(2 * torch.pi * 7 * xx / 16)[None, None]
    # two errors with the same spatial MSE ...
    assert F.mse_loss(low, target).item() == pytest.approx(F.mse_loss(high, target).item(), rel=1e-5)
    # ... the radial weight prefers to penalise the high-frequency one
    radial = FrequencyLoss(alpha=0.0, radial_weight=1.0)
    mse = F.mse_loss(low, target).item()
    assert radial(low, target).item() == pytest.approx(mse * (1 + (1 / 8) / 2**0.5), rel=1e-5)
    assert radial(high, target).item() == pytest.approx(mse * (1 + (7 / 8) / 2**0.5), rel=1e-5)
    # the focal weight: same energy, concentrated in one frequency pair vs spread unevenly -> different loss
    uneven = target + 0.1 * (torch.cos(2 * torch.pi * xx / 16) * 0.8 + torch.cos(2 * torch.pi * 3 * yy / 16) * 0.6)[
        None, None
    ]
    assert F.mse_loss(uneven, target).item() == pytest.approx(F.mse_loss(low, target).item(), rel=1e-5)
    focal = FrequencyLoss(alpha=1.0)
    assert focal(low, target).item() == pytest.approx(F.mse_loss(low, target).item(), rel=1e-5)
    # amplitudes 0.8 and 0.6 of the error: weights 1 and 0.75 -> 0.64 * 1 + 0.36 * 0.75 of the MSE
    assert focal(uneven, target).item() == pytest.approx(mse * (0.64 + 0.36 * 0.75), rel=1e-5)
    # and on random pairs the ratio to MSE is not a constant
    ratios = []
    for s in range(3):
        p, t = _randn(1, 2, 8, 8, seed=10 + s), _randn(1, 2, 8, 8, seed=20 + s)
        ratios.append((focal(p, t) / F.mse_loss(p, t)).item())
    assert max(ratios) - min(ratios) > 1e-3


@pytest.mark.parametrize("kwargs", [{}, {"alpha": 2.0, "log_weight": True}, {"radial_weight": 1.0}])
@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 2, 4, 4, 4)])
def test_frequency_zero_iff_equal(kwargs, shape):
    loss = FrequencyLoss(**kwargs)
    target = one_hot(_labels((shape[0], 1) + shape[2:], shape[1]), shape[1])
    assert loss(target.clone(), target).item() == 0.0
    pred = target.clone()
    pred.view(-1)[5] += 1e-3  # one voxel, one channel, slightly off
    assert loss(pred, target).item() > 0.0


def test_frequency_segmentation_options():
    logits = _randn(2, 3, 8, 8, seed=5)
    label = _labels((2, 1, 8, 8))
    onehot = one_hot(label, 3)
    out = FrequencyLoss(softmax=True, to_onehot_y=True, include_background=False)(logits, label)
    ref = _np_frequency_loss(torch.softmax(logits, 1)[:, 1:].numpy(), onehot[:, 1:].numpy()).mean()
    assert out.item() == pytest.approx(ref, rel=1e-5)
    out = FrequencyLoss(sigmoid=True)(logits, onehot)
    ref = _np_frequency_loss(torch.sigmoid(logits).numpy(), onehot.numpy()).mean()
    assert out.item() == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 2, 4, 6, 5)])
def test_frequency_gradients(shape):
    logits = _randn(*shape, seed=6).requires_grad_(True)
    label = _labels((shape[0], 1) + shape[2:], shape[1])
    FrequencyLoss(softmax=True, to_onehot_y=True)(logits, label).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    # exact analytic gradient where the weight does not depend on the input (alpha=0, radial only)
    x = _randn(1, 2, 5, 4, seed=7, dtype=torch.float64).requires_grad_(True)
    t = _randn(1, 2, 5, 4, seed=8, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a: FrequencyLoss(alpha=0.0, radial_weight=0.5)(a, t), (x,))


def test_frequency_autocast_bf16_uses_float32_fft(monkeypatch):
    dtypes = []
    rfftn = torch.fft.rfftn

    def spy(x, *args, **kwargs):
        dtypes.append(x.dtype)
        return rfftn(x, *args, **kwargs)

    monkeypatch.setattr(torch.fft, "rfftn", spy)
    conv = torch.nn.Conv2d(1, 3, 3, padding=1)
    image = _randn(2, 1, 8, 8, seed=9)
    label = _labels((2, 1, 8, 8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = conv(image)
        assert logits.dtype == torch.bfloat16
        out = FrequencyLoss(softmax=True, to_onehot_y=True)(logits, label)
        total = SpectralDualLoss()(logits, label)
    assert dtypes == [torch.float32, torch.float32]
    assert out.dtype == torch.float32 and total.dtype == torch.float32
    ref = FrequencyLoss(softmax=True, to_onehot_y=True)(logits.detach().float(), label)
    assert out.item() == pytest.approx(ref.item(), rel=1e-5)
    total.backward()
    assert torch.isfinite(conv.weight.grad).all() and conv.weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------------------
# boundary band and BoundaryAwareLoss


def test_boundary_band_square_2d():
    label = torch.zeros(1, 1, 8, 8, dtype=torch.long)
    label[..., 2:6, 2:6] = 1
    band = boundary_band(one_hot(label, 2))
    expected = torch.zeros(8, 8)
    expected[1:7, 1:7] = 1
    expected[3:5, 3:5] = 0  # inner ring (2, 5) and outer ring (1, 6) of the square
    assert band.shape == (1, 1, 8, 8)
    assert torch.equal(band[0, 0], expected)
    # same band from a single binary channel; width 2 widens it to two voxels each side
    assert torch.equal(boundary_band(label.float()), band)
    wide = torch.zeros(8, 8)
    wide[0:8, 0:8] = 1
    assert torch.equal(boundary_band(one_hot(label, 2), width=2)[0, 0], wide)


def test_boundary_band_cube_3d_and_random_labels():
    label = torch.zeros(1, 1, 7, 7, 7, dtype=torch.long)
    label[..., 2:5, 2:5, 2:5] = 2
    band = boundary_band(one_hot(label, 3))[0, 0]
    expected = torch.zeros(7, 7, 7)
    expected[1:6, 1:6, 1:6] = 1
    expected[3, 3, 3] = 0  # the only cube voxel whose neighbourhood is all cube
    assert torch.equal(band, expected)
    for shape in [(6, 7), (4, 5, 3)]:
        lab = _labels((1, 1) + shape, 3, seed=11)
        ref = _np_band(lab[0, 0].numpy())
        np.testing.assert_array_equal(boundary_band(one_hot(lab, 3))[0, 0].numpy(), ref)


def test_boundary_ce_matches_reference():
    logits = _randn(2, 3, 6, 7, seed=12)
    label = _labels((2, 1, 6, 7), seed=13)
    onehot = one_hot(label, 3).numpy()
    band = np.stack([_np_band(label[b, 0].numpy()) for b in range(2)])[:, None]
    w = 0.2 + (3.0 - 0.2) * band
    logp = torch.log_softmax(logits.double(), 1).numpy()
    ref = (w * -(onehot * logp)).sum((2, 3)) / w.sum((2, 3))  # (B, C)
    loss = BoundaryAwareLoss(softmax=True, to_onehot_y=True, band_weight=3.0, interior_weight=0.2, reduction="none")
    out = loss(logits, label)
    assert out.shape == (2, 3, 1, 1)
    np.testing.assert_allclose(out[..., 0, 0].numpy(), ref, rtol=1e-5)
    nobg = BoundaryAwareLoss(
        softmax=True, to_onehot_y=True, band_weight=3.0, interior_weight=0.2, include_background=False
    )
    assert nobg(logits, label).item() == pytest.approx(ref[:, 1:].mean(), rel=1e-5)
    # band only (default weights): interior voxels do not matter
    default = BoundaryAwareLoss(softmax=True, to_onehot_y=True)
    ref_band = (band * -(onehot * logp)).sum((2, 3)) / band.sum((2, 3))
    assert default(logits, label).item() == pytest.approx(ref_band.mean(), rel=1e-5)
    # sigmoid: binary cross-entropy per channel
    sig = BoundaryAwareLoss(sigmoid=True, reduction="sum")(logits, one_hot(label, 3))
    bce = F.binary_cross_entropy_with_logits(logits.double(), one_hot(label, 3).double(), reduction="none").numpy()
    assert sig.item() == pytest.approx(((band * bce).sum((2, 3)) / band.sum((2, 3))).sum(), rel=1e-5)


def test_boundary_dice_matches_reference_3d():
    logits = _randn(1, 2, 4, 5, 4, seed=14)
    label = _labels((1, 1, 4, 5, 4), 2, seed=15)
    t = one_hot(label, 2).numpy()
    p = torch.softmax(logits.double(), 1).numpy()
    w = 0.5 + 1.5 * _np_band(label[0, 0].numpy())[None, None]
    inter = (w * p * t).sum((2, 3, 4))
    den = (w * p).sum((2, 3, 4)) + (w * t).sum((2, 3, 4))
    ref = 1 - (2 * inter + 1e-5) / (den + 1e-5)
    loss = BoundaryAwareLoss(mode="dice", softmax=True, to_onehot_y=True, band_weight=2.0, interior_weight=0.5)
    assert loss(logits, label).item() == pytest.approx(ref.mean(), rel=1e-5)


@pytest.mark.parametrize("mode", ["ce", "dice"])
@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 2, 6, 6, 6)])
def test_boundary_perfect_prediction_and_gradients(mode, shape):
    label = _labels((shape[0], 1) + shape[2:], shape[1], seed=16)
    onehot = one_hot(label, shape[1])
    assert BoundaryAwareLoss(mode=mode)(onehot, onehot).item() == pytest.approx(0.0, abs=1e-6)
    logits = _randn(*shape, seed=17).requires_grad_(True)
    BoundaryAwareLoss(mode=mode, softmax=True, to_onehot_y=True, interior_weight=0.1)(logits, label).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    x = _randn(1, 2, 5, 4, seed=18, dtype=torch.float64).requires_grad_(True)
    t = one_hot(_labels((1, 1, 5, 4), 2, seed=19), 2).double()
    assert torch.autograd.gradcheck(lambda a: BoundaryAwareLoss(mode=mode, softmax=True)(a, t), (x,))


# ----------------------------------------------------------------------------------------------------
# SpectralDualLoss


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 3, 6, 5, 4)])
def test_spectral_dual_total_is_weighted_sum_softmax(shape):
    logits = _randn(*shape, seed=20).requires_grad_(True)
    label = _labels((shape[0], 1) + shape[2:], shape[1], seed=21)
    loss_fn = SpectralDualLoss(spatial_weight=0.7, freq_weight=0.3, boundary_weight=0.2, gamma=1.5, lambda_dice=0.5)
    total, parts = loss_fn(logits, label, return_components=True)
    onehot = one_hot(label, shape[1])
    dice = DiceLoss(softmax=True)(logits, onehot)
    focal = FocalLoss(gamma=1.5, use_softmax=True)(logits, onehot)
    freq = FrequencyLoss(softmax=True)(logits, onehot)
    bnd = BoundaryAwareLoss(softmax=True)(logits, onehot)
    spatial = 0.5 * dice + focal
    expected = 0.7 * spatial + 0.3 * freq + 0.2 * bnd
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    for key, value in {"dice": dice, "focal": focal, "spatial": spatial, "frequency": freq, "boundary": bnd}.items():
        assert parts[key].item() == pytest.approx(value.item(), rel=1e-6), key
        assert not parts[key].requires_grad
    assert parts["total"].item() == pytest.approx(total.item())
    assert torch.equal(loss_fn(logits, label), total)
    total.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_spectral_dual_sigmoid_spatial_equals_monai_dice_focal():
    logits = _randn(2, 2, 8, 8, seed=22)
    target = one_hot(_labels((2, 1, 8, 8), 2, seed=23), 2)
    loss_fn = SpectralDualLoss(softmax=False, sigmoid=True, to_onehot_y=False, include_background=False)
    total, parts = loss_fn(logits, target, return_components=True)
    ref = DiceFocalLoss(sigmoid=True, include_background=False)(logits, target)
    assert parts["spatial"].item() == pytest.approx(ref.item(), rel=1e-6)
    freq = FrequencyLoss(sigmoid=True, include_background=False)(logits, target)
    bnd = BoundaryAwareLoss(sigmoid=True, include_background=False)(logits, target)
    assert total.item() == pytest.approx((ref + 0.1 * freq + 0.05 * bnd).item(), rel=1e-6)


def test_spectral_dual_defaults_options_and_reduction():
    loss_fn = SpectralDualLoss()
    assert (loss_fn.spatial_weight, loss_fn.freq_weight, loss_fn.boundary_weight) == (1.0, 0.1, 0.05)
    logits = _randn(2, 3, 8, 8, seed=24)
    label = _labels((2, 1, 8, 8), seed=25)
    # weight 0 skips a term; only dice or only focal
    _, parts = SpectralDualLoss(freq_weight=0.0, boundary_weight=0.0)(logits, label, return_components=True)
    assert parts["frequency"].item() == 0.0 and parts["boundary"].item() == 0.0
    assert parts["total"].item() == pytest.approx(parts["spatial"].item())
    _, parts = SpectralDualLoss(use_focal=False)(logits, label, return_components=True)
    assert "focal" not in parts and parts["spatial"].item() == pytest.approx(parts["dice"].item())
    # "sum" sums every term's per-image/per-channel values
    onehot = one_hot(label, 3)
    total = SpectralDualLoss(reduction="sum")(logits, label)
    expected = (
        DiceLoss(softmax=True, reduction="sum")(logits, onehot)
        + FocalLoss(use_softmax=True, reduction="sum")(logits, onehot)
        + 0.1 * FrequencyLoss(softmax=True, reduction="sum")(logits, onehot)
        + 0.05 * BoundaryAwareLoss(softmax=True, reduction="sum")(logits, onehot)
    )
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)


def test_reduction_options_consistent():
    logits = _randn(2, 3, 6, 6, seed=26)
    label = _labels((2, 1, 6, 6), seed=27)
    for cls in (FrequencyLoss, BoundaryAwareLoss):
        none = cls(softmax=True, to_onehot_y=True, reduction="none")(logits, label)
        assert none.shape == (2, 3, 1, 1)
        assert cls(softmax=True, to_onehot_y=True, reduction="mean")(logits, label).item() == pytest.approx(
            none.mean().item()
        )
        assert cls(softmax=True, to_onehot_y=True, reduction="sum")(logits, label).item() == pytest.approx(
            none.sum().item()
        )


def test_config_parser_dotted_target():
    config = {
        "loss": {
            "_target_": "mamba_monai.losses.SpectralDualLoss",
            "freq_weight": 0.2,
            "boundary_mode": "dice",
        },
        "freq": {"_target_": "mamba_monai.losses.FrequencyLoss", "alpha": 2.0, "spatial_dims": 3},
    }
    parser = ConfigParser(config)
    loss_fn = parser.get_parsed_content("loss")
    assert isinstance(loss_fn, SpectralDualLoss) and loss_fn.freq_weight == 0.2 and loss_fn.boundary.mode == "dice"
    assert isinstance(parser.get_parsed_content("freq"), FrequencyLoss)
    value = loss_fn(_randn(1, 2, 8, 8, seed=28), _labels((1, 1, 8, 8), 2))
    assert torch.isfinite(value)


# ----------------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize("cls", [FrequencyLoss, BoundaryAwareLoss, SpectralDualLoss])
def test_shape_and_rank_errors(cls):
    with pytest.raises(ValueError, match=r"ground truth has different shape"):
        cls(to_onehot_y=False)(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 9))
    with pytest.raises(ValueError, match=r"ground truth has different shape"):
        cls(to_onehot_y=True)(torch.rand(1, 3, 8, 8), torch.zeros(1, 1, 8, 9))
    with pytest.raises(ValueError, match=r"expects a 4D \(BNHW\) or 5D \(BNHWD\) input, got 3D"):
        cls()(torch.rand(1, 3, 8), torch.rand(1, 3, 8))
    with pytest.raises(ValueError, match=r"number of dimensions for input and target should be the same"):
        cls()(torch.rand(1, 3, 8, 8), torch.rand(1, 8, 8))
    with pytest.raises(ValueError, match=r"spatial_dims=3, so it expects a 5D input, got 4D"):
        cls(spatial_dims=3)(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"`spatial_dims` can only be 2, 3 or None"):
        cls(spatial_dims=1)


def test_option_errors():
    with pytest.raises(ValueError, match=r"more than 1 of \[sigmoid=True, softmax=True"):
        FrequencyLoss(sigmoid=True, softmax=True)
    with pytest.raises(ValueError, match=r"`alpha` should be no less than 0.0, got -1"):
        FrequencyLoss(alpha=-1)
    with pytest.raises(ValueError, match=r"`norm` should be one of .*got 'l2'"):
        FrequencyLoss(norm="l2")
    with pytest.raises(ValueError, match=r"`radial_weight` should be no less than 0.0"):
        FrequencyLoss(radial_weight=-0.5)
    with pytest.raises(ValueError, match=r"not a valid LossReduction"):
        FrequencyLoss(reduction="max")
    with pytest.raises(ValueError, match=r"`width` should be an integer no less than 1, got 0"):
        BoundaryAwareLoss(width=0)
    with pytest.raises(ValueError, match=r"`mode` should be one of \('ce', 'dice'\), got 'hd'"):
        BoundaryAwareLoss(mode="hd")
    with pytest.raises(ValueError, match=r"not both 0.0"):
        BoundaryAwareLoss(band_weight=0.0, interior_weight=0.0)
    with pytest.raises(ValueError, match=r"supports reduction \('mean', 'sum'\), got 'none'"):
        SpectralDualLoss(reduction="none")
    with pytest.raises(ValueError, match=r"`freq_weight` should be no less than 0.0, got -0.1"):
        SpectralDualLoss(freq_weight=-0.1)
    with pytest.raises(ValueError, match=r"softmax=True and sigmoid=True"):
        SpectralDualLoss(sigmoid=True)
    with pytest.raises(ValueError, match=r"takes logits: set softmax=True"):
        SpectralDualLoss(softmax=False)
    with pytest.raises(ValueError, match=r"needs use_dice=True or use_focal=True"):
        SpectralDualLoss(use_dice=False, use_focal=False)
    with pytest.raises(ValueError, match=r"neither 1 \(without one-hot encoding\) nor the same as input"):
        SpectralDualLoss()(torch.rand(1, 3, 8, 8), torch.rand(1, 2, 8, 8))
    with pytest.raises(ValueError, match=r"`to_onehot_y=True` needs a label map target with one channel"):
        FrequencyLoss(to_onehot_y=True)(torch.rand(1, 3, 8, 8), torch.rand(1, 2, 8, 8))
