"""Frequency-weighted (focal frequency) loss between a prediction and a target, 2D and 3D."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn.modules.loss import _Loss

from monai.utils import LossReduction

from mamba_monai.ops.utils import autocast_disabled
from mamba_monai.losses.utils import (
    _activate,
    _check_activation,
    _check_input_rank,
    _check_spatial_dims,
    _drop_background,
    _float32_at_least,
    _onehot_target,
    _reduce,
)

__all__ = ["FrequencyLoss"]

_FFT_NORMS = ("ortho", "forward", "backward")


class FrequencyLoss(_Loss):
    """
    Focal-frequency loss: a weighted squared distance between the Fourier spectra of a prediction and
    a target, for 2D (BNHW) and 3D (BNHWD) inputs.

    Based on:
        Jiang, L. et al. "Focal Frequency Loss for Image Reconstruction and Synthesis", ICCV 2021.
        https://arxiv.org/abs/2012.12821

    With ``D = FFT(input - target)`` over the spatial axes (``torch.fft.rfftn``, computed in float32
    even under ``torch.autocast``; float64 inputs stay float64), the value for one image and channel is

    .. math::

        L = \\frac{1}{N} \\sum_k w_k \\, |D_k|^2, \\qquad
        w_k = \\frac{m_k}{\\max_j m_j} \\, (1 + \\beta \\, r_k), \\qquad m_k = |D_k|^\\alpha
        \\; (\\text{or } \\log(1 + |D_k|^\\alpha) \\text{ with } ``log_weight``)

    where the sum runs over the full spectrum of ``N`` voxels (the half spectrum of ``rfftn`` is counted
    with its Hermitian multiplicity, so the result equals the one from a full ``fftn``), ``m`` is
    detached from the graph (it weighs, it is not optimised), ``r_k`` in [0, 1] is the radial frequency
    (``|f| / |f_nyquist|`` over all spatial axes) and ``beta`` is ``radial_weight``.

    Why weights: with ``norm="ortho"``, ``alpha=0`` and ``radial_weight=0`` all weights are 1 and, by
    Parseval, the loss equals the spatial mean squared error (the tests check this), so it adds nothing
    to a spatial loss. The focal weight ``|D_k|^alpha`` (the default, ``alpha=1``) makes the frequencies
    that are currently worst reproduced (often the high ones that carry boundaries) dominate, and the
    optional radial weight favours high frequencies outright. The loss is zero if and only if
    ``input == target`` (every weight is positive where ``D_k != 0``, and the FFT is invertible).

    For segmentation, pass logits with ``softmax=True`` (or ``sigmoid=True``) and a label map with
    ``to_onehot_y=True``: the spectra of class probabilities and one-hot masks are compared.

    Args:
        spatial_dims: 2 or 3; ``None`` (default) infers it from the input rank (4D -> 2, 5D -> 3).
        include_background: if False, channel 0 (background) is excluded. Defaults to True.
        to_onehot_y: one-hot encode a B1H[WD] ``target`` to ``input.shape[1]`` channels. Defaults to False.
        sigmoid: apply a sigmoid to ``input``. Defaults to False.
        softmax: apply a softmax over channels to ``input``. Defaults to False.
        other_act: another callable activation applied to ``input``, e.g. ``torch.tanh``. Defaults to None.
        alpha: exponent of the focal spectral weight ``|D|^alpha`` (>= 0; 0 disables it). Defaults to 1.0.
        norm: ``"ortho"``, ``"forward"`` or ``"backward"``, the ``torch.fft`` normalisation. Defaults to ``"ortho"``.
        log_weight: use ``log(1 + |D|^alpha)`` as the focal weight before normalising. Defaults to False.
        batch_weight: normalise the focal weight by its maximum over the whole batch instead of per image
            and channel. Defaults to False.
        radial_weight: ``beta`` >= 0 in the radial factor ``1 + beta * r``; 0 disables it. Defaults to 0.0.
        reduction: {``"none"``, ``"mean"``, ``"sum"``}. The loss is first computed per image and channel,
            then ``"mean"`` averages, ``"sum"`` sums, and ``"none"`` returns shape (B, N, 1, 1[, 1]).
            Defaults to ``"mean"``.

    Example:
        >>> loss = FrequencyLoss(softmax=True, to_onehot_y=True)
        >>> logits = torch.randn(2, 3, 32, 32)
        >>> label = torch.randint(0, 3, (2, 1, 32, 32))
        >>> loss(logits, label).shape
        torch.Size([])
    """

    def __init__(
        self,
        spatial_dims: int | None = None,
        include_background: bool = True,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool = False,
        other_act: Callable | None = None,
        alpha: float = 1.0,
        norm: str = "ortho",
        log_weight: bool = False,
        batch_weight: bool = False,
        radial_weight: float = 0.0,
        reduction: LossReduction | str = LossReduction.MEAN,
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        self.spatial_dims = _check_spatial_dims(spatial_dims)
        _check_activation(sigmoid, softmax, other_act)
        if alpha < 0:
            raise ValueError(f"`alpha` should be no less than 0.0, got {alpha}.")
        if norm not in _FFT_NORMS:
            raise ValueError(f"`norm` should be one of {_FFT_NORMS}, got {norm!r}.")
        if radial_weight < 0:
            raise ValueError(f"`radial_weight` should be no less than 0.0, got {radial_weight}.")
        self.include_background = include_background
        self.to_onehot_y = to_onehot_y
        self.sigmoid = sigmoid
        self.softmax = softmax
        self.other_act = other_act
        self.alpha = float(alpha)
        self.norm = norm
        self.log_weight = log_weight
        self.batch_weight = batch_weight
        self.radial_weight = float(radial_weight)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input: prediction (logits or probabilities, by the options), shape BNH[WD].
            target: shape BNH[WD], or B1H[WD] with ``to_onehot_y=True``.

        Raises:
            ValueError: when the input is not 4D or 5D, does not match ``spatial_dims``, or the target
                (after one-hot encoding) has a different shape from the input.
        """
        spatial_dims = _check_input_rank(input, target, self.spatial_dims, type(self).__name__)
        target = _onehot_target(input, target, self.to_onehot_y)
        if target.shape != input.shape:
            raise ValueError(f"ground truth has different shape ({target.shape}) from input ({input.shape})")
        with autocast_disabled(input.device):
            input = _float32_at_least(input)
            input = _activate(input, self.sigmoid, self.softmax, self.other_act)
            input, target = _drop_background(input, target.to(input.dtype), self.include_background)
            f = self._spectral_distance(input - target, spatial_dims)
        return _reduce(f, self.reduction, input.dim())

    def _spectral_distance(self, diff: torch.Tensor, spatial_dims: int) -> torch.Tensor:
        """Per-image, per-channel weighted spectral distance (B, N) of a real BNH[WD] difference."""
        dims = tuple(range(2, 2 + spatial_dims))
        spec = torch.fft.rfftn(diff, dim=dims, norm=self.norm)
        power = spec.real.square() + spec.imag.square()  # |D|^2, real and differentiable
        weight = self._focal_weight(power.detach())
        if self.radial_weight > 0:
            weight = weight * (1.0 + self.radial_weight * self._radial_frequency(diff.shape[2:], diff))
        weighted = weight * power * self._hermitian_multiplicity(diff.shape[-1], diff)
        n_voxels = float(torch.Size(diff.shape[2:]).numel())
        return weighted.flatten(2).sum(-1) / n_voxels

    def _focal_weight(self, power: torch.Tensor) -> torch.Tensor:
        """``|D|^alpha`` (optionally log1p), normalised to a maximum of 1 per image/channel or per batch."""
        if self.alpha == 0 and not self.log_weight:
            return torch.ones_like(power)
        m = power.pow(self.alpha / 2.0)
        if self.log_weight:
            m = torch.log1p(m)
        flat = m.flatten(2)
        peak = flat.amax() if self.batch_weight else flat.amax(-1)
        peak = peak.view(list(peak.shape) + [1] * (m.dim() - peak.dim()))
        return m / peak.clamp_min(torch.finfo(m.dtype).tiny)

    @staticmethod
    def _hermitian_multiplicity(n_last: int, like: torch.Tensor) -> torch.Tensor:
        """How many bins of the full spectrum each bin of the ``rfftn`` half spectrum stands for (1 or 2)."""
        mult = torch.full((n_last // 2 + 1,), 2.0, dtype=like.dtype, device=like.device)
        mult[0] = 1.0
        if n_last % 2 == 0:
            mult[-1] = 1.0
        return mult

    @staticmethod
    def _radial_frequency(shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
        """Radial frequency in [0, 1] on the ``rfftn`` grid: ``|f| / |f_nyquist|`` (f in cycles per voxel)."""
        freqs = [torch.fft.fftfreq(n, dtype=like.dtype, device=like.device) for n in shape[:-1]]
        freqs.append(torch.fft.rfftfreq(shape[-1], dtype=like.dtype, device=like.device))
        grids = torch.meshgrid(*freqs, indexing="ij")
        r2 = sum((g / 0.5).square() for g in grids)
        return torch.sqrt(r2 / len(shape))
