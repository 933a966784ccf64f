"""Inferers that MONAI's lack (MONAI's tree: ``monai.inferers``)."""

from __future__ import annotations

from .inferer import SliceInfererWithArgs

__all__ = ["SliceInfererWithArgs"]
