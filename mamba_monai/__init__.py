"""mamba_monai: state-space (Mamba) and spectral networks, blocks, losses and bundles for MONAI.

The subpackages are imported here so that bundle configs can write ``"$import mamba_monai"`` and then use
``mamba_monai.data.load_datalist(...)`` in expressions (MONAI binds only the imported name).
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import blocks, bundle, data, engines, losses, metrics, networks, ops  # noqa: E402

__all__ = ["blocks", "bundle", "data", "engines", "losses", "metrics", "networks", "ops", "__version__"]
