"""TorchScript by scripting (``torch.jit.script``, what MONAI's ``ckpt_export`` does by default): every block and
EMNet compiles, gives the eager output at more than one input size, trains (gradients equal eager's), saves and
loads in a fresh process, and the emnet_seg3d bundle exports with the model zoo's exact ``ckpt_export`` call."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile

import pytest
import torch
from monai.bundle import ConfigParser, ckpt_export

from mamba_monai.blocks import (
    SSND,
    CSRMambaLayer,
    CSRMBlock,
    EFLLayer,
    EMNetUpBlock,
    MambaMixer,
    SpectralGating,
    SpectralVSSBlock,
    VSSBlock,
)
from mamba_monai.networks import EMNet
from mamba_monai.ops import selective_scan_ref
from mamba_monai.ops.selective_scan_cpu import (
    FWD_OP_NAME,
    _grads_by_recompute,
    _selective_scan_fwd_other_devices,
    selective_scan_bwd,
    selective_scan_fwd,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUNDLE = os.path.join(ROOT, "bundles", "emnet_seg3d")
TINY3 = dict(
    out_channels=3, feature_size=8, depths=(1, 1, 1), decoder_depths=(1, 1), fft_nums=(0, 1, 1), filter_roi_size=32
)


def _block_cases():
    """(id, constructor, input shapes at two sizes): every size a block takes, not only the one it was built for."""
    return [
        ("MambaMixer", lambda: MambaMixer(8, d_state=4, bidirectional=True), [(2, 13, 8), (1, 70, 8)]),
        ("SSND-2d", lambda: SSND(2, 8, d_state=4), [(2, 8, 6, 10), (1, 8, 5, 7)]),
        ("SSND-3d", lambda: SSND(3, 8, d_state=4), [(1, 8, 4, 6, 5), (2, 8, 3, 4, 8)]),
        ("VSSBlock-3d-ckpt", lambda: VSSBlock(3, 8, d_state=4, use_checkpoint=True), [(1, 8, 4, 6, 5), (1, 8, 6, 4, 4)]),
        ("VSSBlock-2d-noMLP", lambda: VSSBlock(2, 8, d_state=4, mlp_ratio=0), [(2, 8, 6, 10), (1, 8, 9, 4)]),
        ("SpectralVSSBlock", lambda: SpectralVSSBlock(3, 8, d_state=4, filter_size=8), [(1, 8, 8, 8, 8), (1, 8, 4, 6, 10)]),
        ("SpectralVSSBlock-off", lambda: SpectralVSSBlock(2, 8, d_state=4, use_spectral=False), [(2, 8, 6, 10), (1, 8, 4, 4)]),
        ("SpectralGating-2d", lambda: SpectralGating(2, 8, filter_size=(8, 12)), [(2, 8, 8, 12), (1, 8, 11, 6)]),
        ("SpectralGating-3d", lambda: SpectralGating(3, 8, filter_size=8), [(1, 8, 8, 8, 8), (2, 8, 4, 6, 10)]),
        ("SpectralGating-scales", lambda: SpectralGating(3, 8, 8, num_scales=3), [(1, 8, 8, 8, 8), (1, 8, 4, 6, 10)]),
        ("CSRMambaLayer", lambda: CSRMambaLayer(3, 8, d_state=4, layer_scale_init=1.0), [(1, 8, 4, 6, 8), (2, 8, 4, 4, 4)]),
        ("EFLLayer", lambda: EFLLayer(2, 8, filter_size=8), [(2, 8, 8, 8), (1, 8, 6, 10)]),
        # use_checkpoint: eager Python checkpoints while training, the scripted module runs without; same numbers
        ("CSRMBlock-ckpt", lambda: CSRMBlock(3, 8, 2, fft_num=1, d_state=4, filter_size=8, layer_scale_init=1.0,
                                              use_checkpoint=True), [(1, 8, 4, 6, 8), (1, 8, 8, 4, 4)]),
    ]  # fmt: skip


def _grads(module: torch.nn.Module, inputs: list[torch.Tensor], out) -> list[torch.Tensor]:
    """Gradients of a fixed random projection of ``out`` w.r.t. the inputs and every parameter."""
    module.zero_grad()
    outs = out if isinstance(out, list) else [out]
    gen = torch.Generator().manual_seed(7)
    loss = sum((o * torch.randn(o.shape, generator=gen)).sum() for o in outs)
    params = [p for p in module.parameters() if p.requires_grad]
    return list(torch.autograd.grad(loss, inputs + params))


def _assert_scripted_matches(module: torch.nn.Module, shapes, backward: bool = True, atol: float = 1e-5) -> None:
    """Script ``module`` and compare it with eager at each input shape (a tuple of shapes for several inputs), and
    the gradients at the first. The graph executor's profiling run and optimisation passes are switched off here:
    on a whole network they take seconds on 2 cores (the bundle export test runs with them)."""
    scripted = torch.jit.script(module)
    gen = torch.Generator().manual_seed(1)
    with torch.jit.optimized_execution(False):
        for i, shape in enumerate(shapes):
            inputs = [torch.randn(s, generator=gen) for s in (shape if isinstance(shape[0], tuple) else [shape])]
            with torch.no_grad():
                torch.testing.assert_close(scripted(*inputs), module(*inputs), rtol=1e-5, atol=atol)
            if backward and i == 0:
                leaves = [x.requires_grad_() for x in inputs]
                grads_ts = _grads(scripted, leaves, scripted(*leaves))
                for g_ts, g in zip(grads_ts, _grads(module, leaves, module(*leaves))):
                    torch.testing.assert_close(g_ts, g, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,make,shapes", _block_cases(), ids=[c[0] for c in _block_cases()])
def test_block_scripts_and_matches_eager(name, make, shapes):
    torch.manual_seed(0)
    module = make()
    module.train(name.endswith("-ckpt"))  # no dropout anywhere: train mode only switches checkpointing on
    _assert_scripted_matches(module, shapes)


def test_up_blocks_script_and_match_eager():
    torch.manual_seed(0)
    for depth in (1, 0):  # CSR Mamba layers, or the convolution block
        up = EMNetUpBlock(3, 16, 8, depth, d_state=4, layer_scale_init=1.0).eval()
        _assert_scripted_matches(up, [((1, 16, 2, 3, 4), (1, 8, 4, 6, 8)), ((2, 16, 2, 2, 2), (2, 8, 4, 4, 4))])


def test_scripted_scan_is_the_registered_operator():
    """The saved code calls the operator (no Python left in it), and input errors still read clearly."""
    scripted = torch.jit.script(MambaMixer(8, d_state=4).eval())
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as archive:
        code = "".join(archive.read(n).decode() for n in archive.namelist() if n.endswith(".py"))
    assert "ops.mamba_monai.selective_scan_fwd(" in code
    assert "PythonOp" not in code and "ignored" not in code
    with pytest.raises(Exception, match=r"MambaMixer expects \(B, L, 8\) tokens, got shape \(2, 3, 5\)"):
        scripted(torch.randn(2, 3, 5))


def test_emnet_scripts_trains_and_is_not_specialised_to_a_size():
    torch.manual_seed(0)
    net = EMNet(**TINY3, deep_supervision=True, logit_scale=8.0)  # as the emnet_seg3d bundle's network_def
    for name, p in net.named_parameters():  # make the Mamba path count in the output
        if name.endswith("gamma"):
            p.data.fill_(1.0)
    scripted = torch.jit.script(net.eval())
    gen = torch.Generator().manual_seed(1)
    with torch.jit.optimized_execution(False), torch.no_grad():  # see _assert_scripted_matches
        for shape in ((1, 1, 32, 32, 32), (2, 1, 16, 48, 32)):
            x = torch.randn(shape, generator=gen)
            torch.testing.assert_close(scripted(x), net(x), rtol=1e-5, atol=1e-5)
    # training: deep supervision returns three outputs; gradients through the scripted scan equal eager's
    net.train()
    scripted.train()
    x = torch.randn(1, 1, 32, 16, 32, requires_grad=True)
    with torch.jit.optimized_execution(False):
        out_ts, out = scripted(x), net(x)
        assert [tuple(o.shape) for o in out_ts] == [(1, 3, 32, 16, 32), (1, 3, 8, 4, 8), (1, 3, 4, 2, 4)]
        for a, b in zip(out_ts, out):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        for g_ts, g in zip(_grads(scripted, [x], out_ts), _grads(net, [x], out)):
            torch.testing.assert_close(g_ts, g, rtol=1e-5, atol=1e-5)
        with pytest.raises(Exception, match="divisible by 16"):
            scripted.eval()(torch.randn(1, 1, 32, 24, 32))


def test_emnet_default_config_scripts():
    torch.manual_seed(0)
    net = EMNet().eval()
    _assert_scripted_matches(net, [(1, 1, 64, 32, 32)], backward=False, atol=1e-4)


_FRESH_PROCESS = """
import sys, torch
{imports}
net = torch.jit.load(sys.argv[1]); data = torch.load(sys.argv[2])
x = data["x"].requires_grad_()
y = net(x)
(g,) = torch.autograd.grad((y * data["w"]).sum(), x)
print("parity", torch.allclose(y, data["y"], rtol=1e-5, atol=1e-5), torch.allclose(g, data["g"], rtol=1e-5, atol=1e-5))
"""


def test_saved_script_loads_and_trains_in_fresh_process(tmp_path):
    """A scripted EMNet saved to a file runs (forward and backward) in a new process that imports mamba_monai, and
    fails there with the operator's name without it."""
    torch.manual_seed(0)
    net = EMNet(**TINY3).eval()
    path, data_path = str(tmp_path / "emnet.ts"), str(tmp_path / "data.pt")
    torch.jit.save(torch.jit.script(net), path)
    x = torch.randn(1, 1, 16, 32, 16, requires_grad=True)
    y = net(x)
    w = torch.randn(y.shape)
    (g,) = torch.autograd.grad((y * w).sum(), x)
    torch.save({"x": x.detach(), "y": y.detach(), "w": w, "g": g}, data_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}

    def run(imports):
        code = _FRESH_PROCESS.format(imports=imports)
        return subprocess.run([sys.executable, "-c", code, path, data_path], capture_output=True, text=True, env=env,
                              timeout=300)

    done = run("import mamba_monai")
    assert done.returncode == 0, done.stderr
    assert "parity True True" in done.stdout
    bare = run("")
    assert bare.returncode != 0 and FWD_OP_NAME in bare.stderr


def _scan_inputs(seed: int = 3, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    b, d, length, n, g = 2, 6, 70, 3, 2

    def r(*s):
        return torch.randn(*s, generator=gen, dtype=dtype)

    return (r(b, d, length), r(b, d, length), -torch.rand(d, n, generator=gen, dtype=dtype) - 0.5,
            r(b, g, n, length), r(b, g, n, length), r(d), r(b, d, length), r(d))  # fmt: skip


def test_operator_kernel_for_other_devices():
    """The operator has a kernel for CUDA and every other device (what a scripted network calls there): mamba_ssm's
    or the reference forward, and a backward that reruns it under autograd. Checked here on CPU tensors against
    the numba kernels."""
    for key in ("CUDA", "XPU", "MPS"):
        assert torch._C._dispatch_has_computed_kernel_for_dispatch_key(FWD_OP_NAME, key), key
    inputs = _scan_inputs()
    y, last, ckpt = _selective_scan_fwd_other_devices(*inputs, True, 64, True)
    y_cpu, last_cpu, _ = selective_scan_fwd(*inputs, True, 64, True)
    assert ckpt.shape == (2, 6, 0, 3)  # no checkpoints there; the fake kernel says the same for non-CPU tensors
    torch.testing.assert_close(y, y_cpu, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(last, last_cpu, rtol=1e-4, atol=1e-4)
    gen = torch.Generator().manual_seed(5)
    dy, dlast = torch.randn(y.shape, generator=gen), torch.randn(last.shape, generator=gen)
    for dl in (None, dlast):
        grads = _grads_by_recompute(inputs, True, dy, dl)
        ref = selective_scan_bwd(*inputs, True, 64, ckpt.new_empty(2, 6, 0, 3), dy, dl)
        for name, a, b in zip(("u", "delta", "A", "B", "C", "D", "z", "delta_bias"), grads, ref):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3, msg=name)
    # absent D, z and bias: None gradients, and y equals the reference
    partial = (*inputs[:5], None, None, None)
    y_plain = _selective_scan_fwd_other_devices(*partial, False, 64, False)[0]
    torch.testing.assert_close(y_plain, selective_scan_ref(*partial), rtol=0, atol=0)
    assert _grads_by_recompute(partial, False, dy, None)[5:] == [None, None, None]


def test_bundle_ckpt_export_with_default_arguments(tmp_path, monkeypatch):
    """The model zoo's CI call (scripting, no input shape), then the exported model against eager at the ROI and at
    another size."""
    monkeypatch.chdir(BUNDLE)
    ts_path = str(tmp_path / "emnet.ts")
    ckpt_export(
        net_id="network_def",
        filepath=ts_path,
        ckpt_file="models/model.pt",
        meta_file="configs/metadata.json",
        config_file="configs/inference.json",
        bundle_root=BUNDLE,
    )
    parser = ConfigParser()
    parser.read_config(os.path.join(BUNDLE, "configs", "inference.json"))
    parser["bundle_root"] = BUNDLE
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(os.path.join(BUNDLE, "models", "model.pt"), weights_only=True))
    net.eval()
    exported = torch.jit.load(ts_path)
    assert isinstance(exported, torch.jit.ScriptModule)
    roi = [int(s) for s in parser["roi_size"]]
    other = [32, 96, 32]  # a size a trace at the ROI could not take
    assert other != roi
    gen = torch.Generator().manual_seed(0)
    for size in (roi, other):
        x = torch.rand(1, 1, *size, generator=gen)
        with torch.no_grad():
            torch.testing.assert_close(exported(x), net(x), rtol=1e-5, atol=1e-5)
