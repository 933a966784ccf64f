"""An environment of its own for MONAI Label (``python -m mamba_monai.label.environment [DIR]``).

MONAI Label 0.8.5 imports torchvision on start, and the torchvision wheels on this registry need the CUDA build of
torch 2.14.1 (the CPU torch 2.13 of the core install makes torchvision fail to import); it also pins
``pydicom<3``, ``dicomweb-client<0.60`` and ``pynetdicom<3`` (see DESIGN.md). So MONAI Label gets a separate
virtual environment (about 8 GB, mostly CUDA libraries; a few minutes to build from a local registry) with those
pins, the current MONAI version, mamba-monai's other dependencies (highdicom left out: it needs pydicom 3; DICOM SEG
writing is not part of the Label app), and this source tree on its path (a ``.pth``, so edits are seen at once).
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

__all__ = ["DEFAULT_LABEL_ENV", "LABEL_REQUIREMENTS", "ensure_label_env", "label_python", "source_root"]

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


DEFAULT_LABEL_ENV = os.environ.get(
    "MAMBA_MONAI_LABEL_ENV",
    os.path.join(os.path.expanduser("~"), ".cache", "mamba-monai",
                 "label-env-" + hashlib.sha1(str(Path(__file__).resolve()).encode()).hexdigest()[:10]),
)


_PROBE = ("monailabel", "torchvision", "mamba_monai", "monailabel.tasks.infer.bundle")


def label_python(env_dir: str = DEFAULT_LABEL_ENV) -> str:
    """The Python interpreter of the MONAI Label environment."""
    return env_python(env_dir)


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


def ensure_label_env(env_dir: str = DEFAULT_LABEL_ENV, quiet: bool = True) -> str:
    """
    Build the MONAI Label environment in ``env_dir`` unless a working one is there, and return its Python.

    Args:
        env_dir: where it lives. Default ``~/.cache/mamba-monai/label-env-<key of this checkout>`` (or
            ``$MAMBA_MONAI_LABEL_ENV``).
        quiet: pass ``-q`` to pip. Default True.

    Raises:
        RuntimeError: pip failed (the message holds its output), or mamba_monai is not a source checkout.
    """
    import monai

    python = label_python(env_dir)
    if imports_work(python, _PROBE):
        return python
    root = source_root()
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    requirements = LABEL_REQUIREMENTS + [f"monai=={monai.__version__}"] + _core_requirements()
    cmd = [python, "-m", "pip", "install", "--disable-pip-version-check"] + (["-q"] if quiet else []) + requirements
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"Building the MONAI Label environment in {env_dir} failed:\n{proc.stdout[-3000:]}\n"
                           f"{proc.stderr[-3000:]}")
    site = site_packages_of(python)
    with open(os.path.join(site, "mamba_monai_source.pth"), "w", encoding="utf-8") as f:
        f.write(root + "\n")
    if not imports_work(python, _PROBE):
        raise RuntimeError(f"The MONAI Label environment in {env_dir} was built but cannot import monailabel and "
                           "mamba_monai.")
    return python


if __name__ == "__main__":
    print(ensure_label_env(*sys.argv[1:2], quiet=False))
