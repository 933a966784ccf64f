"""Losses for segmentation with spectral and boundary terms, MONAI-style (``_Loss`` subclasses, BNH[WD] inputs)."""

from __future__ import annotations

from mamba_monai.losses.boundary import BoundaryAwareLoss, boundary_band
from mamba_monai.losses.frequency import FrequencyLoss
from mamba_monai.losses.spectral_dual import SpectralDualLoss

__all__ = ["BoundaryAwareLoss", "FrequencyLoss", "SpectralDualLoss", "boundary_band"]
