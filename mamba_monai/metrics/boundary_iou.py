"""Boundary IoU: the IoU of the bands of ground truth and prediction that lie within a distance d of their contours.

Cheng, Girshick, Dollar, Berg, Kirillov, "Boundary IoU: Improving Object-Centric Image Segmentation Evaluation",
CVPR 2021, https://arxiv.org/abs/2103.16562. MONAI 1.6 has no Boundary IoU; this module adds it as a MONAI
``CumulativeIterationMetric``, so bundles use it like ``DiceMetric`` (``IgniteMetricHandler(metric_fn=...)``,
per-image CSVs through ``MetricsSaver``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.metrics import CumulativeIterationMetric
from monai.metrics.utils import do_metric_reduction, ignore_background, prepare_spacing
from monai.transforms.utils import distance_transform_edt
from monai.utils import MetricReduction, convert_to_tensor, look_up_option

from .spacing_aware import spacing_from_meta

__all__ = ["BoundaryIoUMetric", "compute_boundary_iou", "boundary_region"]

_DISTANCE_METRICS = ("euclidean", "chessboard", "taxicab")


class BoundaryIoUMetric(CumulativeIterationMetric):
    """
    Boundary IoU (Cheng et al., "Boundary IoU: Improving Object-Centric Image Segmentation Evaluation", CVPR 2021,
    https://arxiv.org/abs/2103.16562) for each batch item and class of one-hot predictions ``y_pred`` and labels ``y``,
    in 2D ([B, C, H, W]) and 3D ([B, C, H, W, D]); the spatial dimensions are read from the input.

    For a binary mask M, its boundary region M_d is the set of pixels of M within distance d of M's contour, that is
    M minus M eroded by d (the outside of the image counts as background, as in the paper, so object pixels on the
    image border belong to the band). With G_d and P_d the bands of the ground truth and the prediction,

        Boundary IoU = |G_d ∩ P_d| / |G_d ∪ P_d|.

    Unlike mask IoU, which large objects saturate because their interior dominates both counts, Boundary IoU only
    counts the pixels near the contours, so it stays sensitive to boundary errors on objects of every size.
    With ``ignore_empty=True`` (the default, as ``DiceMetric``) a (batch item, class) whose label is empty is nan,
    skipped by the mean reductions, so that the metric is averaged over the cases that hold the class, as Dice is;
    with ``ignore_empty=False`` it is nan only when both masks are empty and 0 when exactly one is.

    The width d is ``distance`` when given, else ``dilation_ratio`` times the image diagonal (the paper uses 2 %),
    raised to at least one voxel step along every axis (as the paper's reference code raises it to one pixel).
    Without spacing, d and the diagonal are in pixels; with a spacing (call argument ``spacing=``, or the label's
    affine when ``use_meta_spacing=True``) they are in the spacing's units (mm for NIfTI), and the band is computed
    with a Euclidean distance transform that uses the spacing. To reproduce the paper's reference code (a 3x3
    erosion repeated round(0.02 * diagonal) times) use ``distance_metric="chessboard"`` and
    ``distance=round(0.02 * diagonal)``.

    Example:

    .. code-block:: python

        metric = BoundaryIoUMetric(include_background=False)
        metric(y_pred=one_hot_pred, y=one_hot_label)  # [B, C, H, W[, D]] each
        print(metric.aggregate())

    Args:
        include_background: whether to compute the metric on the first channel (background) too.
            Defaults to ``True``, as ``DiceMetric``.
        reduction: mode of reduction of the [B, C] values, applied to the not-nan values only; one of
            {``"none"``, ``"mean"``, ``"sum"``, ``"mean_batch"``, ``"sum_batch"``, ``"mean_channel"``,
            ``"sum_channel"``} (:py:class:`monai.utils.enums.MetricReduction`). Defaults to ``"mean"``.
        get_not_nans: whether ``aggregate`` also returns the count of not-nan values. Defaults to ``False``.
        dilation_ratio: band width as a fraction of the image diagonal, used when ``distance`` is None.
            Must be > 0. Defaults to 0.02 (the paper's setting).
        distance: band width as an absolute distance, in pixels, or in the spacing's units (mm) when a spacing is
            used. Must be > 0 and at least the smallest voxel spacing; overrides ``dilation_ratio``. Defaults to None.
        distance_metric: distance used to erode the masks: ``"euclidean"``, ``"chessboard"`` (square / cube
            neighbourhood, as the paper's reference code) or ``"taxicab"``. Only ``"euclidean"`` accepts a spacing.
            Defaults to ``"euclidean"``.
        use_meta_spacing: read each case's voxel spacing from ``y.pixdim`` when ``y`` is a ``MetaTensor`` (for
            bundles, whose ignite handlers call the metric with ``(y_pred, y)`` only); an explicit ``spacing=``
            call argument wins. Requires ``distance_metric="euclidean"``. Defaults to ``False``.
        ignore_empty: nan where the label is empty (see above). Defaults to ``True``, as ``DiceMetric``.
    """

    def __init__(
        self,
        include_background: bool = True,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        get_not_nans: bool = False,
        dilation_ratio: float = 0.02,
        distance: float | None = None,
        distance_metric: str = "euclidean",
        use_meta_spacing: bool = False,
        ignore_empty: bool = True,
    ) -> None:
        super().__init__()
        _check_band_args(dilation_ratio, distance, distance_metric)
        look_up_option(reduction, MetricReduction)
        if use_meta_spacing and distance_metric != "euclidean":
            raise ValueError(
                f"`use_meta_spacing=True` needs `distance_metric='euclidean'`, got {distance_metric!r}: "
                "chessboard and taxicab distances are counted in voxels."
            )
        self.include_background = include_background
        self.reduction = reduction
        self.get_not_nans = get_not_nans
        self.dilation_ratio = dilation_ratio
        self.distance = distance
        self.distance_metric = distance_metric
        self.use_meta_spacing = use_meta_spacing
        self.ignore_empty = ignore_empty

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor, **kwargs: Any) -> torch.Tensor:  # type: ignore[override]
        """
        Args:
            y_pred: binary one-hot prediction, [B, C, H, W] or [B, C, H, W, D].
            y: binary one-hot label, same shape as ``y_pred``.
            kwargs: ``spacing``: voxel spacing, as in ``monai.metrics.SurfaceDiceMetric``: a number, a sequence of
                one number per spatial dimension, or one such sequence per batch item. None (default) means
                voxel units, unless ``use_meta_spacing`` finds a spacing on ``y``.

        Returns:
            Boundary IoU of shape [B, C] (C without the background when ``include_background=False``).
        """
        spacing = kwargs.get("spacing")
        if spacing is None and self.use_meta_spacing:
            spacing = spacing_from_meta(y)
        return compute_boundary_iou(
            y_pred=y_pred,
            y=y,
            include_background=self.include_background,
            dilation_ratio=self.dilation_ratio,
            distance=self.distance,
            distance_metric=self.distance_metric,
            spacing=spacing,
            ignore_empty=self.ignore_empty,
        )

    def aggregate(
        self, reduction: MetricReduction | str | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """
        Reduce the buffered [N, C] values over their not-nan entries.

        Args:
            reduction: mode of reduction (see the class docstring); defaults to ``self.reduction``.

        Returns:
            The reduced Boundary IoU, and the not-nan count when ``get_not_nans=True``.
        """
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise ValueError(f"the data to aggregate must be a PyTorch Tensor, got {type(data)}.")
        f, not_nans = do_metric_reduction(data, reduction or self.reduction)
        return (f, not_nans) if self.get_not_nans else f


def compute_boundary_iou(
    y_pred: torch.Tensor,
    y: torch.Tensor,
    include_background: bool = True,
    dilation_ratio: float = 0.02,
    distance: float | None = None,
    distance_metric: str = "euclidean",
    spacing: int | float | np.ndarray | Sequence[int | float | np.ndarray | Sequence[int | float]] | None = None,
    ignore_empty: bool = False,
) -> torch.Tensor:
    """
    Boundary IoU (https://arxiv.org/abs/2103.16562) of each batch item and class; see :py:class:`BoundaryIoUMetric`.

    Args:
        y_pred: binary one-hot prediction, [B, C, H, W] or [B, C, H, W, D], on any device.
        y: binary one-hot label, same shape as ``y_pred``.
        include_background: whether to keep the first channel. Defaults to ``True``.
        dilation_ratio: band width as a fraction of the image diagonal when ``distance`` is None. Defaults to 0.02.
        distance: absolute band width (pixels, or the spacing's units). Defaults to None.
        distance_metric: ``"euclidean"``, ``"chessboard"`` or ``"taxicab"``. Defaults to ``"euclidean"``.
        spacing: voxel spacing as in ``monai.metrics.compute_surface_dice`` (a number, one number per spatial
            dimension, or one such sequence per batch item); only with ``"euclidean"``. Defaults to None (voxels).
        ignore_empty: nan wherever the label is empty, not only where both masks are. Defaults to ``False``.

    Returns:
        float32 tensor [B, C] on ``y_pred``'s device: nan where both masks are empty (or the label is, with
        ``ignore_empty``), 0 where only one is.

    Raises:
        ValueError: on non-tensor inputs, shapes other than [B, C, H, W[, D]], different shapes, non-binary values,
            invalid band arguments, a spacing with a non-Euclidean distance, or a band narrower than one voxel.
    """
    _check_band_args(dilation_ratio, distance, distance_metric)
    if not isinstance(y_pred, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ValueError(f"y_pred and y must be PyTorch Tensors, got {type(y_pred)} and {type(y)}.")
    if y_pred.ndim not in (4, 5):
        raise ValueError(
            f"y_pred and y should be one-hot [B, C, H, W] or [B, C, H, W, D], got shape {tuple(y_pred.shape)}."
        )
    if y_pred.shape != y.shape:
        raise ValueError(f"y_pred and y should have the same shape, got {tuple(y_pred.shape)} and {tuple(y.shape)}.")
    if spacing is not None and distance_metric != "euclidean":
        raise ValueError(
            f"`spacing` is only supported with distance_metric='euclidean', got {distance_metric!r} "
            "(chessboard and taxicab distances are counted in voxels)."
        )
    device = y_pred.device
    y_pred = convert_to_tensor(y_pred, track_meta=False)
    y = convert_to_tensor(y, track_meta=False).to(device)
    if not include_background:
        y_pred, y = ignore_background(y_pred=y_pred, y=y)
    for name, t in (("y_pred", y_pred), ("y", y)):
        if t.numel() > 0 and not bool(((t == 0) | (t == 1)).all()):
            raise ValueError(
                f"{name} must be binary (0/1) one-hot, got values in [{t.min().item()}, {t.max().item()}]; "
                "apply e.g. AsDiscrete(argmax=True, to_onehot=C) or a threshold first."
            )

    batch_size, n_class = y_pred.shape[:2]
    spatial_shape = y_pred.shape[2:]
    spacing_list = prepare_spacing(spacing=spacing, batch_size=batch_size, img_dim=len(spatial_shape))
    result = torch.empty((batch_size, n_class), dtype=torch.float32, device=device)
    for b in range(batch_size):
        sp = _spacing_tuple(spacing_list[b], len(spatial_shape))
        width = _band_width(spatial_shape, sp, dilation_ratio, distance)
        masks = torch.cat([y_pred[b], y[b]]).bool()  # [2C, *spatial]
        bands = boundary_region(masks, width, distance_metric=distance_metric, spacing=sp)
        band_pred, band_gt = bands[:n_class].flatten(1), bands[n_class:].flatten(1)
        inter = (band_pred & band_gt).sum(1).float()
        union = (band_pred | band_gt).sum(1).float()
        iou = inter / union.clamp_min(1.0)
        empty_pred = ~y_pred[b].flatten(1).bool().any(1)
        empty_gt = ~y[b].flatten(1).bool().any(1)
        iou = torch.where(empty_pred | empty_gt, torch.zeros_like(iou), iou)
        undefined = empty_gt if ignore_empty else empty_pred & empty_gt
        iou = torch.where(undefined, torch.full_like(iou, float("nan")), iou)
        result[b] = iou
    return result


def boundary_region(
    masks: torch.Tensor,
    width: float,
    distance_metric: str = "euclidean",
    spacing: Sequence[float] | None = None,
) -> torch.Tensor:
    """
    Boundary region of each binary mask: the pixels of the mask within ``width`` of the mask's contour, i.e. the
    mask minus the mask eroded by ``width``; pixels outside the image count as background.

    Args:
        masks: boolean (or 0/1) masks, channel-first [N, H, W] or [N, H, W, D], on any device.
        width: band width d, in pixels, or in the units of ``spacing``.
        distance_metric: ``"euclidean"`` (exact Euclidean distance transform, scipy on CPU, cuCIM on CUDA when
            installed), ``"chessboard"`` or ``"taxicab"`` (integer distances, eroded with max-pooling on the
            tensor's device). Defaults to ``"euclidean"``.
        spacing: voxel spacing per spatial axis for ``"euclidean"``; None means 1. Defaults to None.

    Returns:
        boolean tensor of the same shape and device as ``masks``.
    """
    distance_metric = look_up_option(distance_metric, _DISTANCE_METRICS)
    masks = masks.bool()
    nd = masks.ndim - 1
    if nd not in (2, 3):
        raise ValueError(f"masks should be [N, H, W] or [N, H, W, D], got shape {tuple(masks.shape)}.")
    if distance_metric == "euclidean":
        # distance of each object pixel to the nearest background pixel; one layer of zero padding makes the
        # outside of the image background
        padded = F.pad(masks, (1, 1) * nd, value=False)
        sampling = None if spacing is None else [float(s) for s in spacing]
        dist = distance_transform_edt(padded, sampling=sampling, float64_distances=True)
        dist = torch.as_tensor(dist, device=masks.device)[(slice(None),) + (slice(1, -1),) * nd]
        return masks & (dist <= width)
    steps = int(math.floor(width))
    background = (~masks).float().unsqueeze(1)  # [N, 1, *spatial]
    pool = F.max_pool2d if nd == 2 else F.max_pool3d
    if distance_metric == "chessboard":
        # background dilated by a (2k+1)^nd cube = one separable max-pool per axis
        for axis in range(nd):
            pad = [0, 0] * nd
            pad[2 * (nd - 1 - axis)] = pad[2 * (nd - 1 - axis) + 1] = steps
            kernel = [1] * nd
            kernel[axis] = 2 * steps + 1
            background = pool(F.pad(background, pad, value=1.0), kernel_size=kernel, stride=1)
    else:
        # taxicab: k dilations of the background by the face-neighbour cross
        for _ in range(steps):
            grown = background
            for axis in range(nd):
                pad = [0, 0] * nd
                pad[2 * (nd - 1 - axis)] = pad[2 * (nd - 1 - axis) + 1] = 1
                kernel = [1] * nd
                kernel[axis] = 3
                grown = torch.maximum(grown, pool(F.pad(background, pad, value=1.0), kernel_size=kernel, stride=1))
            background = grown
    return masks & background.squeeze(1).bool()


def _check_band_args(dilation_ratio: float, distance: float | None, distance_metric: str) -> None:
    if distance_metric not in _DISTANCE_METRICS:
        raise ValueError(f"`distance_metric` can only be one of {_DISTANCE_METRICS}, got {distance_metric!r}.")
    if distance is not None:
        if not (math.isfinite(distance) and distance > 0):
            raise ValueError(f"`distance` must be a finite number > 0 (pixels or spacing units), got {distance}.")
    elif not (math.isfinite(dilation_ratio) and dilation_ratio > 0):
        raise ValueError(f"`dilation_ratio` must be a finite number > 0 (e.g. 0.02), got {dilation_ratio}.")


def _spacing_tuple(spacing: Any, nd: int) -> tuple[float, ...] | None:
    if spacing is None:
        return None
    values = [float(s) for s in np.atleast_1d(np.asarray(spacing, dtype=float))]
    if len(values) == 1:
        values = values * nd
    if len(values) != nd or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"each spacing must be {nd} finite numbers > 0 (or one number), got {spacing}.")
    return tuple(values)


def _band_width(
    spatial_shape: Sequence[int], spacing: tuple[float, ...] | None, dilation_ratio: float, distance: float | None
) -> float:
    steps = spacing if spacing is not None else (1.0,) * len(spatial_shape)
    if distance is not None:
        if distance < min(steps):
            raise ValueError(
                f"`distance`={distance} is below the smallest voxel spacing {min(steps)}: every boundary band "
                "would be empty. Use a distance of at least one voxel."
            )
        return float(distance)
    diagonal = math.sqrt(sum((n * s) ** 2 for n, s in zip(spatial_shape, steps)))
    return max(dilation_ratio * diagonal, max(steps))
