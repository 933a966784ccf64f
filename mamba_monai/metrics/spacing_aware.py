"""Distance-based segmentation metrics that read the voxel spacing from each case's MetaTensor.

MONAI's ``HausdorffDistanceMetric`` and ``SurfaceDiceMetric`` take the spacing as a call argument,
but MONAI's ignite handlers call them with ``(y_pred, y)`` only, so in a bundle they measure in
voxels. These subclasses take the spacing from ``y.pixdim`` (the affine of the label after
``Invertd``), so HD95 and surface Dice come out in millimetres, case by case.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.data import MetaTensor
from monai.metrics import HausdorffDistanceMetric, SurfaceDiceMetric

__all__ = ["HausdorffDistanceMMMetric", "SurfaceDiceMMMetric", "spacing_from_meta"]


def spacing_from_meta(y: torch.Tensor) -> list[list[float]] | None:
    """Per-item voxel spacing of a batch-first MetaTensor ([B, C, *spatial]), or None for a plain tensor."""
    if not isinstance(y, MetaTensor):
        return None
    pixdim = y.pixdim
    spatial_dims = y.ndim - 2
    if isinstance(pixdim, list):
        return [[float(v) for v in p[:spatial_dims]] for p in pixdim]
    return [[float(v) for v in pixdim[:spatial_dims]]] * y.shape[0]


class HausdorffDistanceMMMetric(HausdorffDistanceMetric):
    """
    ``monai.metrics.HausdorffDistanceMetric`` measured in the physical units of each case (mm for
    NIfTI), with ``percentile=95`` by default (HD95). An explicit ``spacing=`` call argument wins.

    Args:
        include_background: see ``HausdorffDistanceMetric``. Defaults to False.
        percentile: percentile of the surface distances. Defaults to 95.
        kwargs: other ``HausdorffDistanceMetric`` arguments (``directed``, ``reduction``, ...).
    """

    def __init__(self, include_background: bool = False, percentile: float | None = 95, **kwargs: Any) -> None:
        super().__init__(include_background=include_background, percentile=percentile, **kwargs)

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor, **kwargs: Any) -> torch.Tensor:  # type: ignore[override]
        kwargs.setdefault("spacing", spacing_from_meta(y))
        return super()._compute_tensor(y_pred, y, **kwargs)


class SurfaceDiceMMMetric(SurfaceDiceMetric):
    """
    ``monai.metrics.SurfaceDiceMetric`` (normalised surface Dice) with the tolerance ``class_thresholds``
    in the physical units of each case (mm for NIfTI), the spacing read from the label's affine.

    Args:
        class_thresholds: tolerance per foreground class (or per class with background), in mm.
        include_background: see ``SurfaceDiceMetric``. Defaults to False.
        kwargs: other ``SurfaceDiceMetric`` arguments.
    """

    def __init__(self, class_thresholds: list[float], include_background: bool = False, **kwargs: Any) -> None:
        super().__init__(class_thresholds=list(class_thresholds), include_background=include_background, **kwargs)

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor, **kwargs: Any) -> torch.Tensor:  # type: ignore[override]
        kwargs.setdefault("spacing", spacing_from_meta(y))
        return super()._compute_tensor(y_pred, y, **kwargs)
