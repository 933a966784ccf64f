from __future__ import annotations

import copy
import io

import pytest
import torch
from monai.bundle import ConfigParser
from monai.losses import DeepSupervisionLoss, DiceCELoss

from mamba_monai.blocks.emnet import CSRMambaLayer, CSRMBlock, EFLLayer, EMNetUpBlock
from mamba_monai.networks import EMNet
from mamba_monai.networks.utils import instance_norms_as_group_norms

TINY = dict(out_channels=3, feature_size=8, depths=(1, 1, 1, 1), decoder_depths=(1, 1, 1), fft_nums=(0, 0, 1, 1))
# three stages: spatial sizes divisible by 16, tokens at 1/4 -> fast
TINY3 = dict(out_channels=3, feature_size=8, depths=(1, 1, 1), decoder_depths=(1, 1), fft_nums=(0, 1, 1))


def _set_layer_scale(model: torch.nn.Module, value: float) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.fill_(value)


def _fused_net_and_float64_reference(**kwargs) -> tuple[EMNet, EMNet]:
    """An EMNet (channels-last, fused norms on a CPU; layer scale 0.5 so the Mamba branches count) and the same weights
    in PyTorch's channels-first layers in float64 (``channels_last=False``; the same state dict keys)."""
    net = EMNet(**kwargs)
    _set_layer_scale(net, 0.5)
    reference = EMNet(**kwargs, channels_last=False)
    reference.load_state_dict(net.state_dict())  # strict: the same keys
    return net, reference.double()


def _assert_matches_float64(net, reference, out, expected) -> None:
    """``net``'s float32 output and the gradients of a loss on it within float32 rounding of ``reference``'s (the same
    weights in float64), each gradient relative to its largest value."""
    torch.testing.assert_close(out.double(), expected, atol=2e-5, rtol=1e-4)
    out.square().mean().backward()
    expected.square().mean().backward()
    for (name, p), q in zip(net.named_parameters(), reference.parameters()):
        scale = float(q.grad.abs().max()) + 1e-30
        # a 1 -> C 1x1 convolution before an instance norm: zero gradient in exact arithmetic (scale invariance)
        atol = 5e-3 if name == "encoder1.layer.conv3.conv.weight" else 5e-5
        torch.testing.assert_close(p.grad.double() / scale, q.grad / scale, atol=atol, rtol=1e-3,
                                   msg=lambda m: f"{name}: {m}")


def test_output_shape_at_two_rois_from_one_model():
    torch.manual_seed(0)
    net = EMNet(**TINY).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, 32, 32, 32)).shape == (1, 3, 32, 32, 32)
        assert net(torch.randn(1, 1, 32, 64, 32)).shape == (1, 3, 32, 64, 32)


def test_2d_output_shape():
    net = EMNet(spatial_dims=2, in_channels=2, **TINY).eval()
    with torch.no_grad():
        assert net(torch.randn(2, 2, 32, 64)).shape == (2, 3, 32, 64)


def test_default_config_parameter_count():
    """Published: 39.4M. The published code adds learned positional embeddings tied to its 128^3 ROI
    (one (L, C) table per CSR Mamba layer, encoder and decoder); we use none. Adding that count back must
    give the published figure."""
    net = EMNet()  # no forward
    ours = sum(p.numel() for p in net.parameters())
    assert abs(ours - 27.19e6) < 0.05e6, ours
    csr_layers = [(4, 48, 3), (8, 96, 3), (16, 192, 1), (32, 384, 1)]  # encoder: (stride, C, number)
    csr_layers += [(16, 192, 3), (8, 96, 3), (4, 48, 3)]  # decoder stages
    pos_embed = sum(n * c * (128 // s) ** 3 for s, c, n in csr_layers)
    assert pos_embed == 12_214_272
    assert abs(ours + pos_embed - 39.4e6) / 39.4e6 < 0.02


def test_deep_supervision_outputs():
    torch.manual_seed(0)
    net = EMNet(deep_supervision=True, **TINY3)
    x = torch.randn(2, 1, 16, 32, 16)
    outs = net(x)
    assert isinstance(outs, list) and [tuple(o.shape) for o in outs] == [(2, 3, 16, 32, 16), (2, 3, 4, 8, 4), (2, 3, 2, 4, 2)]
    label = torch.randint(0, 3, (2, 1, 16, 32, 16)).float()
    loss = DeepSupervisionLoss(DiceCELoss(to_onehot_y=True, softmax=True))(outs, label)
    assert torch.isfinite(loss)
    net.eval()
    with torch.no_grad():
        assert net(x).shape == (2, 3, 16, 32, 16)


def test_gradient_reaches_every_parameter():
    torch.manual_seed(0)
    net = EMNet(deep_supervision=True, drop_path_rate=0.1, dropout_rate=0.1, **TINY3)
    outs = net(torch.randn(1, 1, 16, 16, 16))
    sum((o * torch.randn_like(o)).sum() for o in outs).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_checkpointing_gives_the_same_gradients(monkeypatch):
    import mamba_monai.blocks.emnet as emnet_blocks

    calls = []
    real_checkpoint = emnet_blocks.checkpoint
    monkeypatch.setattr(emnet_blocks, "checkpoint", lambda fn, *a, **k: calls.append(k) or real_checkpoint(fn, *a, **k))
    torch.manual_seed(0)
    kwargs = dict(TINY3, layer_scale_init=0.5)
    ref = EMNet(**kwargs)
    ckpt = EMNet(use_checkpoint=True, **kwargs)
    ckpt.load_state_dict(ref.state_dict())
    x = torch.randn(1, 1, 16, 16, 32)
    w = torch.randn(1, 3, 16, 16, 32)
    for net in (ref, ckpt):
        (net(x) * w).sum().backward()
    assert len(calls) == 3 + 2 and all(k == {"use_reentrant": False} for k in calls)  # one per encoder/decoder layer
    for (name, p), q in zip(ref.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_input_errors():
    net = EMNet(**TINY)
    with pytest.raises(ValueError, match=r"divisible by 32.*\(32, 40, 32\).*DivisiblePadd\(k=32\)"):
        net(torch.randn(1, 1, 32, 40, 32))
    with pytest.raises(ValueError, match="1 input channels, got 2"):
        net(torch.randn(1, 2, 32, 32, 32))
    with pytest.raises(ValueError, match="3 spatial dims"):
        net(torch.randn(1, 1, 32, 32))
    # a CSR Mamba layer at the bottleneck (instance norm inside) cannot run on a single voxel
    net = EMNet(**dict(TINY3, fft_nums=(0, 0, 0)))
    with pytest.raises(ValueError, match=r"\(16, 16, 16\).*single voxel.*at least 32"):
        net(torch.randn(1, 1, 16, 16, 16))
    assert net(torch.randn(1, 1, 16, 32, 16)).shape == (1, 3, 16, 32, 16)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(spatial_dims=4), "spatial_dims"),
        (dict(fft_nums=(0, 0, 4, 2)), "fft_nums"),
        (dict(decoder_depths=(3, 3)), "decoder_depths"),
        (dict(depths=(3,), fft_nums=(0,), decoder_depths=()), "depths"),
        (dict(drop_path_rate=1.0), "drop_path_rate"),
        (dict(filter_roi_size=100), "filter_roi_size"),
        (dict(full_res_channels=0), "full_res_channels"),
        (dict(logit_scale=0.0), "logit_scale. must be positive"),
        (dict(full_res_stride=4), "full_res_stride. must be 1 or 2"),
        (dict(full_res_convs=3), "full_res_convs. must be 1 or 2"),
        (dict(full_res_convs=(2, 3)), "full_res_convs. must be 1 or 2, or a pair"),
        (dict(full_res_convs=(2, 1, 1)), "full_res_convs. must be 1 or 2, or a pair"),
        (dict(depths=(1, 1), fft_nums=(0, 0), decoder_depths=(1,), deep_supervision=True), "deep_supervision"),
    ],
)
def test_constructor_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EMNet(**kwargs)


def test_full_res_channels_narrow_only_the_full_resolution_branch():
    """full_res_channels=None is the published layout (feature_size channels); a narrower one changes only the
    full-resolution blocks and the head, with the same output shape, and still trains end to end."""
    kwargs = dict(TINY, out_channels=3)
    default, narrow = EMNet(**kwargs), EMNet(**kwargs, full_res_channels=4)
    assert default.full_res_channels == kwargs["feature_size"] and narrow.full_res_channels == 4
    changed = {k.split(".")[0] for k, v in default.state_dict().items() if narrow.state_dict()[k].shape != v.shape}
    assert changed == {"encoder1", "up_full", "out"}
    assert narrow.out.conv.conv.in_channels == 4 and narrow.encoder1.layer.conv1.conv.out_channels == 4
    x = torch.randn(1, 1, 32, 32, 32)
    out = narrow(x)
    assert out.shape == default(x).shape == (1, 3, 32, 32, 32)
    out.mean().backward()
    assert all(p.grad is not None for p in narrow.parameters() if p.requires_grad)


@pytest.mark.parametrize("spatial_dims", [3, 2])
def test_logit_scale_multiplies_the_logits_of_the_same_weights(spatial_dims):
    """logit_scale adds no parameter (the state dict loads both ways) and multiplies the logits of the same weights,
    the deep supervision outputs too; the argmax (the segmentation) is unchanged."""
    torch.manual_seed(0)
    kwargs = dict(TINY3, spatial_dims=spatial_dims, full_res_channels=4, deep_supervision=True)
    plain, scaled = EMNet(**kwargs), EMNet(**kwargs, logit_scale=8.0)
    scaled.load_state_dict(plain.state_dict())  # strict
    x = torch.randn(2, 1, *([16, 32, 16][:spatial_dims]))
    outs, refs = scaled(x), plain(x)
    assert len(outs) == len(refs) == 3
    for a, b in zip(outs, refs):
        torch.testing.assert_close(a, 8.0 * b)
    scaled.eval()
    plain.eval()
    with torch.no_grad():
        out, ref = scaled(x), plain(x)
    torch.testing.assert_close(out, 8.0 * ref)
    assert torch.equal(out.argmax(1), ref.argmax(1))


def test_instance_norms_as_group_norms_keep_the_normalisation_and_the_state_dict():
    """GroupNorm(C, C) normalises as InstanceNorm does, with the same state dict keys (checkpoints load either way),
    and keeps a channels-last input channels-last; norms with running statistics are left alone."""
    torch.manual_seed(0)
    plain = torch.nn.Sequential(torch.nn.InstanceNorm3d(4), torch.nn.InstanceNorm3d(4, affine=True),
                                torch.nn.InstanceNorm3d(4, track_running_stats=True))
    with torch.no_grad():
        plain[1].weight.uniform_(0.5, 2.0)
        plain[1].bias.uniform_(-1.0, 1.0)
    swapped = instance_norms_as_group_norms(copy.deepcopy(plain))
    assert [type(m) for m in swapped] == [torch.nn.GroupNorm, torch.nn.GroupNorm, torch.nn.InstanceNorm3d]
    assert swapped.state_dict().keys() == plain.state_dict().keys()
    swapped.load_state_dict(plain.state_dict())
    x = torch.randn(2, 4, 6, 5, 4) * 3 + 1
    for norm_a, norm_b in zip(plain[:2], swapped[:2]):
        torch.testing.assert_close(norm_b(x), norm_a(x), atol=1e-5, rtol=1e-5)
        out = norm_b(x.contiguous(memory_format=torch.channels_last_3d))
        assert out.is_contiguous(memory_format=torch.channels_last_3d) and not out.is_contiguous()


@pytest.mark.parametrize("spatial_dims", [3, 2])
def test_full_resolution_branch_runs_channels_last_on_cpu_with_the_same_outputs_and_gradients(spatial_dims):
    """On a CPU the full-resolution convolutions run channels-last (weights placed so, also after .to()); the state
    dict, the output and every gradient equal those of channels_last=False (0.3's layout and InstanceNorm)."""
    torch.manual_seed(0)
    net = EMNet(spatial_dims=spatial_dims, **TINY, full_res_channels=4).double().float()
    _set_layer_scale(net, 0.5)
    reference = EMNet(spatial_dims=spatial_dims, **TINY, full_res_channels=4, channels_last=False)
    reference.load_state_dict(net.state_dict())  # strict: the same keys
    layout = torch.channels_last_3d if spatial_dims == 3 else torch.channels_last
    full_res_convs = [m for b in (net.encoder1, net.up_full, net.out) for m in b.modules()
                      if isinstance(m, torch.nn.modules.conv._ConvNd)]
    assert len(full_res_convs) == 7 and all(m.weight.is_contiguous(memory_format=layout) for m in full_res_convs)
    assert isinstance(reference.encoder1.layer.norm1, torch.nn.InstanceNorm3d if spatial_dims == 3 else torch.nn.InstanceNorm2d)

    layouts = []
    hook = net.up_full.block.conv2.register_forward_hook(lambda m, i, o: layouts.append(o.is_contiguous(memory_format=layout)))
    x = torch.randn(2, 1, *([32] * spatial_dims))
    out, expected = net(x), reference(x)
    hook.remove()
    assert layouts == [True] and out.is_contiguous()
    torch.testing.assert_close(out, expected, atol=2e-4, rtol=1e-3)  # float32 sums in another order
    out.square().mean().backward()
    expected.square().mean().backward()
    for (name, p), q in zip(net.named_parameters(), reference.parameters()):
        if name == "encoder1.layer.conv3.conv.weight":  # 1 -> C 1x1 conv before an instance norm: zero gradient
            continue  # in exact arithmetic (scale invariance), rounding noise here
        scale = float(q.grad.abs().max()) + 1e-12
        torch.testing.assert_close(p.grad / scale, q.grad / scale, atol=1e-3, rtol=1e-2, msg=lambda m: f"{name}: {m}")


def test_full_resolution_norms_fused_match_float64():
    """channels_last fuses each full-resolution instance norm with its leaky ReLU (InstanceNormAct, numba kernels);
    fused_norm_act=False keeps MONAI's blocks with GroupNorm (0.3.5). Same state dict; against the network in float64 the
    fused one's output and gradients are within float32 rounding (PyTorch's float32 channels-last GroupNorm is off by
    up to 1% in some gradients here, the reason for the loose tolerances of the test above)."""
    from mamba_monai.blocks import InstanceNormAct, NormActBasicBlock, NormActResBlock

    torch.manual_seed(0)
    net = EMNet(**TINY, full_res_channels=4)
    _set_layer_scale(net, 0.5)
    plain = EMNet(**TINY, full_res_channels=4, fused_norm_act=False)
    plain.load_state_dict(net.state_dict())
    assert isinstance(net.encoder1.layer, NormActResBlock) and isinstance(net.up_full.block, NormActBasicBlock)
    norms = [m for m in net.modules() if isinstance(m, InstanceNormAct)]
    assert len(norms) == 5 and all(m.fused for m in norms)
    assert not any(m.fused for m in plain.modules() if isinstance(m, InstanceNormAct))
    reference = copy.deepcopy(plain).double()
    x = torch.randn(2, 1, 32, 32, 32)
    out, expected = net(x), reference(x.double())
    _assert_matches_float64(net, reference, out, expected)


@pytest.mark.parametrize("spatial_dims", [3, 2])
def test_full_res_stride_2_runs_the_branch_at_half_resolution_and_matches_float64(spatial_dims):
    """full_res_stride=2: the branch's blocks run at half resolution (the 1-channel strided residual as a scale of every
    other voxel; PyTorch's 2D strided 1x1 convolution backward on a channels-last 1-channel input corrupts the heap)
    and a transposed convolution gives full-resolution logits. The fused channels-last network computes what the
    same weights do with PyTorch's layers in float64, forward and gradients."""
    torch.manual_seed(0)
    kwargs = dict(TINY, spatial_dims=spatial_dims, full_res_channels=4, full_res_stride=2)
    net, reference = _fused_net_and_float64_reference(**kwargs)
    assert net.encoder1.layer.scale_residual and net.encoder1.layer.residual_stride == [2] * spatial_dims
    assert isinstance(net.out.conv, (torch.nn.ConvTranspose3d, torch.nn.ConvTranspose2d))
    sizes = []
    hook = net.up_full.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[2:])))
    x = torch.randn(2, 1, *([32, 64, 32][:spatial_dims]))
    out, expected = net(x), reference(x.double())
    hook.remove()
    assert sizes == [tuple([16, 32, 16][:spatial_dims])] and out.shape == (2, 3, *x.shape[2:])
    _assert_matches_float64(net, reference, out, expected)


@pytest.mark.parametrize("spatial_dims,stride", [(3, 1), (2, 1), (3, 2)])
def test_full_res_convs_1_leaves_one_convolution_per_full_resolution_block_and_matches_float64(spatial_dims, stride):
    """full_res_convs=1: the branch on the input and the block after the last up-sampling are one convolution, norm
    and leaky ReLU each (fused on CPU): a single full_res_channels -> full_res_channels convolution at full
    resolution instead of three. The fused channels-last network computes what the same weights do with PyTorch's
    layers in float64, forward and gradients."""
    from mamba_monai.blocks import NormActConvBlock, UnetConvBlock

    torch.manual_seed(0)
    kwargs = dict(TINY, spatial_dims=spatial_dims, full_res_channels=4, full_res_convs=1, full_res_stride=stride)
    net, reference = _fused_net_and_float64_reference(**kwargs)
    assert isinstance(net.encoder1, NormActConvBlock) and isinstance(net.up_full.block, NormActConvBlock)
    assert isinstance(reference.encoder1, UnetConvBlock) and isinstance(reference.up_full.block, UnetConvBlock)
    full_res_convs = [m for name, m in net.named_modules() if name.startswith(("encoder1", "up_full.block"))
                      and isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))]
    assert [(c.in_channels, c.out_channels, c.stride[0]) for c in full_res_convs] == [(1, 4, stride), (4, 4, 1)]
    x = torch.randn(2, 1, *([32, 64, 32][:spatial_dims]))
    out, expected = net(x), reference(x.double())
    assert out.shape == (2, 3, *x.shape[2:])
    _assert_matches_float64(net, reference, out, expected)


@pytest.mark.parametrize("spatial_dims", [3, 2])
def test_full_res_convs_pair_sets_the_input_branch_and_the_decoder_block_apart(spatial_dims):
    """full_res_convs=(2, 1) with a half-resolution stage (the emnet_seg3d bundle's network since 0.4.0): the branch on the
    input keeps its residual block of two convolutions, the decoder's full-resolution block is one convolution, norm
    and leaky ReLU; the fused channels-last network computes what the same weights do in float64, forward and
    gradients, and TorchScript scripts it."""
    from mamba_monai.blocks import NormActConvBlock, NormActResBlock

    torch.manual_seed(0)
    kwargs = dict(TINY, spatial_dims=spatial_dims, full_res_channels=4, half_res_channels=6, full_res_convs=[2, 1])
    net, reference = _fused_net_and_float64_reference(**kwargs)
    assert net.full_res_convs == (2, 1)
    assert isinstance(net.encoder1.layer, NormActResBlock) and isinstance(net.up_full.block, NormActConvBlock)
    decoder_convs = [(m.in_channels, m.out_channels) for m in net.up_full.block.modules()
                     if isinstance(m, torch.nn.modules.conv._ConvNd)]
    assert decoder_convs == [(4, 4)]
    x = torch.randn(2, 1, *([32, 64, 32][:spatial_dims]))
    out, expected = net(x), reference(x.double())
    assert out.shape == (2, 3, *x.shape[2:])
    _assert_matches_float64(net, reference, out, expected)
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(net)(x), net(x))


@pytest.mark.parametrize("spatial_dims", [3, 2])
def test_half_res_channels_adds_a_decoder_stage_at_half_resolution_and_matches_float64(spatial_dims):
    """half_res_channels: the 1/4 decoder output goes x2 to a half-resolution stage (its skip the full-resolution
    branch through a stride-2 residual block) and x2 again to the full-resolution block, instead of x4 at once. The
    fused channels-last network computes what the same weights do with PyTorch's layers in float64, forward and
    gradients; TorchScript scripts it."""
    from mamba_monai.blocks import NormActBasicBlock, NormActResBlock

    torch.manual_seed(0)
    kwargs = dict(TINY, spatial_dims=spatial_dims, full_res_channels=4, half_res_channels=6)
    net, reference = _fused_net_and_float64_reference(**kwargs)
    assert isinstance(net.half_res_encoder[0], NormActResBlock) and isinstance(net.half_res_decoder[0].block, NormActBasicBlock)
    layout = torch.channels_last_3d if spatial_dims == 3 else torch.channels_last
    half_res_convs = [m for b in (net.half_res_encoder, net.half_res_decoder) for m in b.modules()
                      if isinstance(m, torch.nn.modules.conv._ConvNd)]
    assert all(m.weight.is_contiguous(memory_format=layout) for m in half_res_convs)
    assert net.up_full.transp_conv.conv.stride == (2,) * spatial_dims
    sizes = {}

    def record(name):
        def hook(module, inputs, output):
            sizes[name] = tuple(output.shape[1:])
        return hook

    hooks = [module.register_forward_hook(record(name)) for name, module in
             (("half_skip", net.half_res_encoder[0]), ("half_dec", net.half_res_decoder[0]), ("up_full", net.up_full))]
    x = torch.randn(2, 1, *([32, 64, 32][:spatial_dims]))
    out, expected = net(x), reference(x.double())
    for hook in hooks:
        hook.remove()
    half = (6, *[s // 2 for s in x.shape[2:]])
    assert sizes == {"half_skip": half, "half_dec": half, "up_full": (4, *x.shape[2:])}
    assert out.shape == (2, 3, *x.shape[2:])
    _assert_matches_float64(net, reference, out, expected)

    scripted = torch.jit.script(copy.deepcopy(net).eval())
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net.eval()(x), atol=1e-5, rtol=1e-5)


def test_half_res_channels_rejects_a_half_resolution_branch_and_negative_values():
    with pytest.raises(ValueError, match="half_res_channels. must be 0 or a positive integer with full_res_stride 1"):
        EMNet(**TINY, half_res_channels=8, full_res_stride=2)
    with pytest.raises(ValueError, match="got -1"):
        EMNet(**TINY, half_res_channels=-1)


def test_bundle_config_instantiation():
    config = {
        "network_def": {
            "_target_": "mamba_monai.networks.EMNet",
            "spatial_dims": 3,
            "in_channels": 1,
            "out_channels": 14,
            "feature_size": 8,
            "depths": [1, 1, 1, 1],
            "decoder_depths": [1, 1, 1],
            "fft_nums": [0, 0, 1, 1],
            "use_checkpoint": True,
        }
    }
    parser = ConfigParser(config)
    net = parser.get_parsed_content("network_def")
    assert isinstance(net, EMNet) and net.out_channels == 14


def test_csr_layer_equals_two_mamba_calls():
    """The batched call (reinforce and squeeze stacked on the batch axis) equals the published two calls."""
    torch.manual_seed(0)
    layer = CSRMambaLayer(3, 8, layer_scale_init=0.7).eval()
    x = torch.randn(2, 8, 4, 6, 4)
    with torch.no_grad():
        t = x.flatten(2).transpose(1, 2)
        xn = layer.norm(t)
        a = layer.norm_reinforce(layer.mamba(xn))
        b = layer.norm_squeeze(layer.mamba(layer.squeeze(xn)))
        out = (t + layer.gamma * (a + b)).transpose(1, 2).reshape(x.shape)
        expected = out + layer.conv_proj(layer.conv_block(out))
        torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_efl_layer_against_fft_formula():
    torch.manual_seed(0)
    layer = EFLLayer(3, 4, filter_size=(4, 8, 6)).eval()
    x = torch.randn(1, 4, 4, 8, 6)
    with torch.no_grad():
        h = torch.nn.functional.layer_norm(x.movedim(1, -1), (4,), eps=1e-6).movedim(-1, 1)
        w = torch.view_as_complex(layer.spectral.weight)
        g = torch.fft.irfftn(torch.fft.rfftn(h, dim=(2, 3, 4), norm="ortho") * w, s=(4, 8, 6), dim=(2, 3, 4), norm="ortho")
        g = torch.nn.functional.layer_norm(g.movedim(1, -1), (4,), eps=1e-6).movedim(-1, 1)
        expected = x + layer.mlp.fc2(torch.nn.functional.gelu(layer.mlp.fc1(g)))
        torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
        assert layer(torch.randn(1, 4, 8, 8, 16)).shape == (1, 4, 8, 8, 16)  # filter resampled


def test_blocks_shapes_and_errors():
    block = CSRMBlock(2, 8, depth=3, fft_num=1)
    assert isinstance(block.layers[0], EFLLayer) and isinstance(block.layers[2], CSRMambaLayer)
    assert block(torch.randn(1, 8, 8, 12)).shape == (1, 8, 8, 12)
    up = EMNetUpBlock(2, 16, 8, depth=1)
    assert up(torch.randn(1, 16, 4, 6), torch.randn(1, 8, 8, 12)).shape == (1, 8, 8, 12)
    with pytest.raises(ValueError, match="fft_num=4, depth=3"):
        CSRMBlock(3, 8, depth=3, fft_num=4)
    with pytest.raises(ValueError, match="spatial_dims"):
        CSRMambaLayer(1, 8)


def test_torchscript_trace_with_reference_scan(monkeypatch):
    """``torch.jit.trace`` + save + load reproduces eager on a new input with the "ref" scan backend (the numba
    backend's autograd Function traces as a Python call, which ``torch.jit.save`` cannot export)."""
    monkeypatch.setenv("MAMBA_MONAI_SCAN_BACKEND", "ref")
    torch.manual_seed(0)
    net = EMNet(**TINY3).eval()
    _set_layer_scale(net, 1.0)  # make the Mamba path count in the output
    traced = torch.jit.trace(net, torch.randn(1, 1, 16, 16, 16), check_trace=False)
    buf = io.BytesIO()
    torch.jit.save(traced, buf)
    buf.seek(0)
    loaded = torch.jit.load(buf)
    x = torch.randn(1, 1, 16, 16, 16)
    # the graph has the scan loop unrolled: the JIT's optimising pass over it takes many seconds, so skip it here
    with torch.no_grad(), torch.jit.optimized_execution(False):
        torch.testing.assert_close(loaded(x), net(x), rtol=1e-5, atol=1e-5)
