"""Test session settings. OMP_WAIT_POLICY must be set before torch starts its OpenMP runtime (see
mamba_monai/__init__.py): pytest imports this file before any test module imports torch."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
