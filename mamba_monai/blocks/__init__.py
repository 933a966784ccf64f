from __future__ import annotations

from .bfloat16_conv import CPUBFloat16Conv, cpu_bfloat16_convs
from .emnet import ChannelMLP, CSRMambaLayer, CSRMBlock, EFLLayer, EMNetUpBlock, LayerNormNd, UnetConvBlock
from .mamba import MambaMixer
from .norm_act import (
    InstanceNormAct,
    NormActBasicBlock,
    NormActConvBlock,
    NormActResBlock,
    fuse_norm_act,
    set_fused_norm_act,
)
from .patch import PatchExpanding, ScriptablePatchEmbed, ScriptablePatchMerging
from .medgan import (
    DynamicGate,
    MedGANSSMBlock,
    MedGANSSMStage,
    MultiScaleS6,
    NonLocalAttention,
    infer_modality_mask,
    random_modality_dropout,
)
from .spectral import SpectralGating, SpectralVSSBlock, resize_complex_filter, rfft_grid_shape
from .ssnd import SSND
from .vss import VSSBlock

__all__ = [
    "MambaMixer",
    "CPUBFloat16Conv",
    "cpu_bfloat16_convs",
    "InstanceNormAct",
    "NormActResBlock",
    "NormActBasicBlock",
    "NormActConvBlock",
    "fuse_norm_act",
    "set_fused_norm_act",
    "PatchExpanding",
    "ScriptablePatchEmbed",
    "ScriptablePatchMerging",
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
    "UnetConvBlock",
    "infer_modality_mask",
    "random_modality_dropout",
    "MultiScaleS6",
    "DynamicGate",
    "NonLocalAttention",
    "MedGANSSMBlock",
    "MedGANSSMStage",
]
