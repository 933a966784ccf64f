"""Helpers the networks share (TorchScript-compatible: they run inside scripted forward passes)."""

from __future__ import annotations

__all__ = ["divisible_size_hint"]


def divisible_size_hint(spatial: list[int], k: int) -> str:
    """'224x224 or 256x256' (nearest sizes divisible by ``k`` below and above each axis), or '256x256' only."""
    lower: list[str] = []
    upper: list[str] = []
    has_lower = True
    for s in spatial:
        lo = (s // k) * k
        if lo < k:
            has_lower = False
        lower.append(str(lo))
        upper.append(str(lo if lo == s else lo + k))
    if has_lower and lower != upper:
        return "x".join(lower) + " or " + "x".join(upper)
    return "x".join(upper)
