"""The main job behind ``mamba-monai demo``: a bundle end to end on its demo data, with a summary table."""

from __future__ import annotations

import glob
import os
import time

from mamba_monai.bundle.utils import bundle_dir, bundle_workflow, run_workflow

__all__ = ["run_demo"]


def _engine_metrics(workflow, engine_id: str) -> dict[str, float]:
    engine = workflow.parser.get_parsed_content(engine_id)
    return {k: float(v) for k, v in engine.state.metrics.items()}


def run_demo(bundle: str = "emnet_seg3d", epochs: int = 2, output_dir: str | None = None) -> dict[str, float]:
    """
    Train ``bundle`` for ``epochs`` epochs on its demo data (starting from the shipped ``models/model.pt``
    when it exists), run whole-volume inference on the demo test images and evaluate on the validation
    cases. Nothing in the bundle folder is overwritten: checkpoints, predictions and metric CSVs go to
    ``output_dir`` (default: ``./mamba_monai_demo/<bundle>``).

    Returns:
        the measured figures (validation metrics of the evaluation, times in seconds).
    """
    root = bundle_dir(bundle)
    out = os.path.abspath(output_dir or os.path.join("mamba_monai_demo", bundle))
    ckpt_dir = os.path.join(out, "models")
    shipped = os.path.join(root, "models", "model.pt")
    common = {"ckpt_dir": ckpt_dir, "output_dir": os.path.join(out, "eval")}
    figures: dict[str, float] = {}

    t0 = time.time()
    train = bundle_workflow(
        bundle,
        "train",
        epochs=epochs,
        val_interval=1,
        warmup_epochs=0,
        learning_rate=2e-4 if os.path.isfile(shipped) else 2e-3,  # fine-tuning: a small step
        pretrained=shipped if os.path.isfile(shipped) else "",
        **common,
    )
    run_workflow(train)
    figures["train_seconds"] = time.time() - t0
    figures.update({f"train_{k}": v for k, v in _engine_metrics(train, "validate#evaluator").items()})

    t0 = time.time()
    predictions = os.path.join(out, "predictions")
    infer = bundle_workflow(
        bundle, "inference", workflow_type="infer", output_dir=predictions, checkpointloader={
            "_target_": "CheckpointLoader",
            "load_path": os.path.join(ckpt_dir, "model.pt"),
            "load_dict": {"model": "@network"},
            "map_location": "@device",
        }
    )
    run_workflow(infer)
    figures["inference_seconds"] = time.time() - t0

    t0 = time.time()
    evaluate = bundle_workflow(bundle, ["train", "evaluate"], **common)
    run_workflow(evaluate)
    figures["evaluate_seconds"] = time.time() - t0
    figures.update(_engine_metrics(evaluate, "validate#evaluator"))

    _print_summary(figures, out, predictions)
    return figures


def _print_summary(figures: dict[str, float], out: str, predictions: str) -> None:
    print("\n" + "=" * 60)
    print(f"{'figure':<32}{'value':>12}")
    print("-" * 60)
    for name, value in figures.items():
        print(f"{name:<32}{value:>12.4f}")
    print("-" * 60)
    print(f"predictions (NIfTI): {predictions} ({len(glob.glob(os.path.join(predictions, '*.nii.gz')))} files)")
    print(f"metric CSVs:         {os.path.join(out, 'eval')}")
    print(f"checkpoints:         {os.path.join(out, 'models')}")
    print("=" * 60)
