from __future__ import annotations

from .mamba import MambaMixer

__all__ = ["MambaMixer"]
