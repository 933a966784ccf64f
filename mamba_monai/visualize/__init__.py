"""Figures for quick visual checks of a bundle's outputs (MONAI's tree: ``monai.visualize``)."""

from __future__ import annotations

from .curves import plot_training_curves, read_scalars
from .overlay import SaveOverlayd, label_overlay
from .panels import synthesis_panel, write_synthesis_panel

__all__ = [
    "SaveOverlayd",
    "label_overlay",
    "plot_training_curves",
    "read_scalars",
    "synthesis_panel",
    "write_synthesis_panel",
]
