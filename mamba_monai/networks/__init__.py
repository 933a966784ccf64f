from __future__ import annotations

from .emnet import EMNet
from .medgan_ssm import MedGANSSMGenerator
from .spectral_vmunet import SpectralVMUNet

__all__ = ["EMNet", "MedGANSSMGenerator", "SpectralVMUNet"]
