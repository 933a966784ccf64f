"""bundles/medgan_ssm_synthesis (missing MRI contrast synthesis), model-zoo style: metadata and the zoo's CI calls
with default arguments, one epoch of paired GAN training through ``ConfigWorkflow``, resume, evaluation with all and
with some inputs, whole-volume inference on the cases' own grids with the record of the inputs used, ``torchrun``,
bad inputs through ``python -m monai.bundle run``; and the pieces the bundle adds to the package
(``PairedGANTrainer``, ``SliceInfererWithArgs``, the mask broadcast of the generator, ``mri_dataset_splits``, the
panel). A small demo set (size_scale 0.4) and a tiny network (overrides) keep it fast."""

from __future__ import annotations

import csv
import json
import os
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigParser, ckpt_export, verify_net_in_out
from monai.networks.nets import PatchDiscriminator
from PIL import Image

from mamba_monai.bundle import bundle_dir, bundle_workflow, run_workflow, verify_bundle_metadata
from mamba_monai.bundle.testing import (
    record_cases_config,
    recorded_cases,
    run_bundle,
    run_bundle_with_torchrun,
    snapshot_tree,
    tensorboard_writer_pids,
)
from mamba_monai.data import ensure_demo_mri_dataset, find_mri_cases, mri_dataset_splits
from mamba_monai.engines import PairedGANTrainer, SynthesisPrepareBatch
from mamba_monai.inferers import SliceInfererWithArgs
from mamba_monai.networks import MedGANSSMGenerator
from mamba_monai.visualize import synthesis_panel

BUNDLE = "medgan_ssm_synthesis"
INPUTS = ["t1", "t1ce", "t2"]
TINY = {"features": [8, 16, 32], "ssm_depths": [0, 0, 1]}
TINY_TRAIN = {**TINY, "discriminator_def#channels": 8, "slices_per_volume": 2, "sw_batch_size": 16}
CONFIGS = os.path.join(bundle_dir(BUNDLE), "configs")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Run this module's in-process training and inference on one intra-op thread: on a 2-core machine shared with
    other jobs, two spinning threads per op made a step up to 20 times slower. numba's OpenMP pool resets the
    thread count when it starts (the first selective scan), so it is started first, then the count set."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    with torch.no_grad():
        MedGANSSMGenerator(2, 1, 1, features=(4, 4), ssm_depths=(0, 1), num_heads=1)(torch.rand(1, 1, 4, 4))
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _write_case_without(src_case: str, dst_root: str, name: str, drop: tuple[str, ...]) -> str:
    """Copy a demo case folder under a new case id, leaving out the contrasts in ``drop``."""
    folder = os.path.join(dst_root, name)
    os.makedirs(folder)
    for f in os.listdir(src_case):
        contrast = f.split("_")[-1].split(".")[0]
        if contrast not in drop:
            shutil.copy(os.path.join(src_case, f), os.path.join(folder, f"{name}_{contrast}.nii.gz"))
    return folder


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """Small demo data (with one extra training case that lacks the target) and one epoch of training."""
    base = tmp_path_factory.mktemp("medgan")
    data = str(base / "data")
    ensure_demo_mri_dataset(data, num_train=3, num_val=1, num_test=3, size_scale=0.4)
    _write_case_without(os.path.join(data, "train", "mri_000"), os.path.join(data, "train"), "nt_100", ("flair",))
    overrides = {"dataset_dir": data, "ckpt_dir": str(base / "models"), "output_dir": str(base / "eval")}
    train = bundle_workflow(BUNDLE, "train", epochs=1, val_interval=1, **overrides, **TINY_TRAIN)
    run_workflow(train)
    evaluator = train.parser.get_parsed_content("validate#evaluator")
    trainer = train.parser.get_parsed_content("train#trainer")
    return {"base": base, "data": data, "overrides": overrides, "val_metrics": dict(evaluator.state.metrics),
            "last_train_pred": trainer.state.output[0]["pred"]}


# ------------------------------------------------------------------------------------------------ model zoo checks


def test_metadata_is_valid_offline_and_matches_the_configs():
    verify_bundle_metadata(BUNDLE)
    meta = ConfigParser.load_config_file(os.path.join(CONFIGS, "metadata.json"))
    fmt = meta["network_data_format"]
    for name in ("train.json", "inference.json"):
        config = ConfigParser.load_config_file(os.path.join(CONFIGS, name))
        assert list(fmt["inputs"]["image"]["channel_def"].values()) == config["input_modalities"]
        assert list(fmt["outputs"]["pred"]["channel_def"].values()) == [config["target_modality"]]


def test_verify_net_in_out_with_default_arguments():
    verify_net_in_out(
        net_id="network_def",
        meta_file=os.path.join(CONFIGS, "metadata.json"),
        config_file=os.path.join(CONFIGS, "inference.json"),
        bundle_root=bundle_dir(BUNDLE),
    )


def test_inference_and_training_build_the_same_generator():
    shapes = []
    for name in ("train.json", "inference.json"):
        parser = ConfigParser(ConfigParser.load_config_file(os.path.join(CONFIGS, name)))
        shapes.append({k: tuple(v.shape) for k, v in parser.get_parsed_content("network_def").state_dict().items()})
    assert shapes[0] == shapes[1]


# ------------------------------------------------------------------------------------------------ package pieces


def test_generator_broadcasts_a_single_mask_row_over_the_batch():
    torch.manual_seed(0)
    net = MedGANSSMGenerator(2, 3, 1, features=(8, 16), ssm_depths=(0, 1)).eval()
    x = torch.rand(4, 3, 16, 24)
    mask = torch.tensor([[1.0, 0.0, 1.0]])
    with torch.no_grad():
        shared = net(x, mask)
        per_row = net(x, mask.expand(4, 3))
        scripted = torch.jit.script(net)(x, mask)
    torch.testing.assert_close(shared, per_row)
    torch.testing.assert_close(scripted, per_row)
    with pytest.raises(ValueError, match=r"\(1, 3\)"):
        net(x, torch.ones(2, 3))


def test_slice_inferer_passes_the_mask_to_every_batch_of_slices():
    seen = []

    def net(x, mask):
        seen.append((tuple(x.shape), tuple(mask.shape)))
        return (x * mask[:, :, None, None]).sum(1, keepdim=True)

    volume = torch.rand(1, 3, 10, 12, 7)
    mask = torch.tensor([[1.0, 0.0, 2.0]])
    out = SliceInfererWithArgs(roi_size=[-1, -1], spatial_dim=2, sw_batch_size=3)(volume, net, mask)
    torch.testing.assert_close(out, volume[:, :1] + 2 * volume[:, 2:3])
    assert seen == [((3, 3, 10, 12), (1, 3))] * 2 + [((1, 3, 10, 12), (1, 3))]


class _Recorder(torch.nn.Module):
    """A discriminator that records what it is shown."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net, self.inputs = net, []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        return self.net(x)


def test_paired_gan_trainer_shows_the_discriminator_the_target_and_learns_a_toy_pair():
    torch.manual_seed(0)
    src = torch.rand(16, 2, 16, 16)
    real = torch.sigmoid(4 * (src[:, :1] - src[:, 1:]))  # a paired target the generator can learn
    items = [{"image": s, "target": t, "mask": torch.ones(2)} for s, t in zip(src, real)]
    loader = torch.utils.data.DataLoader(items, batch_size=4, shuffle=False)
    g = torch.nn.Sequential(
        torch.nn.Conv2d(2, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 1, 1), torch.nn.Sigmoid()
    )

    class MaskedG(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.masks = g, []

        def forward(self, x, mask):
            self.masks.append(mask)
            return self.body(x)

    gen = MaskedG()
    d = _Recorder(PatchDiscriminator(2, channels=8, in_channels=3, num_layers_d=2, norm="INSTANCE"))
    losses = []
    trainer = PairedGANTrainer(
        device="cpu", max_epochs=25, train_data_loader=loader, g_network=gen,
        g_optimizer=torch.optim.Adam(gen.parameters(), 2e-3, betas=(0.5, 0.999)), d_network=d,
        d_optimizer=torch.optim.Adam(d.parameters(), 2e-4, betas=(0.5, 0.999)), prepare_batch=SynthesisPrepareBatch(),
    )
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output[0]["loss_l1"])))
    trainer.run()
    # the discriminator's step sees cat(source, target) for the real half and cat(source, fake) for the other
    first = d.inputs[0]
    assert first.shape == (8, 3, 16, 16)
    torch.testing.assert_close(first[:4, :2], src[:4])
    torch.testing.assert_close(first[:4, 2:], real[:4])
    torch.testing.assert_close(first[4:, :2], src[:4])
    assert not torch.allclose(first[4:, 2:], real[:4], atol=1e-3)
    assert len(d.inputs) == 2 * len(losses)  # one D step and one G step per iteration
    assert all(m.shape == (4, 2) for m in gen.masks)  # the mask reached the generator
    assert all(p.requires_grad for p in d.parameters())  # D is unfrozen after the generator's step
    assert np.mean(losses[-8:]) < 0.5 * np.mean(losses[:8]), losses
    out = trainer.state.output[0]
    assert {"loss", "loss_d", "loss_g_adv", "loss_l1"} <= set(out) and "loss_freq" not in out


def test_paired_gan_trainer_total_loss_is_the_weighted_sum_of_its_terms():
    from mamba_monai.losses import FrequencyLoss

    torch.manual_seed(1)
    items = [{"image": torch.rand(2, 16, 16), "target": torch.rand(1, 16, 16), "mask": torch.ones(2)} for _ in range(2)]
    g = torch.nn.Sequential(torch.nn.Conv2d(2, 1, 3, padding=1), torch.nn.Sigmoid())
    d = PatchDiscriminator(2, channels=4, in_channels=3, num_layers_d=1, norm="INSTANCE")
    trainer = PairedGANTrainer(
        "cpu", 1, torch.utils.data.DataLoader(items, batch_size=2), g, torch.optim.SGD(g.parameters(), 0.0),
        d, torch.optim.SGD(d.parameters(), 0.0), recon_weight=7.0, adversarial_weight=0.5,
        frequency_loss=FrequencyLoss(spatial_dims=2), frequency_weight=3.0,
        prepare_batch=SynthesisPrepareBatch(mask_key=None),
    )
    trainer.run()
    out = trainer.state.output[0]
    expected = 7.0 * out["loss_l1"] + 0.5 * out["loss_g_adv"] + 3.0 * out["loss_freq"]
    assert out["loss"] == pytest.approx(expected, rel=1e-5) and out["loss_freq"] > 0


def test_paired_gan_trainer_rejects_negative_weights():
    net = torch.nn.Conv2d(1, 1, 1)
    opt = torch.optim.Adam(net.parameters())
    with pytest.raises(ValueError, match="recon_weight"):
        PairedGANTrainer("cpu", 1, [], net, opt, net, opt, recon_weight=-1.0)


def test_mri_dataset_splits_are_deterministic_and_stable(tmp_path):
    for i in range(12):
        folder = tmp_path / "brats" / f"BraTS2021_{i:05d}"
        folder.mkdir(parents=True)
        for c in ("t1", "t2", "flair"):
            (folder / f"BraTS2021_{i:05d}_{c}.nii.gz").write_bytes(b"")
    root = str(tmp_path / "brats")
    splits = mri_dataset_splits(root, val_fraction=0.25, seed=3)
    ids = {k: [c["case"] for c in v] for k, v in splits.items()}
    assert sorted(ids["training"] + ids["validation"]) == [f"BraTS2021_{i:05d}" for i in range(12)]
    assert ids["validation"] and ids["test"] == []
    assert ids == {k: [c["case"] for c in v] for k, v in mri_dataset_splits(root, val_fraction=0.25, seed=3).items()}
    # adding cases never moves the others
    for i in range(12, 20):
        folder = tmp_path / "brats" / f"BraTS2021_{i:05d}"
        folder.mkdir()
        (folder / f"BraTS2021_{i:05d}_t1.nii.gz").write_bytes(b"")
    more = {k: [c["case"] for c in v] for k, v in mri_dataset_splits(root, val_fraction=0.25, seed=3).items()}
    assert set(ids["validation"]) <= set(more["validation"]) and set(ids["training"]) <= set(more["training"])
    assert ids != {k: [c["case"] for c in v] for k, v in mri_dataset_splits(root, val_fraction=0.25, seed=4).items()}
    with pytest.raises(ValueError, match="val_fraction"):
        mri_dataset_splits(root, val_fraction=0.6, test_fraction=0.5)


def test_mri_dataset_splits_reads_split_folders(run_dir):
    splits = mri_dataset_splits(run_dir["data"])
    assert [c["case"] for c in splits["validation"]] == ["mri_003"]
    assert [c["case"] for c in splits["test"]] == ["mri_004", "mri_005", "mri_006"]
    assert "nt_100" in [c["case"] for c in splits["training"]]


def test_synthesis_panel_lays_out_labelled_tiles():
    a = np.linspace(0, 1, 12 * 20, dtype=np.float32).reshape(12, 20)
    with_target = synthesis_panel({"t1": a, "t2": None}, a, a * 0.5, target_name="flair", min_tile=40)
    without = synthesis_panel({"t1": a, "t2": None}, a, None, target_name="flair", min_tile=40)
    # tiles: t1, t2 (missing), synthesis [, real, error]; each 12 voxels wide shown as rows 20 -> x4 = 48 x 80
    assert with_target.size[0] > without.size[0] and with_target.size[1] == without.size[1]
    assert without.size == (3 * 48 + 4 * 4, 16 + 80 + 8)
    with pytest.raises(ValueError, match="shape"):
        synthesis_panel({"t1": a[:5]}, a)


# ------------------------------------------------------------------------------------------------ the bundle


def test_case_missing_the_target_is_left_out_of_training_with_a_warning(run_dir, capsys):
    wf = bundle_workflow(BUNDLE, "train", epochs=1, **run_dir["overrides"], **TINY_TRAIN)
    wf.initialize()
    cases = wf.parser.get_parsed_content("cases")
    log = capsys.readouterr().out  # the bundle's logging.conf sends log records to stdout
    assert "WARNING - Skipping case 'nt_100': no target 'flair' image" in log, log
    assert [c["case"] for c in cases["training"]] == ["mri_000", "mri_001", "mri_002"]


def test_train_one_epoch_writes_checkpoints_and_validates(run_dir):
    models = run_dir["base"] / "models"
    state = torch.load(models / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert state.keys() == MedGANSSMGenerator(2, 3, 1, **TINY).state_dict().keys()
    ckpt = torch.load(models / "checkpoint_latest.pt", weights_only=False)
    assert {"generator", "discriminator", "g_optimizer", "d_optimizer", "g_lr_scheduler", "d_lr_scheduler"} <= set(ckpt)
    assert ckpt["trainer"]["iteration"] == ckpt["trainer"]["epoch_length"] == 3 * 2  # 1 epoch: 3 volumes x 2 slices
    metrics = run_dir["val_metrics"]
    assert set(metrics) == {"val_psnr", "val_ssim", "val_mae"}
    assert 0.0 < metrics["val_psnr"] < 60.0 and -1.0 <= metrics["val_ssim"] <= 1.0 and 0.0 <= metrics["val_mae"] <= 1.0
    # the training batch reached the generator as plain tensors (the trainer's PlainTensorPrepareBatch)
    assert type(run_dir["last_train_pred"]) is torch.Tensor


def test_resume_continues_from_the_saved_epoch(run_dir):
    before = torch.load(run_dir["base"] / "models" / "checkpoint_latest.pt", weights_only=False)
    train = bundle_workflow(
        BUNDLE, "train", epochs=2, val_interval=5, resume=True, **run_dir["overrides"], **TINY_TRAIN
    )
    run_workflow(train)
    trainer = train.parser.get_parsed_content("train#trainer")
    assert trainer.state.epoch == 2 and trainer.state.iteration == 2 * before["trainer"]["iteration"]
    after = torch.load(run_dir["base"] / "models" / "checkpoint_latest.pt", weights_only=False)
    # both optimisers went on from their saved state (Adam's step count), not from scratch
    for name in ("g_optimizer", "d_optimizer"):
        steps = [float(s["step"]) for s in after[name]["state"].values()]
        assert steps and all(s == 12 for s in steps), (name, steps)


@pytest.mark.parametrize("available", [None, ["t1"]])
def test_evaluate_writes_psnr_ssim_mae_per_case_and_summary(run_dir, available, tmp_path):
    overrides = dict(run_dir["overrides"], output_dir=str(tmp_path / "eval"))
    if available is not None:
        overrides["eval_available"] = available
    evaluate = bundle_workflow(BUNDLE, ["train", "evaluate"], **overrides, **TINY)
    evaluate.initialize()
    data = evaluate.parser.get_parsed_content("validate#dataset")
    expected_mask = [1.0, 1.0, 1.0] if available is None else [1.0, 0.0, 0.0]
    np.testing.assert_array_equal(data[0]["mask"].numpy(), expected_mask)
    hidden = [float(data[0]["image"][c].abs().max()) for c in (1, 2)]
    assert hidden == [0.0, 0.0] if available else min(hidden) > 0.0
    evaluate.run()
    evaluate.finalize()
    out = tmp_path / "eval"
    for name in ("val_psnr", "val_ssim", "val_mae"):
        with open(out / f"{name}_raw.csv") as f:
            rows = list(csv.DictReader(f))
        assert [os.path.basename(r["filename"]) for r in rows] == ["mri_003_flair.nii.gz"]
        with open(out / f"{name}_summary.csv") as f:
            assert {r["class"] for r in csv.DictReader(f)} >= {"mean"}
    with open(out / "skipped.csv") as f:
        assert list(csv.DictReader(f)) == []


def test_inference_writes_one_synthesis_per_case_on_its_grid_with_its_inputs(run_dir, tmp_path):
    out = tmp_path / "pred"
    test_dir = os.path.join(run_dir["data"], "test")
    infer = bundle_workflow(
        BUNDLE, "inference", workflow_type="infer", dataset_dir=test_dir, output_dir=str(out), **TINY,
        checkpointloader={"_target_": "CheckpointLoader", "load_path": str(run_dir["base"] / "models" / "model.pt"),
                          "load_dict": {"model": "@network"}},
    )
    run_workflow(infer)
    reference_scale = infer.parser.get_parsed_content("reference_scale")
    cases = find_mri_cases(test_dir)
    assert [c["case"] for c in cases] == ["mri_004", "mri_005", "mri_006"]  # mri_004 lacks t2, mri_005 flair
    written = sorted(n for n in os.listdir(out) if n.endswith(".nii.gz"))
    assert written == [f"{c['case']}_flair_synth.nii.gz" for c in cases]
    for case in cases:
        source = nib.load(case["t1"])
        synth = nib.load(out / f"{case['case']}_flair_synth.nii.gz")
        assert synth.shape == source.shape
        np.testing.assert_allclose(synth.affine, source.affine, atol=1e-4)
        with open(out / f"{case['case']}_flair_synth.json") as f:
            record = json.load(f)
        used = [c for c in INPUTS if c in case]
        assert record["inputs_used"] == used and record["inputs_missing"] == [c for c in INPUTS if c not in case]
        assert synth.header["descrip"].tobytes().rstrip(b"\0").decode() == f"synthesised flair from {'+'.join(used)}"
        values = np.asarray(synth.dataobj)
        assert np.isfinite(values).all() and values.min() >= 0.0
        brain = np.any([np.asarray(nib.load(case[c]).dataobj) > 0 for c in used], axis=0)
        assert not values[~brain].any() and values[brain].any()  # mask_background: nothing outside the inputs' brain
        if "flair" in case:
            target_scale = np.percentile((t := np.asarray(nib.load(case["flair"]).dataobj))[t > 0], 99.5)
            assert record["intensity_scale"] == pytest.approx(target_scale, rel=1e-4)
            assert values.max() <= target_scale * (1 + 1e-4)
        else:
            assert record["intensity_scale"] == reference_scale and record["intensity_scale_from"] == "reference_scale"
        with Image.open(record["panel"]) as panel:
            assert panel.mode == "RGB" and panel.size[0] > panel.size[1]
    assert [os.path.basename(e["output"]) for e in json.load(open(out / "mapping.json"))] == written
    with open(out / "skipped.csv") as f:
        assert list(csv.DictReader(f)) == []


def test_export_with_default_arguments_matches_eager(run_dir, tmp_path):
    ts_path = str(tmp_path / "model.ts")
    ckpt = str(run_dir["base"] / "models" / "model.pt")
    ckpt_export(
        net_id="network_def", filepath=ts_path, ckpt_file=ckpt, meta_file=os.path.join(CONFIGS, "metadata.json"),
        config_file=os.path.join(CONFIGS, "inference.json"), bundle_root=bundle_dir(BUNDLE), **TINY,
    )
    net = MedGANSSMGenerator(2, 3, 1, **TINY).eval()
    net.load_state_dict(torch.load(ckpt, weights_only=True))
    exported = torch.jit.load(ts_path)
    for shape in ((1, 3, 32, 32), (2, 3, 48, 80)):
        x = torch.rand(*shape)
        x[:, 1] = 0  # a missing contrast
        mask = torch.tensor([[1.0, 0.0, 1.0]])
        with torch.no_grad():
            torch.testing.assert_close(exported(x), net(x), atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(exported(x, mask), net(x, mask), atol=1e-4, rtol=1e-4)


def test_torchrun_two_processes_train_with_one_writer(tmp_path):
    data = str(tmp_path / "data")
    ensure_demo_mri_dataset(data, num_train=2, num_val=2, num_test=0, size_scale=0.4)
    ckpt_dir, log_dir = tmp_path / "models", tmp_path / "eval"
    record = record_cases_config(tmp_path / "record_cases.json")
    run_bundle_with_torchrun(
        BUNDLE, ["train.json", "multi_gpu_train.json", record], nproc=2, dataset_dir=data, ckpt_dir=ckpt_dir,
        output_dir=log_dir, epochs=1, val_interval=1, **TINY_TRAIN,
    )
    # the two ranks trained on different cases (a case is its folder), together on every training case
    rank0, rank1 = ({os.path.basename(os.path.dirname(p)) for p in files} for files in recorded_cases(log_dir))
    assert rank0 and rank1 and not rank0 & rank1, (rank0, rank1)
    assert rank0 | rank1 == set(os.listdir(os.path.join(data, "train")))
    assert (ckpt_dir / "model.pt").is_file() and (ckpt_dir / "checkpoint_latest.pt").is_file()
    assert len(tensorboard_writer_pids(str(log_dir))) == 1
    ckpt = torch.load(ckpt_dir / "checkpoint_latest.pt", weights_only=False)
    assert ckpt["trainer"]["iteration"] == ckpt["trainer"]["epoch_length"]
    assert {"generator", "discriminator"} <= set(ckpt)


def test_bad_inputs_are_isolated_through_monai_bundle_run(run_dir, tmp_path, monkeypatch):
    """Good cases beside a truncated contrast, a NaN contrast, a 2D file, a degenerate header and a case with no
    input: the good ones are written on their grids, the bad ones named in skipped.csv, exit status 1, and the data
    folder is left byte-identical."""
    data = tmp_path / "user_data"
    good = os.path.join(run_dir["data"], "test", "mri_006")
    shutil.copytree(os.path.join(run_dir["data"], "test", "mri_004"), data / "mri_004")  # lacks t2: still written
    shutil.copytree(good, data / "mri_006")
    bad = {}
    path = _write_case_without(good, str(data), "trunc", ())
    blob = open(os.path.join(path, "trunc_t1ce.nii.gz"), "rb").read()
    open(os.path.join(path, "trunc_t1ce.nii.gz"), "wb").write(blob[: len(blob) // 2])
    bad["trunc_t1ce.nii.gz"] = "read"
    path = _write_case_without(good, str(data), "nan", ())
    img = nib.load(os.path.join(path, "nan_t2.nii.gz"))
    arr = np.asarray(img.dataobj).astype(np.float32)
    arr[:3, :3, :3] = np.nan
    nib.save(nib.Nifti1Image(arr, img.affine), os.path.join(path, "nan_t2.nii.gz"))
    bad["nan_t2.nii.gz"] = "validate"
    path = _write_case_without(good, str(data), "flat", ())
    img = nib.load(os.path.join(path, "flat_t1.nii.gz"))
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[..., 4], img.affine), os.path.join(path, "flat_t1.nii.gz"))
    bad["flat_t1.nii.gz"] = "validate"
    path = _write_case_without(good, str(data), "header", ())
    img = nib.load(os.path.join(path, "header_t2.nii.gz"))
    singular = img.affine.copy()
    singular[:3, 2] = 0.0
    broken = nib.Nifti1Image(np.asarray(img.dataobj), None)
    broken.set_sform(singular, code=1)
    broken.set_qform(None, code=0)
    nib.save(broken, os.path.join(path, "header_t2.nii.gz"))
    bad["header_t2.nii.gz"] = "validate"
    _write_case_without(good, str(data), "noinput", ("t1", "t1ce", "t2"))
    bad["noinput"] = "validate"
    before = snapshot_tree(str(data))
    out = tmp_path / "out"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # see one_thread
    monkeypatch.setenv("NUMBA_NUM_THREADS", "1")
    proc = run_bundle(
        BUNDLE, ["inference.json"], check=False, dataset_dir=str(data), output_dir=str(out),
        **{k: str(v) for k, v in TINY.items()},
        **{"checkpointloader#load_path": run_dir["base"] / "models" / "model.pt"},
    )
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(out / "skipped.csv") as f:
        rows = {os.path.basename(r["file"]): r for r in csv.DictReader(f)}
    assert {k: r["stage"] for k, r in rows.items()} == bad
    assert all(r["reason"] and r["fix"] for r in rows.values())
    for case in ("mri_004", "mri_006"):
        synth = nib.load(out / f"{case}_flair_synth.nii.gz")
        source = nib.load(data / case / f"{case}_t1.nii.gz")
        assert synth.shape == source.shape
        np.testing.assert_allclose(synth.affine, source.affine, atol=1e-4)
    assert sorted(n for n in os.listdir(out) if n.endswith(".nii.gz")) == [
        "mri_004_flair_synth.nii.gz", "mri_006_flair_synth.nii.gz"
    ]
    assert snapshot_tree(str(data)) == before
