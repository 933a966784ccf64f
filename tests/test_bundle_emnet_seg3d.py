"""Model-zoo style tests of bundles/emnet_seg3d: train, evaluate, infer through ConfigWorkflow, metadata, export."""

from __future__ import annotations

import csv
import glob
import os

import nibabel as nib
import pytest
import torch
from monai.bundle import ConfigParser, ckpt_export, verify_net_in_out

from mamba_monai.bundle import bundle_dir, bundle_workflow, run_workflow, verify_bundle_metadata
from mamba_monai.bundle.testing import (
    assert_outputs_match_inputs,
    export_and_compare,
    run_bundle_with_torchrun,
    tensorboard_writer_pids,
    write_hospital_like_inputs,
)
from mamba_monai.data import DEMO_CT_LABELS, ensure_demo_ct_dataset, load_datalist

BUNDLE = "emnet_seg3d"
ROOT = bundle_dir(BUNDLE)
CONFIGS = os.path.join(ROOT, "configs")
SMALL = {"train#dataset#cache_rate": 0.0, "validate#dataset#cache_rate": 0.0}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """Small demo data set and one epoch of training, shared by the tests of this module."""
    base = tmp_path_factory.mktemp("emnet_bundle")
    data_dir = str(base / "data")
    ensure_demo_ct_dataset(data_dir, num_train=2, num_val=1, num_test=2, size_scale=0.8)
    overrides = {"dataset_dir": data_dir, "ckpt_dir": str(base / "models"), "output_dir": str(base / "eval")}
    train = bundle_workflow(BUNDLE, "train", epochs=1, val_interval=1, **overrides, **SMALL)
    run_workflow(train)
    evaluator = train.parser.get_parsed_content("validate#evaluator")
    return {"base": base, "data_dir": data_dir, "overrides": overrides, "val_metrics": dict(evaluator.state.metrics)}


def test_metadata_is_valid_and_matches_demo_labels():
    verify_bundle_metadata(BUNDLE)
    meta = ConfigParser.load_config_file(os.path.join(CONFIGS, "metadata.json"))
    channel_def = meta["network_data_format"]["outputs"]["pred"]["channel_def"]
    assert {int(k): v for k, v in channel_def.items()} == DEMO_CT_LABELS
    train = ConfigParser.load_config_file(os.path.join(CONFIGS, "train.json"))
    assert train["num_classes"] == len(DEMO_CT_LABELS)


def test_train_one_epoch_writes_checkpoints_and_validates(run_dir):
    models = run_dir["base"] / "models"
    assert (models / "model.pt").is_file(), "CheckpointSaver did not write the key-metric model.pt"
    assert (models / "checkpoint_latest.pt").is_file(), "ResumableCheckpoint did not write its file"
    state = torch.load(models / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values()), "model.pt must be a plain tensor state_dict"
    dice = run_dir["val_metrics"]["val_mean_dice"]
    assert 0.0 <= dice <= 1.0


def test_resume_continues_from_the_saved_epoch(run_dir):
    overrides = dict(run_dir["overrides"], ckpt_dir=str(run_dir["base"] / "models"))
    train = bundle_workflow(BUNDLE, "train", epochs=1, val_interval=1, resume=True, **overrides, **SMALL)
    run_workflow(train)
    trainer = train.parser.get_parsed_content("train#trainer")
    # the checkpoint says epoch 1 was done and epochs=1: nothing is trained again
    assert trainer.state.epoch == 1
    assert trainer.state.iteration == torch.load(
        run_dir["base"] / "models" / "checkpoint_latest.pt", weights_only=False
    )["trainer"]["iteration"]


def test_evaluate_saves_per_case_and_summary_csv(run_dir):
    evaluate = bundle_workflow(BUNDLE, ["train", "evaluate"], **run_dir["overrides"])
    run_workflow(evaluate)
    out = run_dir["base"] / "eval"
    val_images = [os.path.basename(i["image"]) for i in load_datalist(
        os.path.join(run_dir["data_dir"], "dataset_0.json"), "validation", base_dir=run_dir["data_dir"])]
    foreground = [f"class{i}" for i in range(len(DEMO_CT_LABELS) - 1)]
    for name, low, high in (("val_mean_dice", 0, 1), ("val_hd95_mm", 0, 1e4), ("val_surface_dice", 0, 1)):
        with open(out / f"{name}_raw.csv") as f:
            rows = list(csv.DictReader(f))
        # one row per validation case, one column per foreground class and their mean
        assert [os.path.basename(r["filename"]) for r in rows] == val_images
        assert list(rows[0]) == ["filename", *foreground, "mean"]
        values = [float(r[c]) for r in rows for c in foreground if r[c] != "nan"]
        assert values and all(low <= v <= high for v in values), f"{name}: {values}"
        with open(out / f"{name}_summary.csv") as f:
            summary = {r["class"]: r for r in csv.DictReader(f)}
        assert set(summary) == {*foreground, "mean"}
    metrics = evaluate.parser.get_parsed_content("validate#evaluator").state.metrics
    assert set(metrics) >= {"val_mean_dice", "val_hd95_mm", "val_surface_dice"}


def test_inference_on_demo_test_images_keeps_geometry(run_dir):
    out_dir = str(run_dir["base"] / "pred")
    infer = bundle_workflow(
        BUNDLE, "inference", workflow_type="infer", dataset_dir=run_dir["data_dir"], output_dir=out_dir,
        checkpointloader={"_target_": "CheckpointLoader", "load_path": str(run_dir["base"] / "models" / "model.pt"),
                          "load_dict": {"model": "@network"}},
    )
    run_workflow(infer)
    inputs = sorted(glob.glob(os.path.join(run_dir["data_dir"], "imagesTs", "*.nii.gz")))
    matched = assert_outputs_match_inputs(inputs, out_dir)
    for out in matched.values():
        labels = set(torch.unique(torch.as_tensor(nib.load(out).get_fdata())).int().tolist())
        assert labels <= set(DEMO_CT_LABELS), f"{out} holds labels {labels}"


def test_inference_goes_through_hospital_like_inputs_and_skips_corrupt(run_dir, capsys):
    cases = write_hospital_like_inputs(
        sorted(glob.glob(os.path.join(run_dir["data_dir"], "imagesTs", "*.nii.gz")))[0],
        str(run_dir["base"] / "hospital" / "imagesTs"),
    )
    out_dir = str(run_dir["base"] / "hospital_pred")
    infer = bundle_workflow(
        BUNDLE, "inference", workflow_type="infer", dataset_dir=str(run_dir["base"] / "hospital"),
        output_dir=out_dir, load_pretrain=False,
    )
    run_workflow(infer)  # the bundle's logging.conf sends log records to stdout
    log = capsys.readouterr().out
    assert "corrupt.nii.gz" in log and "Skipping case" in log
    good = [p for kind, p in cases.items() if kind != "corrupt"]
    assert_outputs_match_inputs(good, out_dir)
    assert not glob.glob(os.path.join(out_dir, "corrupt*"))


def test_torchrun_two_processes_train_with_one_writer(tmp_path):
    data_dir = str(tmp_path / "data")
    ensure_demo_ct_dataset(data_dir, num_train=2, num_val=2, num_test=0, size_scale=0.8)
    ckpt_dir, log_dir = tmp_path / "models", tmp_path / "eval"
    run_bundle_with_torchrun(
        BUNDLE, ["train.json", "multi_gpu_train.json"], nproc=2, dataset_dir=data_dir, ckpt_dir=ckpt_dir,
        output_dir=log_dir, epochs=1, val_interval=1,
    )
    assert (ckpt_dir / "model.pt").is_file() and (ckpt_dir / "checkpoint_latest.pt").is_file()
    # rank 0 alone writes TensorBoard files; other ranks must not leave (empty) event files beside them
    assert len(tensorboard_writer_pids(str(log_dir))) == 1


def _largest_component_transform(config: str | list[str], key: str):
    from monai.transforms import KeepLargestConnectedComponentd

    wf = bundle_workflow(BUNDLE, config, workflow_type="infer" if config == "inference" else "train")
    post = wf.parser.get_parsed_content(key)
    found = [t for t in post.transforms if isinstance(t, KeepLargestConnectedComponentd)]
    assert len(found) == 1, f"{config}: expected one KeepLargestConnectedComponentd in {key}"
    return found[0]


@pytest.mark.parametrize("config,key,onehot", [
    ("inference", "postprocessing", False),
    (["train", "evaluate"], "validate#postprocessing", True),
])
def test_postprocessing_drops_stray_islands_but_keeps_both_kidneys(config, key, onehot):
    klcc = _largest_component_transform(config, key)
    labels = torch.zeros(1, 24, 24, 24, dtype=torch.long)
    labels[0, 2:10, 2:10, 2:10] = 1  # liver
    labels[0, 20:22, 20:22, 20:22] = 1  # a stray liver island
    labels[0, 12:15, 2:5, 2:5] = 3  # left kidney
    labels[0, 12:15, 18:21, 2:5] = 3  # right kidney
    labels[0, 2:4, 20:22, 12:14] = 5  # gland
    labels[0, 20:21, 2:3, 20:21] = 5  # a stray gland voxel
    pred = torch.nn.functional.one_hot(labels[0], len(DEMO_CT_LABELS)).permute(3, 0, 1, 2) if onehot else labels
    out = klcc({"pred": pred.clone()})["pred"]
    out = torch.as_tensor(out).argmax(0) if onehot else torch.as_tensor(out)[0]
    assert (out == 1).sum() == 8**3, "the liver island was not dropped"
    assert (out == 3).sum() == 2 * 27, "a kidney was dropped: the demo label covers both kidneys"
    assert (out == 5).sum() == 8, "the stray gland voxel was not dropped"


def test_verify_net_in_out():
    verify_net_in_out(
        net_id="network_def",
        meta_file=os.path.join(CONFIGS, "metadata.json"),
        config_file=os.path.join(CONFIGS, "inference.json"),
        n=2,
        bundle_root=ROOT,
    )


def test_export_torchscript_matches_eager(run_dir, tmp_path):
    ts_path = str(tmp_path / "model.ts")
    ckpt_export(
        net_id="network_def",
        filepath=ts_path,
        ckpt_file=str(run_dir["base"] / "models" / "model.pt"),
        meta_file=os.path.join(CONFIGS, "metadata.json"),
        config_file=os.path.join(CONFIGS, "inference.json"),
        bundle_root=ROOT,
        use_trace=True,
        input_shape=[1, 1, 64, 64, 32],
    )
    parser = ConfigParser()
    parser.read_config(os.path.join(CONFIGS, "inference.json"))
    parser["bundle_root"] = ROOT
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(run_dir["base"] / "models" / "model.pt", weights_only=True))
    # the trace is specialised to the ROI it was traced at (the sliding window feeds exactly that size);
    # a fresh random input checks that the scan is an operator in the graph, not constants
    export_and_compare(net, ts_path, (1, 1, 64, 64, 32))
    # and the exported model gives the eager model's whole-volume sliding-window prediction
    inferer = parser.get_parsed_content("inferer")
    inferer.progress = False
    volume = torch.rand(1, 1, 70, 81, 45)
    exported = torch.jit.load(ts_path)
    with torch.no_grad():
        diff = (inferer(volume, net.eval()) - inferer(volume, exported)).abs().max()
    assert diff < 1e-4
