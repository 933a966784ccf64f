from __future__ import annotations

from .boundary_iou import BoundaryIoUMetric, compute_boundary_iou
from .spacing_aware import HausdorffDistanceMMMetric, SurfaceDiceMMMetric, spacing_from_meta

__all__ = [
    "BoundaryIoUMetric",
    "HausdorffDistanceMMMetric",
    "SurfaceDiceMMMetric",
    "compute_boundary_iou",
    "spacing_from_meta",
]
