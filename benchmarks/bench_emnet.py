"""EMNet beside MONAI's SegResNet and SwinUNETR on the emnet_seg3d bundle's demo CT data, in one run.

Two measurements, side by side in one process (machines here are shared and noisy: only ratios taken within one
run mean anything):

1. **Equal wall-clock training budget.** EMNet (the bundle's own ``network_def``) and MONAI's ``SegResNet``
   (``spatial_dims=3, in_channels=1, out_channels=6, init_filters=16``: the 4.7M-parameter configuration of
   MONAI's BraTS tutorial and model zoo; MONAI's default is 8) are trained through the SAME bundle pipeline
   (``bundles/emnet_seg3d/configs/train.json``: same data, transforms, DiceCE loss, AdamW, warm-up + cosine
   schedule, handlers); only ``network_def`` is replaced (and the peak learning rate, per net, with ``--lr``). Each net gets ``--budget-min`` minutes of wall clock,
   counted from the trainer's start (data caching, which happens before, is not counted) and including the
   periodic validations. How the schedule is fitted to the budget:

   - before the clock starts, one forward + backward on a zero batch (eval mode, gradients dropped, weights
     untouched) compiles the lazily-built kernels (numba scans) so their one-off cost does not eat the budget;
   - the bundle is parsed with a placeholder ``epochs`` (the cosine schedule's ``t_total``); after epoch 1 a
     validation runs (the bundle's evaluator, whatever ``--val-interval`` is) and the cost of one epoch ``c`` =
     epoch time + validation time / val_interval is measured; the schedule is then set to
     ``epochs = 1 + floor((budget - elapsed) / c)`` (``t_total`` and the trainer's ``max_epochs``; the warm-up is
     the bundle's ``warmup_epochs``, capped at that count). Each net thus gets a full warm-up + cosine schedule
     that fits its own speed;
   - epoch 1 is not typical (caches and allocator warming up, a validation of its own), and a shared machine's pace
     drifts, so the count is fitted again as 10, 25, 50, 75 and 90% of the budget pass (``REPLAN_FRACTIONS``),
     each time from the epochs since the previous fit, validations included: a first estimate 12% too pessimistic
     had left EMNet's 10-minute schedule ending at 528 s of 600, and with one refit only, 30-minute runs stopped at
     the budget with a tenth of their cosine left (EMNet at epoch 243 of 272), their final weights trained at a
     rate that had not decayed. Each refit moves the cosine by the ratio of the two counts;
   - a wall-clock guard checked after every iteration (``ignite.handlers.TimeLimit``'s check, but stopping once
     the next iteration would end more than half an iteration past the budget) stops training when the budget is
     spent even if the estimate was optimistic;
   - after the trainer stops, the evaluator runs once more unless the last iteration was just validated, so the
     FINAL Dice is that of the final weights. The best Dice is the evaluator's ``best_metric`` over all
     validations. Dice = ``val_mean_dice`` of the bundle: mean over the 5 foreground classes, sliding window
     over the whole validation volumes (2 demo cases). The table adds each class's final Dice (``MeanDice``
     with ``reduction="mean_batch"`` beside the bundle's metric): a mean of 0.4 may be two organs found well
     and three not at all.

   Checkpoints, TensorBoard files and the best ``model.pt`` go to a temporary folder, never to the bundle.
   SwinUNETR is not trained (too slow on a CPU to mean anything in minutes) unless ``--train-swinunetr``.

2. **Whole-volume sliding-window inference time** on the same demo validation volume after the bundle's
   validation preprocessing (resampled to 1.5x1.5x2.0 mm, HU window), roi = the bundle's ``roi_size``,
   overlap 0.5, ``sw_batch_size`` 4, the bundle's blending mode, ``torch.no_grad()``, eval mode, freshly
   initialised weights (time does not depend on them): EMNet (bundle config), SegResNet (as above), SwinUNETR
   (``feature_size=48``, the standard BTCV configuration, 62M parameters). One warm-up pass, then the median of
   ``--repeats``.

The final table lists params, Dice final/best, epochs done in the budget, inference s/volume and the ratio to
EMNet, then the targets: EMNet Dice >= 0.85, EMNet Dice >= SegResNet Dice at equal budget (final Dice),
SwinUNETR/EMNet inference time >= 5.

Run (the real benchmark takes about 2 x budget + a few minutes)::

    python benchmarks/bench_emnet.py --budget-min 10 --repeats 3 --json bench_emnet.json

Every training run takes the bundle's seed (``seed`` in its ``train.json``, 123); the same network trained with
another seed (its initial weights, the crops) ended up to 0.07 Dice apart after 10 minutes on the 2 validation volumes
(more than most gaps between the nets), so ``--seeds 123,7,11`` trains every net once per seed (seed by seed, the nets
in turn) and the table and targets use the mean over the seeds (each run and the standard deviation in the JSON and
below the table).

``emnet`` and ``emnet_fast`` are both the bundle's ``network_def``: since 0.4.0 the fast network (until 0.3.11
``configs/network_fast.json``, merged over the larger default network that is now ``configs/network_large.json``).
``emnet_large`` is that larger network (0.3.11's default, 2.27M parameters) and ``emnet_v03`` the same on 0.3's paths
(channels-first full-resolution branch, the scan's 0.3 kernels). The variants below are changes to the bundle's
network.

``emnet_fast_0310`` is the fast network of 0.3.10: Mamba mixers with state size 16 and inner width 2C (``d_state`` 16,
``expand`` 2, where 0.3.11's have 1 and 1). ``emnet_fast_039``, ``_038``, ``_half`` and ``_light`` are older fast
networks or changes to 0.3.10's, and keep its mixers; ``_035`` and ``_037`` are the fast network on slower paths.
``--nets emnet_fast,emnet_fast_035`` times the fast network's step beside 0.3.5's full-resolution branch (MONAI's
blocks with PyTorch's ``GroupNorm``; ``emnet_fast_035`` is timed, never trained). ``emnet_fast_half`` is the fast
network of 0.3.8 with its full-resolution branch at half resolution (``full_res_stride`` 2, 16 channels).
``emnet_fast_038`` is the fast network of 0.3.8: no decoder stage at 1/2 resolution (``half_res_channels`` 0, the x4
up-sampling from 1/4 to the full-resolution block). ``emnet_fast_037`` is the fast network with the selective scan's
0.3.7 kernels (``per_channel_kernels()``; timed, never trained). ``emnet_fast_039`` is the fast network of 0.3.9: two
convolutions in the decoder's full-resolution block (``full_res_convs`` 2, where 0.3.10's has (2, 1)).
``emnet_fast_light`` is 0.3.10's fast network with one convolution in each full-resolution block (``full_res_convs``
1).

Tiny smoke run::

    python benchmarks/bench_emnet.py --budget-min 0.3 --repeats 1 --nets emnet,segresnet
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

try:  # before torch: the OpenMP spin count mamba_monai sets then reaches torch's pool too (bench_process_env.py)
    import mamba_monai  # noqa: F401
except ImportError:  # run from a checkout without installing: the repository root is this file's parent's parent
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import mamba_monai  # noqa: F401

import torch

BUNDLE = "emnet_seg3d"
NETS = ("emnet", "emnet_fast", "emnet_fast_0310", "emnet_fast_039", "emnet_fast_038", "emnet_fast_half",
        "emnet_fast_light", "emnet_fast_035", "emnet_fast_037", "emnet_large", "emnet_v03", "unet", "segresnet",
        "emnet_bf16", "unet_bf16", "hyenand", "swinunetr")
MONAI_NETS = ("unet", "unet_bf16", "segresnet", "hyenand", "swinunetr")
SLOW_TO_TRAIN = ("hyenand", "swinunetr")  # trained only when asked (--train-slow): minutes per epoch on a CPU
# network_def changes on top of the bundle's network_def (configs/network_fast.json up to 0.3.11)
MIXER_0310 = {"d_state": 16, "expand": 2}  # the Mamba mixers of the fast network up to 0.3.10
FAST_VARIANTS = {
    "emnet_fast": {},
    "emnet_fast_0310": MIXER_0310,  # Mamba state size 16 and inner width 2C
    "emnet_fast_039": {**MIXER_0310, "full_res_convs": 2},  # two convolutions in the decoder's full-resolution block
    # and without the decoder stage at 1/2 resolution
    "emnet_fast_038": {**MIXER_0310, "half_res_channels": 0, "full_res_convs": 2},
    # 0.3.8's with its full-resolution branch at half resolution, 16 channels
    "emnet_fast_half": {**MIXER_0310, "half_res_channels": 0, "full_res_convs": 2, "full_res_stride": 2,
                        "full_res_channels": 16},
    "emnet_fast_light": {**MIXER_0310, "full_res_convs": 1},  # one convolution in each full-resolution block
    # its full-resolution branch as in 0.3.5 (MONAI's blocks, GroupNorm)
    "emnet_fast_035": {"fused_norm_act": False},
    "emnet_fast_037": {},  # the scan's 0.3.7 kernels (net_context)
    "emnet_bf16": {"full_res_bfloat16": True},  # the full-resolution branch's convolutions in bfloat16 on a CPU
}
TIMED_ONLY = ("emnet_fast_035", "emnet_fast_037")  # the same values as emnet_fast by a slower path: timed, never trained
PLACEHOLDER_EPOCHS = 100000  # cosine t_total until the first epoch has been timed
REPLAN_FRACTIONS = (0.1, 0.25, 0.5, 0.75, 0.9)  # the epoch count is fitted again as each share of the budget passes

TARGET_EMNET_DICE = 0.85
TARGET_SWIN_RATIO = 5.0
TARGET_HYENA_RATIO = 4.0
TARGET_STEP_SPEEDUP = 2.0

BUNDLE_CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bundles", BUNDLE, "configs")
LARGE_NETWORK = os.path.join(BUNDLE_CONFIGS, "network_large.json")  # the bundle's default network up to 0.3.11
TRAIN_CONFIG = os.path.join(BUNDLE_CONFIGS, "train.json")


def reference_net(names) -> str:
    """The EMNet that ratios and targets refer to: ``emnet_fast`` when it was measured, else ``emnet``."""
    return "emnet_fast" if "emnet_fast" in names else "emnet"


def net_context(name: str):
    """The context a net runs in: the scan's 0.3 kernel path for ``emnet_v03``, its 0.3.7 kernels for
    ``emnet_fast_037``, nothing for the others."""
    if name == "emnet_v03":
        from mamba_monai.ops.selective_scan_cpu import pointwise_in_kernel

        return pointwise_in_kernel()
    if name == "emnet_fast_037":
        from mamba_monai.ops.selective_scan_cpu import per_channel_kernels

        return per_channel_kernels()
    return contextlib.nullcontext()


def network_def(name: str, segresnet_filters: int = 16) -> dict | None:
    """Config (``_target_`` dict) of a baseline for the bundle's ``network_def``; None keeps the bundle's EMNet."""
    if name == "emnet":
        return None
    if name in ("emnet_large", "emnet_v03"):  # emnet_v03: as 0.3 ran it, channels-first, the 0.3 scan path (net_context)
        with open(LARGE_NETWORK) as fh:
            large = json.load(fh)["network_def"]
        return large if name == "emnet_large" else {**large, "channels_last": False}
    if name in FAST_VARIANTS:
        with open(TRAIN_CONFIG) as fh:
            return {**json.load(fh)["network_def"], **FAST_VARIANTS[name]}
    if name == "unet_bf16":  # the same UNet, every convolution but the two on the image computed in bfloat16 on a CPU
        return {"_target_": "mamba_monai.blocks.cpu_bfloat16_convs", "module": network_def("unet")}
    if name == "unet":  # MONAI's UNet as a new user configures it: 4 levels, residual units
        return {
            "_target_": "UNet",
            "spatial_dims": 3,
            "in_channels": "@in_channels",
            "out_channels": "@num_classes",
            "channels": [16, 32, 64, 128],
            "strides": [2, 2, 2],
            "num_res_units": 2,
        }
    if name == "hyenand":  # MONAI's sub-quadratic SwinUNETR: HyenaND long convolutions at stages 1-2 (HHAA)
        return {
            "_target_": "monai.networks.nets.HyenaNDUNETR",
            "in_channels": "@in_channels",
            "out_channels": "@num_classes",
            "hyena_stages": [True, True, False, False],
            "feature_size": 48,
        }
    if name == "segresnet":
        return {
            "_target_": "SegResNet",
            "spatial_dims": 3,
            "in_channels": "@in_channels",
            "out_channels": "@num_classes",
            "init_filters": segresnet_filters,
        }
    if name == "swinunetr":
        return {
            "_target_": "SwinUNETR",
            "spatial_dims": 3,
            "in_channels": "@in_channels",
            "out_channels": "@num_classes",
            "feature_size": 48,
        }
    raise ValueError(f"unknown network '{name}', expected one of {NETS}.")


# validation Dice per foreground class beside the bundle's mean: the mean alone hides which organs a net has not found yet
CLASS_DICE_METRIC = {
    "val_class_dice": {
        "_target_": "MeanDice",
        "include_background": False,
        "reduction": "mean_batch",
        "output_transform": "$monai.handlers.from_engine(['pred', 'label'])",
    }
}


def class_names() -> list[str]:
    """The bundle's foreground class names (metadata.json's output channel_def, background left out)."""
    with open(os.path.join(BUNDLE_CONFIGS, "metadata.json")) as fh:
        channels = json.load(fh)["network_data_format"]["outputs"]["pred"]["channel_def"]
    return [channels[k] for k in sorted(channels, key=int) if int(k) > 0]


def _workflow(data_dir: str, work_dir: str, name: str, segresnet_filters: int, **override: Any):
    """The bundle's train workflow with ``name``'s network and every output under ``work_dir/name``."""
    from mamba_monai.bundle import bundle_workflow

    common = {
        "dataset_dir": data_dir,
        "demo_data_dir": data_dir,  # the bundle's initialize then writes/checks the demo set here, not in the bundle
        "ckpt_dir": os.path.join(work_dir, name, "models"),
        "output_dir": os.path.join(work_dir, name, "eval"),
        "validate#evaluator#additional_metrics": CLASS_DICE_METRIC,
    }
    net = network_def(name, segresnet_filters)
    if net is not None:
        common["network_def"] = net
    common.update(override)
    return bundle_workflow(BUNDLE, "train", workflow_type="train", **common)


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _warm_up(net: torch.nn.Module, roi: list[int], device: torch.device) -> float:
    """One forward + backward on zeros in eval mode (no running statistics move), gradients dropped."""
    t0 = time.perf_counter()
    was_training = net.training
    net.eval()
    x = torch.zeros(1, 1, *roi, device=device)
    net(x).float().mean().backward()
    net.zero_grad(set_to_none=True)
    net.train(was_training)
    return time.perf_counter() - t0


class BudgetPlanner:
    """
    Fits the bundle's warm-up + cosine schedule to a wall-clock budget and stops the trainer when it is spent.

    Attached to a MONAI ``SupervisedTrainer`` whose scheduler is ``monai.optimizers.WarmupCosineSchedule``
    built with a placeholder ``t_total``. At ``STARTED`` the clock starts; after epoch 1 the evaluator runs
    (unless the bundle's ValidationHandler just did), the per-epoch cost is measured and ``t_total`` /
    ``max_epochs`` are set; after every iteration the time limit is checked (``ignite.handlers.TimeLimit``'s
    check, except that training stops once the next iteration would end more than half an iteration past the
    budget, so the time used is the budget give or take half an iteration rather than up to one iteration over).

    Args:
        evaluator: the bundle's ``validate#evaluator``.
        scheduler: the bundle's ``lr_scheduler``.
        budget_s: wall-clock budget in seconds.
        val_interval: epochs between the bundle's validations.
        warmup_epochs: the bundle's ``warmup_epochs``.
    """

    def __init__(self, evaluator, scheduler, budget_s: float, val_interval: int, warmup_epochs: int) -> None:
        self.evaluator = evaluator
        self.scheduler = scheduler
        self.budget_s = float(budget_s)
        self.val_interval = int(val_interval)
        self.warmup_epochs = int(warmup_epochs)
        self.t0 = 0.0
        self.trainer = None
        self.planned_epochs: int | None = None
        self.plans: list[dict[str, float]] = []  # every fit: epoch, elapsed seconds, planned epochs
        self.epoch_s: float | None = None
        self.val_s: float | None = None
        self.epochs_completed = 0
        self.stopped_by_time = False
        self.train_s = 0.0
        self.history: list[dict[str, float]] = []  # one row per validation
        self._val_start = 0.0
        self._iter_start = 0.0
        self._last_val_iteration = -1

    def attach(self, trainer) -> None:
        from ignite.engine import Events

        self.trainer = trainer
        trainer.add_event_handler(Events.STARTED, self._started)
        trainer.add_event_handler(Events.ITERATION_STARTED, self._iteration_started)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, self._check_time)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)
        trainer.add_event_handler(Events.COMPLETED, self._completed)
        self.evaluator.add_event_handler(Events.STARTED, self._val_started)
        self.evaluator.add_event_handler(Events.COMPLETED, self._val_completed)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def _started(self, engine) -> None:
        self.t0 = time.perf_counter()

    def _iteration_started(self, engine) -> None:
        self._iter_start = time.perf_counter()

    def _check_time(self, engine) -> None:
        # stop when the next iteration would end more than half an iteration past the budget: the time used is then
        # the budget give or take half an iteration, instead of up to a whole iteration over it (TimeLimit's rule)
        last = time.perf_counter() - self._iter_start
        if self.elapsed() + 0.5 * last > self.budget_s:
            self.stopped_by_time = True
            engine.terminate()

    def _val_started(self, engine) -> None:
        self._val_start = time.perf_counter()

    def _val_completed(self, engine) -> None:
        it = self.trainer.state.iteration if self.trainer is not None else 0
        self._last_val_iteration = it
        per_class = engine.state.metrics.get("val_class_dice")
        self.history.append(
            {
                "epoch": self.trainer.state.epoch if self.trainer is not None else 0,
                "iteration": it,
                "elapsed_s": round(self.elapsed(), 2),
                "val_seconds": round(time.perf_counter() - self._val_start, 2),
                "val_mean_dice": float(engine.state.metrics.get("val_mean_dice", float("nan"))),
                "val_class_dice": None if per_class is None else [float(v) for v in torch.as_tensor(per_class).flatten()],
            }
        )

    def _epoch_completed(self, engine) -> None:
        self.epochs_completed = engine.state.epoch
        if self.planned_epochs is None:
            self._first_fit(engine)
        elif self._refit_due():
            self._refit(engine)

    def _refit_due(self) -> bool:
        """Whether the next share of :data:`REPLAN_FRACTIONS` has passed (one refit per share, the first fit aside)."""
        refits = len(self.plans) - 1
        return refits < len(REPLAN_FRACTIONS) and self.elapsed() >= REPLAN_FRACTIONS[refits] * self.budget_s

    def _first_fit(self, engine) -> None:
        epoch_s = self.elapsed()
        if self._last_val_iteration != engine.state.iteration:  # the bundle's ValidationHandler did not run
            self.evaluator.run(engine.state.epoch)
        self.val_s = self.history[-1]["val_seconds"]
        self.epoch_s = epoch_s - (self.val_s if self.val_interval == 1 else 0.0)
        cost = self.epoch_s + self.val_s / self.val_interval
        self._set_epochs(engine, 1 + max(0, math.floor((self.budget_s - self.elapsed()) / cost)))

    @property
    def first_planned_epochs(self) -> int | None:
        return int(self.plans[0]["epochs"]) if self.plans else None

    def _refit(self, engine) -> None:
        """The epoch count fitted again from the cost of the epochs since the latest fit (validations included)."""
        epoch, elapsed = engine.state.epoch, self.elapsed()
        last = self.plans[-1]
        if epoch <= last["epoch"]:
            return
        cost = (elapsed - last["elapsed_s"]) / (epoch - last["epoch"])
        self._set_epochs(engine, epoch + max(0, math.floor((self.budget_s - elapsed) / cost)))

    def _set_epochs(self, engine, planned: int) -> None:
        self.plans.append({"epoch": engine.state.epoch, "elapsed_s": self.elapsed(), "epochs": planned})
        self.planned_epochs = planned
        self.scheduler.t_total = planned
        self.scheduler.warmup_steps = min(self.warmup_epochs, planned)
        engine.state.max_epochs = planned

    def _completed(self, engine) -> None:
        self.train_s = self.elapsed()

    def final_validation(self) -> None:
        """Validate the final weights unless the trainer's last iteration was just validated."""
        if self._last_val_iteration != self.trainer.state.iteration:
            self.evaluator.run(self.trainer.state.epoch)


def train_with_budget(
    name: str,
    data_dir: str,
    work_dir: str,
    budget_s: float,
    val_interval: int,
    segresnet_filters: int,
    learning_rate: float | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """
    Train one network through the bundle for ``budget_s`` seconds of wall clock (in :func:`net_context`); returns its
    figures. ``learning_rate`` replaces the bundle's peak learning rate and ``seed`` its random seed (the weights'
    initialisation, the crops' order and positions); None keeps the bundle's.
    """
    with net_context(name):
        return _train_with_budget(name, data_dir, work_dir, budget_s, val_interval, segresnet_filters, learning_rate,
                                  seed)


def _train_with_budget(name, data_dir, work_dir, budget_s, val_interval, segresnet_filters, learning_rate, seed):
    override = {} if learning_rate is None else {"learning_rate": learning_rate}
    if seed is not None:
        override["seed"] = seed
    run_dir = os.path.join(work_dir, f"{budget_s:.0f}s_lr{learning_rate}_seed{seed}")
    wf = _workflow(
        data_dir, run_dir, name, segresnet_filters, epochs=PLACEHOLDER_EPOCHS, val_interval=val_interval, **override
    )
    t0 = time.perf_counter()
    wf.initialize()
    missing = wf.check_properties()
    if missing:
        raise ValueError(f"bundle config misses required properties: {missing}")
    parser = wf.parser
    trainer = parser.get_parsed_content("train#trainer")  # builds data sets (caching), network, optimizer, ...
    evaluator = parser.get_parsed_content("validate#evaluator")
    scheduler = parser.get_parsed_content("lr_scheduler")
    network = parser.get_parsed_content("network")
    setup_s = time.perf_counter() - t0
    warm_s = _warm_up(network, list(parser.get_parsed_content("roi_size")), parser.get_parsed_content("device"))

    planner = BudgetPlanner(
        evaluator, scheduler, budget_s, val_interval, int(parser.get_parsed_content("warmup_epochs"))
    )
    planner.attach(trainer)
    print(f"\n[{name}] lr {parser.get_parsed_content('learning_rate'):g}: training for {budget_s:.0f} s of wall clock "
          f"(setup {setup_s:.1f} s, kernel warm-up {warm_s:.1f} s)", flush=True)
    try:
        wf.run()
        planner.final_validation()
    finally:
        wf.finalize()
    figures = {
        "params": _params(network),
        "learning_rate": float(parser.get_parsed_content("learning_rate")),
        "seed": int(parser.get_parsed_content("seed")),
        "dice_final": planner.history[-1]["val_mean_dice"] if planner.history else float("nan"),
        "class_dice_final": planner.history[-1]["val_class_dice"] if planner.history else None,
        "dice_best": float(evaluator.state.best_metric),
        "best_epoch": int(evaluator.state.best_metric_epoch),
        "epochs_planned": planner.planned_epochs,
        "epochs_planned_first": planner.first_planned_epochs,
        "epoch_plans": planner.plans,
        "epochs_completed": planner.epochs_completed,
        "iterations": trainer.state.iteration,
        "iterations_per_epoch": trainer.state.epoch_length,
        "stopped_by_time": planner.stopped_by_time,
        "train_seconds": round(planner.train_s, 2),
        "first_epoch_seconds": None if planner.epoch_s is None else round(planner.epoch_s, 2),
        "validation_seconds": planner.val_s,
        "setup_seconds": round(setup_s, 2),
        "warmup_seconds": round(warm_s, 2),
        "history": planner.history,
    }
    print(
        f"[{name}] done: epochs {figures['epochs_completed']}/{figures['epochs_planned']} "
        f"(first fit {figures['epochs_planned_first']}, {len(figures['epoch_plans'])} fits; "
        f"{figures['iterations']} iterations, {figures['train_seconds']:.0f} s), "
        f"Dice final {figures['dice_final']:.4f}, best {figures['dice_best']:.4f} (epoch {figures['best_epoch']})",
        flush=True,
    )
    del wf, parser, trainer, evaluator, scheduler, network
    gc.collect()
    return figures


def inference_times(
    nets: list[str], data_dir: str, work_dir: str, repeats: int, segresnet_filters: int, case: int = 0
) -> dict[str, dict[str, Any]]:
    """Sliding-window inference time of each net on one preprocessed demo validation volume."""
    from monai.inferers import SlidingWindowInferer

    wf = _workflow(data_dir, os.path.join(work_dir, "infer"), "emnet", segresnet_filters)
    parser = wf.parser
    roi = list(parser.get_parsed_content("roi_size"))
    mode = parser.get_parsed_content("validate#inferer").mode
    datalist = parser.get_parsed_content("validate#dataset#data")
    item = parser.get_parsed_content("validate#preprocessing")(datalist[case])
    image = item["image"]
    image = (image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image)).float()[None]  # (1, 1, H, W, D)
    inferer = SlidingWindowInferer(roi_size=roi, sw_batch_size=4, overlap=0.5, mode=mode)
    print(
        f"\ninference volume: {os.path.basename(datalist[case]['image'])} preprocessed to {tuple(image.shape[2:])}, "
        f"roi {roi}, overlap 0.5, sw_batch_size 4, mode {mode}, repeats {repeats} (+1 warm-up)"
    )
    results: dict[str, dict[str, Any]] = {}
    for name in nets:
        net_wf = _workflow(data_dir, os.path.join(work_dir, "infer"), name, segresnet_filters)
        torch.manual_seed(0)
        net = net_wf.parser.get_parsed_content("network_def").eval()
        times = []
        with torch.no_grad(), net_context(name):
            for i in range(repeats + 1):
                t0 = time.perf_counter()
                out = inferer(image, net)
                dt = time.perf_counter() - t0
                if i > 0:
                    times.append(dt)
        if tuple(out.shape) != (1, 6, *image.shape[2:]):
            raise RuntimeError(f"{name}: output shape {tuple(out.shape)}, expected {(1, 6, *image.shape[2:])}")
        results[name] = {
            "params": _params(net),
            "infer_seconds": statistics.median(times),
            "infer_all_seconds": [round(t, 3) for t in times],
        }
        print(f"  {name:<10} {_params(net) / 1e6:7.2f}M params  {statistics.median(times):8.2f} s/volume  {results[name]['infer_all_seconds']}")
        del net, net_wf
        gc.collect()
    ref = reference_net(results)
    if ref in results:
        for name in results:
            results[name]["infer_ratio_vs_emnet"] = results[name]["infer_seconds"] / results[ref]["infer_seconds"]
        for name in results:
            if name != ref:
                print(f"  {name} / {ref} inference time: {results[name]['infer_ratio_vs_emnet']:.2f}")
    return results


def step_times(
    nets: list[str], data_dir: str, work_dir: str, repeats: int, batch: int, segresnet_filters: int
) -> dict[str, dict[str, Any]]:
    """
    Seconds per training step of each net, side by side in one run: forward + the bundle's DiceCE loss + backward +
    AdamW step on a random batch of ``batch`` crops of the bundle's ROI (the bundle trains on 1 volume x 4 crops).
    One warm-up step each, then ``repeats`` rounds that time one step of every net in turn (so load on the machine
    falls on all of them alike); the median is reported.
    """
    wf = _workflow(data_dir, os.path.join(work_dir, "step"), "emnet", segresnet_filters)
    roi = list(wf.parser.get_parsed_content("roi_size"))
    classes = int(wf.parser.get_parsed_content("num_classes"))
    loss = wf.parser.get_parsed_content("loss")
    gen = torch.Generator().manual_seed(0)
    image = torch.randn(batch, 1, *roi, generator=gen)
    label = torch.randint(0, classes, (batch, 1, *roi), generator=gen)
    models = {}
    for name in nets:
        torch.manual_seed(0)
        net = _workflow(data_dir, os.path.join(work_dir, "step"), name, segresnet_filters).parser.get_parsed_content(
            "network_def"
        )
        models[name] = (net.train(), torch.optim.AdamW(net.parameters(), lr=1e-4))

    def one_step(name: str) -> float:
        net, opt = models[name]
        with net_context(name):
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss(net(image), label).backward()
            opt.step()
            return time.perf_counter() - t0

    for name in nets:
        one_step(name)
    times: dict[str, list[float]] = {name: [] for name in nets}
    for _ in range(repeats):
        for name in nets:
            times[name].append(one_step(name))
    print(f"\ntraining step (batch {batch} x {roi}, forward + DiceCE + backward + AdamW), median of {repeats}:")
    results = {}
    for name in nets:
        results[name] = {"step_seconds": statistics.median(times[name]), "step_all_seconds": [round(t, 3) for t in times[name]]}
        print(f"  {name:<10} {results[name]['step_seconds']:7.3f} s/step  {results[name]['step_all_seconds']}")
    ref = reference_net(results)
    if ref in results:
        for name in results:
            results[name]["step_ratio_vs_emnet"] = results[name]["step_seconds"] / results[ref]["step_seconds"]
    if ref in results and "emnet_v03" in results:
        print(f"  {ref} step speed-up over emnet_v03 (0.3.0): {results['emnet_v03']['step_ratio_vs_emnet']:.2f}x")
    if ref in results and "emnet_fast_035" in results:
        print(f"  {ref} step speed-up over emnet_fast_035 (0.3.5's full-resolution blocks): "
              f"{results['emnet_fast_035']['step_ratio_vs_emnet']:.2f}x")
    if ref in results and "emnet_fast_037" in results:
        print(f"  {ref} step speed-up over emnet_fast_037 (the scan's 0.3.7 per-channel kernels): "
              f"{results['emnet_fast_037']['step_ratio_vs_emnet']:.2f}x")
    models.clear()
    gc.collect()
    return results


def choose_learning_rate(
    name: str, grid: list[float], data_dir: str, work_dir: str, budget_s: float, val_interval: int, segresnet_filters: int
) -> dict[str, Any]:
    """Short run (``budget_s``) at every rate of ``grid``; the rate with the best validation Dice wins."""
    trials = {}
    for lr in grid:
        f = train_with_budget(name, data_dir, os.path.join(work_dir, "grid"), budget_s, val_interval, segresnet_filters, lr)
        trials[lr] = {"dice_best": f["dice_best"], "dice_final": f["dice_final"], "iterations": f["iterations"]}
    scores = {lr: (t["dice_best"] if not math.isnan(t["dice_best"]) else -1.0) for lr, t in trials.items()}
    best = max(scores, key=scores.get)
    print(f"[{name}] learning-rate grid ({budget_s:.0f} s each): "
          + ", ".join(f"{lr:g}: {t['dice_best']:.4f}" for lr, t in trials.items()) + f" -> {best:g}", flush=True)
    return {"lr_grid": {f"{lr:g}": t for lr, t in trials.items()}, "chosen_lr": best}


def summarise_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """
    One net's training runs at one budget, one per seed, as one entry of the report: the run itself when there is one;
    else the mean and sample standard deviation over the runs of the final and best Dice, the mean per-class final
    Dice and steps, and every run under ``"runs"``.
    """
    if len(runs) == 1:
        return runs[0]
    finals, bests = [r["dice_final"] for r in runs], [r["dice_best"] for r in runs]
    per_class = [r.get("class_dice_final") for r in runs]
    return {
        "params": runs[0]["params"],
        "learning_rate": runs[0]["learning_rate"],
        "seeds": [r["seed"] for r in runs],
        "dice_final": statistics.fmean(finals),
        "dice_final_sd": statistics.stdev(finals),
        "dice_best": statistics.fmean(bests),
        "dice_best_sd": statistics.stdev(bests),
        "class_dice_final": [statistics.fmean(c) for c in zip(*per_class)] if all(per_class) else None,
        "iterations": round(statistics.fmean(r["iterations"] for r in runs)),
        "runs": runs,
    }


def plot_dice_vs_time(report: dict[str, Any], path: str) -> None:
    """One panel per budget: validation Dice against wall-clock seconds of training, one line per net."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = report["budgets_min"]
    fig, axes = plt.subplots(1, len(budgets), figsize=(6.5 * len(budgets), 4.6), squeeze=False)
    for ax, budget in zip(axes[0], budgets):
        for name, f in report["nets"].items():
            entry = f.get("budgets", {}).get(f"{budget:g}")
            runs = [r for r in (entry.get("runs", [entry]) if entry else []) if r["history"]]
            color = None
            for i, run in enumerate(runs):  # one line per seed, in the net's colour
                xs = [h["elapsed_s"] for h in run["history"]]
                ys = [h["val_mean_dice"] for h in run["history"]]
                seeds = f", {len(runs)} seeds" if len(runs) > 1 else ""
                (line,) = ax.plot(xs, ys, marker="o", markersize=3, color=color, alpha=1.0 if len(runs) == 1 else 0.75,
                                  label=f"{name} (lr {run['learning_rate']:g}{seeds})" if i == 0 else None)
                color = line.get_color()
        ax.set_title(f"{budget:g} min of training each, {report['machine']['torch_threads']} CPU threads")
        ax.set_xlabel("wall-clock seconds of training (validations included)")
        ax.set_ylabel("validation mean Dice (5 foreground classes)")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"plot written to {path}")


def machine_info() -> dict[str, Any]:
    import monai

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "monai": monai.__version__,
        "cuda": torch.cuda.is_available(),
    }


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        width = spec.split(".")[0]
        return "-".rjust(int(width) if width.isdigit() else 1)
    return format(value, spec)


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    nets = report["nets"]
    rows = []

    def row(target: str, value, ok) -> None:
        rows.append({"target": target, "value": value, "ok": ok})

    for budget in report["budgets_min"]:
        key = f"{budget:g}"
        finals = {n: f["budgets"][key]["dice_final"] for n, f in nets.items() if key in f.get("budgets", {})}
        lead = reference_net(finals)
        d = finals.get(lead)
        row(f"{key} min: {lead} Dice (final) >= {TARGET_EMNET_DICE}", d, None if d is None else d >= TARGET_EMNET_DICE)
        monai = {n: v for n, v in finals.items() if n in MONAI_NETS}
        if d is not None and monai:
            best = max(monai, key=monai.get)
            row(f"{key} min: {lead} Dice >= best MONAI net's ({best})", d - monai[best], d >= monai[best])
    speed = nets.get("emnet_v03", {}).get("step_ratio_vs_emnet")
    row(f"{reference_net(nets)} training step speed-up over 0.3.0 >= {TARGET_STEP_SPEEDUP:g}x", speed,
        None if speed is None else speed >= TARGET_STEP_SPEEDUP)
    for name, goal in (("swinunetr", TARGET_SWIN_RATIO), ("hyenand", TARGET_HYENA_RATIO)):
        r = nets.get(name, {}).get("infer_ratio_vs_emnet")
        row(f"{name} / {reference_net(nets)} inference time >= {goal:g}", r, None if r is None else r >= goal)
    return rows


def print_table(report: dict[str, Any]) -> None:
    nets = report["nets"]
    head = (f"{'network':<10} | {'params':>8} | {'step s':>6} | {'infer s/vol':>11} | {'vs EMNet':>8} | {'lr':>7} | "
            + " | ".join(f"{f'Dice {b:g} min':>12} | {'best':>6} | {'steps':>5}" for b in report["budgets_min"]))
    print("\n" + "=" * len(head))
    print(head)
    print("-" * len(head))
    for name, f in nets.items():
        cells = []
        for b in report["budgets_min"]:
            run = f.get("budgets", {}).get(f"{b:g}", {})
            cells.append(f"{_fmt(run.get('dice_final'), '12.4f')} | {_fmt(run.get('dice_best'), '6.4f')} | "
                         f"{_fmt(run.get('iterations'), '5d')}")
        # counted by the inference timing, else by the training runs (--skip-infer)
        params = f.get("params") or next((r["params"] for r in f.get("budgets", {}).values() if r.get("params")), None)
        print(
            f"{name:<10} | {_fmt(params / 1e6 if params else None, '7.2f')}M | {_fmt(f.get('step_seconds'), '6.3f')} | "
            f"{_fmt(f.get('infer_seconds'), '11.2f')} | {_fmt(f.get('infer_ratio_vs_emnet'), '8.2f')} | "
            f"{_fmt(f.get('chosen_lr'), '7.0e')} | " + " | ".join(cells)
        )
    print("-" * len(head))
    print("step s = one training step at the bundle's batch; vs EMNet = inference time / EMNet's; lr = the peak rate "
          "chosen on validation from the grid; Dice = final validation mean Dice at the end of the budget, best = the "
          "best validation during it; steps = training iterations done (with --seeds: means over the seeds)")
    names = report.get("class_names") or class_names()
    for b in report["budgets_min"]:
        for name, f in nets.items():
            per_class = f.get("budgets", {}).get(f"{b:g}", {}).get("class_dice_final")
            if per_class:
                print(f"Dice per class after {b:g} min, {name}: "
                      + ", ".join(f"{c} {_fmt(v, '.3f')}" for c, v in zip(names, per_class)))
    for b in report["budgets_min"]:
        for name, f in nets.items():
            entry = f.get("budgets", {}).get(f"{b:g}", {})
            if "runs" in entry:
                print(f"Dice after {b:g} min over seeds {entry['seeds']}, {name}: final {entry['dice_final']:.4f} "
                      f"+- {entry['dice_final_sd']:.4f} (" + ", ".join(f"{r['dice_final']:.4f}" for r in entry["runs"])
                      + f"), best {entry['dice_best']:.4f} +- {entry['dice_best_sd']:.4f} ("
                      + ", ".join(f"{r['dice_best']:.4f}" for r in entry["runs"]) + ")")
    for name, f in nets.items():
        if "lr_grid" in f:
            print(f"lr grid {name}: " + ", ".join(f"{lr}: {t['dice_best']:.4f}" for lr, t in f["lr_grid"].items()))
    for t in report["targets"]:
        status = "n/a" if t["ok"] is None else ("PASS" if t["ok"] else "FAIL")
        print(f"target: {t['target']:<56} {_fmt(t['value'], '.4f'):>8}  {status}")
    m = report["machine"]
    print(f"machine: {m['platform']}, {m['processor']}, {m['cpu_count']} CPUs, torch threads {m['torch_threads']}, "
          f"torch {m['torch']}, monai {m['monai']}, cuda {m['cuda']}")
    print("=" * len(head))


def _floats(text: str, what: str, p: argparse.ArgumentParser) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        p.error(f"{what} expects comma-separated numbers, got {text!r}")
    if not values or any(v <= 0 for v in values):
        p.error(f"{what} expects positive numbers, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget-min", default="10,30", help="training wall clock per network, minutes, one or more (default 10,30)")
    p.add_argument("--lr-grid", default="1e-3,2e-3,5e-3,1e-2",
                   help="peak learning rates each trained net tries (default 1e-3,2e-3,5e-3,1e-2: EMNet and UNet chose the "
                        "top of 1e-4..2e-3 and of 3e-4..5e-3 in earlier runs); one value skips the search")
    p.add_argument("--lr", action="append", default=[], metavar="NET=LR",
                   help="a fixed peak learning rate for one net instead of the grid search, e.g. --lr emnet_v03=2e-3")
    p.add_argument("--seeds", default=None,
                   help="comma-separated random seeds: every net trains once per seed at each budget (seed by seed, "
                        "the nets in turn) and the table shows the mean, with each run in the JSON; default: the "
                        "bundle's seed, one run")
    p.add_argument("--grid-budget-min", type=float, default=2.0, help="minutes of each learning-rate trial (default 2)")
    p.add_argument("--repeats", type=int, default=3, help="timed inference passes / step rounds (median; default 3)")
    p.add_argument("--step-batch", type=int, default=4, help="crops per training step when timing steps (default 4, as the bundle)")
    p.add_argument("--data-dir", default=None,
                   help="demo CT data set folder (written if absent); default: a temporary folder removed at the end")
    p.add_argument("--nets", default=",".join(NETS), help=f"comma-separated subset of {','.join(NETS)} (default all)")
    p.add_argument("--skip-train", action="store_true", help="no training runs")
    p.add_argument("--skip-infer", action="store_true", help="no inference timing")
    p.add_argument("--skip-step", action="store_true", help="no training-step timing")
    p.add_argument("--train-slow", action="store_true", help=f"also train {', '.join(SLOW_TO_TRAIN)} when in --nets")
    p.add_argument("--val-interval", type=int, default=2, help="epochs between validations (default 2)")
    p.add_argument("--segresnet-filters", type=int, default=16, help="SegResNet init_filters (default 16; MONAI's default is 8)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own choice)")
    p.add_argument("--plot", default="bench_emnet_dice_vs_time.png", help="Dice-vs-time PNG (default %(default)s)")
    p.add_argument("--json", default=None, help="write all figures to this JSON file")
    args = p.parse_args(argv)

    nets = [n.strip().lower() for n in args.nets.split(",") if n.strip()]
    bad = [n for n in nets if n not in NETS]
    if bad or not nets:
        p.error(f"--nets got {args.nets!r}; allowed names: {', '.join(NETS)}")
    budgets = _floats(args.budget_min, "--budget-min", p)
    grid = _floats(args.lr_grid, "--lr-grid", p)
    if args.repeats < 1 or args.val_interval < 1 or args.grid_budget_min <= 0 or args.step_batch < 1:
        p.error("--repeats, --val-interval and --step-batch must be >= 1, --grid-budget-min > 0")
    fixed_lr = {}
    for item in args.lr:
        net, _, value = item.partition("=")
        try:
            fixed_lr[net.strip().lower()] = float(value)
        except ValueError:
            p.error(f"--lr expects NET=LR such as emnet_v03=2e-3, got {item!r}")
    if set(fixed_lr) - set(nets):
        p.error(f"--lr names {sorted(set(fixed_lr) - set(nets))}, which are not in --nets {nets}")
    try:
        seeds = [None] if args.seeds is None else [int(v) for v in args.seeds.split(",") if v.strip()]
    except ValueError:
        p.error(f"--seeds expects comma-separated integers, got {args.seeds!r}")
    if not seeds or len(set(seeds)) != len(seeds):
        p.error(f"--seeds expects distinct integers, got {args.seeds!r}")
    if args.threads:
        torch.set_num_threads(args.threads)

    from mamba_monai.data import ensure_demo_ct_dataset

    work_dir = tempfile.mkdtemp(prefix="bench_emnet_")
    data_dir = os.path.abspath(args.data_dir) if args.data_dir else os.path.join(work_dir, "demo_ct")
    report: dict[str, Any] = {"args": vars(args), "budgets_min": budgets, "machine": machine_info(),
                              "class_names": class_names(), "nets": {n: {} for n in nets}}
    print(f"machine: {report['machine']}")
    trained = [n for n in nets if (n not in SLOW_TO_TRAIN or args.train_slow) and n not in TIMED_ONLY]
    stepped = [n for n in nets if n in trained or n in TIMED_ONLY]
    try:
        t0 = time.perf_counter()
        ensure_demo_ct_dataset(data_dir)
        print(f"demo data: {data_dir} ({time.perf_counter() - t0:.1f} s)")
        if not args.skip_step:
            for name, f in step_times(stepped, data_dir, work_dir, args.repeats, args.step_batch, args.segresnet_filters).items():
                report["nets"][name].update(f)
        if not args.skip_infer:
            for name, f in inference_times(nets, data_dir, work_dir, args.repeats, args.segresnet_filters).items():
                report["nets"][name].update(f)
        if not args.skip_train:
            for name in trained:
                if name in fixed_lr:
                    report["nets"][name]["chosen_lr"] = fixed_lr[name]
                elif len(grid) > 1:
                    report["nets"][name].update(choose_learning_rate(
                        name, grid, data_dir, work_dir, args.grid_budget_min * 60.0, args.val_interval,
                        args.segresnet_filters))
                else:
                    report["nets"][name]["chosen_lr"] = grid[0]
            for budget in budgets:
                runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trained}
                for seed in seeds:  # the nets take turns within each seed: a slower spell of the machine hits all
                    for name in trained:
                        runs[name].append(train_with_budget(name, data_dir, work_dir, budget * 60.0, args.val_interval,
                                                            args.segresnet_filters, report["nets"][name]["chosen_lr"],
                                                            seed))
                        report["nets"][name].setdefault("budgets", {})[f"{budget:g}"] = summarise_runs(runs[name])
                        if args.json:  # nothing lost if a long run is interrupted
                            _write_json(report, args.json)
            if args.plot:
                plot_dice_vs_time(report, args.plot)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    report["targets"] = targets(report)
    print_table(report)
    if args.json:
        _write_json(report, args.json)
        print(f"figures written to {args.json}")
    return report


def _write_json(report: dict[str, Any], path: str) -> None:
    with open(path, "w") as fh:
        json.dump(report, fh, indent=2, default=str)


if __name__ == "__main__":
    main()
