"""Argument checks that the blocks share (ValueErrors that say what is allowed)."""

from __future__ import annotations

__all__ = ["check_spatial_dims", "check_positive", "check_rate"]


def check_spatial_dims(spatial_dims: int, name: str) -> None:
    if spatial_dims not in (2, 3):
        raise ValueError(f"{name}: `spatial_dims` can only be 2 or 3, got {spatial_dims}.")


def check_positive(name: str, **values: int) -> None:
    for key, value in values.items():
        if int(value) < 1:
            raise ValueError(f"{name}: `{key}` must be a positive integer, got {value}.")


def check_rate(name: str, key: str, value: float) -> None:
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name}: `{key}` must be in [0, 1), got {value}.")
