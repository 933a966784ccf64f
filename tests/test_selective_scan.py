"""Tests of mamba_monai.ops.selective_scan: the numba CPU backend against an independent float64 loop."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mamba_monai.ops import available_backends, selective_scan, selective_scan_ref
from mamba_monai.ops.selective_scan_cpu import SelectiveScanCPUFunction, selective_scan_cpu

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


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
        assert y.grad_fn.name().startswith(SelectiveScanCPUFunction.__name__)  # the fast path, not the reference
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
    assert y.grad_fn.name().startswith(SelectiveScanCPUFunction.__name__)
    # one node whatever L is: its inputs are the leaves themselves, no per-step graph behind it
    assert all(f is None or type(f).__name__ == "AccumulateGrad" for f, _ in y.grad_fn.next_functions)
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
    assert y_auto.grad_fn.name().startswith(SelectiveScanCPUFunction.__name__)  # auto -> cpu for CPU tensors
    y_ref = selective_scan(**inputs, backend="ref")
    assert not y_ref.grad_fn.name().startswith(SelectiveScanCPUFunction.__name__)
    torch.testing.assert_close(y_auto, y_ref, rtol=1e-5, atol=1e-5)
    monkeypatch.setenv("MAMBA_MONAI_SCAN_BACKEND", "ref")
    assert not selective_scan(**inputs).grad_fn.name().startswith(SelectiveScanCPUFunction.__name__)
    monkeypatch.setenv("MAMBA_MONAI_SCAN_BACKEND", "cpu")
    assert selective_scan(**inputs).grad_fn.name().startswith(SelectiveScanCPUFunction.__name__)
    # the argument wins over the environment
    assert not selective_scan(**inputs, backend="ref").grad_fn.name().startswith(SelectiveScanCPUFunction.__name__)
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
