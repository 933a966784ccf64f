"""Boundary-band weighted cross-entropy / Dice loss for segmentation, 2D and 3D."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss

from monai.utils import LossReduction

from mamba_monai.ops.utils import autocast_disabled
from mamba_monai.losses.utils import (
    _activate,
    _check_activation,
    _check_input_rank,
    _check_spatial_dims,
    _drop_background,
    _onehot_target,
    _reduce,
)

__all__ = ["BoundaryAwareLoss", "boundary_band"]

_MODES = ("ce", "dice")
_LOG_EPS = 1e-7


def boundary_band(target: torch.Tensor, width: int = 1) -> torch.Tensor:
    """
    Boundary band of a one-hot (or binary, or soft) target: the morphological gradient
    ``dilate(T) - erode(T)`` with a cubic structuring element of side ``2 * width + 1``, computed per
    channel with max pooling and combined over channels by their maximum.

    A voxel is in the band when its ``(2 * width + 1)``-neighbourhood holds more than one class, so the
    band is ``width`` voxels on each side of every class boundary (``2 * width`` thick). The image border
    is not a boundary: pooling pads with -inf. Binary targets give a {0, 1} band, soft ones a band in
    [0, 1]. No gradient flows through it.

    Args:
        target: one-hot target, shape BNH[WD] (N >= 1), any real or integer dtype.
        width: half-width of the band in voxels, >= 1. Defaults to 1.

    Returns:
        band of shape B1H[WD] with the dtype of ``target`` as float (float32 for integer targets).
    """
    if target.dim() not in (4, 5):
        raise ValueError(
            "boundary_band expects a 4D (BNHW) or 5D (BNHWD) target, "
            f"got {target.dim()}D target with shape {tuple(target.shape)}."
        )
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"`width` should be an integer no less than 1, got {width!r}.")
    pool = F.max_pool2d if target.dim() == 4 else F.max_pool3d
    t = target.detach()
    t = t.float() if not torch.is_floating_point(t) or t.dtype in (torch.float16, torch.bfloat16) else t
    k = 2 * width + 1
    dilated = pool(t, kernel_size=k, stride=1, padding=width)
    eroded = -pool(-t, kernel_size=k, stride=1, padding=width)
    return (dilated - eroded).amax(dim=1, keepdim=True)


class BoundaryAwareLoss(_Loss):
    """
    Segmentation loss that emphasises the voxels near class boundaries, for 2D (BNHW) and 3D (BNHWD).

    The boundary band of the target is computed on the fly (:func:`boundary_band`: morphological
    gradient, max-pool dilation minus erosion of the one-hot target, ``width`` voxels each side of
    every boundary). Each voxel gets the weight ``band_weight`` in the band and ``interior_weight``
    elsewhere (defaults 1 and 0: the loss lives on the band only), and one of two losses is computed
    per image and channel with these weights:

    - ``mode="ce"``: weighted cross-entropy, ``sum_x w_x l_{c,x} / sum_x w_x`` with
      ``l_c = -t_c log p_c`` (categorical, softmax or multi-channel probabilities) or the binary
      cross-entropy of channel c (``sigmoid=True`` or a single channel). Averaging these over channels
      gives the weighted categorical CE divided by N, as ``monai.losses.FocalLoss`` with softmax does.
    - ``mode="dice"``: weighted soft Dice,
      ``1 - (2 sum w p t + smooth_nr) / (sum w p + sum w t + smooth_dr)``.

    Both are differentiable with respect to the prediction (the band depends on the target only) and
    zero for a perfect one-hot probability prediction (Dice up to the smoothing terms).

    Inspired by boundary-weighted losses for segmentation, e.g. Kervadec, H. et al. "Boundary loss for
    highly unbalanced segmentation", MIDL 2019 (https://arxiv.org/abs/1812.07032), whose signed-distance
    form is ``monai.losses.BoundaryLoss``; this one needs no distance transform.

    Args:
        spatial_dims: 2 or 3; ``None`` (default) infers it from the input rank.
        width: half-width in voxels of the boundary band, >= 1. Defaults to 1.
        mode: ``"ce"`` (weighted cross-entropy) or ``"dice"`` (weighted Dice). Defaults to ``"ce"``.
        band_weight: weight of the voxels in the boundary band, >= 0. Defaults to 1.0.
        interior_weight: weight of every other voxel, >= 0. Defaults to 0.0.
        include_background: if False, channel 0 (background) is excluded from the loss (the band is still
            computed from all classes). Defaults to True.
        to_onehot_y: one-hot encode a B1H[WD] ``target`` to ``input.shape[1]`` channels. Defaults to False.
        sigmoid: ``input`` holds logits of independent channels (binary cross-entropy). Defaults to False.
        softmax: ``input`` holds logits of exclusive classes (softmax cross-entropy). Defaults to False.
        other_act: another callable that turns ``input`` into probabilities. Defaults to None.
            Without any of the three, ``input`` is taken as probabilities.
        smooth_nr: added to the Dice numerator (``mode="dice"``). Defaults to 1e-5.
        smooth_dr: added to the Dice denominator (``mode="dice"``). Defaults to 1e-5.
        reduction: {``"none"``, ``"mean"``, ``"sum"``} over the per-image, per-channel values;
            ``"none"`` returns shape (B, N, 1, 1[, 1]). Defaults to ``"mean"``.
    """

    def __init__(
        self,
        spatial_dims: int | None = None,
        width: int = 1,
        mode: str = "ce",
        band_weight: float = 1.0,
        interior_weight: float = 0.0,
        include_background: bool = True,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool = False,
        other_act: Callable | None = None,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        reduction: LossReduction | str = LossReduction.MEAN,
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        self.spatial_dims = _check_spatial_dims(spatial_dims)
        _check_activation(sigmoid, softmax, other_act)
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"`width` should be an integer no less than 1, got {width!r}.")
        if mode not in _MODES:
            raise ValueError(f"`mode` should be one of {_MODES}, got {mode!r}.")
        if band_weight < 0 or interior_weight < 0 or band_weight + interior_weight == 0:
            raise ValueError(
                "`band_weight` and `interior_weight` should be no less than 0.0 and not both 0.0, "
                f"got band_weight={band_weight}, interior_weight={interior_weight}."
            )
        self.width = width
        self.mode = mode
        self.band_weight = float(band_weight)
        self.interior_weight = float(interior_weight)
        self.include_background = include_background
        self.to_onehot_y = to_onehot_y
        self.sigmoid = sigmoid
        self.softmax = softmax
        self.other_act = other_act
        self.smooth_nr = float(smooth_nr)
        self.smooth_dr = float(smooth_dr)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: prediction (logits or probabilities, by the options), shape BNH[WD].
            target: shape BNH[WD], or B1H[WD] with ``to_onehot_y=True``.

        Raises:
            ValueError: when the input is not 4D or 5D, does not match ``spatial_dims``, or the target
                (after one-hot encoding) has a different shape from the input.
        """
        _check_input_rank(input, target, self.spatial_dims, type(self).__name__)
        target = _onehot_target(input, target, self.to_onehot_y)
        if target.shape != input.shape:
            raise ValueError(f"ground truth has different shape ({target.shape}) from input ({input.shape})")
        input = input.float() if input.dtype in (torch.float16, torch.bfloat16) else input
        dtype = input.dtype if torch.is_floating_point(input) else torch.float32
        target = target.to(dtype)
        with autocast_disabled(input.device):
            weight = self.voxel_weight(target)
            if self.mode == "ce":
                f = self._weighted_ce(input, target, weight)
            else:
                f = self._weighted_dice(input, target, weight)
        return _reduce(f, self.reduction, input.dim())

    def voxel_weight(self, target: torch.Tensor) -> torch.Tensor:
        """Voxel weights B1H[WD]: ``band_weight`` on the boundary band of ``target``, ``interior_weight`` elsewhere."""
        band = boundary_band(target, self.width).to(target.dtype)
        return self.interior_weight + (self.band_weight - self.interior_weight) * band

    def _voxel_ce(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-voxel, per-channel cross-entropy terms, BNH[WD]."""
        if self.sigmoid:
            return F.binary_cross_entropy_with_logits(input, target, reduction="none")
        n_ch = input.shape[1]
        if self.softmax and n_ch > 1:
            return -target * torch.log_softmax(input, dim=1)
        prob = _activate(input, False, self.softmax, self.other_act)
        log_p = prob.clamp_min(_LOG_EPS).log()
        if n_ch == 1:
            log_q = (1.0 - prob).clamp_min(_LOG_EPS).log()
            return -(target * log_p + (1.0 - target) * log_q)
        return -target * log_p

    def _weighted_ce(self, input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        loss, _ = _drop_background(self._voxel_ce(input, target), target, self.include_background)
        w_sum = weight.flatten(2).sum(-1).clamp_min(torch.finfo(weight.dtype).tiny)  # (B, 1)
        return (weight * loss).flatten(2).sum(-1) / w_sum

    def _weighted_dice(self, input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        prob = _activate(input, self.sigmoid, self.softmax, self.other_act)
        prob, target = _drop_background(prob, target, self.include_background)
        intersection = (weight * prob * target).flatten(2).sum(-1)
        denominator = (weight * prob).flatten(2).sum(-1) + (weight * target).flatten(2).sum(-1)
        return 1.0 - (2.0 * intersection + self.smooth_nr) / (denominator + self.smooth_dr)
