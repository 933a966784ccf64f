"""
Fused selective scan for CPU tensors: numba kernels, registered as PyTorch custom operators
``mamba_monai::selective_scan_fwd`` and ``mamba_monai::selective_scan_bwd`` (``torch.library``)
with the second as the autograd formula of the first, so that ``torch.jit.trace`` records a
saveable operator call (a traced network loads wherever ``mamba_monai`` is imported).

Algorithm (one independent recurrence per batch row ``b`` and channel ``d``, parallel over b*d):

- Forward: the N-vector state ``h`` stays in a local array; each step computes
  ``dt = softplus(delta + delta_bias)``, ``h = exp(dt * A) * h + dt * u * B_t`` and
  ``y = <C_t, h> + D * u`` (times ``silu(z)``) in one pass, so no (b, d, L, N) tensor is ever
  built. When a gradient is needed the state entering every chunk of ``K`` steps (default 64) is
  saved: (b, d, ceil(L / K), N) numbers, 1/K of the full state history.
- Backward: chunks are visited last to first. Each chunk's states (and decays ``exp(dt * A)``) are
  recomputed from its checkpoint into a small (K + 1, N) scratch buffer, then the reverse scan runs
  over the chunk with the state adjoint ``g_t = exp(dt_{t+1} A) g_{t+1} + gy_t C_t``
  (``gy`` = gradient of the pre-gate output), which yields du, ddelta (through the softplus and the
  bias), dA, dD, dz and the per-step dB, dC. dB and dC are shared by the channels of a group, so
  the backward runs one task per (batch, group, segment of channels) and each task adds into its
  own partial buffer (race-free, deterministic); torch sums the segments afterwards.

Two kernel families. The lane kernels (:func:`_scan_fwd_lanes`, :func:`_scan_bwd_lanes`) serve the call
:func:`selective_scan_cpu` makes (step sizes already through softplus, no bias, the gate applied after): inputs
time-major (b, L, d), one task per (batch, group, block of :data:`LANES` channels), and each step's innermost loop runs
over the block's channels, which the compiler turns into vector code; 1.5-2.3x faster than the per-channel kernels
(:func:`_scan_fwd`, :func:`_scan_bwd`), whose innermost loop over the N = 16 states of one channel is shorter than
the compiler's vector loop (8 lanes x 4) and ran as scalar code. The per-channel kernels, with softplus, bias and gate
inside, serve the operators called with those (mamba-monai 0.3's path, :func:`pointwise_in_kernel`) and
:func:`per_channel_kernels`.

Accumulation is in float32 for float32/bfloat16/float16 inputs and in float64 for float64 inputs
(both kernels are compiled lazily, on first use of each dtype, and cached on disk). The decays
``exp(dt * A)`` use a vectorised exp of our own (:func:`_vexp`): numba's scalar exp made the scan
exp-bound (about 3x slower forward).

Other devices: a network compiled with ``torch.jit.script`` calls the forward operator whatever the
device of its tensors, so the operator also has a kernel for every device but CPU: mamba_ssm's CUDA
``selective_scan_fn`` when it imports (CUDA tensors of a dtype it supports), else the PyTorch
reference. There it saves no checkpoints, and its gradient reruns that forward under autograd
(:func:`_grads_by_recompute`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from .selective_scan_ref import selective_scan_ref
from .utils import MAMBA_SSM_DTYPES, has_numba, mamba_ssm_scan_fn, numba, numba_jit, numba_launch, numba_threads

__all__ = [
    "has_numba",
    "selective_scan_cpu",
    "selective_scan_fwd",
    "selective_scan_bwd",
    "FWD_OP_NAME",
    "BWD_OP_NAME",
    "CHUNK_SIZE",
    "step_sizes",
    "gate",
    "pointwise_in_kernel",
    "per_channel_kernels",
    "LANES",
]

FWD_OP_NAME = "mamba_monai::selective_scan_fwd"
"""Registered name of the forward operator (``torch.ops.mamba_monai.selective_scan_fwd``)."""
BWD_OP_NAME = "mamba_monai::selective_scan_bwd"
"""Registered name of the backward operator (``torch.ops.mamba_monai.selective_scan_bwd``)."""

CHUNK_SIZE = 64
"""Steps between forward checkpoints (the backward recomputes at most this many states at once)."""


def _exp_consts(dtype: torch.dtype) -> tuple[torch.Tensor, torch.dtype, int, int]:
    """Constants of :func:`_vexp` for float32 or float64: (table, integer dtype, exponent bias, mantissa bits)."""
    if dtype == torch.float32:
        lo, hi, ln2_hi, itype, bias, shift = -87.0, 88.0, 0.693359375, torch.int32, 127, 23
    else:
        lo, hi, ln2_hi, itype, bias, shift = -708.0, 709.0, 0.6931471803691238, torch.int64, 1023, 52
    ln2 = math.log(2.0)
    table = [1.0 / ln2, ln2_hi, ln2 - ln2_hi, lo, hi, 0.5] + [1.0 / math.factorial(k) for k in range(14)]
    return torch.tensor(table, dtype=dtype), itype, bias, shift


def _vexp(x, arow, out, ibuf, fview, c, ebias, shift):
    """
    out[n] = exp(x * arow[n]) for every n, in a form the compiler vectorises over n (numba has no
    vector exp without Intel's SVML): range reduction x = k ln2 + r, a degree-13 Taylor polynomial
    in r (|r| <= ln2 / 2), and 2^k built from its exponent bits in ``ibuf`` (an integer scratch of
    the float's width) read back through ``fview``, a float view of ``ibuf``. Constants in ``c``
    (see :func:`_exp_consts`); arguments are clamped to the dtype's finite range.
    """
    n_state = arow.shape[0]
    for n in range(n_state):
        kf, r = _exp_reduce(x * arow[n], c)
        out[n] = _exp_poly13(r, c)
        ibuf[n] = kf
    _exp_scale(out, ibuf, fview, ebias, shift, n_state)


def _exp_reduce(v, c):
    """``v`` clamped to the dtype's finite range, then written ``k ln2 + r`` with |r| <= ln2 / 2: returns (k, r)."""
    v = min(max(v, c[3]), c[4])
    kf = np.floor(v * c[0] + c[5])
    return kf, v - kf * c[1] - kf * c[2]


def _exp_poly13(r, c):
    """exp(r) by its Taylor polynomial of degree 13 (float64's precision for |r| <= ln2 / 2)."""
    p = c[19]
    p = p * r + c[18]
    p = p * r + c[17]
    p = p * r + c[16]
    p = p * r + c[15]
    p = p * r + c[14]
    return _exp_poly7(r, c, p * r + c[13])


def _exp_poly7(r, c, p):
    """exp(r) by its Taylor polynomial of degree 7 (truncation error 0.35^8 / 8! < 1e-8: float32's precision), Horner's
    steps from ``p`` (``c[13]``; the higher terms' sum for :func:`_exp_poly13`)."""
    p = p * r + c[12]
    p = p * r + c[11]
    p = p * r + c[10]
    p = p * r + c[9]
    p = p * r + c[8]
    p = p * r + c[7]
    return p * r + c[6]


def _exp_scale(out, ibuf, fview, ebias, shift, count):
    """out[i] *= 2^k[i] for the first ``count`` entries, 2^k built from the exponent bits ``k`` held in ``ibuf``."""
    for i in range(count):
        ibuf[i] = (ibuf[i] + ebias) << shift
    for i in range(count):
        out[i] = out[i] * fview[i]


def _scan_fwd(
    u, delta, A, Bt, Ct, D, z, bias, softplus, has_z, chunk, save_ckpt, out, last, ckpt, ec, itmpl, ebias, shift
):
    """
    Forward kernel. u, delta, z, out: (b, d, L); A: (d, N); Bt, Ct: (b, g, L, N) (time-major);
    D, bias: (d,); last: (b, d, N); ckpt: (b, d, ceil(L / chunk), N), written when ``save_ckpt``.
    ``z`` is only read when ``has_z``. ``ec``, ``itmpl`` (integer dtype template), ``ebias``,
    ``shift``: the constants of :func:`_vexp`.
    """
    b, d, length = u.shape
    n_state = A.shape[1]
    dg = d // Bt.shape[1]
    for r in numba.prange(b * d):
        bi = r // d
        di = r % d
        gi = di // dg
        h = np.zeros(n_state, dtype=u.dtype)
        zero = np.zeros(1, dtype=u.dtype)
        decay = np.empty(n_state, dtype=u.dtype)
        ibuf = np.empty(n_state, dtype=itmpl.dtype)
        fview = ibuf.view(u.dtype)
        arow = A[di]
        for t in range(length):
            if save_ckpt and t % chunk == 0:
                c = t // chunk
                for n in range(n_state):
                    ckpt[bi, di, c, n] = h[n]
            x = delta[bi, di, t] + bias[di]
            if softplus and x <= 20.0:
                x = np.log1p(np.exp(x))
            ut = u[bi, di, t]
            dtu = x * ut
            y = zero[0]
            _vexp(x, arow, decay, ibuf, fview, ec, ebias, shift)
            for n in range(n_state):
                hn = decay[n] * h[n] + dtu * Bt[bi, gi, t, n]
                h[n] = hn
                y += hn * Ct[bi, gi, t, n]
            y += D[di] * ut
            if has_z:
                zt = z[bi, di, t]
                out[bi, di, t] = y * zt / (1.0 + np.exp(-zt))
            else:
                out[bi, di, t] = y
        for n in range(n_state):
            last[bi, di, n] = h[n]


def _scan_bwd(
    u, delta, A, Bt, Ct, D, z, bias, softplus, has_z, chunk, ckpt, dout, dlast, nseg,
    du, ddelta, dA_p, dBt_p, dCt_p, dD_p, dbias_p, dz, ec, itmpl, ebias, shift,
):  # fmt: skip
    """
    Backward kernel. Inputs as in :func:`_scan_fwd`, plus ``ckpt`` from the forward, ``dout``
    (b, d, L) and ``dlast`` (b, d, N) (the gradient of the returned last state, zeros if unused).
    One task per (batch, group, channel segment), ``nseg`` segments per group. Outputs:
    du, ddelta, dz: (b, d, L); dA_p: (b, d, N); dD_p, dbias_p: (b, d); dBt_p, dCt_p:
    (nseg, b, g, L, N) partial sums, zero-initialised by the caller.
    """
    b, d, length = u.shape
    n_state = A.shape[1]
    g = Bt.shape[1]
    dg = d // g
    seg = (dg + nseg - 1) // nseg
    nchunks = ckpt.shape[2]
    for k in numba.prange(b * g * nseg):
        bi = k // (g * nseg)
        gi = (k // nseg) % g
        s = k % nseg
        c_start = gi * dg + s * seg
        c_stop = min(c_start + seg, (gi + 1) * dg)
        hs = np.empty((chunk + 1, n_state), dtype=u.dtype)  # states entering / after each step
        aa = np.empty((chunk, n_state), dtype=u.dtype)  # decays exp(dt * A)
        dts = np.empty(chunk, dtype=u.dtype)
        dsp = np.empty(chunk, dtype=u.dtype)  # d softplus / d x
        gh = np.empty(n_state, dtype=u.dtype)  # state adjoint carried backwards
        dA_acc = np.empty(n_state, dtype=u.dtype)
        sc = np.zeros(4, dtype=u.dtype)  # typed scalar scratch
        ibuf = np.empty(n_state, dtype=itmpl.dtype)
        fview = ibuf.view(u.dtype)
        for di in range(c_start, c_stop):
            for n in range(n_state):
                gh[n] = dlast[bi, di, n]
                dA_acc[n] = 0.0
            sc[2] = 0.0  # dD
            sc[3] = 0.0  # ddelta_bias
            for c in range(nchunks - 1, -1, -1):
                t0 = c * chunk
                m = min(chunk, length - t0)
                for n in range(n_state):
                    hs[0, n] = ckpt[bi, di, c, n]
                # recompute the chunk's states from its checkpoint
                for j in range(m):
                    t = t0 + j
                    x = delta[bi, di, t] + bias[di]
                    if softplus:
                        if x <= 20.0:
                            e = np.exp(x)
                            dsp[j] = e / (1.0 + e)
                            x = np.log1p(e)
                        else:
                            dsp[j] = 1.0
                    dts[j] = x
                    xt = dts[j]
                    dtu = xt * u[bi, di, t]
                    _vexp(xt, A[di], aa[j], ibuf, fview, ec, ebias, shift)
                    for n in range(n_state):
                        hs[j + 1, n] = aa[j, n] * hs[j, n] + dtu * Bt[bi, gi, t, n]
                # reverse scan over the chunk
                for j in range(m - 1, -1, -1):
                    t = t0 + j
                    ut = u[bi, di, t]
                    go = dout[bi, di, t]
                    if has_z:
                        sc[0] = D[di] * ut
                        ypre = sc[0]
                        for n in range(n_state):
                            ypre += Ct[bi, gi, t, n] * hs[j + 1, n]
                        zt = z[bi, di, t]
                        sig = 1.0 / (1.0 + np.exp(-zt))
                        dz[bi, di, t] = go * ypre * sig * (1.0 + zt * (1.0 - sig))
                        sc[0] = go * zt * sig
                    else:
                        sc[0] = go
                    gy = sc[0]
                    sc[2] += gy * ut
                    xt = dts[j]
                    dtu = xt * ut
                    sc[1] = 0.0
                    dt_acc = sc[1]
                    du_acc = sc[1]
                    for n in range(n_state):
                        ghn = gh[n] + gy * Ct[bi, gi, t, n]
                        bn = Bt[bi, gi, t, n]
                        w = ghn * aa[j, n] * hs[j, n]
                        dCt_p[s, bi, gi, t, n] += gy * hs[j + 1, n]
                        dBt_p[s, bi, gi, t, n] += ghn * dtu
                        du_acc += ghn * bn
                        dA_acc[n] += w * xt
                        dt_acc += w * A[di, n] + ghn * ut * bn
                        gh[n] = ghn * aa[j, n]
                    du[bi, di, t] = gy * D[di] + du_acc * xt
                    if softplus:
                        dt_acc = dt_acc * dsp[j]
                    ddelta[bi, di, t] = dt_acc
                    sc[3] += dt_acc
            for n in range(n_state):
                dA_p[bi, di, n] = dA_acc[n]
            dD_p[bi, di] = sc[2]
            dbias_p[bi, di] = sc[3]


def _exp_lanes(xs, arow, out, ibuf, fview, c, ebias, shift, precise):
    """
    out[k] = exp(xs[k] * arow[k]) over a block of channels (the vector lanes of :func:`_scan_fwd_lanes`), by
    :func:`_vexp`'s method. The Taylor polynomial has degree 13 when ``precise`` (float64) and 7 otherwise: for
    |r| <= ln2 / 2 its truncation error, 0.35^8 / 8! < 1e-8, is below float32's rounding.
    """
    lanes = xs.shape[0]
    if precise:
        for k in range(lanes):
            kf, r = _exp_reduce(xs[k] * arow[k], c)
            out[k] = _exp_poly13(r, c)
            ibuf[k] = kf
    else:
        for k in range(lanes):
            kf, r = _exp_reduce(xs[k] * arow[k], c)
            out[k] = _exp_poly7(r, c, c[13])
            ibuf[k] = kf
    _exp_scale(out, ibuf, fview, ebias, shift, lanes)


def _lane_task(task, g, nblk, dg, block):
    """Batch row, group, block index, first channel and width of a task of the lane kernels."""
    bi = task // (g * nblk)
    gi = (task // nblk) % g
    s = task % nblk
    c0 = gi * dg + s * block
    return bi, gi, s, c0, min(block, (gi + 1) * dg - c0)


def _scan_fwd_lanes(u, dt, At, Bt, Ct, D, block, chunk, save_ckpt, out, last, ckpt, ec, itmpl, ebias, shift, precise):
    """
    Forward kernel, channels as vector lanes. u, dt, out: (b, L, d) (time-major; dt = the step sizes, softplus and
    bias already applied); At: (N, d); Bt, Ct: (b, g, L, N); D: (d,); last: (b, d, N); ckpt: (b, d, ceil(L / chunk), N),
    written when ``save_ckpt``. One task per (batch, group, block of ``block`` channels); each step updates the
    block's (N, block) states with the innermost loop over channels, which the compiler vectorises (the N = 16
    states of one channel are too few for its vector loop, so the per-channel kernel ran them scalar).
    """
    b, length, d = u.shape
    n_state = At.shape[0]
    g = Bt.shape[1]
    dg = d // g
    nblk = (dg + block - 1) // block
    for task in numba.prange(b * g * nblk):
        bi, gi, s, c0, w = _lane_task(task, g, nblk, dg, block)
        a = np.ascontiguousarray(At[:, c0 : c0 + w])
        d_skip = D[c0 : c0 + w]
        h = np.zeros((n_state, w), dtype=u.dtype)
        decay = np.empty(w, dtype=u.dtype)
        dtu = np.empty(w, dtype=u.dtype)
        y = np.empty(w, dtype=u.dtype)
        ibuf = np.empty(w, dtype=itmpl.dtype)
        fview = ibuf.view(u.dtype)
        for t in range(length):
            if save_ckpt and t % chunk == 0:
                for n in range(n_state):
                    for k in range(w):
                        ckpt[bi, c0 + k, t // chunk, n] = h[n, k]
            xs = dt[bi, t, c0 : c0 + w]
            us = u[bi, t, c0 : c0 + w]
            for k in range(w):
                dtu[k] = xs[k] * us[k]
                y[k] = d_skip[k] * us[k]
            for n in range(n_state):
                bn = Bt[bi, gi, t, n]
                cn = Ct[bi, gi, t, n]
                _exp_lanes(xs, a[n], decay, ibuf, fview, ec, ebias, shift, precise)
                hn = h[n]
                for k in range(w):
                    hv = decay[k] * hn[k] + dtu[k] * bn
                    hn[k] = hv
                    y[k] += hv * cn
            out[bi, t, c0 : c0 + w] = y
        for n in range(n_state):
            for k in range(w):
                last[bi, c0 + k, n] = h[n, k]


def _scan_bwd_lanes(
    u, dt, At, Bt, Ct, D, block, chunk, ckpt, dout, dlast, du, ddt, dA_p, dBt_p, dCt_p, dD_p, ec, itmpl, ebias, shift,
    precise,
):  # fmt: skip
    """
    Backward kernel, channels as vector lanes (see :func:`_scan_fwd_lanes`; the same chunked recomputation and
    reverse scan as :func:`_scan_bwd`). Inputs as in the forward plus ``ckpt``, ``dout`` (b, L, d) and ``dlast``
    (b, d, N). Outputs: du, ddt (b, L, d); dA_p (b, d, N); dD_p (b, d); dBt_p, dCt_p (nblk, b, g, L, N), one slice
    per channel block, every element written (the block's sum over its channels).
    """
    b, length, d = u.shape
    n_state = At.shape[0]
    g = Bt.shape[1]
    dg = d // g
    nblk = (dg + block - 1) // block
    nchunks = ckpt.shape[2]
    for task in numba.prange(b * g * nblk):
        bi, gi, s, c0, w = _lane_task(task, g, nblk, dg, block)
        a = np.ascontiguousarray(At[:, c0 : c0 + w])
        d_skip = D[c0 : c0 + w]
        hs = np.empty((chunk + 1, n_state, w), dtype=u.dtype)  # states entering / after each step of a chunk
        aa = np.empty((chunk, n_state, w), dtype=u.dtype)  # decays exp(dt * A)
        gh = np.empty((n_state, w), dtype=u.dtype)  # state adjoint carried backwards
        dA_acc = np.zeros((n_state, w), dtype=u.dtype)
        dD_acc = np.zeros(w, dtype=u.dtype)
        dtu = np.empty(w, dtype=u.dtype)
        du_acc = np.empty(w, dtype=u.dtype)
        dt_acc = np.empty(w, dtype=u.dtype)
        ibuf = np.empty(w, dtype=itmpl.dtype)
        fview = ibuf.view(u.dtype)
        for n in range(n_state):
            for k in range(w):
                gh[n, k] = dlast[bi, c0 + k, n]
        for c in range(nchunks - 1, -1, -1):
            t0 = c * chunk
            m = min(chunk, length - t0)
            for n in range(n_state):
                for k in range(w):
                    hs[0, n, k] = ckpt[bi, c0 + k, c, n]
            for j in range(m):  # recompute the chunk's states from its checkpoint
                xs = dt[bi, t0 + j, c0 : c0 + w]
                us = u[bi, t0 + j, c0 : c0 + w]
                for k in range(w):
                    dtu[k] = xs[k] * us[k]
                for n in range(n_state):
                    bn = Bt[bi, gi, t0 + j, n]
                    _exp_lanes(xs, a[n], aa[j, n], ibuf, fview, ec, ebias, shift, precise)
                    h_in, h_out, an = hs[j, n], hs[j + 1, n], aa[j, n]
                    for k in range(w):
                        h_out[k] = an[k] * h_in[k] + dtu[k] * bn
            for j in range(m - 1, -1, -1):  # reverse scan over the chunk
                t = t0 + j
                xs = dt[bi, t, c0 : c0 + w]
                us = u[bi, t, c0 : c0 + w]
                gy = dout[bi, t, c0 : c0 + w]
                for k in range(w):
                    dD_acc[k] += gy[k] * us[k]
                    dtu[k] = xs[k] * us[k]
                    du_acc[k] = 0.0
                    dt_acc[k] = 0.0
                for n in range(n_state):
                    bn = Bt[bi, gi, t, n]
                    cn = Ct[bi, gi, t, n]
                    h_in, h_out, an, ghn_row, a_row, dA_row = hs[j, n], hs[j + 1, n], aa[j, n], gh[n], a[n], dA_acc[n]
                    sum_db = 0.0
                    sum_dc = 0.0
                    for k in range(w):
                        ghn = ghn_row[k] + gy[k] * cn
                        wk = ghn * an[k] * h_in[k]
                        sum_dc += gy[k] * h_out[k]
                        sum_db += ghn * dtu[k]
                        du_acc[k] += ghn * bn
                        dA_row[k] += wk * xs[k]
                        dt_acc[k] += wk * a_row[k] + ghn * us[k] * bn
                        ghn_row[k] = ghn * an[k]
                    dCt_p[s, bi, gi, t, n] = sum_dc
                    dBt_p[s, bi, gi, t, n] = sum_db
                for k in range(w):
                    du[bi, t, c0 + k] = gy[k] * d_skip[k] + du_acc[k] * xs[k]
                    ddt[bi, t, c0 + k] = dt_acc[k]
        for n in range(n_state):
            for k in range(w):
                dA_p[bi, c0 + k, n] = dA_acc[n, k]
        for k in range(w):
            dD_p[bi, c0 + k] = dD_acc[k]


if has_numba:
    _exp_reduce = numba.njit(fastmath=True, cache=True, inline="always")(_exp_reduce)
    _exp_poly13 = numba.njit(fastmath=True, cache=True, inline="always")(_exp_poly13)
    _exp_poly7 = numba.njit(fastmath=True, cache=True, inline="always")(_exp_poly7)
    _exp_scale = numba.njit(fastmath=True, cache=True, inline="always")(_exp_scale)
    _vexp = numba.njit(fastmath=True, cache=True, inline="always")(_vexp)
    _exp_lanes = numba.njit(fastmath=True, cache=True, inline="always")(_exp_lanes)
    _lane_task = numba.njit(cache=True, inline="always")(_lane_task)
    _scan_fwd_lanes_kernel = numba_jit(_scan_fwd_lanes)
    _scan_bwd_lanes_kernel = numba_jit(_scan_bwd_lanes)
    _scan_fwd_kernel = numba_jit(_scan_fwd)
    _scan_bwd_kernel = numba_jit(_scan_bwd)


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().numpy()


def _require_numba() -> None:
    if not has_numba:
        raise RuntimeError("selective_scan_cpu needs numba (`pip install numba`), which failed to import.")


def _check_chunk(chunk: int) -> None:
    if int(chunk) < 1:
        raise ValueError(f"selective_scan_cpu: `chunk` must be >= 1, got {chunk}.")


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: float64 for float64 inputs, float32 for every other floating dtype."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _prepare(u, delta, A, B, C, D, z, delta_bias) -> tuple[torch.Tensor, ...]:
    """
    The kernels' operands: contiguous compute-dtype tensors, with B and C made time-major
    (b, g, L, N) (g = 1 for ungrouped B, C), zeros for an absent D or delta_bias and an empty
    tensor for an absent z.
    """
    compute = _compute_dtype(u.dtype)
    d = u.shape[1]

    def prep(x):
        return x.detach().to(compute).contiguous()

    u_c = prep(u)
    D_c = prep(D) if D is not None else u_c.new_zeros(d)
    bias_c = prep(delta_bias) if delta_bias is not None else u_c.new_zeros(d)
    z_c = prep(z) if z is not None else u_c.new_zeros(0, 0, 0)
    return u_c, prep(delta), prep(A), _time_major_bc(B, compute), _time_major_bc(C, compute), D_c, z_c, bias_c


def _time_major_bc(x: torch.Tensor, compute: torch.dtype) -> torch.Tensor:
    """B or C, (b, N, L) or (b, g, N, L), as a contiguous time-major (b, g, L, N) tensor of the compute dtype."""
    x4 = x if x.dim() == 4 else x.unsqueeze(1)
    return x4.detach().to(compute).transpose(-1, -2).contiguous()


def _prepare_lanes(u, delta, A, B, C, D) -> tuple[torch.Tensor, ...]:
    """
    The lane kernels' operands (compute dtype, contiguous): u and the step sizes time-major (b, L, d) (a free view
    when they are (b, d, L) views of time-major tensors, as the Mamba mixer's are), A as (N, d), B and C time-major
    (b, g, L, N), D (zeros when absent).
    """
    compute = _compute_dtype(u.dtype)

    def time_major(x):
        return x.detach().to(compute).transpose(1, 2).contiguous()

    D_c = D.detach().to(compute).contiguous() if D is not None else u.new_zeros(u.shape[1], dtype=compute)
    A_t = A.detach().to(compute).t().contiguous()
    return time_major(u), time_major(delta), A_t, _time_major_bc(B, compute), _time_major_bc(C, compute), D_c


def _run_fwd(ops: tuple[torch.Tensor, ...], softplus: bool, has_z: bool, chunk: int, save_checkpoints: bool):
    """Forward kernel on :func:`_prepare`'s operands: (y, last state, checkpoints), all in the compute dtype."""
    u_c, delta_c, A_c, Bt, Ct, D_c, z_c, bias_c = ops
    b, d, length = u_c.shape
    n_state = A_c.shape[1]
    out = u_c.new_empty(b, d, length)
    last = u_c.new_empty(b, d, n_state)
    ckpt = u_c.new_empty(b, d, -(-length // chunk) if save_checkpoints else 0, n_state)
    ec, itype, ebias, shift = _exp_consts(u_c.dtype)
    with numba_launch():
        _scan_fwd_kernel(
            _np(u_c), _np(delta_c), _np(A_c), _np(Bt), _np(Ct), _np(D_c), _np(z_c), _np(bias_c),
            bool(softplus), bool(has_z), int(chunk), bool(save_checkpoints),
            _np(out), _np(last), _np(ckpt), _np(ec), _np(torch.zeros(1, dtype=itype)), ebias, shift,
        )  # fmt: skip
    return out, last, ckpt



LANES = 32
"""Channels per task of the lane kernels: 32 float32 lanes fill the vector loop the compiler builds (8 x 4)."""

_PER_CHANNEL_KERNELS = False


def _uses_lane_kernels(delta_softplus: bool, z: torch.Tensor | None, delta_bias: torch.Tensor | None) -> bool:
    """
    The operators run the lane kernels (channels as vector lanes) for plain step sizes, the call
    :func:`selective_scan_cpu` makes; with softplus, bias or a gate inside the kernel (mamba-monai 0.3's path, see
    :func:`pointwise_in_kernel`), or within :func:`per_channel_kernels`, the per-channel kernels.
    """
    return not (delta_softplus or z is not None or delta_bias is not None or _PER_CHANNEL_KERNELS)


def _lane_block(b: int, g: int, dg: int) -> int:
    """Channels per task: :data:`LANES`, fewer (down to 8) when that leaves threads idle, at most a group's ``dg``."""
    tasks_per_group = -(-numba_threads() // (b * g))
    return max(1, min(LANES, dg, max(8, -(-dg // tasks_per_group))))


def _run_fwd_lanes(ops: tuple[torch.Tensor, ...], chunk: int, save_checkpoints: bool):
    """Forward lane kernel on :func:`_prepare_lanes`' operands: (y as a (b, d, L) view of a time-major tensor, last
    state, checkpoints), all in the compute dtype."""
    u_t, dt_t, A_t, Bt, Ct, D_c = ops
    b, length, d = u_t.shape
    n_state = A_t.shape[0]
    out = u_t.new_empty(b, length, d)
    last = u_t.new_empty(b, d, n_state)
    ckpt = u_t.new_empty(b, d, -(-length // chunk) if save_checkpoints else 0, n_state)
    ec, itype, ebias, shift = _exp_consts(u_t.dtype)
    block = _lane_block(b, Bt.shape[1], d // Bt.shape[1])
    with numba_launch():
        _scan_fwd_lanes_kernel(
            _np(u_t), _np(dt_t), _np(A_t), _np(Bt), _np(Ct), _np(D_c), int(block), int(chunk), bool(save_checkpoints),
            _np(out), _np(last), _np(ckpt), _np(ec), _np(torch.zeros(1, dtype=itype)), ebias, shift,
            u_t.dtype == torch.float64,
        )  # fmt: skip
    return out.transpose(1, 2), last, ckpt


# Custom operators (torch.library), so that torch.jit.trace records one call of a registered op,
# which torch.jit.save can serialise and any process that imports mamba_monai can load and run.
_SCAN_ARGS = (
    "Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D, Tensor? z, Tensor? delta_bias, "
    "bool delta_softplus, int chunk"
)


@torch.library.custom_op(
    FWD_OP_NAME,
    mutates_args=(),
    device_types="cpu",
    schema=f"({_SCAN_ARGS}, bool save_checkpoints) -> (Tensor, Tensor, Tensor)",
)
def selective_scan_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk, save_checkpoints):
    """
    Forward of the fused CPU selective scan (operator ``mamba_monai::selective_scan_fwd``).

    Inputs as in :func:`selective_scan_cpu`; ``save_checkpoints`` keeps the state entering every
    chunk of ``chunk`` steps, for the backward.

    Returns:
        y (b, d, L) in the dtype of ``u``; the last state (b, d, n) and the checkpoints
        (b, d, ceil(L / chunk), n), or (b, d, 0, n) without ``save_checkpoints`` (and always on devices other
        than CPU, see :func:`_selective_scan_fwd_other_devices`), in the compute dtype.
    """
    _require_numba()
    _check_chunk(chunk)
    if _uses_lane_kernels(delta_softplus, z, delta_bias):
        out, last, ckpt = _run_fwd_lanes(_prepare_lanes(u, delta, A, B, C, D), chunk, save_checkpoints)
    else:
        ops = _prepare(u, delta, A, B, C, D, z, delta_bias)
        out, last, ckpt = _run_fwd(ops, delta_softplus, z is not None, chunk, save_checkpoints)
    return out.to(u.dtype), last, ckpt


@selective_scan_fwd.register_kernel(None)  # every device without a kernel of its own (CPU has the numba one)
def _selective_scan_fwd_other_devices(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk, save_checkpoints):
    """
    The forward operator on devices other than CPU, reached from TorchScript (eager Python picks its backend in
    :func:`mamba_monai.ops.selective_scan`): mamba_ssm's ``selective_scan_fn`` for CUDA tensors when it imports and
    supports the dtype, else :func:`~mamba_monai.ops.selective_scan_ref`. Returns y, the last state (compute dtype)
    and no checkpoints, (b, d, 0, n): the gradient reruns this forward (:func:`_grads_by_recompute`).
    """
    _check_chunk(chunk)
    compute = _compute_dtype(u.dtype)
    scan = _other_device_scan(u, need_last_state_grad=False)
    y, last = scan(u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus), True)
    b, d = u.shape[0], u.shape[1]
    return y.to(u.dtype), last.to(compute), u.new_empty(b, d, 0, A.shape[1], dtype=compute)


def _other_device_scan(u: torch.Tensor, need_last_state_grad: bool):
    """mamba_ssm's ``selective_scan_fn`` for CUDA tensors of a supported dtype (when importable and no gradient has
    to flow from the last state, which its backward ignores), else the reference."""
    fn = mamba_ssm_scan_fn() if u.is_cuda and u.dtype in MAMBA_SSM_DTYPES and not need_last_state_grad else None
    return fn if fn is not None else selective_scan_ref


def _grads_by_recompute(inputs, softplus: bool, dy: torch.Tensor, dlast: torch.Tensor | None) -> list:
    """
    Gradients of the scan w.r.t. ``inputs`` (u, delta, A, B, C, D, z, delta_bias; None where absent) on devices
    without a fused backward here: the forward of :func:`_other_device_scan` is rerun under autograd (mamba_ssm's
    own CUDA backward, or autograd through the reference) and differentiated. None for an absent input.
    """
    leaves = [None if x is None else x.detach().requires_grad_(True) for x in inputs]
    present = [x for x in leaves if x is not None]
    with torch.enable_grad():
        scan = _other_device_scan(inputs[0], need_last_state_grad=dlast is not None)
        y, last = scan(*leaves, softplus, True)
        outputs, grad_outputs = [y], [dy.to(y.dtype)]
        if dlast is not None:
            outputs.append(last)
            grad_outputs.append(dlast.to(last.dtype))
        grads = iter(torch.autograd.grad(outputs, present, grad_outputs, allow_unused=True))
    out = []
    for x in leaves:
        g = None if x is None else next(grads)
        out.append(torch.zeros_like(x) if x is not None and g is None else g)
    return out


@selective_scan_fwd.register_fake
def _selective_scan_fwd_fake(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk, save_checkpoints):
    b, d, length = u.shape
    n_state = A.shape[1]
    compute = _compute_dtype(u.dtype)
    on_cpu = u.device.type == "cpu"
    nchunks = -(-length // chunk) if save_checkpoints and on_cpu else 0  # see the other-device kernel
    lanes = on_cpu and _uses_lane_kernels(delta_softplus, z, delta_bias)
    return (
        u.new_empty(b, length, d).transpose(1, 2) if lanes else u.new_empty(b, d, length),
        u.new_empty(b, d, n_state, dtype=compute),
        u.new_empty(b, d, nchunks, n_state, dtype=compute),
    )


@torch.library.custom_op(
    BWD_OP_NAME,
    mutates_args=(),
    device_types="cpu",
    schema=f"({_SCAN_ARGS}, Tensor checkpoints, Tensor dout, Tensor? dlast) -> "
    "(Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
)
def selective_scan_bwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk, checkpoints, dout, dlast):
    """
    Backward of the fused CPU selective scan (operator ``mamba_monai::selective_scan_bwd``).

    Inputs as in :func:`selective_scan_fwd`, plus ``checkpoints`` from it (an empty (b, d, 0, n)
    tensor makes the backward recompute them), ``dout`` (b, d, L), the gradient of y, and ``dlast``
    (b, d, n), the gradient of the last state (None: zero).

    Returns:
        du, ddelta (b, d, L); dA (d, n); dB, dC in the layout of B and C; dD, ddelta_bias (d,);
        dz (b, d, L), or an empty (0,) tensor when ``z`` is None. All in the compute dtype (the
        gradients of an absent D or delta_bias are those of a zero one).
    """
    _require_numba()
    _check_chunk(chunk)
    if _uses_lane_kernels(delta_softplus, z, delta_bias):
        return _bwd_lanes(u, delta, A, B, C, D, chunk, checkpoints, dout, dlast)
    return _bwd_per_channel(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk, checkpoints, dout, dlast)


def _forward_checkpoints(checkpoints: torch.Tensor, shape: tuple[int, ...], compute: torch.dtype, recompute):
    """The forward's checkpoints in the compute dtype, ``recompute()`` when the forward kept none, or a clear error."""
    if checkpoints.shape[2] == 0 and shape[2] > 0:  # the forward ran without checkpoints
        return recompute()
    if tuple(checkpoints.shape) == shape:
        return checkpoints.detach().to(compute).contiguous()
    raise ValueError(
        f"selective_scan_bwd: `checkpoints` must be (b, d, ceil(L / chunk), n) = {shape} "
        f"or (b, d, 0, n), got {tuple(checkpoints.shape)}."
    )


def _bwd_lanes(u, delta, A, B, C, D, chunk, checkpoints, dout, dlast):
    """:func:`selective_scan_bwd` by the lane kernel (plain step sizes, no gate): du and ddelta as (b, d, L) views of
    time-major tensors."""
    ops = _prepare_lanes(u, delta, A, B, C, D)
    u_t, dt_t, A_t, Bt, Ct, D_c = ops
    b, length, d = u_t.shape
    g, n_state = Bt.shape[1], A_t.shape[0]
    compute = u_t.dtype
    shape = (b, d, -(-length // chunk), n_state)
    ckpt = _forward_checkpoints(checkpoints, shape, compute, lambda: _run_fwd_lanes(ops, chunk, True)[2])
    dout_t = dout.detach().to(compute).transpose(1, 2).contiguous()
    dlast_c = dlast.detach().to(compute).contiguous() if dlast is not None else u_t.new_zeros(b, d, n_state)
    block = _lane_block(b, g, d // g)
    nblk = -(-(d // g) // block)
    du, ddt = torch.empty_like(u_t), torch.empty_like(u_t)
    dA_p, dD_p = u_t.new_empty(b, d, n_state), u_t.new_empty(b, d)
    make = u_t.new_empty if length > 0 else u_t.new_zeros  # the kernel writes every element when L > 0
    dBt_p, dCt_p = make(nblk, b, g, length, n_state), make(nblk, b, g, length, n_state)
    ec, itype, ebias, shift = _exp_consts(compute)
    with numba_launch():
        _scan_bwd_lanes_kernel(
            _np(u_t), _np(dt_t), _np(A_t), _np(Bt), _np(Ct), _np(D_c), int(block), int(chunk), _np(ckpt),
            _np(dout_t), _np(dlast_c), _np(du), _np(ddt), _np(dA_p), _np(dBt_p), _np(dCt_p), _np(dD_p),
            _np(ec), _np(torch.zeros(1, dtype=itype)), ebias, shift, compute == torch.float64,
        )  # fmt: skip
    dB = dBt_p.sum(0).transpose(-1, -2).reshape(B.shape).contiguous()  # (b, g, N, L) -> layout of B
    dC = dCt_p.sum(0).transpose(-1, -2).reshape(C.shape).contiguous()
    ddelta = ddt.transpose(1, 2)
    return du.transpose(1, 2), ddelta, dA_p.sum(0), dB, dC, dD_p.sum(0), u_t.new_empty(0), ddelta.sum((0, 2))


def _bwd_per_channel(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk, checkpoints, dout, dlast):
    """:func:`selective_scan_bwd` by the per-channel kernel (softplus, bias and gate inside)."""
    ops = _prepare(u, delta, A, B, C, D, z, delta_bias)
    u_c, delta_c, A_c, Bt, Ct, D_c, z_c, bias_c = ops
    b, d, length = u_c.shape
    g, n_state = Bt.shape[1], Bt.shape[3]
    compute = u_c.dtype
    has_z = z is not None
    shape = (b, d, -(-length // chunk), n_state)
    ckpt = _forward_checkpoints(checkpoints, shape, compute, lambda: _run_fwd(ops, delta_softplus, has_z, chunk, True)[2])
    dout_c = dout.detach().to(compute).contiguous()
    dlast_c = dlast.detach().to(compute).contiguous() if dlast is not None else u_c.new_zeros(b, d, n_state)
    nthreads = numba_threads()
    dg = d // g
    nseg = min(dg, max(1, math.ceil(2 * nthreads / (b * g))))
    du = torch.empty_like(u_c)
    ddelta = torch.empty_like(u_c)
    dz = torch.empty_like(u_c) if has_z else u_c.new_zeros(0, 0, 0)
    dA_p = u_c.new_empty(b, d, n_state)
    dD_p = u_c.new_empty(b, d)
    dbias_p = u_c.new_empty(b, d)
    dBt_p = u_c.new_zeros(nseg, b, g, length, n_state)
    dCt_p = u_c.new_zeros(nseg, b, g, length, n_state)
    ec, itype, ebias, shift = _exp_consts(compute)
    with numba_launch():
        _scan_bwd_kernel(
            _np(u_c), _np(delta_c), _np(A_c), _np(Bt), _np(Ct), _np(D_c), _np(z_c), _np(bias_c),
            bool(delta_softplus), has_z, int(chunk), _np(ckpt), _np(dout_c), _np(dlast_c), int(nseg),
            _np(du), _np(ddelta), _np(dA_p), _np(dBt_p), _np(dCt_p), _np(dD_p), _np(dbias_p), _np(dz),
            _np(ec), _np(torch.zeros(1, dtype=itype)), ebias, shift,
        )  # fmt: skip
    dB = dBt_p.sum(0).transpose(-1, -2).reshape(B.shape).contiguous()  # (b, g, N, L) -> layout of B
    dC = dCt_p.sum(0).transpose(-1, -2).reshape(C.shape).contiguous()
    dz = dz if has_z else u_c.new_empty(0)
    return du, ddelta, dA_p.sum(0), dB, dC, dD_p.sum(0), dz, dbias_p.sum(0)


@selective_scan_bwd.register_fake
def _selective_scan_bwd_fake(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk, checkpoints, dout, dlast):
    compute = _compute_dtype(u.dtype)

    def like(x):
        return torch.empty(x.shape, dtype=compute, device=x.device)

    def like_u():  # the lane kernels' du and ddelta are (b, d, L) views of time-major tensors
        if not _uses_lane_kernels(delta_softplus, z, delta_bias):
            return like(u)
        b, d, length = u.shape
        return torch.empty(b, length, d, dtype=compute, device=u.device).transpose(1, 2)

    d = u.shape[1]
    dz = like(u) if z is not None else u.new_empty(0, dtype=compute)
    return like_u(), like_u(), like(A), like(B), like(C), u.new_empty(d, dtype=compute), dz, u.new_empty(d, dtype=compute)


def _setup_context(ctx, inputs, output) -> None:
    u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk, _ = inputs
    ctx.mark_non_differentiable(output[2])  # the checkpoints
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, output[2])
    ctx.softplus, ctx.chunk = bool(delta_softplus), int(chunk)


def _backward(ctx, dy, dlast, _dckpt):
    """Gradients of the fused scan, each in its input's dtype (bf16 under autocast), None for the flags."""
    u, delta, A, B, C, D, z, delta_bias, ckpt = ctx.saved_tensors
    inputs = (u, delta, A, B, C, D, z, delta_bias)
    if dy is None:  # only the last state is used
        dy = torch.zeros_like(u, dtype=_compute_dtype(u.dtype))
    if u.device.type == "cpu":
        grads = selective_scan_bwd(*inputs, ctx.softplus, ctx.chunk, ckpt, dy, dlast)
    else:  # the other-device kernel (TorchScript on CUDA and others)
        grads = _grads_by_recompute(inputs, ctx.softplus, dy, dlast)
    need = ctx.needs_input_grad
    out = [g.to(x.dtype) if need[i] and x is not None else None for i, (g, x) in enumerate(zip(grads, inputs))]
    return (*out, None, None, None)


selective_scan_fwd.register_autograd(_backward, setup_context=_setup_context)


def selective_scan_cpu(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    chunk: int = CHUNK_SIZE,
):
    """
    Selective scan of CPU tensors with the fused numba kernels (see the module docstring), through
    the custom operator ``mamba_monai::selective_scan_fwd`` (one autograd node, whatever L is; its
    backward is ``mamba_monai::selective_scan_bwd``). ``torch.jit.trace`` records the operator, so a
    traced network saves with ``torch.jit.save`` and loads in any process that imports ``mamba_monai``.

    Arguments and shapes as in :func:`mamba_monai.ops.selective_scan`; ``chunk`` is the number of
    steps between forward checkpoints. Unlike mamba_ssm's kernel, a gradient flowing into the
    returned last state is propagated too. Shapes are assumed checked by the caller.

    Returns:
        y (b, d, L) in the dtype of ``u``; and the last state (b, d, n) in the compute dtype
        (float32, or float64 for float64 ``u``) when ``return_last_state``.
    """
    _require_numba()
    _check_chunk(chunk)
    if _POINTWISE_IN_KERNEL:
        return _selective_scan_cpu_v03(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, chunk)
    compute = _compute_dtype(u.dtype)
    dt = step_sizes(delta, delta_bias, delta_softplus, compute)
    u_c = u.to(compute)
    need_grad = _keep_checkpoints(u_c, dt, A, B, C, D)
    y, last, _ = selective_scan_fwd(u_c, dt, A, B, C, D, None, None, False, int(chunk), need_grad)
    y = gate(y, z, u.dtype)
    if return_last_state:
        return y, last
    return y


def _keep_checkpoints(*tensors: torch.Tensor | None) -> bool:
    """Whether the forward saves checkpoints for a backward: a gradient is needed, or a trace is being recorded (the
    traced graph keeps them whatever the grad mode while tracing: torch.jit.trace checks its graph under no_grad, and
    a loaded trace may be trained; they are 1/chunk of the states)."""
    need_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    return bool(need_grad or torch.jit.is_tracing())


_POINTWISE_IN_KERNEL = False


@contextlib.contextmanager
def pointwise_in_kernel() -> Iterator[None]:
    """
    Within this context :func:`selective_scan_cpu` runs mamba-monai 0.3's path: softplus and the ``silu(z)`` gate
    computed inside the kernels, per step. Kept so that benchmarks can time it beside today's path in one run
    (``benchmarks/bench_emnet.py``); the values agree to float32 rounding. Not thread-safe.
    """
    global _POINTWISE_IN_KERNEL
    previous, _POINTWISE_IN_KERNEL = _POINTWISE_IN_KERNEL, True
    try:
        yield
    finally:
        _POINTWISE_IN_KERNEL = previous


@contextlib.contextmanager
def per_channel_kernels() -> Iterator[None]:
    """
    Within this context :func:`selective_scan_cpu` runs mamba-monai 0.3.7's kernels: one task per (batch, channel)
    recurrence with its N states as the inner loop (scalar code for N = 16), instead of the lane kernels. Kept so
    that benchmarks can time both in one run; the values agree to float32 rounding. Not thread-safe.
    """
    global _PER_CHANNEL_KERNELS
    previous, _PER_CHANNEL_KERNELS = _PER_CHANNEL_KERNELS, True
    try:
        yield
    finally:
        _PER_CHANNEL_KERNELS = previous


def _selective_scan_cpu_v03(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, chunk):
    need_grad = _keep_checkpoints(u, delta, A, B, C, D, z, delta_bias)
    y, last, _ = selective_scan_fwd(u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus), int(chunk), need_grad)
    return (y, last) if return_last_state else y


def step_sizes(
    delta: torch.Tensor, delta_bias: torch.Tensor | None, delta_softplus: bool, dtype: torch.dtype
) -> torch.Tensor:
    """
    ``softplus(delta + delta_bias)`` (softplus optional), (b, d, L) in ``dtype``, by vectorised torch ops.

    :func:`selective_scan_cpu` (and the TorchScript path on CPU) feeds these to the kernels, with the ``silu(z)``
    gate applied after them (:func:`gate`): a scalar ``log1p``/``exp`` per step inside the recurrence cost more than
    the N-wide state update itself. The kernels' own softplus and gate remain for the operator called with them and
    for :func:`pointwise_in_kernel`.
    """
    dt = delta.to(dtype)
    if delta_bias is not None:
        dt = dt + delta_bias.to(dtype).unsqueeze(-1)
    return F.softplus(dt) if delta_softplus else dt


def gate(y: torch.Tensor, z: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """``y * silu(z)`` in ``y``'s (compute) dtype, then cast to ``dtype``; ``y`` alone, cast, when ``z`` is None."""
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y.to(dtype)
