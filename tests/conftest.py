"""Test session settings: mamba_monai is imported before any test module imports torch, so the OpenMP spin count it
sets when the environment has none (mamba_monai/__init__.py) reaches torch's thread pool as well as the numba kernels'."""

import mamba_monai  # noqa: F401
