"""Small helpers shared by the environments that mamba-monai builds for MONAI Deploy and MONAI Label."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence

__all__ = ["env_python", "imports_work", "site_packages_of"]


def env_python(env_dir: str) -> str:
    """The Python interpreter of the virtual environment in ``env_dir``."""
    return os.path.join(env_dir, "bin", "python")


def imports_work(python: str, modules: Sequence[str], timeout: float = 600) -> bool:
    """Whether ``python`` exists and imports every one of ``modules``."""
    if not os.path.isfile(python):
        return False
    probe = "import " + ", ".join(modules)
    return subprocess.run([python, "-c", probe], capture_output=True, timeout=timeout).returncode == 0


def site_packages_of(python: str) -> str:
    """The ``site-packages`` folder (purelib) of the environment of ``python``."""
    return subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
