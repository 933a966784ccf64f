"""Figures for quick visual checks of a bundle's outputs (MONAI's tree: ``monai.visualize``)."""

from __future__ import annotations

from .panels import synthesis_panel, write_synthesis_panel

__all__ = ["synthesis_panel", "write_synthesis_panel"]
