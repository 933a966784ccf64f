"""N-D cross-scan orderings: flatten a feature map into K token sequences and merge them back.

VMamba's SS2D (Liu et al., "VMamba: Visual State Space Model", https://arxiv.org/abs/2401.10166) scans a
2D map along four routes: row-major and column-major, each forwards and backwards. This module generalises
the idea to any number of spatial axes with plain ``permute`` / ``flip`` / ``reshape`` (autograd-friendly,
any device, any dtype):

- the axis orders are the cyclic rotations of the spatial axes, flattened outer-to-inner, so that every
  spatial axis is the fastest-varying (innermost) axis in exactly one order. 2D (H, W): ``(H, W)`` then
  ``(W, H)``; 3D (D, H, W): ``(D, H, W)``, ``(H, W, D)``, ``(W, D, H)``;
- direction ``k < n`` is order ``k`` forwards, direction ``n + k`` is order ``k`` reversed,
  so ``K = 2 * spatial_dims`` (4 in 2D, 6 in 3D). For 2D this is VMamba's layout.
"""

from __future__ import annotations

import torch

from .utils import format_shape

__all__ = ["scan_orders", "num_scan_directions", "cross_scan", "cross_merge"]


def scan_orders(spatial_dims: int) -> list[tuple[int, ...]]:
    """
    Spatial axis orders (outer to inner, 0-based over the spatial axes) used by :func:`cross_scan`.

    Args:
        spatial_dims: number of spatial axes, >= 1.

    Returns:
        ``spatial_dims`` cyclic rotations of ``(0, ..., spatial_dims - 1)``, e.g. ``[(0, 1, 2), (1, 2, 0), (2, 0, 1)]``.
    """
    return [tuple(order) for order in _scan_orders(spatial_dims)]


def _scan_orders(spatial_dims: int) -> list[list[int]]:
    """:func:`scan_orders` as lists (the form TorchScript compiles)."""
    if spatial_dims < 1:
        raise ValueError(f"`spatial_dims` must be >= 1, got {spatial_dims}.")
    axes = list(range(spatial_dims))
    return [axes[i:] + axes[:i] for i in range(spatial_dims)]


def num_scan_directions(spatial_dims: int) -> int:
    """Number of sequences K that :func:`cross_scan` makes: ``2 * spatial_dims``."""
    return 2 * len(_scan_orders(spatial_dims))


def cross_scan(x: torch.Tensor, spatial_dims: int) -> torch.Tensor:
    """
    Flatten a channels-first map into K = ``2 * spatial_dims`` token sequences (see the module docstring).

    Args:
        x: feature map, (B, C, *spatial) with ``len(spatial) == spatial_dims``.
        spatial_dims: number of spatial axes of ``x``.

    Returns:
        (B, K, C, L) with ``L = prod(spatial)``; ``[:, k]`` for ``k < spatial_dims`` is the k-th axis order
        forwards and ``[:, spatial_dims + k]`` the same sequence reversed.
    """
    if x.dim() != spatial_dims + 2:
        raise ValueError(
            f"cross_scan expects a (B, C, *spatial) tensor with {spatial_dims} spatial axes, "
            f"got shape {format_shape(x.shape)}."
        )
    seqs = [x.permute([0, 1] + [2 + a for a in order]).flatten(2) for order in _scan_orders(spatial_dims)]
    forward = torch.stack(seqs, dim=1)  # (B, n, C, L)
    return torch.cat([forward, forward.flip(-1)], dim=1)


def cross_merge(y: torch.Tensor, spatial_shape: list[int]) -> torch.Tensor:
    """
    Inverse of :func:`cross_scan` up to summation: put every sequence back into row-major token order
    of ``spatial_shape`` and sum the K directions, so ``cross_merge(cross_scan(x, n), S) == K * x.flatten(2)``.

    Args:
        y: sequences, (B, K, C, L) with ``K == 2 * len(spatial_shape)`` and ``L == prod(spatial_shape)``.
        spatial_shape: the spatial size of the map the sequences came from (a sequence of ints).

    Returns:
        (B, C, L) in the row-major order of ``spatial_shape`` (i.e. ``x.flatten(2)`` order).
    """
    spatial_shape = [int(s) for s in spatial_shape]
    n = len(spatial_shape)
    length = 1
    for s in spatial_shape:
        length *= s
    if y.dim() != 4 or y.shape[1] != 2 * n or y.shape[-1] != length:
        raise ValueError(
            f"cross_merge expects (B, {2 * n}, C, {length}) sequences for spatial shape {format_shape(spatial_shape)}, "
            f"got shape {format_shape(y.shape)}."
        )
    folded = y[:, :n] + y[:, n:].flip(-1)  # reversed directions back to forward order: (B, n, C, L)
    orders = _scan_orders(n)
    out = _to_row_major(folded[:, 0], orders[0], spatial_shape)
    for k in range(1, n):
        out = out + _to_row_major(folded[:, k], orders[k], spatial_shape)
    return out


def _to_row_major(seq: torch.Tensor, order: list[int], spatial_shape: list[int]) -> torch.Tensor:
    """(B, C, L) tokens flattened in axis ``order`` -> (B, C, L) in the row-major order of ``spatial_shape``."""
    b, c, length = seq.shape[0], seq.shape[1], seq.shape[2]
    grid = seq.reshape([b, c] + [spatial_shape[a] for a in order])
    inverse = [0] * len(order)
    for pos, a in enumerate(order):
        inverse[a] = pos
    return grid.permute([0, 1] + [2 + p for p in inverse]).reshape(b, c, length)
