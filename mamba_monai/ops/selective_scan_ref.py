"""Plain PyTorch reference of the selective scan, with mamba_ssm's ``selective_scan_fn`` semantics.

It is the ground truth the fast paths are tested against, and the fallback for any device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .utils import format_shape as _fmt

__all__ = ["selective_scan_ref"]


def _shape(x: torch.Tensor | None) -> str:
    return "None" if x is None else _fmt(x.shape)


def _check_projection(name: str, X: torch.Tensor, b: int, d: int, n: int, length: int, u_shape: str) -> None:
    """``B`` or ``C``: (b, n, L), or grouped (b, g, n, L) with ``d`` divisible by ``g``."""
    if X.dim() == 3:
        expected = [b, n, length]
    elif X.dim() == 4:
        g = X.shape[1]
        if g < 1 or d % g != 0:
            raise ValueError(
                f"selective_scan: grouped `{name}` of shape {_shape(X)} has g={g} groups, "
                f"but d={d} (from `u` {u_shape}) is not divisible by g."
            )
        expected = [b, g, n, length]
    else:
        raise ValueError(
            f"selective_scan: `{name}` must be (b, n, L) = {_fmt([b, n, length])} or grouped (b, g, n, L), "
            f"got shape {_shape(X)}."
        )
    if list(X.shape) != expected:
        raise ValueError(f"selective_scan: `{name}` must have shape {_fmt(expected)}, got {_shape(X)}.")


def _check_vector(name: str, X: torch.Tensor | None, d: int) -> None:
    if X is not None and (X.dim() != 1 or X.shape[0] != d):
        raise ValueError(f"selective_scan: `{name}` must be (d,) = ({d},), got {_shape(X)}.")


def _check_device(name: str, X: torch.Tensor | None, device: torch.device) -> None:
    if X is not None and X.device != device:
        raise ValueError(f"selective_scan: `{name}` is on {X.device} but `u` is on {device}.")


def _check_inputs(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
) -> None:
    """Check the shapes, dtypes and devices of the selective-scan inputs (used by every backend; TorchScript
    compiles it too).

    Raises:
        ValueError: a tensor has the wrong rank or shape, ``d`` is not divisible by the number of
            groups of ``B``/``C``, ``A`` is complex, or the tensors lie on different devices.
    """
    if u.dim() != 3:
        raise ValueError(f"selective_scan: `u` must be 3-D (b, d, L), got shape {_shape(u)}.")
    b, d, length = u.shape[0], u.shape[1], u.shape[2]
    if not u.is_floating_point():
        raise ValueError(f"selective_scan: `u` must be a floating-point tensor, got dtype {u.dtype}.")
    if length < 1:
        raise ValueError(f"selective_scan: the sequence length L must be >= 1, got `u` of shape {_shape(u)}.")
    if list(delta.shape) != [b, d, length]:
        raise ValueError(f"selective_scan: `delta` must have the shape of `u` {_shape(u)}, got {_shape(delta)}.")
    if A.dim() != 2 or A.shape[0] != d:
        raise ValueError(f"selective_scan: `A` must be (d, n) with d={d} (from `u` {_shape(u)}), got {_shape(A)}.")
    if A.is_complex():
        raise ValueError("selective_scan: complex `A` is not supported, give a real (d, n) tensor.")
    n = A.shape[1]
    _check_projection("B", B, b, d, n, length, _shape(u))
    _check_projection("C", C, b, d, n, length, _shape(u))
    if B.dim() != C.dim() or (B.dim() == 4 and B.shape[1] != C.shape[1]):
        raise ValueError(f"selective_scan: `B` and `C` must share one layout, got {_shape(B)} and {_shape(C)}.")
    _check_vector("D", D, d)
    _check_vector("delta_bias", delta_bias, d)
    if z is not None and list(z.shape) != [b, d, length]:
        raise ValueError(f"selective_scan: `z` must have the shape of `u` {_shape(u)}, got {_shape(z)}.")
    _check_device("delta", delta, u.device)
    _check_device("A", A, u.device)
    _check_device("B", B, u.device)
    _check_device("C", C, u.device)
    _check_device("D", D, u.device)
    _check_device("z", z, u.device)
    _check_device("delta_bias", delta_bias, u.device)


def _expand_groups(x: torch.Tensor, d: int) -> torch.Tensor:
    """(b, n, L) -> (b, 1, n, L); (b, g, n, L) -> (b, d, n, L) by repeating each group d/g times."""
    if x.dim() == 3:
        return x.unsqueeze(1)
    g = x.shape[1]
    return x.repeat_interleave(d // g, dim=1)


def selective_scan_ref(
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
):
    """Sequential selective scan, computed in float32 (or float64 when the inputs are float64).

    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t,  y_t = <C_t, h_t> + D * u_t,  y *= silu(z).

    Args:
        u: input, (b, d, L).
        delta: step sizes, (b, d, L).
        A: state matrix (diagonal), (d, n).
        B: input projection, (b, n, L) or grouped (b, g, n, L) with d divisible by g.
        C: output projection, same layout as ``B``.
        D: skip weight, (d,).
        z: gate, (b, d, L); the output is multiplied by ``silu(z)``.
        delta_bias: added to ``delta``, (d,).
        delta_softplus: apply softplus to ``delta`` (after the bias).
        return_last_state: also return the final state h_L, (b, d, n).

    Returns:
        y, (b, d, L), in the dtype of ``u``; and the last state (b, d, n) in the compute dtype
        (float32, or float64 for float64 ``u``) when asked.
    """
    _check_inputs(u, delta, A, B, C, D, z, delta_bias)
    dtype_in = u.dtype
    compute = torch.float64 if u.dtype == torch.float64 else torch.float32
    u = u.to(compute)
    delta = delta.to(compute)
    A = A.to(compute)
    if delta_bias is not None:
        delta = delta + delta_bias.to(compute)[..., None]
    if delta_softplus:
        delta = F.softplus(delta)
    d = u.shape[1]
    Bx = _expand_groups(B.to(compute), d)  # (b, d|1, n, L)
    Cx = _expand_groups(C.to(compute), d)
    deltaA = torch.exp(delta.unsqueeze(2) * A[None, :, :, None])  # (b, d, n, L)
    deltaBu = (delta * u).unsqueeze(2) * Bx  # (b, d, n, L)
    # unbind once: indexing a slice per step makes autograd's backward quadratic in L
    dA_steps = deltaA.unbind(-1)
    dBu_steps = deltaBu.unbind(-1)
    C_steps = Cx.unbind(-1)
    h = u.new_zeros(u.shape[0], d, A.shape[1])
    ys = []
    for dA_t, dBu_t, C_t in zip(dA_steps, dBu_steps, C_steps):
        h = dA_t * h + dBu_t
        ys.append((h * C_t).sum(-1))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + u * D.to(compute)[:, None]
    if z is not None:
        y = y * F.silu(z.to(compute))
    y = y.to(dtype_in)
    return (y, h) if return_last_state else y
