"""benchmarks/ablate_emnet.py: variants reach the network they name, and each class's Dice is recorded per validation."""

from __future__ import annotations

import importlib.util
import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _ablate():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    spec = importlib.util.spec_from_file_location("ablate_emnet", os.path.join(ROOT, "benchmarks", "ablate_emnet.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_variant_specs_name_a_network_and_its_changes():
    ablate = _ablate()
    assert ablate.parse_variant("unet") == ("unet", "unet", {})
    assert ablate.parse_variant('bn=emnet_fast:{"norm_name": "batch", "depths": [1, 2]}') == (
        "bn", "emnet_fast", {"norm_name": "batch", "depths": [1, 2]})
    with pytest.raises(ValueError, match="unknown network 'resnet'.*emnet_fast"):
        ablate.parse_variant("resnet")
    with pytest.raises(ValueError, match="not JSON"):
        ablate.parse_variant("x=emnet:{feature_size: 8}")
    with pytest.raises(ValueError, match="object of network_def arguments"):
        ablate.parse_variant("x=emnet:[8]")
    assert ablate.parse_override('train#random_transforms#0={"_target_": "Identityd"}') == (
        "train#random_transforms#0", {"_target_": "Identityd"})
    with pytest.raises(ValueError, match="KEY=JSON"):
        ablate.parse_override("warmup_epochs")


def test_bad_variant_exits_with_the_reason(capsys):
    with pytest.raises(SystemExit):
        _ablate().main(["--variant", "resnet"])
    assert "unknown network 'resnet'" in capsys.readouterr().err


def test_each_variant_trains_its_own_network_and_records_dice_per_class(tmp_path, capsys):
    ablate = _ablate()
    out = tmp_path / "ablate.json"
    tiny = {"feature_size": 8, "depths": [1, 1, 1, 1], "decoder_depths": [0, 0, 0], "fft_nums": [0, 0, 0, 1],
            "full_res_channels": 4}
    report = ablate.main([
        "--epochs", "1", "--val-interval", "1", "--lr", "1e-3", "--threads", "1",
        "--variant", f"tiny=emnet_fast:{json.dumps(tiny)}",
        "--override", "warmup_epochs=0",
        "--data-dir", str(tmp_path / "demo_ct"), "--json", str(out),
    ])
    assert json.loads(out.read_text()) == report
    run = report["variants"]["tiny"]
    steps_per_epoch = len(json.loads((tmp_path / "demo_ct" / "dataset_0.json").read_text())["training"])
    assert run["iterations"] == steps_per_epoch  # one epoch, batch 1 volume
    assert run["learning_rate"] == pytest.approx(1e-3)
    assert run["network_overrides"] == tiny
    # the overrides reached the network: its size is that of an EMNet built from the fast config plus the changes
    from mamba_monai.networks import EMNet

    fast = {k: v for k, v in sys.modules["bench_emnet"].network_def("emnet_fast").items() if k != "_target_" and not str(v).startswith("@")}
    expected = EMNet(**{**fast, **tiny}, in_channels=1, out_channels=6, filter_roi_size=[64, 64, 32])
    assert run["params"] == sum(p.numel() for p in expected.parameters())
    (row,) = run["history"]
    assert row["epoch"] == 1 and row["train_loss"] > 0
    assert len(row["val_class_dice"]) == len(report["class_names"]) == 5
    assert all(0.0 <= d <= 1.0 for d in row["val_class_dice"])
    assert row["val_mean_dice"] == pytest.approx(sum(row["val_class_dice"]) / 5, abs=1e-4)
    table = capsys.readouterr().out
    assert "| variant | params | steps | s / step | mean | liver | spleen | kidney | aorta | gland | training loss |" in table
    assert "| tiny | " in table
