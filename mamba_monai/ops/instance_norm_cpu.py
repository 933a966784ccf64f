"""
Instance normalisation fused with a leaky ReLU, for channels-last CPU tensors: numba kernels registered as the
PyTorch custom operators ``mamba_monai::instance_norm_act_fwd`` and ``mamba_monai::instance_norm_act_bwd`` (the second
is the autograd formula of the first), so a network that calls them scripts with ``torch.jit.script``.

Per sample ``b`` and channel ``c``, over all spatial positions:
``y = act(w_c * (x - mean_bc) * rstd_bc + bias_c)`` with ``rstd = 1 / sqrt(var + eps)`` (biased variance, as
``InstanceNorm`` / ``GroupNorm(C, C)``) and ``act(z) = z if z > 0 else negative_slope * z`` (``negative_slope`` 1.0:
no activation).

Why: in EMNet's full-resolution branch (8 channels at the whole ROI, channels-last for oneDNN's convolutions) PyTorch's
channels-last ``GroupNorm`` backward and the leaky ReLU backward took more time than the branch's convolutions' forward
(``benchmarks/profile_emnet_step.py``). Here the channels are the innermost axis of the (B, S, C) view, one pass
reads ``x`` for the statistics and one writes ``y``; the backward recomputes the normalised input and the activation's
slope from ``x`` (nothing else saved) in two passes. Statistics and the backward's sums are accumulated in float64
(from float32 sums of 256 positions), one partial per (sample, chunk of positions): the result does not depend on the thread count.
"""

from __future__ import annotations

import numpy as np
import torch

from .utils import has_numba, numba, numba_jit, numba_launch, numba_threads

__all__ = ["instance_norm_act", "FWD_OP_NAME", "BWD_OP_NAME"]

FWD_OP_NAME = "mamba_monai::instance_norm_act_fwd"
BWD_OP_NAME = "mamba_monai::instance_norm_act_bwd"

_BLOCK = 256
"""Positions summed in float32 before each float64 accumulation (exact enough, and the inner loop vectorises)."""


def _chunk_bounds(j, nchunk, length):
    step = (length + nchunk - 1) // nchunk
    return j * step, min(length, (j + 1) * step)


def _partial_sums(x, dy, mean, rstd, weight, bias, slope, grads, nchunk):
    """(B, nchunk, 2, C) float64 sums over each chunk of positions: of x and x * x, or, with ``grads``, of the
    pre-activation gradient dz and dz * xhat (the backward's reductions)."""
    n_b, length, n_c = x.shape
    part = np.zeros((n_b, nchunk, 2, n_c))
    for k in numba.prange(n_b * nchunk):
        b, j = k // nchunk, k % nchunk
        s0, s1 = _chunk_bounds(j, nchunk, length)
        block = np.empty((2, n_c), dtype=np.float32)
        for start in range(s0, s1, _BLOCK):
            block[:] = 0.0
            for s in range(start, min(s1, start + _BLOCK)):
                for c in range(n_c):
                    if grads:
                        xhat, g = _pre_activation_grad(x, dy, mean, rstd, weight, bias, slope, b, s, c)
                        block[0, c] += g
                        block[1, c] += g * xhat
                    else:
                        v = x[b, s, c]
                        block[0, c] += v
                        block[1, c] += v * v
            part[b, j] += block
    return part


def _normalise(x, mean, rstd, weight, bias, slope, nchunk, y):
    n_b, length, n_c = x.shape
    scale = (rstd * weight).astype(np.float32)
    shift = (bias - mean * rstd * weight).astype(np.float32)
    for k in numba.prange(n_b * nchunk):
        b, j = k // nchunk, k % nchunk
        s0, s1 = _chunk_bounds(j, nchunk, length)
        for s in range(s0, s1):
            for c in range(n_c):
                z = x[b, s, c] * scale[b, c] + shift[b, c]
                y[b, s, c] = z if z > 0 else z * slope


def _pre_activation_grad(x, dy, mean, rstd, weight, bias, slope, b, s, c):
    """(xhat, dz) at one element: the normalised input and the gradient before the activation."""
    xhat = (x[b, s, c] - mean[b, c]) * rstd[b, c]
    g = dy[b, s, c]
    if xhat * weight[c] + bias[c] <= 0:
        g = g * slope
    return xhat, g


def _input_grad(x, dy, mean, rstd, weight, bias, slope, mean_dz, mean_dz_xhat, nchunk, dx):
    """dx = w * rstd * (dz - mean(dz) - xhat * mean(dz * xhat)), all (B, C) arguments float32."""
    n_b, length, n_c = x.shape
    for k in numba.prange(n_b * nchunk):
        b, j = k // nchunk, k % nchunk
        s0, s1 = _chunk_bounds(j, nchunk, length)
        for s in range(s0, s1):
            for c in range(n_c):
                xhat, g = _pre_activation_grad(x, dy, mean, rstd, weight, bias, slope, b, s, c)
                dx[b, s, c] = weight[c] * rstd[b, c] * (g - mean_dz[b, c] - xhat * mean_dz_xhat[b, c])


if has_numba:
    _chunk_bounds = numba.njit(inline="always")(_chunk_bounds)
    _pre_activation_grad = numba.njit(inline="always")(_pre_activation_grad)
    _partial_sums_kernel = numba_jit(_partial_sums)
    _normalise_kernel = numba_jit(_normalise)
    _input_grad_kernel = numba_jit(_input_grad)


def _chunks(batch: int, length: int) -> int:
    """Chunks of positions per sample: enough tasks for every thread (4 each), none empty."""
    return max(1, min(length, -(-4 * numba_threads() // batch)))


def _channels_last_rows(t: torch.Tensor) -> torch.Tensor:
    """(B, C, *spatial) as its (B, S, C) float32 view, copied only when ``t`` is not channels-last already."""
    return t.detach().movedim(1, -1).reshape(t.shape[0], -1, t.shape[1]).float()


def _channels_last_empty(like: torch.Tensor) -> torch.Tensor:
    """An empty tensor of ``like``'s shape in the channels-last layout (channels the innermost axis)."""
    order = [0, *range(2, like.dim()), 1]
    return torch.empty_permuted(like.shape, order, dtype=torch.float32, device=like.device)


def _affine(weight: torch.Tensor | None, bias: torch.Tensor | None, channels: int) -> tuple[np.ndarray, np.ndarray]:
    w = weight.detach().double().numpy() if weight is not None else np.ones(channels)
    b = bias.detach().double().numpy() if bias is not None else np.zeros(channels)
    return w, b


def _check(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None) -> None:
    if not has_numba:
        raise RuntimeError("instance_norm_act needs numba (`pip install numba`), which failed to import.")
    if x.dim() < 3 or x.dtype != torch.float32:
        raise ValueError(f"instance_norm_act: expected a float32 (B, C, *spatial) tensor, got {x.dtype} {tuple(x.shape)}.")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and tuple(p.shape) != (x.shape[1],):
            raise ValueError(f"instance_norm_act: `{name}` must have shape ({x.shape[1]},), got {tuple(p.shape)}.")


@torch.library.custom_op(
    FWD_OP_NAME,
    mutates_args=(),
    device_types="cpu",
    schema="(Tensor x, Tensor? weight, Tensor? bias, float eps, float negative_slope) -> (Tensor, Tensor, Tensor)",
)
def instance_norm_act_fwd(x, weight, bias, eps, negative_slope):
    """
    Forward (operator ``mamba_monai::instance_norm_act_fwd``).

    Args:
        x: (B, C, *spatial) float32, any layout (fastest channels-last).
        weight, bias: (C,) or None.
        eps: added to the variance.
        negative_slope: the leaky ReLU's slope for negative inputs (1.0: none).

    Returns:
        y (B, C, *spatial) channels-last, and the per-sample mean and rstd (B, C) (float64) for the backward.
    """
    _check(x, weight, bias)
    rows = _channels_last_rows(x)
    batch, length, channels = rows.shape
    y = _channels_last_empty(x)
    w, b = _affine(weight, bias, channels)
    nchunk = _chunks(batch, length)
    slope = np.float32(negative_slope)
    x_np = rows.numpy()
    with numba_launch():
        sums = _partial_sums_kernel(x_np, x_np, np.zeros((batch, channels), np.float32),
                                    np.zeros((batch, channels), np.float32), w.astype(np.float32),
                                    b.astype(np.float32), slope, False, nchunk).sum(1) / length
        var = np.maximum(sums[:, 1] - sums[:, 0] ** 2, 0.0)
        mean, rstd = torch.from_numpy(sums[:, 0].copy()), torch.from_numpy(1.0 / np.sqrt(var + eps))
        _normalise_kernel(x_np, mean.numpy(), rstd.numpy(), w, b, slope, nchunk,
                          y.movedim(1, -1).view(batch, length, channels).numpy())
    return y, mean, rstd


@instance_norm_act_fwd.register_fake
def _instance_norm_act_fwd_fake(x, weight, bias, eps, negative_slope):
    stats = x.new_empty(x.shape[0], x.shape[1], dtype=torch.float64)
    return _channels_last_empty(x), stats, stats.clone()


@torch.library.custom_op(
    BWD_OP_NAME,
    mutates_args=(),
    device_types="cpu",
    schema="(Tensor x, Tensor? weight, Tensor? bias, Tensor mean, Tensor rstd, float negative_slope, Tensor dy) "
    "-> (Tensor, Tensor, Tensor)",
)
def instance_norm_act_bwd(x, weight, bias, mean, rstd, negative_slope, dy):
    """
    Backward (operator ``mamba_monai::instance_norm_act_bwd``): dx (B, C, *spatial) channels-last, and the gradients
    of ``weight`` and ``bias`` (C,) (zeros when they are None).
    """
    rows = _channels_last_rows(x)
    batch, length, channels = rows.shape
    dy_rows = _channels_last_rows(dy).contiguous()
    dx = _channels_last_empty(x)
    w, b = _affine(weight, bias, channels)
    nchunk = _chunks(batch, length)
    kernel_args = (rows.numpy(), dy_rows.numpy(), mean.numpy().astype(np.float32),
                   rstd.numpy().astype(np.float32), w.astype(np.float32), b.astype(np.float32),
                   np.float32(negative_slope))
    with numba_launch():
        sums = _partial_sums_kernel(*kernel_args, True, nchunk).sum(1)  # (B, 2, C): sum(dz), sum(dz * xhat)
        means = (sums / length).astype(np.float32)
        _input_grad_kernel(*kernel_args, means[:, 0].copy(), means[:, 1].copy(), nchunk,
                           dx.movedim(1, -1).view(batch, length, channels).numpy())
    dbias, dweight = torch.from_numpy(sums[:, 0].sum(0)), torch.from_numpy(sums[:, 1].sum(0))
    return dx, dweight.float(), dbias.float()


@instance_norm_act_bwd.register_fake
def _instance_norm_act_bwd_fake(x, weight, bias, mean, rstd, negative_slope, dy):
    return _channels_last_empty(x), x.new_empty(x.shape[1]), x.new_empty(x.shape[1])


def _setup_context(ctx, inputs, output) -> None:
    x, weight, bias, _eps, negative_slope = inputs
    ctx.mark_non_differentiable(output[1], output[2])
    ctx.save_for_backward(x, weight, bias, output[1], output[2])
    ctx.negative_slope = float(negative_slope)


def _autograd_backward(ctx, dy, _dmean, _drstd):
    x, weight, bias, mean, rstd = ctx.saved_tensors
    dx, dweight, dbias = instance_norm_act_bwd(x, weight, bias, mean, rstd, ctx.negative_slope, dy)
    need = ctx.needs_input_grad
    return (
        dx if need[0] else None,
        dweight.to(weight.dtype) if need[1] and weight is not None else None,
        dbias.to(bias.dtype) if need[2] and bias is not None else None,
        None,
        None,
    )


instance_norm_act_fwd.register_autograd(_autograd_backward, setup_context=_setup_context)


def instance_norm_act(
    x: torch.Tensor,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
    negative_slope: float = 1.0,
) -> torch.Tensor:
    """
    ``leaky_relu(instance_norm(x) * weight + bias, negative_slope)`` of a float32 CPU tensor with the fused kernels;
    the result is channels-last. Differentiable in ``x``, ``weight`` and ``bias``.

    Args:
        x: (B, C, *spatial), at least one spatial axis.
        weight, bias: (C,) affine parameters, or None.
        eps: added to the (biased) variance.
        negative_slope: slope for negative inputs; 1.0 is no activation, 0.0 a ReLU.
    """
    return instance_norm_act_fwd(x, weight, bias, float(eps), float(negative_slope))[0]
