"""mamba_monai: state-space (Mamba) and spectral networks, blocks, losses and bundles for MONAI."""

from __future__ import annotations

__version__ = "0.1.0"
