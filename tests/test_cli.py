"""The mamba-monai command: bundle listing, input description, demo data, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mamba_monai.cli import Commands


def test_lists_the_shipped_bundles():
    assert {"emnet_seg3d", "spectral_vmamba_seg2d"} <= set(Commands().bundles())


def test_info_describes_inputs_and_labels():
    text = Commands().info("emnet_seg3d")
    assert "input 'image': 1 channel(s) CT hounsfield" in text
    assert "'5': 'gland'" in text


def test_demo_data_writes_a_datalist(tmp_path):
    path = Commands().demo_data("ct", str(tmp_path / "ct"), num_train=1, num_val=1, num_test=1, size_scale=0.5)
    with open(path) as f:
        datalist = json.load(f)
    assert len(datalist["training"]) == 1 and len(datalist["test"]) == 1
    assert os.path.isfile(os.path.join(tmp_path, "ct", datalist["training"][0]["image"]))


def test_unknown_names_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="Unknown demo task 'pet'"):
        Commands().demo_data("pet", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="No bundle 'nope'.*emnet_seg3d"):
        Commands().info("nope")


def test_console_help_runs():
    out = subprocess.run(
        [sys.executable, "-m", "mamba_monai.cli", "--help"], capture_output=True, text=True, timeout=120,
        env={**os.environ, "PAGER": "cat"},
    )
    assert out.returncode == 0
    text = out.stdout + out.stderr
    assert "bundles" in text and "demo_data" in text and "info" in text
