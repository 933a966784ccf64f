"""
Fixed-step comparison through the emnet_seg3d bundle: which organs each network (or EMNet variant) has found after
the same number of training steps.

``bench_emnet.py`` races networks against the wall clock, which mixes two things: how fast a step is and how much a
step teaches. This script isolates the second. Every variant trains through the bundle's own ``train.json`` for
exactly ``--epochs`` epochs (the bundle's warm-up + cosine schedule over those epochs, the bundle's seed), so the result
does not depend on the machine's load, and the validation Dice of every class is recorded every ``--val-interval``
epochs beside the mean training loss. A run is repeatable for one seed; another seed (``--override seed=7``)
changes the initial weights and the crops, and moved a network's Dice by up to 0.1 at the same epoch here, so
compare variants over a few seeds.

Variants (``--variant``, repeatable):

- ``NET``: a network of ``bench_emnet.py`` as it is (``emnet``, ``emnet_fast``, ``unet``, ``segresnet``, ...);
- ``LABEL=NET:JSON``: that network's ``network_def`` updated with a JSON object, e.g.
  ``'bn=emnet_fast:{"norm_name": "batch"}'`` or ``'wide=emnet_fast:{"feature_size": 32}'``.

``--override KEY=JSON`` (repeatable) changes the recipe for EVERY variant (the comparison stays fair), e.g. crops
balanced over the classes instead of positive/negative crops::

    --override 'train#random_transforms#0={"_target_": "RandCropByLabelClassesd", "keys": ["image", "label"],
                "label_key": "label", "spatial_size": "@roi_size", "num_classes": "@num_classes", "num_samples": 4}'

Run (the bundle docs' per-class table; two processes side by side on 2 cores, one thread each)::

    python benchmarks/ablate_emnet.py --epochs 20 --lr 5e-3 --threads 1 --variant unet --variant emnet_fast \\
        --data-dir /tmp/demo_ct --json ablate.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_emnet import NETS, _params, _workflow, class_names, net_context  # noqa: E402

_LABELLED = re.compile(r"^(?P<label>[\w.-]+)=(?P<net>[\w.-]+):(?P<json>.*)$", re.S)


def parse_variant(spec: str) -> tuple[str, str, dict[str, Any]]:
    """``NET`` or ``LABEL=NET:JSON`` -> (label, net, network_def overrides)."""
    spec = spec.strip()
    match = _LABELLED.match(spec)
    label, net, changes = (match["label"], match["net"], match["json"]) if match else (spec, spec, "{}")
    if net not in NETS:
        raise ValueError(f"--variant {spec!r}: unknown network {net!r}, expected one of {', '.join(NETS)} "
                         f"(as NET or LABEL=NET:JSON).")
    try:
        overrides = json.loads(changes)
    except json.JSONDecodeError as e:
        raise ValueError(f"--variant {spec!r}: the part after '{net}:' is not JSON ({e}).") from e
    if not isinstance(overrides, dict):
        raise ValueError(f"--variant {spec!r}: the JSON must be an object of network_def arguments.")
    return label, net, overrides


def parse_override(spec: str) -> tuple[str, Any]:
    """``KEY=JSON`` -> (bundle config key, value)."""
    key, sep, value = spec.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--override expects KEY=JSON such as 'val_interval=5', got {spec!r}.")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError as e:
        raise ValueError(f"--override {spec!r}: the value is not JSON ({e}).") from e


def _loss_of(output: Any) -> float:
    """The trainer's loss from ``engine.state.output`` (a dict, or MONAI's decollated list of dicts)."""
    first = output[0] if isinstance(output, (list, tuple)) else output
    return float(first["loss"])


def train_variant(label: str, net: str, net_overrides: dict, recipe: dict, data_dir: str, work_dir: str,
                  epochs: int, val_interval: int, learning_rate: float | None) -> dict[str, Any]:
    """Train one variant for ``epochs`` epochs through the bundle; its per-validation Dice (mean and per class)."""
    from ignite.engine import Events

    changes = {f"network_def#{key}": value for key, value in net_overrides.items()}  # on top of the net's own config
    override = {**recipe, "epochs": epochs, "val_interval": val_interval, **changes}
    if learning_rate is not None:
        override["learning_rate"] = learning_rate
    wf = _workflow(data_dir, os.path.join(work_dir, label), net, 16, **override)
    wf.initialize()
    parser = wf.parser
    trainer = parser.get_parsed_content("train#trainer")
    evaluator = parser.get_parsed_content("validate#evaluator")
    losses: list[float] = []
    history: list[dict[str, Any]] = []
    step_clock = {"start": 0.0, "total": 0.0}  # training steps only, validations left out

    @trainer.on(Events.ITERATION_STARTED)
    def _step_started(engine) -> None:
        step_clock["start"] = time.perf_counter()

    @trainer.on(Events.ITERATION_COMPLETED)
    def _step_done(engine) -> None:
        step_clock["total"] += time.perf_counter() - step_clock["start"]
        losses.append(_loss_of(engine.state.output))

    def _validated(engine) -> None:
        per_class = torch.as_tensor(engine.state.metrics["val_class_dice"]).flatten()
        # the bundle's ValidationHandler runs at EPOCH_COMPLETED before any handler added here: average the losses here
        last_epoch = losses[-trainer.state.epoch_length:]
        history.append({"epoch": trainer.state.epoch, "iteration": trainer.state.iteration,
                        "train_loss": sum(last_epoch) / len(last_epoch) if last_epoch else None,
                        "val_mean_dice": float(engine.state.metrics["val_mean_dice"]),
                        "val_class_dice": [float(v) for v in per_class]})
        print(f"[{label}] epoch {trainer.state.epoch}: " + _row_text(history[-1]), flush=True)

    evaluator.add_event_handler(Events.COMPLETED, _validated)
    t0 = time.perf_counter()
    with net_context(net):
        try:
            wf.run()
        finally:
            wf.finalize()
    seconds = time.perf_counter() - t0
    return {"net": net, "network_overrides": net_overrides, "params": _params(parser.get_parsed_content("network")),
            "learning_rate": float(parser.get_parsed_content("learning_rate")), "iterations": trainer.state.iteration,
            "seconds": round(seconds, 1), "step_seconds": round(step_clock["total"], 1), "history": history}


def _row_text(row: dict[str, Any]) -> str:
    loss = "-" if row["train_loss"] is None else f"{row['train_loss']:.3f}"
    classes = ", ".join(f"{n} {d:.3f}" for n, d in zip(class_names(), row["val_class_dice"]))
    return f"Dice {row['val_mean_dice']:.3f} ({classes}); training loss {loss}"


def print_table(report: dict[str, Any]) -> None:
    """Markdown table of the last validation of every variant."""
    names = report["class_names"]
    print(f"\nAfter {report['epochs']} epochs, validation Dice (mean of the {len(names)} foreground classes, then each):")
    print("| variant | params | steps | s / step | mean | " + " | ".join(names) + " | training loss |")
    print("| --- " * (len(names) + 6) + "|")
    for label, v in report["variants"].items():
        last = v["history"][-1] if v["history"] else None
        if last is None:
            print(f"| {label} | {v['params'] / 1e6:.2f}M | {v['iterations']} | - | not validated |")
            continue
        loss = "-" if last["train_loss"] is None else f"{last['train_loss']:.3f}"
        print(f"| {label} | {v['params'] / 1e6:.2f}M | {v['iterations']} | {v['step_seconds'] / max(v['iterations'], 1):.2f} | "
              f"{last['val_mean_dice']:.3f} | " + " | ".join(f"{d:.3f}" for d in last["val_class_dice"]) + f" | {loss} |")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", action="append", default=[], metavar="NET | LABEL=NET:JSON",
                   help="a network, or one with network_def changes (repeatable; default: unet and emnet_fast)")
    p.add_argument("--override", action="append", default=[], metavar="KEY=JSON",
                   help="a bundle config change for every variant (repeatable), e.g. 'warmup_epochs=1'")
    p.add_argument("--epochs", type=int, default=20, help="training epochs of every variant (default 20: 160 steps)")
    p.add_argument("--val-interval", type=int, default=5, help="epochs between validations (default 5)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate of every variant (default: the bundle's)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own choice)")
    p.add_argument("--data-dir", default=None,
                   help="demo CT data set folder (written if absent); default: a temporary folder removed at the end")
    p.add_argument("--json", default=None, help="write every variant's history to this JSON file")
    args = p.parse_args(argv)
    if args.epochs < 1 or args.val_interval < 1:
        p.error("--epochs and --val-interval must be >= 1")
    try:
        variants = [parse_variant(s) for s in (args.variant or ["unet", "emnet_fast"])]
        recipe = dict(parse_override(s) for s in args.override)
    except ValueError as e:
        p.error(str(e))
    labels = [v[0] for v in variants]
    if len(set(labels)) != len(labels):
        p.error(f"--variant labels must differ, got {labels}")
    if args.threads:
        torch.set_num_threads(args.threads)

    from mamba_monai.data import ensure_demo_ct_dataset

    with tempfile.TemporaryDirectory(prefix="ablate_emnet_") as work_dir:
        data_dir = os.path.abspath(args.data_dir) if args.data_dir else os.path.join(work_dir, "demo_ct")
        ensure_demo_ct_dataset(data_dir)
        report: dict[str, Any] = {"epochs": args.epochs, "learning_rate": args.lr, "overrides": recipe,
                                  "class_names": class_names(), "torch_threads": torch.get_num_threads(), "variants": {}}
        for label, net, changes in variants:
            report["variants"][label] = train_variant(label, net, changes, recipe, data_dir, work_dir, args.epochs,
                                                      args.val_interval, args.lr)
            if args.json:  # after every variant: an interrupted run keeps what it measured
                with open(args.json, "w") as fh:
                    json.dump(report, fh, indent=2)
    print_table(report)
    return report


if __name__ == "__main__":
    main()
