"""An environment of its own for the MONAI Deploy App SDK, layered over the current one.

The SDK brings Holoscan, CuPy and the Triton client (about 450 MB), and installs its code inside the ``monai``
package folder (``monai/deploy``). :func:`ensure_deploy_env` makes a virtual environment that holds the SDK and a
copy of the installed MONAI (so that ``monai.deploy`` sits beside it) and sees everything else (torch, mamba_monai,
highdicom...) from the current environment, so the core install stays small and nothing is installed twice.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import sysconfig
import venv

from mamba_monai._venv import env_python, imports_work, site_packages_of

__all__ = ["DEFAULT_DEPLOY_ENV", "SDK_REQUIREMENT", "deploy_python", "ensure_deploy_env"]

# one environment per parent environment: it reads the parent's packages through a .pth written at build time
_PARENT_KEY = hashlib.sha1(sysconfig.get_paths()["purelib"].encode()).hexdigest()[:10]
DEFAULT_DEPLOY_ENV = os.environ.get(
    "MAMBA_MONAI_DEPLOY_ENV",
    os.path.join(os.path.expanduser("~"), ".cache", "mamba-monai", f"deploy-env-{_PARENT_KEY}"),
)
SDK_REQUIREMENT = "monai-deploy-app-sdk==4.0.0"


_PROBE = ("monai.deploy.core", "holoscan", "mamba_monai.deploy.segmentation_app")


def deploy_python(env_dir: str = DEFAULT_DEPLOY_ENV) -> str:
    """The Python interpreter of the deploy environment."""
    return env_python(env_dir)


def ensure_deploy_env(env_dir: str = DEFAULT_DEPLOY_ENV, quiet: bool = True) -> str:
    """
    Build the deploy environment in ``env_dir`` unless a working one is there, and return its Python.

    Steps: a virtual environment whose ``.pth`` adds the current environment's site-packages after its own; the
    SDK (``monai-deploy-app-sdk``) and ``filelock`` (which Holoscan's wheel runtime needs on first import); the
    current MONAI version again, inside the environment, to host ``monai/deploy``.

    Args:
        env_dir: where the environment lives. Default ``~/.cache/mamba-monai/deploy-env-<key of the current
            environment>`` (or ``$MAMBA_MONAI_DEPLOY_ENV``).
        quiet: pass ``-q`` to pip. Default True.

    Raises:
        RuntimeError: a step failed; the message holds pip's output.
    """
    import monai

    python = deploy_python(env_dir)
    if imports_work(python, _PROBE):
        return python
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    own = site_packages_of(python)
    parents = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    with open(os.path.join(own, "00_parent_environment.pth"), "w", encoding="utf-8") as f:
        # addsitedir (not a bare path) so that the parent's own .pth files (editable installs) are read too; "00" so
        # that it comes before the SDK's own .pth (Holoscan's wheel runtime imports filelock from it)
        f.write("import site; " + "; ".join(f"site.addsitedir({p!r})" for p in parents) + "\n")
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check"] + (["-q"] if quiet else [])
    for args in ([SDK_REQUIREMENT, "filelock"], ["--ignore-installed", "--no-deps", f"monai=={monai.__version__}"]):
        proc = subprocess.run(pip + args, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"Building the deploy environment in {env_dir} failed at `pip install {' '.join(args)}`:"
                               f"\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    if not imports_work(python, _PROBE):
        raise RuntimeError(f"The deploy environment in {env_dir} was built but cannot import the SDK and the app.")
    return python


if __name__ == "__main__":
    print(ensure_deploy_env(*sys.argv[1:2], quiet=False))
