from __future__ import annotations

from .emnet import ChannelMLP, CSRMambaLayer, CSRMBlock, EFLLayer, EMNetUpBlock, LayerNormNd
from .mamba import MambaMixer
from .spectral import SpectralGating, SpectralVSSBlock, resize_complex_filter, rfft_grid_shape
from .ssnd import SSND
from .vss import VSSBlock

__all__ = [
    "MambaMixer",
    "SSND",
    "VSSBlock",
    "SpectralGating",
    "SpectralVSSBlock",
    "resize_complex_filter",
    "rfft_grid_shape",
    "LayerNormNd",
    "ChannelMLP",
    "CSRMambaLayer",
    "EFLLayer",
    "CSRMBlock",
    "EMNetUpBlock",
]
