"""The MONAI Label environment is shared by every checkout on a machine (keyed by what it installs, about 8 GB) and
pointed at the checkout that asks for it. The environment itself is built and served in test_label.py (marked label)."""

from __future__ import annotations

import os

from mamba_monai.label import environment


def test_key_depends_on_what_is_installed_not_on_order_or_checkout():
    reqs = environment.label_requirements()
    assert environment.env_key(reqs) == environment.env_key(list(reversed(reqs)))
    changed = [r if not r.startswith("monailabel==") else "monailabel==0.8.6" for r in reqs]
    assert environment.env_key(changed) != environment.env_key(reqs)
    if "MAMBA_MONAI_LABEL_ENV" not in os.environ:
        assert os.path.basename(environment.DEFAULT_LABEL_ENV) == "label-env-" + environment.env_key(reqs)


def test_the_shared_environment_is_pointed_at_the_calling_checkout(tmp_path, monkeypatch):
    site = tmp_path / "site-packages"
    site.mkdir()
    monkeypatch.setattr(environment, "site_packages_of", lambda python: str(site))
    pth = site / "mamba_monai_source.pth"
    environment._point_at_checkout("python", "/clones/a")
    assert pth.read_text().strip() == "/clones/a"
    os.utime(pth, (0, 0))
    environment._point_at_checkout("python", "/clones/a")
    assert os.stat(pth).st_mtime == 0, "an unchanged checkout rewrote the .pth"
    environment._point_at_checkout("python", "/clones/b")
    assert pth.read_text().strip() == "/clones/b"
