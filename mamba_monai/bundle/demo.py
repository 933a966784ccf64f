"""The main job behind ``mamba-monai demo``: every bundle end to end on its demo data, with one summary table."""

from __future__ import annotations

import glob
import json
import os
import time
from collections.abc import Sequence

from mamba_monai.bundle.utils import bundle_dir, bundle_workflow, list_bundles, run_workflow
from mamba_monai.data.dicom import write_dicom_like
from mamba_monai.visualize.curves import plot_training_curves

__all__ = ["run_demo"]


def _engine_metrics(workflow, engine_id: str) -> dict[str, float]:
    engine = workflow.parser.get_parsed_content(engine_id)
    return {k: float(v) for k, v in engine.state.metrics.items()}


def _train_config(bundle: str) -> dict:
    with open(os.path.join(bundle_dir(bundle), "configs", "train.json")) as f:
        return json.load(f)


def _fine_tune_overrides(bundle: str, shipped: str, epochs: int) -> dict:
    """Short training from the shipped weights at a tenth of the bundle's learning rate(s) (``learning_rate``, or a
    GAN's ``lr_g`` and ``lr_d``), no warm-up; only the ids that the bundle's train.json has."""
    config = _train_config(bundle)
    wanted = {"epochs": epochs, "val_interval": 1, "warmup_epochs": 0}
    if os.path.isfile(shipped):
        wanted["pretrained"] = shipped
        for key in ("learning_rate", "lr_g", "lr_d"):
            if isinstance(config.get(key), (int, float)):
                wanted[key] = config[key] / 10
    return {k: v for k, v in wanted.items() if k in config}


def _run_one(bundle: str, epochs: int, out: str) -> tuple[dict[str, float], dict[str, str]]:
    """Train, infer and evaluate one bundle into ``out``; returns its figures and where its outputs went."""
    shipped = os.path.join(bundle_dir(bundle), "models", "model.pt")
    ckpt_dir, eval_dir, predictions = (os.path.join(out, name) for name in ("models", "eval", "predictions"))
    common = {"ckpt_dir": ckpt_dir, "output_dir": eval_dir}
    figures: dict[str, float] = {}

    t0 = time.time()
    train = bundle_workflow(bundle, "train", **_fine_tune_overrides(bundle, shipped, epochs), **common)
    run_workflow(train)
    figures["train_seconds"] = time.time() - t0

    t0 = time.time()
    infer = bundle_workflow(
        bundle, "inference", workflow_type="infer", output_dir=predictions,
        **{"checkpointloader#load_path": os.path.join(ckpt_dir, "model.pt")},
    )
    run_workflow(infer)
    figures["inference_seconds"] = time.time() - t0

    t0 = time.time()
    evaluate = bundle_workflow(bundle, ["train", "evaluate"], **common)
    run_workflow(evaluate)
    figures["evaluate_seconds"] = time.time() - t0
    figures.update(_engine_metrics(evaluate, "validate#evaluator"))
    places = {"predictions": predictions, "metric CSVs": eval_dir, "checkpoints": ckpt_dir}

    curve = plot_training_curves(eval_dir, os.path.join(out, "training_curves.png"), title=f"{bundle}: fine-tuning")
    if curve:
        places["training curve"] = curve
    if _writes_dicom_seg(bundle):
        t0 = time.time()
        places["DICOM SEG"] = _infer_on_dicom(bundle, predictions, ckpt_dir, out)
        figures["dicom_inference_seconds"] = time.time() - t0
    return figures, places


def _writes_dicom_seg(bundle: str) -> bool:
    with open(os.path.join(bundle_dir(bundle), "configs", "inference.json")) as f:
        return "SaveDicomSegd" in f.read()


def _infer_on_dicom(bundle: str, predictions: str, ckpt_dir: str, out: str) -> str:
    """The DICOM path as a hospital uses it: the first demo test image sent as DICOM (a CT series, an ultrasound
    frame), inferred again from it; the bundle writes a NIfTI and a DICOM SEG that references the source."""
    with open(os.path.join(predictions, "mapping.json")) as f:
        first = json.load(f)[0]["input"]
    dicom_in, dicom_out = os.path.join(out, "dicom_input"), os.path.join(out, "predictions_dicom")
    write_dicom_like(first, dicom_in)
    infer = bundle_workflow(
        bundle, "inference", workflow_type="infer", dataset_dir=dicom_in, output_dir=dicom_out,
        **{"checkpointloader#load_path": os.path.join(ckpt_dir, "model.pt")},
    )
    run_workflow(infer)
    return dicom_out


def run_demo(
    bundles: str | Sequence[str] | None = None, epochs: int = 2, output_dir: str | None = None
) -> dict[str, dict[str, float]]:
    """
    For each bundle: train ``epochs`` epochs on its demo data (from the shipped ``models/model.pt`` when it exists),
    run inference on the demo test images and evaluate on the validation cases; a segmentation bundle also infers
    from the first test image sent as DICOM and writes a DICOM SEG; the training curves go to a PNG. Nothing in the bundle folders is
    overwritten: checkpoints, predictions and metric CSVs go to ``output_dir/<bundle>`` (default:
    ``./mamba_monai_demo``). Ends with one table of the figures measured and where the outputs are.

    Args:
        bundles: a bundle name or names; None runs every shipped bundle. Default None.
        epochs: training epochs per bundle. Default 2.
        output_dir: where everything is written. Default ``./mamba_monai_demo``.

    Returns:
        bundle -> figures (the evaluation's metrics, times in seconds).
    """
    names = list_bundles() if bundles is None else [bundles] if isinstance(bundles, str) else list(bundles)
    out = os.path.abspath(output_dir or "mamba_monai_demo")
    results: dict[str, dict[str, float]] = {}
    places: dict[str, dict[str, str]] = {}
    for name in names:
        print(f"\n=== {name}: training {epochs} epoch(s), inference, evaluation ===", flush=True)
        results[name], places[name] = _run_one(name, epochs, os.path.join(out, name))
    _print_summary(results, places)
    return results


def _print_summary(results: dict[str, dict[str, float]], places: dict[str, dict[str, str]]) -> None:
    width = 96
    print("\n" + "=" * width)
    print(f"{'bundle':<24}{'figure':<32}{'value':>12}")
    print("-" * width)
    for bundle, figures in results.items():
        for i, (name, value) in enumerate(figures.items()):
            print(f"{bundle if i == 0 else '':<24}{name:<32}{value:>12.4f}")
        for what, path in places[bundle].items():
            if os.path.isfile(path):
                print(f"{'':<24}{what + ':':<16}{path}")
                continue
            count = len([p for p in glob.glob(os.path.join(path, "*")) if os.path.isfile(p)])
            print(f"{'':<24}{what + ':':<16}{path} ({count} files)")
        print("-" * width)
    print("=" * width)
