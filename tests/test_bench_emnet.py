"""benchmarks/bench_emnet.py: the nets it compares are the ones it names, and its targets and plot read its figures."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

import pytest
import torch
from monai.networks.nets import UNet

from mamba_monai.blocks import MambaMixer
from mamba_monai.bundle import bundle_workflow
from mamba_monai.networks import EMNet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bench():
    spec = importlib.util.spec_from_file_location("bench_emnet", os.path.join(ROOT, "benchmarks", "bench_emnet.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _network(bench, name):
    net = bench.network_def(name)
    overrides = {} if net is None else {"network_def": net}
    return bundle_workflow(bench.BUNDLE, "train", workflow_type="train", **overrides).parser.get_parsed_content(
        "network_def"
    )


def _changed_modules(a: torch.nn.Module, b: torch.nn.Module) -> set[str]:
    """Top-level modules whose state dict keys or shapes differ between ``a`` and ``b``."""
    a_sd, b_sd = a.state_dict(), b.state_dict()
    return {k.split(".")[0] for k in a_sd.keys() | b_sd.keys()
            if k not in a_sd or k not in b_sd or a_sd[k].shape != b_sd[k].shape}


def test_emnet_variants_are_the_bundle_network_its_larger_predecessor_and_03s_layout_and_scan_path():
    scan_module = importlib.import_module("mamba_monai.ops.selective_scan_cpu")
    bench = _bench()
    bundle, fast, large, old = (_network(bench, n) for n in ("emnet", "emnet_fast", "emnet_large", "emnet_v03"))
    assert all(isinstance(n, EMNet) for n in (bundle, fast, large, old))
    # since 0.4.0 the bundle's network is the fast one; the larger default of 0.3.x is configs/network_large.json
    assert {k: v.shape for k, v in bundle.state_dict().items()} == {k: v.shape for k, v in fast.state_dict().items()}
    assert fast.full_res_channels == 8 and [len(s.layers) for s in fast.stages] == [1, 2, 2, 2]
    assert fast.half_res_channels == 16 and fast.full_res_convs == (2, 1) and fast.logit_scale == 8.0
    assert sum(p.numel() for p in fast.parameters()) == 2_071_042
    assert sum(p.numel() for p in old.parameters()) == sum(p.numel() for p in large.parameters()) == 2_267_130
    assert [len(s.layers) for s in old.stages] == [2, 2, 2, 2] and old.full_res_channels == 16
    assert not old.channels_last and large.channels_last and bundle.channels_last and fast.channels_last
    assert old.state_dict().keys() == large.state_dict().keys()
    with bench.net_context("emnet_v03"):
        assert scan_module._POINTWISE_IN_KERNEL
    for name in ("emnet", "emnet_fast", "emnet_large"):
        with bench.net_context(name):
            assert not scan_module._POINTWISE_IN_KERNEL
    assert bench.reference_net(["emnet", "emnet_fast"]) == "emnet_fast" and bench.reference_net(["emnet"]) == "emnet"


def test_emnet_fast_035_is_the_fast_network_with_monai_blocks_and_is_never_trained():
    from mamba_monai.blocks import InstanceNormAct

    bench = _bench()
    fast, old_norms = (_network(bench, n) for n in ("emnet_fast", "emnet_fast_035"))
    assert old_norms.state_dict().keys() == fast.state_dict().keys()
    fused = [[m.fused for m in net.modules() if isinstance(m, InstanceNormAct)] for net in (fast, old_norms)]
    # 3 in each residual block (encoder1, the half-resolution skip: 1 on the 1x1 residual), 2 in the half-resolution
    # basic block, 1 in the decoder's full-resolution block (one convolution)
    assert fused == [[True] * 9, []]
    assert sum(isinstance(m, torch.nn.GroupNorm) for m in old_norms.modules()) == 9
    assert "emnet_fast_035" in bench.TIMED_ONLY and "emnet_fast" not in bench.TIMED_ONLY


def test_emnet_fast_037_is_the_fast_network_on_the_per_channel_scan_kernels_and_is_never_trained():
    bench = _bench()
    scan_module = sys.modules["mamba_monai.ops.selective_scan_cpu"]
    fast, old_scan = (_network(bench, n) for n in ("emnet_fast", "emnet_fast_037"))
    old_scan.load_state_dict(fast.state_dict())
    x = torch.randn(1, 1, 64, 64, 32)
    with torch.no_grad():
        lanes = fast(x)
        with bench.net_context("emnet_fast_037"):
            assert scan_module._PER_CHANNEL_KERNELS
            per_channel = old_scan(x)
    assert not scan_module._PER_CHANNEL_KERNELS
    torch.testing.assert_close(lanes, per_channel, rtol=1e-4, atol=1e-4)
    assert "emnet_fast_037" in bench.TIMED_ONLY and "emnet_fast_037" in bench.NETS


def test_emnet_fast_0310_is_the_fast_network_with_state_size_16_and_inner_width_2c_in_its_mamba_mixers():
    bench = _bench()
    fast, old = (_network(bench, n) for n in ("emnet_fast", "emnet_fast_0310"))
    mixers = [[m for m in net.modules() if isinstance(m, MambaMixer)] for net in (fast, old)]
    assert len(mixers[0]) == len(mixers[1]) == 7  # the CSR layers: 1 + 2 + 1 + 1 in the encoder, 1 + 1 in the decoder
    assert {(m.d_inner // m.d_model, m.forward_branch.A_log.shape[1]) for m in mixers[0]} == {(1, 1)}
    assert {(m.d_inner // m.d_model, m.forward_branch.A_log.shape[1]) for m in mixers[1]} == {(2, 16)}
    assert _changed_modules(fast, old) == {"stages", "up_blocks"}
    assert sum(p.numel() for p in old.parameters()) == 2_235_330  # 0.3.10's fast network
    assert "emnet_fast_0310" in bench.NETS and "emnet_fast_0310" not in bench.TIMED_ONLY


def test_emnet_fast_038_is_the_fast_network_without_its_half_resolution_decoder_stage():
    bench = _bench()
    fast, old = (_network(bench, n) for n in ("emnet_fast_0310", "emnet_fast_038"))
    assert (fast.half_res_channels, old.half_res_channels) == (16, 0)
    assert fast.up_full.transp_conv.conv.stride == (2, 2, 2) and old.up_full.transp_conv.conv.stride == (4, 4, 4)
    assert _changed_modules(fast, old) == {"half_res_encoder", "half_res_decoder", "up_full"}
    assert "emnet_fast_038" in bench.NETS and "emnet_fast_038" not in bench.TIMED_ONLY


def test_emnet_fast_half_is_the_fast_network_with_its_branch_at_half_resolution():
    bench = _bench()
    fast, half = (_network(bench, n) for n in ("emnet_fast_038", "emnet_fast_half"))
    assert (fast.full_res_stride, half.full_res_stride, half.full_res_channels) == (1, 2, 16)
    assert half.encoder1.layer.conv1.conv.stride == (2, 2, 2) and half.up_full.transp_conv.conv.stride == (2, 2, 2)
    assert _changed_modules(fast, half) == {"encoder1", "up_full", "out"}
    half.eval()
    with torch.no_grad():
        assert half(torch.randn(1, 1, 64, 64, 32)).shape == (1, 6, 64, 64, 32)
    assert "emnet_fast_half" in bench.NETS and "emnet_fast_half" not in bench.TIMED_ONLY


@pytest.mark.parametrize(
    "variant,convs,changed",
    [
        ("emnet_fast_039", (2, 2), {"up_full"}),  # 0.3.9's: two convolutions in the decoder's full-resolution block
        ("emnet_fast_light", (1, 1), {"encoder1"}),  # one convolution in each full-resolution block
    ],
)
def test_full_res_convs_variants_differ_from_the_fast_network_only_in_their_full_resolution_blocks(variant, convs, changed):
    bench = _bench()
    fast, other = (_network(bench, n) for n in ("emnet_fast_0310", variant))  # the mixers of their time
    assert (fast.full_res_convs, other.full_res_convs) == ((2, 1), convs)
    assert _changed_modules(fast, other) == changed
    assert variant in bench.NETS and variant not in bench.TIMED_ONLY


def test_unet_baseline_is_the_issue_configuration():
    net = _network(_bench(), "unet")
    assert isinstance(net, UNet) and tuple(net.channels) == (16, 32, 64, 128) and tuple(net.strides) == (2, 2, 2)
    assert net.num_res_units == 2
    assert net(torch.zeros(1, 1, 64, 64, 32)).shape == (1, 6, 64, 64, 32)


def test_bf16_variants_are_the_fast_network_and_the_unet_with_bfloat16_convolutions_and_the_same_state_dicts():
    from mamba_monai.blocks import CPUBFloat16Conv

    bench = _bench()
    fast, fast16, unet, unet16 = (_network(bench, n) for n in ("emnet_fast", "emnet_bf16", "unet", "unet_bf16"))
    assert not fast.full_res_bfloat16 and fast16.full_res_bfloat16
    assert fast16.state_dict().keys() == fast.state_dict().keys()
    assert isinstance(unet16, UNet) and unet16.state_dict().keys() == unet.state_dict().keys()
    convs = [m for m in unet16.modules() if isinstance(m, (torch.nn.modules.conv._ConvNd, CPUBFloat16Conv))]
    # every convolution but the two on the 1-channel image (the first unit's 3x3x3 and its residual)
    assert [type(m) for m in convs].count(CPUBFloat16Conv) == len(convs) - 2
    assert not any(isinstance(m, CPUBFloat16Conv) for m in unet.modules())
    assert "unet_bf16" in bench.MONAI_NETS and "emnet_bf16" in bench.NETS
    assert unet16(torch.zeros(1, 1, 64, 64, 32)).shape == (1, 6, 64, 64, 32)


def test_budget_planner_fits_the_epochs_after_epoch_1_and_again_as_the_budget_passes(monkeypatch):
    """Epoch 1 (60 s with its validation, 50 s of training) gives the first fit; it was slow, the next epochs take 20
    s each (validation every 5 epochs included), so after a tenth of the budget the count is fitted again. Then the
    machine slows to 25 s an epoch: the fits at a half, three quarters and nine tenths of the budget, each from the
    epochs since the previous one, end the schedule within the budget instead of stopping it with a fifth of its
    cosine left."""
    from types import SimpleNamespace

    bench = _bench()
    clock = [0.0]
    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock[0])

    class Evaluator:
        def __init__(self):
            self.handlers = {}

        def add_event_handler(self, event, fn):
            self.handlers[event.name] = fn

        def run(self, epoch):
            self.handlers["STARTED"](self)
            clock[0] += 10.0
            self.handlers["COMPLETED"](self)

    evaluator = Evaluator()
    evaluator.state = SimpleNamespace(metrics={"val_mean_dice": 0.5})
    scheduler = SimpleNamespace(t_total=bench.PLACEHOLDER_EPOCHS, warmup_steps=3)
    planner = bench.BudgetPlanner(evaluator, scheduler, budget_s=1000.0, val_interval=5, warmup_epochs=3)
    engine = SimpleNamespace(state=SimpleNamespace(epoch=0, iteration=0, max_epochs=bench.PLACEHOLDER_EPOCHS),
                             add_event_handler=lambda event, fn: None)
    planner.attach(engine)
    planner._started(engine)
    clock[0] += 50.0  # epoch 1
    engine.state.epoch, engine.state.iteration = 1, 8
    planner._epoch_completed(engine)  # validates (10 s); cost 50 + 10 / 5 = 52 s -> 1 + floor(940 / 52) = 19
    assert (planner.planned_epochs, scheduler.t_total, engine.state.max_epochs) == (19, 19, 19)
    assert planner.first_planned_epochs == 19
    epoch = 1
    while epoch < engine.state.max_epochs:
        epoch += 1
        clock[0] += 20.0 if clock[0] < 260.0 else 25.0
        engine.state.epoch = epoch
        planner._epoch_completed(engine)
        if epoch == 3:  # 100 s: (100 - 60) / 2 = 20 s an epoch -> 3 + floor(900 / 20)
            assert planner.planned_epochs == scheduler.t_total == engine.state.max_epochs == 48
    assert [(p["epoch"], p["epochs"]) for p in planner.plans] == [(1, 19), (3, 48), (11, 48), (21, 40), (31, 40),
                                                                   (37, 40)]
    assert planner.first_planned_epochs == 19 and scheduler.warmup_steps == 3
    assert epoch == 40 and clock[0] == 985.0  # the cosine's last epoch ends within the budget


def test_targets_and_plot_from_figures(tmp_path):
    bench = _bench()
    history = [{"elapsed_s": 10.0, "val_mean_dice": 0.2}, {"elapsed_s": 600.0, "val_mean_dice": 0.6}]
    run = {"dice_final": 0.6, "dice_best": 0.6, "iterations": 100, "learning_rate": 1e-3, "history": history}
    report = {
        "budgets_min": [10.0],
        "machine": {"torch_threads": 2},
        "nets": {
            "emnet": {"budgets": {"10": run}, "infer_seconds": 1.0},
            "emnet_v03": {"step_ratio_vs_emnet": 2.4},
            "unet": {"budgets": {"10": dict(run, dice_final=0.7)}},
            "hyenand": {"infer_ratio_vs_emnet": 3.0},
        },
    }
    rows = {t["target"]: t for t in bench.targets(report)}
    best = rows["10 min: emnet Dice >= best MONAI net's (unet)"]
    assert best["ok"] is False and best["value"] == pytest.approx(-0.1)
    assert rows["emnet training step speed-up over 0.3.0 >= 2x"]["ok"] is True
    assert rows["hyenand / emnet inference time >= 4"]["ok"] is False
    assert rows["swinunetr / emnet inference time >= 5"]["ok"] is None  # not measured
    png = tmp_path / "dice.png"
    bench.plot_dice_vs_time(report, str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table_shows_each_class_dice_with_the_bundle_class_names(capsys):
    bench = _bench()
    assert bench.class_names() == ["liver", "spleen", "kidney", "aorta", "gland"]  # metadata.json, background left out
    run = {"dice_final": 0.3, "dice_best": 0.3, "iterations": 10, "class_dice_final": [0.7, 0.0, 0.0, 0.8, 0.0]}
    report = {
        "budgets_min": [10.0],
        "class_names": bench.class_names(),
        "machine": {k: "-" for k in ("platform", "processor", "cpu_count", "torch_threads", "torch", "monai", "cuda")},
        "nets": {"emnet_fast": {"budgets": {"10": run}}, "unet": {"budgets": {"10": dict(run, class_dice_final=None)}}},
    }
    report["targets"] = bench.targets(report)
    bench.print_table(report)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Dice per class")]
    assert lines == ["Dice per class after 10 min, emnet_fast: liver 0.700, spleen 0.000, kidney 0.000, aorta 0.800, gland 0.000"]


def test_runs_over_seeds_are_summarised_by_their_mean_and_drive_the_targets_table_and_plot(tmp_path, capsys):
    bench = _bench()
    history = [{"elapsed_s": 10.0, "val_mean_dice": 0.2}, {"elapsed_s": 600.0, "val_mean_dice": 0.6}]

    def run(seed, final, best, steps, classes):
        return {"seed": seed, "dice_final": final, "dice_best": best, "iterations": steps, "params": 5,
                "learning_rate": 1e-2, "class_dice_final": classes, "history": history}

    one = run(123, 0.6, 0.7, 100, [0.1] * 5)
    assert bench.summarise_runs([one]) is one  # one seed: the run itself, as before --seeds
    emnet = bench.summarise_runs([one, run(7, 0.8, 0.9, 103, [0.3] * 5)])
    assert emnet["seeds"] == [123, 7] and emnet["iterations"] == 102 and len(emnet["runs"]) == 2
    assert emnet["dice_final"] == pytest.approx(0.7) and emnet["dice_best"] == pytest.approx(0.8)
    assert emnet["dice_final_sd"] == pytest.approx(0.1414, abs=1e-4)  # sample standard deviation of 0.6 and 0.8
    assert emnet["class_dice_final"] == pytest.approx([0.2] * 5)
    unet = bench.summarise_runs([run(123, 0.75, 0.75, 150, None), run(7, 0.75, 0.8, 150, [0.5] * 5)])
    assert unet["class_dice_final"] is None  # a run without per-class figures: no mean of the others alone
    report = {
        "budgets_min": [10.0],
        "class_names": bench.class_names(),
        "machine": {k: 2 for k in ("platform", "processor", "cpu_count", "torch_threads", "torch", "monai", "cuda")},
        "nets": {"emnet_fast": {"budgets": {"10": emnet}}, "unet": {"budgets": {"10": unet}}},
    }
    report["targets"] = bench.targets(report)
    row = next(t for t in report["targets"] if t["target"] == "10 min: emnet_fast Dice >= best MONAI net's (unet)")
    assert row["value"] == pytest.approx(-0.05) and row["ok"] is False  # the means decide, not the first seed
    bench.print_table(report)
    out = capsys.readouterr().out
    assert ("Dice after 10 min over seeds [123, 7], emnet_fast: final 0.7000 +- 0.1414 (0.6000, 0.8000), "
            "best 0.8000 +- 0.1414 (0.7000, 0.9000)") in out.splitlines()
    png = tmp_path / "dice.png"
    bench.plot_dice_vs_time(report, str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_seeds_argument_must_be_distinct_integers():
    bench = _bench()
    for bad in ("1,x", "3,3", ","):
        with pytest.raises(SystemExit):
            bench.main(["--seeds", bad, "--skip-train", "--skip-infer", "--skip-step"])
