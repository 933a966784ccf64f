from __future__ import annotations

from .spacing_aware import HausdorffDistanceMMMetric, SurfaceDiceMMMetric, spacing_from_meta

__all__ = ["HausdorffDistanceMMMetric", "SurfaceDiceMMMetric", "spacing_from_meta"]
