"""Bad inputs never cost a user the rest of a run: every bundle driven through ``python -m monai.bundle run`` on a
folder that mixes good cases with each bad kind users' folders hold (per-case isolation, named errors, summary
file, exit status, no writes into the data folder, no silent overwrite of other inputs' outputs)."""

from __future__ import annotations

import csv
import json
import os
import shutil

import nibabel as nib
import numpy as np
import pytest

from mamba_monai.bundle import bundle_dir
from mamba_monai.bundle.testing import (
    BAD_INPUT_OUTCOMES,
    assert_outputs_match_inputs,
    run_bundle,
    snapshot_tree,
    write_bad_inputs,
)
from mamba_monai.data import ensure_demo_2d_dataset, ensure_demo_ct_dataset, write_datalist, write_image_2d, write_nifti

BUNDLES = {
    "emnet_seg3d": {
        "spatial_dims": 3,
        "num_classes": 6,
        "demo": lambda root: ensure_demo_ct_dataset(root, num_train=2, num_val=1, num_test=1, size_scale=0.6),
    },
    "spectral_vmamba_seg2d": {
        "spatial_dims": 2,
        "num_classes": 3,
        "demo": lambda root: ensure_demo_2d_dataset(root, num_train=2, num_val=1, num_test=1, size_scale=0.5),
    },
}


def _read_skipped(output_dir) -> dict[str, str]:
    with open(os.path.join(output_dir, "skipped.csv")) as f:
        rows = list(csv.DictReader(f))
    assert all(r["reason"] and r["fix"] for r in rows), rows
    return {os.path.basename(r["file"]): r["stage"] for r in rows}


@pytest.fixture(scope="module", params=sorted(BUNDLES))
def bundle_case(request, tmp_path_factory):
    name, spec = request.param, BUNDLES[request.param]
    base = tmp_path_factory.mktemp(f"bad_{name}")
    demo_dir = str(base / "demo")
    datalist = spec["demo"](demo_dir)
    with open(datalist) as f:
        source = os.path.join(demo_dir, json.load(f)["test"][0]["image"])
    user_data = base / "user_data"
    paths = write_bad_inputs(source, str(user_data / "imagesTs"), spatial_dims=spec["spatial_dims"])
    return {"name": name, "spec": spec, "base": base, "demo_dir": demo_dir, "user_data": user_data, "paths": paths}


def test_inference_isolates_each_bad_case(bundle_case):
    user_data, paths = bundle_case["user_data"], bundle_case["paths"]
    out = bundle_case["base"] / "pred"
    before = snapshot_tree(str(user_data))
    proc = run_bundle(bundle_case["name"], ["inference.json"], check=False, dataset_dir=user_data, output_dir=out)
    log = proc.stdout + proc.stderr

    assert proc.returncode == 1, f"some cases were skipped: the exit status must say so\n{log[-3000:]}"
    written = [p for kind, p in paths.items() if BAD_INPUT_OUTCOMES[kind] == "written"]
    assert_outputs_match_inputs(written, str(out))  # every good case written, with the input's shape and affine
    bad = {os.path.basename(p) for kind, p in paths.items() if BAD_INPUT_OUTCOMES[kind] == "skipped"}
    skipped = _read_skipped(out)
    assert set(skipped) == bad
    assert skipped[os.path.basename(paths["truncated"])] == "read" and skipped["wrong_dims.nii.gz"] == "validate"
    for name in bad:
        assert f"Skipping case {user_data / 'imagesTs' / name}" in log, f"{name} is not named in the log"
    assert f"{len(written)} of {len(paths)} case(s) written, {len(bad)} skipped" in log
    assert "is constant" in log  # the constant image was written, and the log says what it is
    assert not any(f.startswith(tuple(k + "_" for k in bad)) for f in os.listdir(out))
    assert snapshot_tree(str(user_data)) == before, "the run wrote into the data folder"


def test_inference_never_overwrites_the_output_of_another_input(bundle_case):
    paths = bundle_case["paths"]
    out = bundle_case["base"] / "pred_shared"
    first, second = bundle_case["base"] / "site_a", bundle_case["base"] / "site_b"
    for folder in (first, second):
        os.makedirs(folder / "imagesTs")
    shutil.copy(paths["good_b"], first / "imagesTs" / "case.nii.gz")
    other = nib.load(paths["good_b"])  # a different image under the same name at another site
    write_nifti(np.ascontiguousarray(np.asarray(other.dataobj)[::-1]), other.affine, second / "imagesTs" / "case.nii.gz")

    run_bundle(bundle_case["name"], ["inference.json"], dataset_dir=first, output_dir=out)
    first_output = out / "case_seg.nii.gz"
    first_bytes = first_output.read_bytes()
    proc = run_bundle(bundle_case["name"], ["inference.json"], dataset_dir=second, output_dir=out)
    assert first_output.read_bytes() == first_bytes, "the output of site_a was overwritten by site_b's"
    assert (out / "case_seg_2.nii.gz").is_file()
    assert "is taken by the output of" in proc.stdout + proc.stderr
    # running site_b again refreshes its own output instead of adding a third
    run_bundle(bundle_case["name"], ["inference.json"], dataset_dir=second, output_dir=out)
    labels = sorted(f for f in os.listdir(out) if f.startswith("case_seg") and not f.endswith("_overlay.png"))
    assert labels == ["case_seg.nii.gz", "case_seg_2.nii.gz"]
    with open(out / "mapping.json") as f:
        owners = {os.path.basename(e["output"]): os.path.dirname(os.path.dirname(e["input"])) for e in json.load(f)}
    assert owners == {"case_seg.nii.gz": str(first), "case_seg_2.nii.gz": str(second)}


def test_output_dir_inside_the_data_folder_is_refused(bundle_case):
    user_data = bundle_case["user_data"]
    before = snapshot_tree(str(user_data))
    proc = run_bundle(
        bundle_case["name"], ["inference.json"], check=False, dataset_dir=user_data, output_dir=user_data / "pred"
    )
    assert proc.returncode != 0
    assert "is inside the data folder" in proc.stdout + proc.stderr
    assert snapshot_tree(str(user_data)) == before


def _labeled_copy(bundle_case, name: str) -> tuple[str, list[dict]]:
    """A copy of the demo data set (no generator marker: it is the user's data now) and its training items."""
    root = bundle_case["base"] / name
    shutil.copytree(bundle_case["demo_dir"], root, ignore=shutil.ignore_patterns(".*"))
    with open(root / "dataset_0.json") as f:
        return str(root), json.load(f)["training"]


def _corrupt_label(root: str, item: dict, value: int) -> None:
    path = os.path.join(root, item["label"])
    if path.endswith((".nii", ".nii.gz")):
        lab = nib.load(path)
        data = np.asarray(lab.dataobj).copy()
        data.flat[0] = value
        write_nifti(data, lab.affine, path)
        return
    from PIL import Image

    with Image.open(path) as img:
        data = np.asarray(img).copy()
    data.flat[0] = value
    write_image_2d(data, path)


def test_evaluation_isolates_bad_labels(bundle_case):
    root, items = _labeled_copy(bundle_case, "eval_data")
    good, out_of_range, mismatched, missing = (dict(items[0]), dict(items[1]), dict(items[0]), dict(items[1]))
    suffix = ".nii.gz" if out_of_range["label"].endswith(".nii.gz") else os.path.splitext(out_of_range["label"])[1]
    shutil.copy(os.path.join(root, out_of_range["label"]), os.path.join(root, "labelsTr", "bad_values" + suffix))
    out_of_range["label"] = "labelsTr/bad_values" + suffix
    _corrupt_label(root, out_of_range, bundle_case["spec"]["num_classes"] + 3)
    mismatched["label"] = items[1]["label"]  # another case's label: a different shape
    missing["image"] = "imagesTr/not_there.nii.gz"
    write_datalist(os.path.join(root, "dataset_0.json"), training=items, validation=[good, out_of_range, mismatched, missing])
    before = snapshot_tree(root)
    out = bundle_case["base"] / "eval_out"

    proc = run_bundle(
        bundle_case["name"], ["train.json", "evaluate.json"], check=False, dataset_dir=root, output_dir=out,
        ckpt_dir=os.path.join(bundle_dir(bundle_case["name"]), "models"),
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 1, log[-3000:]
    skipped = _read_skipped(out)
    assert skipped == {"bad_values" + suffix: "validate", os.path.basename(items[1]["label"]): "validate",
                       "not_there.nii.gz": "read"}
    assert ("unexpected label value(s)" in log or "label mapping" in log) and "its image" in log
    with open(out / "val_mean_dice_raw.csv") as f:
        rows = list(csv.DictReader(f))
    assert [os.path.basename(r["filename"]) for r in rows] == [os.path.basename(good["image"])]
    assert 0.0 <= float(rows[0]["mean"]) <= 1.0
    assert snapshot_tree(root) == before


def test_training_names_every_bad_case_before_any_epoch(bundle_case):
    root, items = _labeled_copy(bundle_case, "train_data")
    with open(os.path.join(root, "dataset_0.json")) as f:
        validation = json.load(f)["validation"]
    _corrupt_label(root, items[0], 99)
    image = os.path.join(root, items[1]["image"])
    with open(image, "rb") as f:
        blob = f.read()
    with open(image, "wb") as f:
        f.write(blob[: len(blob) // 3])
    bad_validation = dict(validation[0], label="labelsTr/gone.nii.gz")
    write_datalist(os.path.join(root, "dataset_0.json"), training=items + [validation[0]],
                   validation=[validation[0], bad_validation])
    ckpt = bundle_case["base"] / "train_models"
    common = {"dataset_dir": root, "output_dir": bundle_case["base"] / "train_out", "ckpt_dir": ckpt, "epochs": 1}

    proc = run_bundle(bundle_case["name"], ["train.json"], check=False, **common)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "3 of 5 training/validation case(s) cannot be used" in log
    for name in (items[0]["label"], items[1]["image"], "labelsTr/gone.nii.gz"):
        assert os.path.join(root, name) in log, f"{name} not named"
    assert "--skip_bad_cases True" in log
    assert not ckpt.exists() or not os.listdir(ckpt), "training started although cases were bad"

    proc = run_bundle(bundle_case["name"], ["train.json"], check=False, skip_bad_cases=True, val_interval=1, **common)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "skip_bad_cases: using 2 of 5 training/validation case(s)" in log
    assert (ckpt / "checkpoint_latest.pt").is_file() and (ckpt / "model.pt").is_file()
