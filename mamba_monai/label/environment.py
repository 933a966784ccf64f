"""An environment of its own for MONAI Label (``python -m mamba_monai.label.environment [DIR]``).

MONAI Label 0.8.5 imports torchvision on start, and the torchvision wheels on this registry need the CUDA build of
torch 2.14.1 (the CPU torch 2.13 of the core install makes torchvision fail to import); it also pins
``pydicom<3``, ``dicomweb-client<0.60`` and ``pynetdicom<3`` (see DESIGN.md). So MONAI Label gets a separate
virtual environment (about 8 GB, mostly CUDA libraries; a few minutes to build from a local registry) with those
pins, the current MONAI version, mamba-monai's other dependencies (highdicom left out: it needs pydicom 3; DICOM SEG
writing is not part of the Label app), and the calling source tree on its path (a ``.pth``, so edits are seen at once).
The environment is keyed by what it installs, not by the checkout: every clone on a machine shares one, and each
:func:`ensure_label_env` call points its ``.pth`` at the calling checkout.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import venv
from importlib import metadata
from pathlib import Path

from mamba_monai._venv import env_python, imports_work, site_packages_of

__all__ = [
    "DEFAULT_LABEL_ENV", "LABEL_REQUIREMENTS", "ensure_label_env", "env_key", "label_python", "label_requirements",
    "source_root",
]

LABEL_REQUIREMENTS = [
    "monailabel==0.8.5",
    "torch==2.14.1",
    "torchvision==0.29.1",
    "pydicom<3",
    "dicomweb-client<0.60",
    "pynetdicom<3",
]
_LEFT_OUT = {"torch", "highdicom", "pydicom"}  # pinned above, or not wanted with pydicom 2


def source_root() -> str:
    """The folder holding the ``mamba_monai`` package and ``bundles/`` (a source checkout or editable install)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "setup.cfg").is_file() or not (root / "bundles").is_dir():
        raise RuntimeError(
            f"mamba_monai is not installed from a source checkout ({root} has no setup.cfg and bundles/): the "
            "MONAI Label environment serves the bundles of a checkout; clone the repository and `pip install -e .`."
        )
    return str(root)


_PROBE = ("monailabel", "torchvision", "mamba_monai", "monailabel.tasks.infer.bundle")


def _core_requirements() -> list[str]:
    """mamba-monai's own dependencies (not its extras), without the ones MONAI Label pins differently."""
    requirements = []
    for requirement in metadata.requires("mamba-monai") or []:
        if "extra ==" in requirement:
            continue
        name = re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower()
        if name not in _LEFT_OUT:
            requirements.append(requirement.split(";")[0].strip())
    return requirements


def label_requirements() -> list[str]:
    """What the MONAI Label environment installs: MONAI Label's pins, this MONAI version, mamba-monai's dependencies."""
    import monai

    return LABEL_REQUIREMENTS + [f"monai=={monai.__version__}"] + _core_requirements()


def env_key(requirements: list[str]) -> str:
    """A short key of the Python version and ``requirements``: environments that would install the same share it."""
    text = "\n".join([".".join(map(str, sys.version_info[:2]))] + sorted(requirements))
    return hashlib.sha1(text.encode()).hexdigest()[:10]


DEFAULT_LABEL_ENV = os.environ.get(
    "MAMBA_MONAI_LABEL_ENV",
    os.path.join(os.path.expanduser("~"), ".cache", "mamba-monai", "label-env-" + env_key(label_requirements())),
)


def label_python(env_dir: str = DEFAULT_LABEL_ENV) -> str:
    """The Python interpreter of the MONAI Label environment."""
    return env_python(env_dir)


def _point_at_checkout(python: str, root: str) -> None:
    """Make the environment of ``python`` import mamba_monai from the checkout in ``root``."""
    pth = os.path.join(site_packages_of(python), "mamba_monai_source.pth")
    if not os.path.isfile(pth) or open(pth, encoding="utf-8").read().strip() != root:
        with open(pth, "w", encoding="utf-8") as f:
            f.write(root + "\n")


def ensure_label_env(env_dir: str = DEFAULT_LABEL_ENV, quiet: bool = True) -> str:
    """
    Build the MONAI Label environment in ``env_dir`` unless a working one is there, point it at this checkout, and
    return its Python.

    Args:
        env_dir: where it lives. Default ``~/.cache/mamba-monai/label-env-<key of what it installs>`` (shared by every
            checkout; see :func:`env_key`) or ``$MAMBA_MONAI_LABEL_ENV``.
        quiet: pass ``-q`` to pip. Default True.

    Raises:
        RuntimeError: pip failed (the message holds its output), or mamba_monai is not a source checkout.
    """
    root = source_root()
    python = label_python(env_dir)
    if os.path.isfile(python):
        _point_at_checkout(python, root)
        if imports_work(python, _PROBE):
            return python
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    cmd = [python, "-m", "pip", "install", "--disable-pip-version-check"] + (["-q"] if quiet else [])
    proc = subprocess.run(cmd + label_requirements(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"Building the MONAI Label environment in {env_dir} failed:\n{proc.stdout[-3000:]}\n"
                           f"{proc.stderr[-3000:]}")
    _point_at_checkout(python, root)
    if not imports_work(python, _PROBE):
        raise RuntimeError(f"The MONAI Label environment in {env_dir} was built but cannot import monailabel and "
                           "mamba_monai.")
    return python


if __name__ == "__main__":
    print(ensure_label_env(*sys.argv[1:2], quiet=False))
