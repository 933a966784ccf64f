"""Tests specific to bundles/emnet_seg3d (the checks every bundle passes are in test_bundles.py): hospital-like
inputs, the largest-component post-processing, and whole-volume sliding-window parity of the exported model."""

from __future__ import annotations

import glob
import os

import pytest
import torch
from monai.bundle import ConfigParser, ckpt_export

from mamba_monai.bundle import bundle_dir, bundle_workflow, run_workflow
from mamba_monai.bundle.testing import assert_outputs_match_inputs, write_hospital_like_inputs
from mamba_monai.data import DEMO_CT_LABELS, ensure_demo_ct_dataset
from mamba_monai.engines import CasesSkippedError

BUNDLE = "emnet_seg3d"
ROOT = bundle_dir(BUNDLE)
CONFIGS = os.path.join(ROOT, "configs")
SHIPPED = os.path.join(ROOT, "models", "model.pt")


def test_inference_goes_through_hospital_like_inputs_and_skips_corrupt(tmp_path, capsys):
    data_dir = str(tmp_path / "demo")
    ensure_demo_ct_dataset(data_dir, num_train=1, num_val=0, num_test=1, size_scale=0.7)
    cases = write_hospital_like_inputs(
        sorted(glob.glob(os.path.join(data_dir, "imagesTs", "*.nii.gz")))[0], str(tmp_path / "hospital" / "imagesTs")
    )
    out_dir = str(tmp_path / "hospital_pred")
    infer = bundle_workflow(
        BUNDLE, "inference", workflow_type="infer", dataset_dir=str(tmp_path / "hospital"), output_dir=out_dir,
        load_pretrain=False,
    )
    with pytest.raises(CasesSkippedError) as err:  # raised after every other case was written
        run_workflow(infer)
    assert [os.path.basename(f.file) for f in err.value.failures] == ["corrupt.nii.gz"]
    log = capsys.readouterr().out  # the bundle's logging.conf sends log records to stdout
    assert "corrupt.nii.gz" in log and "Skipping case" in log
    good = [p for kind, p in cases.items() if kind != "corrupt"]
    assert_outputs_match_inputs(good, out_dir)
    assert not glob.glob(os.path.join(out_dir, "corrupt*"))


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


def test_exported_model_gives_the_eager_whole_volume_prediction(tmp_path):
    """The scripted export of the shipped weights, run by the bundle's sliding-window inferer on a whole volume of an
    odd size, gives the eager network's prediction."""
    ts_path = str(tmp_path / "model.ts")
    ckpt_export(
        net_id="network_def", filepath=ts_path, ckpt_file=SHIPPED, meta_file=os.path.join(CONFIGS, "metadata.json"),
        config_file=os.path.join(CONFIGS, "inference.json"), bundle_root=ROOT,
    )
    parser = ConfigParser()
    parser.read_config(os.path.join(CONFIGS, "inference.json"))
    parser["bundle_root"] = ROOT
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(SHIPPED, weights_only=True))
    inferer = parser.get_parsed_content("inferer")
    inferer.progress = False
    volume = torch.rand(1, 1, 70, 81, 45)
    exported = torch.jit.load(ts_path)
    with torch.no_grad():
        diff = (inferer(volume, net.eval()) - inferer(volume, exported)).abs().max()
    assert diff < 1e-4


def test_warm_up_trains_from_the_first_epoch_and_reaches_the_peak_rate_after_warmup_epochs():
    parser = ConfigParser()
    parser.read_config(os.path.join(CONFIGS, "train.json"))
    parser["epochs"], parser["warmup_epochs"], parser["learning_rate"] = 10, 3, 2e-3
    scheduler = parser.get_parsed_content("lr_scheduler")
    optimizer = parser.get_parsed_content("optimizer")
    rates = []
    for _ in range(5):  # LrScheduleHandler steps the schedule once per epoch
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    # a linear ramp 1/4, 2/4, 3/4 of the peak (no epoch at rate 0), the peak at epoch 4, then the cosine decay
    assert rates[:4] == pytest.approx([5e-4, 1e-3, 1.5e-3, 2e-3])
    assert 0 < rates[4] < 2e-3


def test_network_large_merged_after_train_gives_the_default_network_and_recipe_of_0_3():
    """configs/network_large.json: the network and recipe that were the default up to 0.3.11; the default since 0.4.0
    is the smaller, faster network that the shipped weights belong to."""
    default = bundle_workflow(BUNDLE, "train").parser
    large = bundle_workflow(BUNDLE, ["train", "network_large"]).parser
    default_net, large_net = default.get_parsed_content("network_def"), large.get_parsed_content("network_def")
    assert sum(p.numel() for p in large_net.parameters()) == 2_267_130
    assert [len(s.layers) for s in large_net.stages] == [2, 2, 2, 2] and large_net.full_res_channels == 16
    assert (large.get_parsed_content("learning_rate"), large.get_parsed_content("epochs")) == (2e-3, 60)
    assert (default.get_parsed_content("learning_rate"), default.get_parsed_content("epochs")) == (5e-3, 400)
    shipped = torch.load(SHIPPED, map_location="cpu", weights_only=True)
    assert {k: v.shape for k, v in shipped.items()} == {k: v.shape for k, v in default_net.state_dict().items()}
    assert shipped.keys() != large_net.state_dict().keys()
