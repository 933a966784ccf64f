"""Tests of mamba_monai.ops.selective_scan: the numba CPU backend against an independent float64 loop."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mamba_monai.blocks import MambaMixer
from mamba_monai.ops import available_backends, selective_scan, selective_scan_ref
from mamba_monai.ops.selective_scan_cpu import (
    BWD_OP_NAME,
    FWD_OP_NAME,
    LANES,
    per_channel_kernels,
    pointwise_in_kernel,
    selective_scan_bwd,
    selective_scan_cpu,
    selective_scan_fwd,
)

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def is_fast(y: torch.Tensor) -> bool:
    """True when y's autograd graph holds our custom operator's node (the fused CPU path, not the reference), within the
    few element-wise nodes (gate, dtype cast) that the fast path puts after it."""
    op_name = FWD_OP_NAME.replace("::", "_")
    nodes, depth = [y.grad_fn], 0
    while nodes and depth < 4:
        if any(node is not None and op_name in node.name() for node in nodes):
            return True
        nodes = [nxt for node in nodes if node is not None for nxt, _ in node.next_functions]
        depth += 1
    return False


def graph_size(y: torch.Tensor) -> int:
    """Number of distinct autograd nodes behind ``y`` (leaves' AccumulateGrad included)."""
    seen, stack = set(), [y.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(nxt for nxt, _ in node.next_functions)
    return len(seen)


def naive_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Scalar-state float64 loop, written independently of the package: returns (y, last_state)."""
    b, d, length = u.shape
    n = A.shape[1]
    grouped = B.dim() == 4
    dg = d // B.shape[1] if grouped else d
    ys = []
    lasts = []
    for bi in range(b):
        rows, last_rows = [], []
        for di in range(d):
            Bs = B[bi, di // dg] if grouped else B[bi]  # (n, L)
            Cs = C[bi, di // dg] if grouped else C[bi]
            h = [u.new_zeros(()) for _ in range(n)]
            outs = []
            for t in range(length):
                x = delta[bi, di, t] + (delta_bias[di] if delta_bias is not None else 0.0)
                if delta_softplus:
                    x = torch.log(1 + torch.exp(x))
                acc = u.new_zeros(())
                for k in range(n):
                    h[k] = torch.exp(x * A[di, k]) * h[k] + x * Bs[k, t] * u[bi, di, t]
                    acc = acc + Cs[k, t] * h[k]
                if D is not None:
                    acc = acc + D[di] * u[bi, di, t]
                if z is not None:
                    zt = z[bi, di, t]
                    acc = acc * zt / (1 + torch.exp(-zt))
                outs.append(acc)
            rows.append(torch.stack(outs))
            last_rows.append(torch.stack(h))
        ys.append(torch.stack(rows))
        lasts.append(torch.stack(last_rows))
    return torch.stack(ys), torch.stack(lasts)


def make_inputs(b, d, length, n, groups=None, seed=0, dtype=torch.float32, D=True, z=True, bias=True):
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(dtype)

    bc_shape = (b, n, length) if groups is None else (b, groups, n, length)
    return {
        "u": rnd(b, d, length),
        "delta": rnd(b, d, length, scale=0.5),
        "A": (-torch.rand(d, n, generator=gen, dtype=torch.float64) - 0.2).to(dtype),
        "B": rnd(*bc_shape),
        "C": rnd(*bc_shape),
        "D": rnd(d) if D else None,
        "z": rnd(b, d, length) if z else None,
        "delta_bias": rnd(d, scale=0.3) if bias else None,
    }


def run_with_grads(fn, inputs, dtype, softplus, seed=1, **kw):
    """Runs fn on copies of inputs (cast to dtype, requiring grad); returns y, last, grads of a fixed loss."""
    leaves = {k: (None if v is None else v.detach().to(dtype).requires_grad_()) for k, v in inputs.items()}
    y, last = fn(**leaves, delta_softplus=softplus, **kw)
    gen = torch.Generator().manual_seed(seed)
    wy = torch.randn(y.shape, generator=gen, dtype=torch.float64).to(y.dtype)
    wl = torch.randn(last.shape, generator=gen, dtype=torch.float64).to(last.dtype)
    ((y * wy).sum() + (last * wl).sum()).backward()
    grads = {k: (None if v is None else v.grad) for k, v in leaves.items()}
    return y.detach(), last.detach(), grads


def assert_close(actual, expected, rtol, name):
    expected = expected.double()
    err = (actual.double() - expected).abs().max().item()
    scale = expected.abs().max().item() + 1e-12
    assert err <= rtol * scale, f"{name}: max abs error {err:.3g} > {rtol} * max |ref| {scale:.3g}"


def cpu_backend(**kw):
    return selective_scan(**kw, return_last_state=True, backend="cpu")


@pytest.mark.parametrize(
    "length,groups,softplus,with_opts",
    [(1, None, True, True), (7, 2, False, True), (67, None, True, False), (129, 2, True, True), (129, None, False, True)],
)
def test_cpu_forward_and_all_grads_vs_float64_loop(length, groups, softplus, with_opts):
    inputs = make_inputs(2, 4, length, 3, groups, seed=length, D=with_opts, z=with_opts, bias=with_opts)
    y, last, grads = run_with_grads(cpu_backend, inputs, torch.float32, softplus)
    y_ref, last_ref, grads_ref = run_with_grads(naive_scan_with_last, inputs, torch.float64, softplus)
    assert y.dtype == torch.float32 and y.shape == (2, 4, length)
    assert last.shape == (2, 4, 3)
    assert_close(y, y_ref, 1e-4, "y")
    assert_close(last, last_ref, 1e-4, "last_state")
    for k in NAMES:
        if inputs[k] is None:
            continue
        assert grads[k] is not None and grads[k].dtype == torch.float32 and grads[k].shape == inputs[k].shape, k
        if length == 1 and k == "A":  # h_0 = 0, so dA is exactly 0
            assert grads[k].abs().max() == 0
            continue
        assert_close(grads[k], grads_ref[k], 1e-4, f"d{k}")


@pytest.mark.parametrize("groups", [None, 2])
def test_pointwise_outside_kernel_equals_v03_in_kernel_path(groups):
    """Today's path (softplus and gate by torch around the kernel) against 0.3's (both inside the kernel): forward, last
    state and every gradient, float32 and float64; the context restores today's path on exit."""
    for dtype, rtol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        inputs = make_inputs(2, 4, 70, 3, groups, seed=21, dtype=dtype)
        today = run_with_grads(cpu_backend, inputs, dtype, True)
        with pointwise_in_kernel():
            before = run_with_grads(cpu_backend, inputs, dtype, True)
            y_before = selective_scan(**{**inputs, "u": inputs["u"].requires_grad_()}, delta_softplus=True, backend="cpu")
        y_today = selective_scan(**inputs, delta_softplus=True, backend="cpu")
        op_node = FWD_OP_NAME.replace("::", "_")
        assert op_node in y_before.grad_fn.name()  # 0.3: the operator's output is y, gated inside
        assert op_node not in y_today.grad_fn.name() and is_fast(y_today)  # today: the gate follows the operator
        inputs["u"].requires_grad_(False)
        after = run_with_grads(cpu_backend, inputs, dtype, True)
        for got, ref, name in ((today[0], before[0], "y"), (today[1], before[1], "last")):
            assert_close(got, ref, rtol, name)
        for k in NAMES:
            assert_close(today[2][k], before[2][k], rtol, f"d{k}")
            torch.testing.assert_close(after[2][k], today[2][k], rtol=0, atol=0)


@pytest.mark.parametrize(
    "b,groups,d,length,threads",
    [(2, None, 2 * LANES + 6, 130, None), (1, 2, 2 * LANES, 65, 16), (3, 4, 12, 9, None)],
)
def test_lane_kernels_match_per_channel_kernels_and_reference(monkeypatch, b, groups, d, length, threads):
    """The lane kernels (channels as vector lanes; blocks of LANES channels, a narrower last block, blocks cut to 8
    when few tasks would leave threads idle, groups narrower than a block) against 0.3.7's per-channel kernels and the
    float64 reference: forward, last state and every gradient."""
    sc = sys.modules[selective_scan_cpu.__module__]
    if threads is not None:  # as on a machine with that many cores: 1 x 2 groups x 32 channels -> blocks of 8
        monkeypatch.setattr(sc, "numba_threads", lambda: threads)
        assert sc._lane_block(2 * b, groups, d // groups) == 8
    inputs = make_inputs(b, d, length, 16, groups, seed=31, dtype=torch.float64)
    for dtype, rtol in ((torch.float64, 1e-10), (torch.float32, 2e-5)):
        lanes = run_with_grads(cpu_backend, inputs, dtype, True)
        with per_channel_kernels():
            per_channel = run_with_grads(cpu_backend, inputs, dtype, True)
        ref = run_with_grads(lambda **kw: selective_scan_ref(**kw, return_last_state=True), inputs, torch.float64, True)
        for i, name in ((0, "y"), (1, "last")):
            assert_close(lanes[i], per_channel[i], rtol, name)
            assert_close(lanes[i], ref[i], rtol, name)
        for k in NAMES:
            assert_close(lanes[2][k], per_channel[2][k], rtol, f"d{k}")
            assert_close(lanes[2][k], ref[2][k], rtol, f"d{k}")
    assert not sc._PER_CHANNEL_KERNELS  # the context restored the lane kernels


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lane_kernel_operators_opcheck(dtype):
    """The operators called as selective_scan_cpu calls them (plain step sizes, no gate or bias: the lane kernels):
    schema, fake kernels (outputs as (b, d, L) views of time-major tensors) and autograd registration; the backward
    recomputes missing checkpoints to the same gradients."""
    d = 2 * (LANES + 3)  # blocks of LANES channels and a narrower last one, in each of 2 groups or in one
    inputs = make_inputs(2, d, 9, 3, 2 if dtype == torch.float32 else None, seed=8, dtype=dtype, z=False, bias=False)
    args = [None if v is None else v.requires_grad_() for v in (inputs[k] for k in NAMES)]
    utils = ("test_schema", "test_faketensor", "test_autograd_registration")
    for save in (True, False):
        torch.library.opcheck(selective_scan_fwd, (*args, False, 4, save), test_utils=utils)
    y, last, ckpt = selective_scan_fwd(*args, False, 4, True)
    assert y.transpose(1, 2).is_contiguous() and ckpt.shape == (2, d, 3, 3)
    plain = [None if a is None else a.detach() for a in args]
    for ck, dlast in ((ckpt.detach(), last.detach()), (ckpt.new_empty(2, d, 0, 3), None)):
        torch.library.opcheck(selective_scan_bwd, (*plain, False, 4, ck, torch.ones_like(y).detach(), dlast), test_utils=utils)
    full = selective_scan_bwd(*plain, False, 4, ckpt.detach(), torch.ones_like(y), None)
    recomputed = selective_scan_bwd(*plain, False, 4, ckpt.new_empty(2, d, 0, 3), torch.ones_like(y), None)
    for a, b in zip(full, recomputed):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"`checkpoints` must be .*got \(2, 70, 2, 3\)"):
        selective_scan_bwd(*plain, False, 4, ckpt.detach()[:, :, :2], torch.ones_like(y), None)


def naive_scan_with_last(**kw):
    return naive_scan(**kw)


def test_small_chunks_match_reference_float64():
    """Checkpoints every 3 steps (L=10 ends mid-chunk): identical to the default chunk, in float64."""
    inputs = make_inputs(1, 4, 10, 2, groups=2, seed=3, dtype=torch.float64)

    def chunked(**kw):
        return selective_scan_cpu(**kw, return_last_state=True, chunk=3)

    y, last, grads = run_with_grads(chunked, inputs, torch.float64, True)
    y_ref, last_ref, grads_ref = run_with_grads(
        lambda **kw: selective_scan_ref(**kw, return_last_state=True), inputs, torch.float64, True
    )
    assert_close(y, y_ref, 1e-12, "y")
    assert_close(last, last_ref, 1e-12, "last")
    for k in NAMES:
        assert_close(grads[k], grads_ref[k], 1e-12, f"d{k}")


def test_gradcheck_float64_fast_path():
    inputs = make_inputs(1, 2, 5, 2, groups=2, seed=5, dtype=torch.float64)
    leaves = [inputs[k].clone().requires_grad_() for k in NAMES]

    def fn(u, delta, A, B, C, D, z, bias):
        y, last = selective_scan_cpu(u, delta, A, B, C, D, z, bias, True, True, chunk=2)
        assert is_fast(y)  # the fast path, not the reference
        return y, last

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-7, rtol=1e-5)


@settings(max_examples=8, deadline=None)
@given(
    b=st.integers(1, 2),
    groups=st.sampled_from([None, 1, 2, 3]),
    dg=st.integers(1, 3),
    n=st.integers(1, 4),
    length=st.integers(1, 80),
    softplus=st.booleans(),
    opts=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_property_random_shapes(b, groups, dg, n, length, softplus, opts, seed):
    d = dg * (groups or 1)
    inputs = make_inputs(b, d, length, n, groups, seed=seed, D=opts, z=opts, bias=not opts)
    y, last, grads = run_with_grads(cpu_backend, inputs, torch.float32, softplus)
    y_ref, last_ref, grads_ref = run_with_grads(
        lambda **kw: selective_scan_ref(**kw, return_last_state=True), inputs, torch.float64, softplus
    )
    assert_close(y, y_ref, 1e-4, "y")
    assert_close(last, last_ref, 1e-4, "last")
    for k in NAMES:
        if inputs[k] is not None and not (k == "A" and length == 1):
            assert_close(grads[k], grads_ref[k], 1e-4, f"d{k}")


def test_autocast_bf16_keeps_fp32_accumulation():
    inputs = make_inputs(1, 4, 70, 4, seed=7)
    bf = {k: v.to(torch.bfloat16).requires_grad_() for k, v in inputs.items()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = selective_scan(**bf, delta_softplus=True, backend="cpu")
    assert y.dtype == torch.bfloat16
    rounded = {k: v.detach().float() for k, v in bf.items()}
    y32 = selective_scan(**rounded, delta_softplus=True, backend="cpu")
    torch.testing.assert_close(y, y32.to(torch.bfloat16), rtol=0, atol=0)  # fp32 result rounded once at the end
    y64 = naive_scan(**{k: v.double() for k, v in rounded.items()}, delta_softplus=True)[0]
    assert_close(y32, y64, 1e-4, "y fp32 of bf16-rounded inputs")
    y.float().sum().backward()
    for k in NAMES:
        assert bf[k].grad is not None and bf[k].grad.dtype == torch.bfloat16, k
    with torch.autocast("cpu", dtype=torch.bfloat16):  # fp32 inputs stay fp32
        assert selective_scan(**inputs, backend="cpu").dtype == torch.float32


def test_single_graph_node_noncontiguous_and_grad_subset():
    inputs = make_inputs(2, 3, 9, 2, seed=11)
    # non-contiguous views of the same values
    u_t = inputs["u"].transpose(1, 2).contiguous().transpose(1, 2)
    B_t = inputs["B"].transpose(1, 2).contiguous().transpose(1, 2)
    assert not u_t.is_contiguous() and not B_t.is_contiguous()
    delta = inputs["delta"].clone().requires_grad_()
    kw = {**inputs, "u": u_t, "B": B_t, "delta": delta}
    y = selective_scan(**kw, delta_softplus=True, backend="cpu")
    assert is_fast(y)
    # a few nodes whatever L is (the operator, softplus, gate): no per-step graph behind it
    longer = make_inputs(2, 3, 40, 2, seed=11)
    longer["delta"].requires_grad_()
    y_long = selective_scan(**longer, delta_softplus=True, backend="cpu")
    assert graph_size(y) == graph_size(y_long) <= 12
    y.sum().backward()
    delta_ref = inputs["delta"].double().requires_grad_()
    ref = {k: v.double() for k, v in inputs.items()}
    ref["delta"] = delta_ref
    naive_scan(**ref, delta_softplus=True)[0].sum().backward()
    assert_close(delta.grad, delta_ref.grad, 1e-4, "ddelta")
    with torch.no_grad():
        y2 = selective_scan(**kw, delta_softplus=True, backend="cpu")
    assert not y2.requires_grad
    torch.testing.assert_close(y2, y.detach())


def test_backend_forcing_argument_and_env(monkeypatch):
    backends = available_backends()
    assert "cpu" in backends and "ref" in backends
    inputs = make_inputs(1, 2, 12, 3, seed=2)
    monkeypatch.delenv("MAMBA_MONAI_SCAN_BACKEND", raising=False)
    for k in ("u", "delta"):
        inputs[k].requires_grad_()
    y_auto = selective_scan(**inputs)
    assert is_fast(y_auto)  # auto -> cpu for CPU tensors
    y_ref = selective_scan(**inputs, backend="ref")
    assert not is_fast(y_ref)
    torch.testing.assert_close(y_auto, y_ref, rtol=1e-5, atol=1e-5)
    monkeypatch.setenv("MAMBA_MONAI_SCAN_BACKEND", "ref")
    assert not is_fast(selective_scan(**inputs))
    monkeypatch.setenv("MAMBA_MONAI_SCAN_BACKEND", "cpu")
    assert is_fast(selective_scan(**inputs))
    # the argument wins over the environment
    assert not is_fast(selective_scan(**inputs, backend="ref"))
    monkeypatch.setenv("MAMBA_MONAI_SCAN_BACKEND", "fast")
    with pytest.raises(ValueError, match="MAMBA_MONAI_SCAN_BACKEND.*'fast'"):
        selective_scan(**inputs)
    monkeypatch.setenv("MAMBA_MONAI_SCAN_BACKEND", "cuda")
    if "cuda" not in backends:
        with pytest.raises(RuntimeError, match="mamba_ssm"):
            selective_scan(**inputs)
        with pytest.raises(RuntimeError, match="'cuda' was forced"):
            selective_scan(**inputs, backend="cuda")
    with pytest.raises(ValueError, match="backend"):
        selective_scan(**inputs, backend="gpu")
    meta = {k: v.detach().to("meta") for k, v in inputs.items()}
    with pytest.raises(RuntimeError, match="'cpu' was forced.*meta"):
        selective_scan(**meta, backend="cpu")


@pytest.mark.parametrize(
    "change,match",
    [
        ({"u": torch.zeros(2, 4)}, r"`u` must be 3-D \(b, d, L\), got shape \(2, 4\)"),
        ({"delta": torch.zeros(1, 4, 5)}, r"`delta` must have the shape of `u` \(1, 4, 6\), got \(1, 4, 5\)"),
        ({"A": torch.zeros(3, 2)}, r"`A` must be \(d, n\) with d=4 .*got \(3, 2\)"),
        ({"B": torch.zeros(1, 3, 2, 6), "C": torch.zeros(1, 3, 2, 6)}, r"g=3 groups, but d=4 .*not divisible"),
        ({"B": torch.zeros(1, 3, 6)}, r"`B` must have shape \(1, 2, 6\), got \(1, 3, 6\)"),
        ({"C": torch.zeros(1, 2, 6, 1, 1)}, r"`C` must be \(b, n, L\) = \(1, 2, 6\) or grouped .*got shape \(1, 2, 6, 1, 1\)"),
        ({"B": torch.zeros(1, 2, 2, 6)}, r"`B` and `C` must share one layout"),
        ({"D": torch.zeros(3)}, r"`D` must be \(d,\) = \(4,\), got \(3,\)"),
        ({"z": torch.zeros(1, 4, 7)}, r"`z` must have the shape of `u`"),
        ({"delta_bias": torch.zeros(4, 1)}, r"`delta_bias` must be \(d,\) = \(4,\), got \(4, 1\)"),
    ],
)
@pytest.mark.parametrize("backend", ["cpu", "ref"])
def test_bad_shapes_raise_clear_errors(change, match, backend):
    inputs = make_inputs(1, 4, 6, 2, seed=0)
    inputs.update(change)
    with pytest.raises(ValueError, match=match):
        selective_scan(**inputs, backend=backend)


def test_long_sequence_stable_and_matches_reference():
    """L=300 with strong decay and large steps: no overflow, agrees with the reference (float32 both)."""
    inputs = make_inputs(1, 8, 300, 4, seed=9)
    inputs["A"] = inputs["A"] * 20
    y = selective_scan(**inputs, delta_softplus=True, backend="cpu")
    y_ref = selective_scan(**{k: v.double() for k, v in inputs.items()}, delta_softplus=True, backend="ref")
    assert torch.isfinite(y).all()
    assert_close(y, y_ref, 1e-4, "y")
    assert math.isfinite(y.abs().max().item())


class TinyScan(torch.nn.Module):
    """A module whose every scan operand depends on the input: (b, 4, L) -> (y (b, 4, L), last (b, 4, 3))."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.w_delta = torch.nn.Parameter(torch.randn(4, generator=gen) * 0.5)
        self.w_b = torch.nn.Parameter(torch.randn(3, 4, generator=gen))
        self.w_c = torch.nn.Parameter(torch.randn(3, 4, generator=gen))
        self.A_log = torch.nn.Parameter(torch.rand(4, 3, generator=gen))
        self.D = torch.nn.Parameter(torch.randn(4, generator=gen))
        self.delta_bias = torch.nn.Parameter(torch.randn(4, generator=gen) * 0.3)

    def forward(self, u: torch.Tensor):
        B = torch.einsum("bdl,nd->bnl", u, self.w_b)
        C = torch.einsum("bdl,nd->bnl", u, self.w_c)
        return selective_scan(
            u, u * self.w_delta[:, None], -torch.exp(self.A_log), B, C, self.D, z=u.flip(-1),
            delta_bias=self.delta_bias, delta_softplus=True, return_last_state=True, backend="cpu",
        )  # fmt: skip


def _param_grads(module: torch.nn.Module, out) -> list[torch.Tensor]:
    module.zero_grad()
    y, last = out if isinstance(out, tuple) else (out, None)
    gen = torch.Generator().manual_seed(4)
    loss = (y * torch.randn(y.shape, generator=gen)).sum()
    if last is not None:
        loss = loss + (last * torch.randn(last.shape, generator=gen)).sum()
    loss.backward()
    return [p.grad.clone() for p in module.parameters()]


@pytest.mark.parametrize("grad_while_tracing", [True, False])
def test_jit_trace_saves_loads_and_runs_new_lengths(tmp_path, grad_while_tracing):
    """The scan is traced as one call of the registered operator: it saves, loads and matches eager at another L."""
    module = TinyScan()
    with torch.set_grad_enabled(grad_while_tracing):  # the same graph either way
        traced = torch.jit.trace(module, torch.randn(2, 4, 7))
    assert FWD_OP_NAME in str(traced.graph)
    path = str(tmp_path / "tiny.ts")
    torch.jit.save(traced, path)
    loaded = torch.jit.load(path)
    u = torch.randn(1, 4, 75, generator=torch.Generator().manual_seed(2))  # new b and L, more than one chunk
    y_ts, last_ts = loaded(u)
    y, last = module(u)
    assert y_ts.shape == (1, 4, 75) and last_ts.shape == (1, 4, 3)
    torch.testing.assert_close(y_ts, y, rtol=0, atol=0)
    torch.testing.assert_close(last_ts, last, rtol=0, atol=0)
    ref = selective_scan_ref(
        u.double(), (u * module.w_delta[:, None]).double(), -torch.exp(module.A_log).double(),
        torch.einsum("bdl,nd->bnl", u, module.w_b).double(), torch.einsum("bdl,nd->bnl", u, module.w_c).double(),
        module.D.double(), u.flip(-1).double(), module.delta_bias.double(), True, True,
    )  # fmt: skip
    assert_close(y_ts, ref[0], 1e-4, "traced y vs reference")
    # the loaded module trains: parameter gradients through the operator's backward match eager
    for g_ts, g in zip(_param_grads(loaded, loaded(u)), _param_grads(module, module(u))):
        torch.testing.assert_close(g_ts, g, rtol=1e-5, atol=1e-6)


def test_mamba_mixer_bidirectional_torchscript_export(tmp_path):
    """MambaMixer exported as MONAI's ckpt_export(use_trace=True) does it, then run at another length."""
    from monai.networks.utils import convert_to_torchscript

    torch.manual_seed(0)
    mixer = MambaMixer(d_model=8, bidirectional=True).eval()
    path = str(tmp_path / "mixer.ts")
    convert_to_torchscript(mixer, path, verify=True, inputs=[torch.randn(2, 11, 8)], use_trace=True)
    loaded = torch.jit.load(path)
    assert sum(str(m.graph).count(FWD_OP_NAME) for m in (loaded.forward_branch, loaded.backward_branch)) == 2
    x = torch.randn(1, 70, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), mixer(x), rtol=1e-6, atol=1e-6)


_FRESH_PROCESS = """
import sys, torch
{imports}
tiny = torch.jit.load(sys.argv[1]); mixer = torch.jit.load(sys.argv[2]); data = torch.load(sys.argv[3])
y, last = tiny(data["u"])
ok = torch.equal(y, data["y"]) and torch.equal(last, data["last"])
ok = ok and torch.allclose(mixer(data["x"]), data["mixer"], rtol=1e-6, atol=1e-6)
print("parity", ok)
"""


def test_torchscript_loads_in_fresh_process(tmp_path):
    """A saved trace runs in a new process that imports only mamba_monai.ops (and fails clearly without it)."""
    tiny, mixer = TinyScan(), MambaMixer(d_model=8, bidirectional=True).eval()
    with torch.no_grad():
        torch.jit.save(torch.jit.trace(tiny, torch.randn(1, 4, 5)), str(tmp_path / "tiny.ts"))
        torch.jit.save(torch.jit.trace(mixer, torch.randn(1, 5, 8)), str(tmp_path / "mixer.ts"))
        gen = torch.Generator().manual_seed(3)
        u, x = torch.randn(2, 4, 33, generator=gen), torch.randn(2, 21, 8, generator=gen)
        y, last = tiny(u)
        torch.save({"u": u, "x": x, "y": y, "last": last, "mixer": mixer(x)}, str(tmp_path / "data.pt"))
    args = [str(tmp_path / n) for n in ("tiny.ts", "mixer.ts", "data.pt")]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}

    def run(imports):
        code = _FRESH_PROCESS.format(imports=imports)
        return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300)

    done = run("import mamba_monai.ops")
    assert done.returncode == 0, done.stderr
    assert "parity True" in done.stdout
    bare = run("")  # the operator is registered by importing the package
    assert bare.returncode != 0 and "mamba_monai::selective_scan_fwd" in bare.stderr


@pytest.mark.parametrize("with_opts,dtype", [(True, torch.float32), (False, torch.float64)])
def test_custom_ops_opcheck(with_opts, dtype):
    """torch.library.opcheck: schema, fake (meta) kernels and autograd registration of both operators."""
    groups = 2 if with_opts else None
    inputs = make_inputs(2, 4, 9, 3, groups, seed=6, dtype=dtype, D=with_opts, z=with_opts, bias=with_opts)
    args = [None if v is None else v.requires_grad_() for v in (inputs[k] for k in NAMES)]
    utils = ("test_schema", "test_faketensor", "test_autograd_registration")
    for save in (True, False):
        # AOTAutograd (what torch.compile would use) too, once: it takes a few seconds
        extra = ("test_aot_dispatch_dynamic",) if with_opts and save else ()
        torch.library.opcheck(selective_scan_fwd, (*args, True, 4, save), test_utils=utils + extra)
    y, last, ckpt = selective_scan_fwd(*args, True, 4, True)
    assert ckpt.shape == (2, 4, 3, 3) and ckpt.dtype == dtype and not ckpt.requires_grad
    plain = [None if a is None else a.detach() for a in args]
    for ck, dlast in ((ckpt.detach(), last.detach()), (ckpt.new_empty(2, 4, 0, 3), None)):
        bwd_args = (*plain, True, 4, ck, torch.ones_like(y).detach(), dlast)
        torch.library.opcheck(selective_scan_bwd, bwd_args, test_utils=utils)
    assert torch.ops.mamba_monai.selective_scan_fwd.default.name() == FWD_OP_NAME
    assert torch.ops.mamba_monai.selective_scan_bwd.default.name() == BWD_OP_NAME
    # the backward recomputes missing checkpoints: same gradients with or without them
    full = selective_scan_bwd(*plain, True, 4, ckpt.detach(), torch.ones_like(y), None)
    recomputed = selective_scan_bwd(*plain, True, 4, ckpt.new_empty(2, 4, 0, 3), torch.ones_like(y), None)
    for a, b in zip(full, recomputed):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"`checkpoints` must be .*\(2, 4, 3, 3\).*got \(2, 4, 2, 3\)"):
        selective_scan_bwd(*plain, True, 4, ckpt.detach()[:, :, :2], torch.ones_like(y), None)


def test_cpu_scan_keeps_torch_thread_count():
    """numba's OpenMP pool, started by the first scan, resets the thread count torch uses: the scan puts it back
    (otherwise a process that asked for 1 thread runs every later torch op on all cores). Fresh process: the pool
    starts only once per process."""
    code = (
        "import torch; torch.set_num_threads(1)\n"
        "from mamba_monai.ops import selective_scan\n"
        "u = torch.rand(1, 8, 32, requires_grad=True)\n"
        "selective_scan(u, torch.rand(1, 8, 32), -torch.rand(8, 4), torch.rand(1, 4, 32), torch.rand(1, 4, 32),"
        " backend='cpu').sum().backward()\n"
        "print(torch.get_num_threads())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "1"
