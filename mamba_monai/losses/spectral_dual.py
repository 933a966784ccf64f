"""Spatial (Dice + focal CE) + frequency + boundary loss of Spec-VMamba, 2D and 3D."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn.modules.loss import _Loss

from monai.losses import DiceLoss, FocalLoss

from mamba_monai.losses.boundary import BoundaryAwareLoss
from mamba_monai.losses.frequency import FrequencyLoss
from mamba_monai.losses.utils import _check_input_rank, _check_spatial_dims, _onehot_target

__all__ = ["SpectralDualLoss"]

_REDUCTIONS = ("mean", "sum")


class SpectralDualLoss(_Loss):
    """
    The dual-domain segmentation loss of Spec-VMamba (Spectral VM-UNet): a spatial term, Dice + focal
    cross-entropy, for overlap and class imbalance, plus a frequency term that sharpens boundaries,
    plus a boundary-band term, for 2D (BNHW) and 3D (BNHWD) inputs::

        total = spatial_weight * (lambda_dice * Dice + lambda_focal * Focal)
              + freq_weight * FrequencyLoss(probabilities, one-hot target)
              + boundary_weight * BoundaryAwareLoss(logits, one-hot target)

    The spatial term is composed from MONAI: ``monai.losses.DiceLoss`` and ``monai.losses.FocalLoss``
    with ``use_softmax=softmax`` (so with ``softmax=True`` it is the focal *cross-entropy* of Lin et al.;
    with ``sigmoid=True`` the sum equals ``monai.losses.DiceFocalLoss``, whose focal term is sigmoid only).
    The frequency term is :class:`~mamba_monai.losses.FrequencyLoss`, a focal frequency loss that weighs
    each frequency by its current error (a plain L2 between orthonormal FFTs would equal the spatial L2);
    the boundary term is :class:`~mamba_monai.losses.BoundaryAwareLoss`. A term whose weight is 0 is not
    computed. Default weights are those of Spec-VMamba (spatial 1.0, frequency 0.1, boundary 0.05).

    References:
        Lin, T. et al. "Focal Loss for Dense Object Detection", ICCV 2017. https://arxiv.org/abs/1708.02002
        Milletari, F. et al. "V-Net", 3DV 2016. https://arxiv.org/abs/1606.04797
        Jiang, L. et al. "Focal Frequency Loss for Image Reconstruction and Synthesis", ICCV 2021.
        https://arxiv.org/abs/2012.12821

    Args:
        spatial_weight: weight of the spatial (Dice + focal) term, >= 0. Defaults to 1.0.
        freq_weight: weight of the frequency term, >= 0. Defaults to 0.1.
        boundary_weight: weight of the boundary term, >= 0. Defaults to 0.05.
        use_dice: include the Dice loss in the spatial term. Defaults to True.
        use_focal: include the focal loss in the spatial term. Defaults to True.
        to_onehot_y: one-hot encode a B1H[WD] label map ``target`` to ``input.shape[1]`` channels.
            Defaults to True.
        softmax: ``input`` holds logits of exclusive classes (softmax). Defaults to True.
        sigmoid: ``input`` holds logits of independent channels (sigmoid); set ``softmax=False`` with it.
            Defaults to False.
        include_background: if False, channel 0 (background) is excluded from every term. Defaults to True.
        gamma: focusing exponent of the focal loss. Defaults to 2.0.
        focal_alpha: alpha of the alpha-balanced focal loss (``monai.losses.FocalLoss``'s ``alpha``).
            Defaults to None.
        weight: per-class weights of the Dice and focal losses, as in ``monai.losses.DiceFocalLoss``.
            Defaults to None.
        lambda_dice: weight of Dice inside the spatial term, >= 0. Defaults to 1.0.
        lambda_focal: weight of focal inside the spatial term, >= 0. Defaults to 1.0.
        squared_pred: squared terms in the Dice denominator. Defaults to False.
        jaccard: soft Jaccard instead of Dice. Defaults to False.
        smooth_nr: Dice numerator smoothing. Defaults to 1e-5.
        smooth_dr: Dice denominator smoothing. Defaults to 1e-5.
        batch: Dice sums over the batch before dividing. Defaults to False.
        freq_alpha: ``alpha`` of :class:`FrequencyLoss` (focal spectral weight exponent). Defaults to 1.0.
        freq_norm: FFT normalisation of :class:`FrequencyLoss`. Defaults to ``"ortho"``.
        freq_log_weight: ``log_weight`` of :class:`FrequencyLoss`. Defaults to False.
        freq_radial_weight: ``radial_weight`` of :class:`FrequencyLoss`. Defaults to 0.0.
        boundary_width: ``width`` (half-width of the band) of :class:`BoundaryAwareLoss`. Defaults to 1.
        boundary_mode: ``"ce"`` or ``"dice"``, ``mode`` of :class:`BoundaryAwareLoss`. Defaults to ``"ce"``.
        boundary_interior_weight: ``interior_weight`` of :class:`BoundaryAwareLoss`. Defaults to 0.0.
        spatial_dims: 2 or 3; ``None`` (default) infers it from the input rank.
        reduction: ``"mean"`` or ``"sum"``, passed to every term. Defaults to ``"mean"``.

    Example:
        >>> loss_fn = SpectralDualLoss()
        >>> logits = torch.randn(2, 3, 64, 64, requires_grad=True)
        >>> label = torch.randint(0, 3, (2, 1, 64, 64))
        >>> loss, parts = loss_fn(logits, label, return_components=True)
        >>> sorted(parts)
        ['boundary', 'dice', 'focal', 'frequency', 'spatial', 'total']
    """

    def __init__(
        self,
        spatial_weight: float = 1.0,
        freq_weight: float = 0.1,
        boundary_weight: float = 0.05,
        use_dice: bool = True,
        use_focal: bool = True,
        to_onehot_y: bool = True,
        softmax: bool = True,
        sigmoid: bool = False,
        include_background: bool = True,
        gamma: float = 2.0,
        focal_alpha: float | Sequence[float] | None = None,
        weight: Sequence[float] | float | int | torch.Tensor | None = None,
        lambda_dice: float = 1.0,
        lambda_focal: float = 1.0,
        squared_pred: bool = False,
        jaccard: bool = False,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch: bool = False,
        freq_alpha: float = 1.0,
        freq_norm: str = "ortho",
        freq_log_weight: bool = False,
        freq_radial_weight: float = 0.0,
        boundary_width: int = 1,
        boundary_mode: str = "ce",
        boundary_interior_weight: float = 0.0,
        spatial_dims: int | None = None,
        reduction: str = "mean",
    ) -> None:
        if reduction not in _REDUCTIONS:
            raise ValueError(f"SpectralDualLoss supports reduction {_REDUCTIONS}, got {reduction!r}.")
        super().__init__(reduction=reduction)
        for name, value in (
            ("spatial_weight", spatial_weight),
            ("freq_weight", freq_weight),
            ("boundary_weight", boundary_weight),
            ("lambda_dice", lambda_dice),
            ("lambda_focal", lambda_focal),
        ):
            if value < 0:
                raise ValueError(f"`{name}` should be no less than 0.0, got {value}.")
        if softmax and sigmoid:
            raise ValueError("Incompatible values: softmax=True and sigmoid=True; set at most one of them.")
        if not (softmax or sigmoid):
            raise ValueError(
                "SpectralDualLoss takes logits: set softmax=True (exclusive classes) or sigmoid=True "
                "(independent channels), got softmax=False and sigmoid=False."
            )
        if spatial_weight > 0 and not (use_dice or use_focal):
            raise ValueError("the spatial term needs use_dice=True or use_focal=True (or set spatial_weight=0).")
        self.spatial_dims = _check_spatial_dims(spatial_dims)
        self.spatial_weight = float(spatial_weight)
        self.freq_weight = float(freq_weight)
        self.boundary_weight = float(boundary_weight)
        self.lambda_dice = float(lambda_dice)
        self.lambda_focal = float(lambda_focal)
        self.to_onehot_y = to_onehot_y
        act = {"softmax": softmax, "sigmoid": sigmoid}
        common = {"include_background": include_background, "reduction": reduction}
        self.dice = (
            DiceLoss(
                squared_pred=squared_pred,
                jaccard=jaccard,
                smooth_nr=smooth_nr,
                smooth_dr=smooth_dr,
                batch=batch,
                weight=weight,
                **act,
                **common,
            )
            if use_dice
            else None
        )
        self.focal = (
            FocalLoss(gamma=gamma, alpha=focal_alpha, weight=weight, use_softmax=softmax, **common)
            if use_focal
            else None
        )
        self.frequency = FrequencyLoss(
            spatial_dims=spatial_dims,
            alpha=freq_alpha,
            norm=freq_norm,
            log_weight=freq_log_weight,
            radial_weight=freq_radial_weight,
            **act,
            **common,
        )
        self.boundary = BoundaryAwareLoss(
            spatial_dims=spatial_dims,
            width=boundary_width,
            mode=boundary_mode,
            interior_weight=boundary_interior_weight,
            **act,
            **common,
        )

    def forward(
        self, input: torch.Tensor, target: torch.Tensor, return_components: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """
        Args:
            input: logits, shape BNH[WD].
            target: label map B1H[WD] (with ``to_onehot_y=True``) or one-hot BNH[WD].
            return_components: also return a dict of detached 0-dim tensors: ``"spatial"``, ``"frequency"``,
                ``"boundary"`` (each term *before* its weight; 0 when the weight is 0), ``"dice"`` and
                ``"focal"`` (the parts of the spatial term, before ``lambda_*``; present when used) and
                ``"total"`` (the returned loss). Tensors, not floats, so logging needs no device sync.

        Returns:
            the total loss, or ``(total, components)`` with ``return_components=True``.

        Raises:
            ValueError: when the input is not 4D or 5D, input and target ranks differ, or the target
                (after one-hot encoding) has a different shape from the input.
        """
        _check_input_rank(input, target, self.spatial_dims, type(self).__name__)
        if target.shape[1] != 1 and target.shape[1] != input.shape[1]:
            raise ValueError(
                "number of channels for target is neither 1 (without one-hot encoding) nor the same as input, "
                f"got shape {tuple(input.shape)} and {tuple(target.shape)}."
            )
        target = _onehot_target(input, target, self.to_onehot_y)
        if target.shape != input.shape:
            raise ValueError(f"ground truth has different shape ({target.shape}) from input ({input.shape})")

        zero = input.new_zeros((), dtype=torch.float32)
        parts: dict[str, torch.Tensor] = {}
        spatial = zero
        if self.spatial_weight > 0:
            if self.dice is not None:
                parts["dice"] = self.dice(input, target)
                spatial = spatial + self.lambda_dice * parts["dice"]
            if self.focal is not None:
                parts["focal"] = self.focal(input, target)
                spatial = spatial + self.lambda_focal * parts["focal"]
        frequency = self.frequency(input, target) if self.freq_weight > 0 else zero
        boundary = self.boundary(input, target) if self.boundary_weight > 0 else zero
        total = self.spatial_weight * spatial + self.freq_weight * frequency + self.boundary_weight * boundary
        if not return_components:
            return total
        parts.update(spatial=spatial, frequency=frequency, boundary=boundary, total=total)
        return total, {k: v.detach() for k, v in parts.items()}
