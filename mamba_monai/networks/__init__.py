from __future__ import annotations

from .emnet import EMNet

__all__ = ["EMNet"]
