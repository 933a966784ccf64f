"""Selective scan entry point: picks a backend at run time (placeholder dispatch, ops helper replaces)."""

from __future__ import annotations

from .selective_scan_ref import selective_scan_ref

__all__ = ["selective_scan", "available_backends"]


def available_backends() -> list[str]:
    return ["ref"]


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, backend=None):
    return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
