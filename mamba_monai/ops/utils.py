"""Small helpers shared by kernels, layers and losses."""

from __future__ import annotations

import contextlib

import torch

__all__ = ["autocast_disabled"]

_AUTOCAST_DEVICES = ("cpu", "cuda", "xpu", "mps", "hpu")


def autocast_disabled(device: torch.device) -> contextlib.AbstractContextManager:
    """A context where ``torch.autocast`` is off for ``device``, so FFTs and reductions run in the inputs' own
    (float32) precision; a no-op for devices autocast does not know (e.g. ``meta``, used for FLOP counting)."""
    if device.type in _AUTOCAST_DEVICES:
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()
