"""Tests of the MedGAN-SSM generator (mamba_monai.networks.MedGANSSMGenerator) and its layers (blocks/medgan.py)."""

from __future__ import annotations

import io
import itertools

import pytest
import torch
from monai.inferers import SlidingWindowInferer

from mamba_monai.blocks import (
    DynamicGate,
    MedGANSSMBlock,
    MultiScaleS6,
    NonLocalAttention,
    infer_modality_mask,
    random_modality_dropout,
)
from mamba_monai.networks import MedGANSSMGenerator

TINY = dict(features=(8, 16, 32), ssm_depths=(0, 1, 1), num_heads=2)


def _tiny(spatial_dims: int = 2, in_channels: int = 3, seed: int = 0, **kw) -> MedGANSSMGenerator:
    torch.manual_seed(seed)
    args = dict(TINY)
    args.update(kw)
    return MedGANSSMGenerator(spatial_dims, in_channels, **args)


def _reference_mask(x: torch.Tensor) -> torch.Tensor:
    """Independent reference: a channel is present when any of its values is non-zero."""
    rows = [torch.stack([(x[b, m] != 0).any() for m in range(x.shape[1])]) for b in range(x.shape[0])]
    return torch.stack(rows).float()


@pytest.fixture(scope="module")
def net2d() -> MedGANSSMGenerator:
    return _tiny().eval()


def test_shapes_2d_3d():
    net = _tiny(out_channels=2).eval()
    with torch.no_grad():
        y = net(torch.rand(2, 3, 64, 64))
    assert y.shape == (2, 2, 64, 64)
    assert torch.all((y > 0) & (y < 1))  # sigmoid output
    net3 = _tiny(3, 4).eval()
    with torch.no_grad():
        y3 = net3(torch.rand(1, 4, 32, 32, 32))
    assert y3.shape == (1, 1, 32, 32, 32) and torch.isfinite(y3).all()
    # non-square sizes divisible by 4 work, and out_act=None is unbounded
    net_lin = _tiny(out_act=None).eval()
    with torch.no_grad():
        assert net_lin(torch.rand(1, 3, 16, 48)).shape == (1, 1, 16, 48)


def test_default_size_is_modest():
    net = MedGANSSMGenerator()
    n = sum(p.numel() for p in net.parameters())
    assert 2e6 <= n <= 8e6, n


def test_backward_finite_for_all_params():
    net = _tiny(dropout=0.1).train()
    x = torch.rand(2, 3, 32, 32)
    x[0, 2] = 0
    net(x).mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), name
    assert any(p.grad.abs().sum() > 0 for n, p in net.named_parameters() if ".gate." in n)


def test_every_non_empty_subset_works_and_differs_from_full(net2d):
    torch.manual_seed(1)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        full = net2d(x)
        for k in (1, 2):
            for subset in itertools.combinations(range(3), k):
                keep = torch.zeros(3)
                keep[list(subset)] = 1
                xs = x * keep.view(1, 3, 1, 1)
                y = net2d(xs)
                assert y.shape == full.shape and torch.isfinite(y).all()
                assert (y - full).abs().max() > 1e-4, subset


def test_mask_none_equals_inferred_mask(net2d):
    torch.manual_seed(2)
    x = torch.rand(3, 3, 32, 32)
    x[0, 1] = 0
    x[1, 0] = 0
    x[1, 2] = 0
    mask = _reference_mask(x)
    assert mask.tolist() == [[1, 0, 1], [0, 1, 0], [1, 1, 1]]
    assert torch.equal(infer_modality_mask(x), mask)
    with torch.no_grad():
        assert torch.allclose(net2d(x), net2d(x, mask), atol=0, rtol=0)


def test_network_sees_the_mask(net2d):
    torch.manual_seed(3)
    x = torch.rand(2, 3, 32, 32)
    x_zero = x.clone()
    x_zero[:, 2] = 0
    missing = torch.tensor([[1.0, 1.0, 0.0]] * 2)
    with torch.no_grad():
        # same (zero-filled) input, told "missing" vs "present but black": the mask alone changes the output
        assert (net2d(x_zero, missing) - net2d(x_zero, torch.ones(2, 3))).abs().max() > 1e-4
        # a contrast marked missing is ignored whatever it holds
        assert torch.allclose(net2d(x, missing), net2d(x_zero, missing), atol=1e-6)


def test_random_modality_dropout():
    x = torch.rand(64, 3, 4, 4) + 0.1
    x[0] = 0  # empty sample (e.g. a slice above the head): left as it is
    x[1, 0] = 0  # already missing: stays missing
    xd, mask = random_modality_dropout(x, generator=torch.Generator().manual_seed(0))
    assert mask.shape == (64, 3) and mask.dtype == x.dtype
    assert torch.equal(mask[0], torch.zeros(3)) and torch.equal(xd[0], x[0])
    assert mask[1, 0] == 0
    assert (mask[1:].sum(1) >= 1).all(), "a sample lost all its contrasts"
    assert 0 < mask[2:].mean() < 1  # something was dropped, something kept
    assert torch.equal(mask, _reference_mask(xd))  # dropped channels are zero-filled ...
    kept = mask.bool()[:, :, None, None].expand_as(x)
    assert torch.equal(xd[kept], x[kept])  # ... and kept ones unchanged
    # reproducible with a seed, different with another seed
    xd2, mask2 = MedGANSSMGenerator.random_modality_dropout(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(mask, mask2) and torch.equal(xd, xd2)
    _, mask3 = random_modality_dropout(x, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(mask, mask3)
    # drop_prob 1 keeps exactly one present contrast, drop_prob 0 keeps all
    _, m1 = random_modality_dropout(x, drop_prob=1.0, generator=torch.Generator().manual_seed(0))
    assert (m1[1:].sum(1) == 1).all() and m1[1, 0] == 0
    _, m0 = random_modality_dropout(x, drop_prob=0.0)
    assert torch.equal(m0, _reference_mask(x))
    # an explicit mask is respected
    given = torch.ones(64, 3)
    given[:, 1] = 0
    _, mg = random_modality_dropout(x + 1, given, drop_prob=0.7, generator=torch.Generator().manual_seed(0))
    assert (mg[:, 1] == 0).all() and (mg.sum(1) >= 1).all()
    with pytest.raises(ValueError, match="drop_prob"):
        random_modality_dropout(x, drop_prob=1.5)
    with pytest.raises(ValueError, match=r"\(B, M\)"):
        random_modality_dropout(x, torch.ones(64, 2))


def test_error_messages(net2d):
    with pytest.raises(ValueError, match=r"divisible by 4.*\(18, 16\).*use 16x16 or 20x16.*DivisiblePadd\(k=4\)"):
        net2d(torch.rand(1, 3, 18, 16))
    with pytest.raises(ValueError, match="use 4x8"):
        net2d(torch.rand(1, 3, 2, 8))
    with pytest.raises(ValueError, match="expects 3 input channels.*got 2"):
        net2d(torch.rand(1, 2, 16, 16))
    with pytest.raises(ValueError, match="2 spatial dims"):
        net2d(torch.rand(1, 3, 16, 16, 16))
    with pytest.raises(ValueError, match=r"`mask` of shape \(B, M\) = \(1, 3\)"):
        net2d(torch.rand(1, 3, 16, 16), torch.ones(1, 2))
    with pytest.raises(ValueError, match="spatial_dims"):
        MedGANSSMGenerator(spatial_dims=1)
    with pytest.raises(ValueError, match="ssm_depths"):
        MedGANSSMGenerator(features=(8, 16), ssm_depths=(0, 1, 1))
    with pytest.raises(ValueError, match="num_heads"):
        MedGANSSMGenerator(features=(8, 18), ssm_depths=(0, 1), num_heads=4)


def test_bf16_autocast_close_to_fp32():
    net = _tiny(out_act=None).eval()
    torch.manual_seed(4)
    x = torch.rand(2, 3, 32, 32)
    x[0, 1] = 0
    with torch.no_grad():
        y = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yb = net(x)
    err = (yb.float() - y).abs()
    assert err.max() < 0.1 and err.mean() < 0.02 * y.abs().mean() + 5e-3, (err.max(), err.mean())


def test_torchscript(net2d):
    scripted = torch.jit.script(net2d)
    torch.manual_seed(5)
    x = torch.rand(2, 3, 16, 16)
    x[1, 0] = 0
    mask = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    with torch.no_grad():
        assert torch.allclose(scripted(x), net2d(x), atol=1e-6)
        assert torch.allclose(scripted(x, mask), net2d(x, mask), atol=1e-6)
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    buf.seek(0)
    loaded = torch.jit.load(buf)
    with torch.no_grad():
        assert torch.allclose(loaded(x), net2d(x), atol=1e-6)
    with pytest.raises(Exception, match="divisible by 4"):
        scripted(torch.rand(1, 3, 18, 16))


def test_checkpointing_gives_same_gradients():
    x = torch.rand(2, 3, 16, 16)
    grads = []
    for use_checkpoint in (False, True):
        net = _tiny(seed=7, use_checkpoint=use_checkpoint).train()
        net(x).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-5, rtol=1e-4)


def test_sliding_window_inferer(net2d):
    x = torch.rand(1, 3, 24, 40)
    with torch.no_grad():
        y = SlidingWindowInferer(roi_size=(16, 16), sw_batch_size=2, overlap=0.25)(x, net2d)
    assert y.shape == (1, 1, 24, 40) and torch.isfinite(y).all()


def test_dynamic_gate_against_reference():
    torch.manual_seed(8)
    gate = DynamicGate(2, 4, num_branches=3, cond_channels=2)
    branches = [torch.randn(2, 4, 5, 6) for _ in range(3)]
    cond = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    w = gate.gates(branches, cond)
    assert w.shape == (2, 3, 4, 5, 6)
    assert torch.allclose(w.sum(1), torch.ones(2, 4, 5, 6), atol=1e-6)
    # reference: logits = MLP([mean_S(sum), cond]) per (branch, channel) + conv(sum) per (branch, voxel)
    total = branches[0] + branches[1] + branches[2]
    pooled = torch.cat([total.mean(dim=(2, 3)), cond], 1)
    ch = gate.channel_mlp(pooled).view(2, 3, 4, 1, 1)
    sp = torch.nn.functional.conv2d(total, gate.spatial_conv.weight, gate.spatial_conv.bias, padding=1)[:, :, None]
    ref_w = torch.softmax(ch + sp, dim=1)
    ref = sum(ref_w[:, k] * branches[k] for k in range(3))
    assert torch.allclose(gate(branches, cond), ref, atol=1e-6)
    assert not torch.allclose(gate.gates(branches, torch.zeros(2, 2)), w)  # the gates see the condition
    with pytest.raises(ValueError, match="conditioning"):
        gate(branches, None)


def test_layers_any_size():
    torch.manual_seed(9)
    ms = MultiScaleS6(2, 8, num_scales=3, d_state=4)
    outs = ms(torch.randn(1, 8, 6, 10))  # not divisible by 4: pooled with ceil_mode, interpolated back
    assert len(outs) == 3 and all(o.shape == (1, 8, 6, 10) for o in outs)
    block = MedGANSSMBlock(3, 8, cond_channels=2, num_scales=2, d_state=4)
    assert block(torch.randn(1, 8, 3, 5, 4), torch.ones(1, 2)).shape == (1, 8, 3, 5, 4)
    attn = NonLocalAttention(3, 8, num_heads=2)
    x = torch.randn(2, 8, 2, 3, 4)
    y = attn(x)
    assert y.shape == x.shape
    # non-local: changing one voxel changes the output everywhere
    x2 = x.clone()
    x2[:, :, 0, 0, 0] += torch.randn(2, 8)  # not a constant shift: LayerNorm would remove that
    assert ((attn(x2) - y).abs().amax(dim=1) > 0).all()
