"""
Selective scan entry point: picks a backend at run time.

Backends:

- ``"cuda"``: mamba_ssm's fused CUDA kernel (``mamba_ssm.ops.selective_scan_interface.selective_scan_fn``),
  used when mamba_ssm imports and the tensors are on a CUDA device.
- ``"cpu"``: our fused numba kernel with a hand-written reverse-scan backward
  (:mod:`mamba_monai.ops.selective_scan_cpu`), for CPU tensors. It runs as the registered custom
  operator ``mamba_monai::selective_scan_fwd`` (backward: ``mamba_monai::selective_scan_bwd``), so a
  network traced with ``torch.jit.trace`` (e.g. ``monai.bundle.ckpt_export(..., use_trace=True)``)
  saves, and loads in any process that has imported ``mamba_monai``.
- ``"ref"``: the plain PyTorch reference (:func:`mamba_monai.ops.selective_scan_ref`), any device.

TorchScript: layers call :func:`scriptable_selective_scan`. Run as Python it is :func:`selective_scan` (the
dispatch above); compiled by ``torch.jit.script`` it calls the registered operator
``torch.ops.mamba_monai.selective_scan_fwd`` directly, which runs the numba kernel for CPU tensors and, on any
other device, mamba_ssm's kernel (CUDA, when importable) or the reference; its backward is registered with
it. A scripted network therefore saves, and loads and trains in any process that imports ``mamba_monai``.

``backend=None`` reads the environment variable ``MAMBA_MONAI_SCAN_BACKEND`` (``auto``, ``cuda``,
``cpu`` or ``ref``; unset means ``auto``). ``auto`` takes ``cuda`` for CUDA tensors when mamba_ssm is
there (and the dtype is one it supports), ``cpu`` for CPU tensors when numba is there, else ``ref``.
A backend that is forced but cannot run raises a ``RuntimeError`` that says why.
"""

from __future__ import annotations

import os

import torch

from .selective_scan_cpu import CHUNK_SIZE, gate, has_numba, selective_scan_cpu, step_sizes
from .selective_scan_ref import _check_inputs, selective_scan_ref
from .utils import MAMBA_SSM_DTYPES as _CUDA_DTYPES
from .utils import mamba_ssm_scan_fn as _get_mamba_ssm_scan

__all__ = ["selective_scan", "scriptable_selective_scan", "available_backends", "BACKENDS", "ENV_VAR"]

ENV_VAR = "MAMBA_MONAI_SCAN_BACKEND"
BACKENDS = ("auto", "cuda", "cpu", "ref")


def available_backends() -> list[str]:
    """Backends that can run in this process (for some device): a subset of ``["cuda", "cpu", "ref"]``."""
    names = []
    if _get_mamba_ssm_scan() is not None and torch.cuda.is_available():
        names.append("cuda")
    if has_numba:
        names.append("cpu")
    names.append("ref")
    return names


def _resolve_backend(backend: str | None, u: torch.Tensor) -> str:
    source = "argument `backend`"
    if backend is None:
        backend = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
        source = f"environment variable {ENV_VAR}"
    if backend not in BACKENDS:
        raise ValueError(f"selective_scan: {source} must be one of {BACKENDS}, got {backend!r}.")
    if backend == "auto":
        if u.is_cuda and u.dtype in _CUDA_DTYPES and _get_mamba_ssm_scan() is not None:
            return "cuda"
        if u.device.type == "cpu" and has_numba:
            return "cpu"
        return "ref"
    if backend == "cuda":
        if _get_mamba_ssm_scan() is None:
            raise RuntimeError(
                f"selective_scan: backend 'cuda' was forced ({source}) but mamba_ssm's selective_scan_fn "
                "cannot be imported (install the `cuda` extra: mamba-ssm with its compiled CUDA ops)."
            )
        if not u.is_cuda:
            raise RuntimeError(f"selective_scan: backend 'cuda' was forced ({source}) but the tensors are on {u.device}.")
        if u.dtype not in _CUDA_DTYPES:
            raise RuntimeError(
                f"selective_scan: backend 'cuda' was forced ({source}) but mamba_ssm supports {_CUDA_DTYPES}, got {u.dtype}."
            )
    elif backend == "cpu":
        if not has_numba:
            raise RuntimeError(f"selective_scan: backend 'cpu' was forced ({source}) but numba cannot be imported.")
        if u.device.type != "cpu":
            raise RuntimeError(f"selective_scan: backend 'cpu' was forced ({source}) but the tensors are on {u.device}.")
    return backend


def selective_scan(
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
    backend: str | None = None,
):
    """
    Selective scan (the S6 recurrence of Mamba, https://arxiv.org/abs/2312.00752) with mamba_ssm's
    ``selective_scan_fn`` semantics, on the fastest backend available for the tensors' device.

    For each batch row and channel, with ``dt = softplus(delta + delta_bias)`` (softplus optional):
    ``h_t = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t``, ``y_t = <C_t, h_t> + D * u_t``, then
    ``y *= silu(z)``. Accumulation is float32 (float64 for float64 ``u``); half and bfloat16 inputs
    (e.g. under ``torch.autocast``) return ``y`` in ``u``'s dtype and gradients in each input's dtype.

    Args:
        u: input, (b, d, L).
        delta: step sizes, (b, d, L).
        A: diagonal state matrix, real, (d, n).
        B: input projection, (b, n, L) or grouped (b, g, n, L) with ``d`` divisible by ``g``.
        C: output projection, same layout as ``B``.
        D: skip weight, (d,). Defaults to None (no skip).
        z: gate, (b, d, L). Defaults to None (no gate).
        delta_bias: added to ``delta``, (d,). Defaults to None.
        delta_softplus: apply softplus to ``delta + delta_bias``. Defaults to False.
        return_last_state: also return the final state, (b, d, n). Defaults to False.
        backend: ``"auto"``, ``"cuda"``, ``"cpu"`` or ``"ref"``; None reads ``MAMBA_MONAI_SCAN_BACKEND``
            (default ``"auto"``). See the module docstring.

    Returns:
        y, (b, d, L) in the dtype of ``u``; with ``return_last_state``, ``(y, last_state)``.

    Raises:
        ValueError: wrong input shapes (see ``_check_inputs``) or an unknown backend name.
        RuntimeError: a forced backend cannot run here.
    """
    _check_inputs(u, delta, A, B, C, D, z, delta_bias)
    name = _resolve_backend(backend, u)
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    if name == "cuda":
        return _get_mamba_ssm_scan()(*args)
    if name == "cpu":
        return selective_scan_cpu(*args)
    return selective_scan_ref(*args)


def _needs_grad(x: torch.Tensor | None) -> bool:
    return x is not None and x.requires_grad


def _scan_operator(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
    delta_softplus: bool,
    chunk: int = CHUNK_SIZE,
) -> torch.Tensor:
    """y from one call of the registered forward operator, with checkpoints for the backward when a gradient is
    needed (as :func:`~mamba_monai.ops.selective_scan_cpu.selective_scan_cpu` does); TorchScript's path."""
    need_grad = torch.is_grad_enabled() and (
        u.requires_grad or delta.requires_grad or A.requires_grad or B.requires_grad or C.requires_grad
        or _needs_grad(D) or _needs_grad(z) or _needs_grad(delta_bias)
    )  # fmt: skip
    if u.device.type != "cpu":
        outputs = torch.ops.mamba_monai.selective_scan_fwd(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk, need_grad
        )
        return outputs[0]
    # on CPU as selective_scan_cpu does: softplus and gate by vectorised torch ops around the kernel
    compute = torch.float64 if u.dtype == torch.float64 else torch.float32
    dt = step_sizes(delta, delta_bias, delta_softplus, compute)
    outputs = torch.ops.mamba_monai.selective_scan_fwd(
        u.to(compute), dt, A, B, C, D, None, None, False, chunk, need_grad
    )
    return gate(outputs[0], z, u.dtype)


def scriptable_selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
) -> torch.Tensor:
    """
    The output ``y`` of :func:`selective_scan`, in a form ``torch.jit.script`` compiles (what layers call).

    In Python (eager, or under ``torch.jit.trace``) it is ``selective_scan(...)`` with the backend chosen as
    there (``MAMBA_MONAI_SCAN_BACKEND``). In TorchScript it checks the inputs the same way and calls the
    registered operator ``torch.ops.mamba_monai.selective_scan_fwd``: the fused numba kernel for CPU tensors,
    mamba_ssm's kernel or the reference elsewhere (the environment variable is not read there).

    Args and shapes: as :func:`selective_scan`, without ``return_last_state`` and ``backend``.

    Returns:
        y, (b, d, L) in the dtype of ``u``.
    """
    if not torch.jit.is_scripting():
        return selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    _check_inputs(u, delta, A, B, C, D, z, delta_bias)
    return _scan_operator(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
