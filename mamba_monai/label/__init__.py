"""The MONAI Label app over the mamba-monai bundles: this folder is the app (``monailabel start_server --app
<this folder> --studies DIR --conf models emnet_seg3d``); :mod:`mamba_monai.label.environment` builds an
environment with MONAI Label. Nothing is imported here, so ``mamba_monai`` stays usable without MONAI Label."""

import os

APP_DIR = os.path.dirname(os.path.abspath(__file__))

__all__ = ["APP_DIR"]
