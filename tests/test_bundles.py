"""Model-zoo style tests that every segmentation bundle passes: the zoo's own checks called as its CI calls them
(default arguments), one epoch of training through ``ConfigWorkflow``, resume, evaluation CSVs, inference on the
demo test images with the input's geometry, and ``torchrun`` with one writer. Bundle-specific tests live in
``test_bundle_<name>.py``."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections.abc import Callable

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, ckpt_export, verify_net_in_out

from mamba_monai.bundle import bundle_dir, bundle_workflow, list_bundles, run_workflow, verify_bundle_metadata
from mamba_monai.bundle.testing import (
    assert_outputs_match_inputs,
    export_and_compare,
    record_cases_config,
    recorded_cases,
    run_bundle_with_torchrun,
    tensorboard_writer_pids,
)
from mamba_monai.data import (
    DEMO_2D_LABELS,
    DEMO_CT_LABELS,
    ensure_demo_2d_dataset,
    ensure_demo_ct_dataset,
    load_datalist,
)


@dataclasses.dataclass
class BundleSpec:
    demo: Callable[[str], str]  # writes a small demo set, returns its datalist
    labels: dict[int, str]
    metrics: tuple[str, ...]  # the evaluation's metric names (CSV files)
    export_shapes: tuple[tuple[int, ...], ...]  # the exported model must match eager at each
    train_overrides: dict = dataclasses.field(default_factory=dict)
    clips_gradients: bool = False  # train.json's GradientClipping handler (grad_clip_norm)


SPECS = {
    "emnet_seg3d": BundleSpec(
        demo=lambda root: ensure_demo_ct_dataset(root, num_train=2, num_val=2, num_test=2, size_scale=0.8),
        labels=DEMO_CT_LABELS,
        metrics=("val_mean_dice", "val_hd95_mm", "val_surface_dice"),
        export_shapes=((1, 1, 64, 64, 32), (1, 1, 64, 96, 32)),
        train_overrides={"train#dataset#cache_rate": 0.0, "validate#dataset#cache_rate": 0.0},
        clips_gradients=True,
    ),
    "spectral_vmamba_seg2d": BundleSpec(
        demo=lambda root: ensure_demo_2d_dataset(root, num_train=4, num_val=2, num_test=2, size_scale=0.5),
        labels=DEMO_2D_LABELS,
        metrics=("val_mean_dice", "val_boundary_iou", "val_hd95"),
        export_shapes=((1, 1, 128, 128), (1, 1, 96, 160)),
        train_overrides={"batch_size": 2},
    ),
}
BUNDLES = sorted(SPECS)


def _configs(bundle: str) -> str:
    return os.path.join(bundle_dir(bundle), "configs")


@pytest.fixture(scope="module", params=BUNDLES)
def run_dir(request, tmp_path_factory):
    """A small demo data set and one epoch of training per bundle, shared by the tests of this module."""
    bundle, spec = request.param, SPECS[request.param]
    base = tmp_path_factory.mktemp(bundle)
    data_dir = str(base / "data")
    datalist = spec.demo(data_dir)
    overrides = {"dataset_dir": data_dir, "ckpt_dir": str(base / "models"), "output_dir": str(base / "eval")}
    train = bundle_workflow(bundle, "train", epochs=1, val_interval=1, **overrides, **spec.train_overrides)
    run_workflow(train)
    evaluator = train.parser.get_parsed_content("validate#evaluator")
    trainer = train.parser.get_parsed_content("train#trainer")
    return {
        "bundle": bundle, "spec": spec, "base": base, "data_dir": data_dir, "datalist": datalist,
        "overrides": overrides, "val_metrics": dict(evaluator.state.metrics),
        "grad_norm": getattr(trainer.state, "grad_norm", None),
        "last_train_pred": trainer.state.output[0]["pred"],
    }


@pytest.mark.parametrize("bundle", BUNDLES)
def test_metadata_is_valid_and_matches_demo_labels(bundle):
    verify_bundle_metadata(bundle)
    meta = ConfigParser.load_config_file(os.path.join(_configs(bundle), "metadata.json"))
    channel_def = meta["network_data_format"]["outputs"]["pred"]["channel_def"]
    assert {int(k): v for k, v in channel_def.items()} == SPECS[bundle].labels
    parser = ConfigParser(ConfigParser.load_config_file(os.path.join(_configs(bundle), "train.json")))
    assert parser.get_parsed_content("num_classes") == len(SPECS[bundle].labels)


@pytest.mark.parametrize("bundle", list_bundles())
def test_docs_readme_is_one_titled_document(bundle):
    """docs/README.md is what the model zoo shows: it opens with the bundle's title and is written once (an editing
    accident once repeated one paragraph between every character, 76 MB, and nothing else noticed)."""
    path = os.path.join(bundle_dir(bundle), "docs", "README.md")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    assert text.startswith("# ") and f"(`{bundle}`)" in text.splitlines()[0]
    assert len(text.encode("utf-8")) < 256 * 1024, f"{path} is {len(text.encode('utf-8'))} bytes"
    paragraphs = [p.strip() for p in text.split("\n\n") if len(p.strip()) > 200]
    assert len(paragraphs) == len(set(paragraphs)), f"{path} repeats a paragraph"


@pytest.mark.parametrize("bundle", BUNDLES)
def test_verify_net_in_out_with_default_arguments(bundle):
    """As the model zoo's CI calls it (n=1): the metadata declares only shapes that the network takes."""
    verify_net_in_out(
        net_id="network_def",
        meta_file=os.path.join(_configs(bundle), "metadata.json"),
        config_file=os.path.join(_configs(bundle), "inference.json"),
        bundle_root=bundle_dir(bundle),
    )


def test_train_one_epoch_writes_checkpoints_and_validates(run_dir):
    models = run_dir["base"] / "models"
    assert (models / "model.pt").is_file(), "CheckpointSaver did not write the key-metric model.pt"
    assert (models / "checkpoint_latest.pt").is_file(), "ResumableCheckpoint did not write its file"
    state = torch.load(models / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values()), "model.pt must be a plain tensor state_dict"
    assert 0.0 <= run_dir["val_metrics"]["val_mean_dice"] <= 1.0
    if run_dir["spec"].clips_gradients:  # the clipping hook ran before the optimizer's steps and saw real gradients
        assert run_dir["grad_norm"] is not None and 0.0 < run_dir["grad_norm"] < float("inf")
    # no training metric reads a post-processed training batch, so none is made (it cost 5-10% of a CPU iteration):
    # the trainer's output holds the network's logits, one channel per class, not a one-hot argmax
    # the training batch reached the network as plain tensors (the trainer's PlainTensorPrepareBatch):
    # MetaTensor's bookkeeping on every operation of the forward pass cost EMNet ~10% of a CPU training step
    assert type(run_dir["last_train_pred"]) is torch.Tensor
    pred = run_dir["last_train_pred"]
    assert pred.shape[0] == len(run_dir["spec"].labels) and pred.is_floating_point()
    assert not torch.all((pred == 0) | (pred == 1)), "the trainer post-processed its batch (softmax/argmax/one-hot)"


def test_resume_continues_from_the_saved_epoch(run_dir):
    spec, models = run_dir["spec"], run_dir["base"] / "models"
    saved = torch.load(models / "checkpoint_latest.pt", weights_only=False)["trainer"]
    stamp = os.stat(models / "checkpoint_latest.pt").st_mtime_ns
    # the checkpoint holds epoch 1 of 1: resuming with the same epochs trains nothing and leaves it as it is
    done = bundle_workflow(
        run_dir["bundle"], "train", epochs=1, val_interval=1, resume=True, **run_dir["overrides"], **spec.train_overrides
    )
    run_workflow(done)
    assert os.stat(models / "checkpoint_latest.pt").st_mtime_ns == stamp
    # asking for one more epoch trains exactly one more
    more = bundle_workflow(
        run_dir["bundle"], "train", epochs=2, val_interval=1, resume=True, **run_dir["overrides"], **spec.train_overrides
    )
    run_workflow(more)
    trainer = more.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == 2 and trainer.state.iteration == 2 * saved["iteration"]
    assert torch.load(models / "checkpoint_latest.pt", weights_only=False)["trainer"]["iteration"] == 2 * saved["iteration"]


def test_evaluate_saves_per_case_and_summary_csv(run_dir):
    evaluate = bundle_workflow(run_dir["bundle"], ["train", "evaluate"], **run_dir["overrides"])
    run_workflow(evaluate)
    out = run_dir["base"] / "eval"
    val_images = [os.path.basename(i["image"]) for i in load_datalist(run_dir["datalist"], "validation")]
    foreground = [f"class{i}" for i in range(len(run_dir["spec"].labels) - 1)]
    for name in run_dir["spec"].metrics:
        with open(out / f"{name}_raw.csv") as f:
            rows = list(csv.DictReader(f))
        # one row per validation case, one column per foreground class and their mean
        assert [os.path.basename(r["filename"]) for r in rows] == val_images
        assert list(rows[0]) == ["filename", *foreground, "mean"]
        values = [float(r[c]) for r in rows for c in foreground if r[c] != "nan"]
        high = 1.0 if "hd95" not in name else 1e4
        assert all(0.0 <= v <= high for v in values), f"{name}: {values}"
        with open(out / f"{name}_summary.csv") as f:
            assert {r["class"] for r in csv.DictReader(f)} == {*foreground, "mean"}
    metrics = evaluate.parser.get_parsed_content("validate#evaluator").state.metrics
    assert set(metrics) >= set(run_dir["spec"].metrics)
    with open(out / "skipped.csv") as f:
        assert list(csv.DictReader(f)) == []


def test_inference_on_demo_test_images_keeps_geometry(run_dir):
    out_dir = str(run_dir["base"] / "pred")
    infer = bundle_workflow(
        run_dir["bundle"], "inference", workflow_type="infer", dataset_dir=run_dir["data_dir"], output_dir=out_dir,
        checkpointloader={"_target_": "CheckpointLoader", "load_path": str(run_dir["base"] / "models" / "model.pt"),
                          "load_dict": {"model": "@network"}},
    )
    run_workflow(infer)
    with open(run_dir["datalist"]) as f:
        inputs = [os.path.join(run_dir["data_dir"], item["image"]) for item in json.load(f)["test"]]
    matched = assert_outputs_match_inputs(inputs, out_dir)
    for out in matched.values():
        if out.endswith(".nii.gz"):
            values = np.asarray(nib.load(out).dataobj)
        else:
            from PIL import Image

            values = np.asarray(Image.open(out))
        assert set(np.unique(values).tolist()) <= set(run_dir["spec"].labels), f"{out} holds other values"


def test_export_with_default_arguments_matches_eager(run_dir, tmp_path):
    """``ckpt_export`` exactly as the model zoo's CI calls it (scripting, no input shape): the exported model takes
    any valid size, not only the one it was exported at."""
    bundle, configs = run_dir["bundle"], _configs(run_dir["bundle"])
    ts_path = str(tmp_path / "model.ts")
    ckpt = str(run_dir["base"] / "models" / "model.pt")
    ckpt_export(
        net_id="network_def", filepath=ts_path, ckpt_file=ckpt, meta_file=os.path.join(configs, "metadata.json"),
        config_file=os.path.join(configs, "inference.json"), bundle_root=bundle_dir(bundle),
    )
    parser = ConfigParser()
    parser.read_config(os.path.join(configs, "inference.json"))
    parser["bundle_root"] = bundle_dir(bundle)
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(ckpt, weights_only=True))
    for shape in run_dir["spec"].export_shapes:
        export_and_compare(net, ts_path, shape)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_torchrun_two_processes_train_with_one_writer(bundle, tmp_path):
    data_dir = str(tmp_path / "data")
    ckpt_dir, log_dir = tmp_path / "models", tmp_path / "eval"
    SPECS[bundle].demo(data_dir)
    record = record_cases_config(tmp_path / "record_cases.json")
    run_bundle_with_torchrun(
        bundle, ["train.json", "multi_gpu_train.json", record], nproc=2, dataset_dir=data_dir, ckpt_dir=ckpt_dir,
        output_dir=log_dir, epochs=1, val_interval=1, **SPECS[bundle].train_overrides,
    )
    assert (ckpt_dir / "model.pt").is_file() and (ckpt_dir / "checkpoint_latest.pt").is_file()
    # rank 0 alone writes TensorBoard files; other ranks must not leave (empty) event files beside them
    assert len(tensorboard_writer_pids(str(log_dir))) == 1
    # the ranks trained on disjoint halves of the training cases, together all of them
    rank0, rank1 = recorded_cases(log_dir, nproc=2)
    parser = ConfigParser()
    parser.read_config(os.path.join(_configs(bundle), "train.json"))
    parser.update({"bundle_root": bundle_dir(bundle), "dataset_dir": data_dir, "output_dir": str(tmp_path / "cases")})
    training = {item["image"] for item in parser.get_parsed_content("train#dataset#data")}
    assert rank0 and rank1 and not rank0 & rank1, (rank0, rank1)
    assert {os.path.normpath(p) for p in rank0 | rank1} == {os.path.normpath(p) for p in training}


@pytest.mark.parametrize("bundle", list_bundles())
def test_seed_is_a_config_key_that_training_seeds_with(bundle):
    """``--seed 7`` on the command line (or ``seed=7`` from Python) seeds training; 123 by default, as before."""
    from monai.utils import set_determinism

    parser = ConfigParser(ConfigParser.load_config_file(os.path.join(_configs(bundle), "train.json")))
    assert parser.get_parsed_content("seed") == 123
    seeding = [i for i, expr in enumerate(parser["initialize"]) if "set_determinism" in expr]
    assert len(seeding) == 1 and "@seed" in parser["initialize"][seeding[0]]
    parser["seed"] = 7
    try:
        parser.get_parsed_content(f"initialize#{seeding[0]}")
        drawn = torch.rand(4)
        torch.manual_seed(7)
        torch.testing.assert_close(drawn, torch.rand(4))
    finally:
        set_determinism(seed=None)
