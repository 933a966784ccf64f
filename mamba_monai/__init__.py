"""mamba_monai: state-space (Mamba) and spectral networks, blocks, losses and bundles for MONAI.

The subpackages are imported here so that bundle configs can write ``"$import mamba_monai"`` and then use
``mamba_monai.data.load_datalist(...)`` in expressions (MONAI binds only the imported name).
"""

from __future__ import annotations

import os

__version__ = "0.1.0"

# The CPU scan runs numba kernels on an OpenMP runtime of its own beside torch's: with the default (spinning) wait
# policy each runtime's idle threads busy-wait while the other works, which made an EM-Net training step 11x slower
# here (27.6 s vs 2.5 s on 2 cores beside one other job). OpenMP reads the policy when it starts, so this helps only
# when mamba_monai is imported before torch (the `mamba-monai` command, scripts that import it first); otherwise
# set OMP_WAIT_POLICY=PASSIVE in the environment (see README.md). A value already set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from . import blocks, bundle, data, engines, inferers, losses, metrics, networks, ops, visualize  # noqa: E402

__all__ = [
    "blocks", "bundle", "data", "engines", "inferers", "losses", "metrics", "networks", "ops", "visualize", "__version__"
]
