"""Training a bundle from Python: the seed's ``Trainer(TrainingConfig(...)).train(train_loader, val_loader)`` API,
running the bundle's own ``train.json`` workflow (one training loop, not a second one written for Python)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from mamba_monai.bundle.utils import bundle_workflow, run_workflow

__all__ = ["TrainingConfig", "Trainer"]


@dataclasses.dataclass
class TrainingConfig:
    """
    The usual training settings, mapped onto a bundle's ``train.json`` ids.

    Args:
        learning_rate: peak learning rate (``learning_rate``). Default 1e-3.
        num_epochs: epochs (``epochs``). Default 100.
        batch_size: training batch size (``batch_size``). Default 8.
        warmup_epochs: linear warm-up before the cosine decay (``warmup_epochs``). Default 5.
        val_interval: epochs between validations (``val_interval``). Default 5.
        mixed_precision: autocast on CUDA (``amp``); scans and FFTs stay in float32. Default False.
        num_workers: data loader workers (``num_workers``). Default 0.
        use_checkpoint: gradient checkpointing in the network (``use_checkpoint``). Default False.
        bundle: the bundle whose workflow runs. Default ``"spectral_vmamba_seg2d"``.
        output_dir: logs and TensorBoard files; None keeps the bundle's default. Default None.
        ckpt_dir: ``model.pt`` and ``checkpoint_latest.pt``; None keeps the bundle's default. Default None.
    """

    learning_rate: float = 1e-3
    num_epochs: int = 100
    batch_size: int = 8
    warmup_epochs: int = 5
    val_interval: int = 5
    mixed_precision: bool = False
    num_workers: int = 0
    use_checkpoint: bool = False
    bundle: str = "spectral_vmamba_seg2d"
    output_dir: str | None = None
    ckpt_dir: str | None = None

    def overrides(self) -> dict[str, Any]:
        """The bundle config overrides these settings stand for."""
        out: dict[str, Any] = {
            "learning_rate": self.learning_rate,
            "epochs": self.num_epochs,
            "batch_size": self.batch_size,
            "warmup_epochs": min(self.warmup_epochs, max(self.num_epochs - 1, 0)),
            "val_interval": self.val_interval,
            "amp": self.mixed_precision,
            "num_workers": self.num_workers,
            "use_checkpoint": self.use_checkpoint,
        }
        if self.output_dir is not None:
            out["output_dir"] = self.output_dir
        if self.ckpt_dir is not None:
            out["ckpt_dir"] = self.ckpt_dir
        return out


class Trainer:
    """
    Train a bundle from Python with the bundle's own workflow (``configs/train.json`` through MONAI's
    ``ConfigWorkflow``): same network, loss, optimiser, schedule, checkpoints and validation as
    ``python -m monai.bundle run --config_file configs/train.json``.

    Example::

        trainer = Trainer(TrainingConfig(learning_rate=1e-3, num_epochs=100, batch_size=8))
        metrics = trainer.train(train_loader, val_loader)  # or trainer.train() on the bundle's own data

    Args:
        config: the training settings. Default ``TrainingConfig()``.
        override: any further bundle config overrides, e.g. ``dataset_dir="/data/BUSI"`` or
            ``{"network_def#base_channels": 32}``.
    """

    def __init__(self, config: TrainingConfig | None = None, **override: Any) -> None:
        self.config = config or TrainingConfig()
        self.override = override
        self.workflow = None

    def train(self, train_loader: Iterable | None = None, val_loader: Iterable | None = None) -> dict[str, float]:
        """
        Run the training. Loaders, when given, replace the bundle's data loaders: they yield dicts with ``"image"``
        (B, C, H, W) and ``"label"`` (B, 1, H, W) class indices, as MONAI's loaders do, or ``(image, label)`` pairs.

        Returns:
            the last validation metrics (e.g. ``{"val_mean_dice": 0.83}``); empty when no validation ran.
        """
        override = {**self.config.overrides(), **self.override}
        if train_loader is not None:
            override["train#dataloader"] = train_loader
        if val_loader is not None:
            override["validate#dataloader"] = val_loader
        self.workflow = bundle_workflow(self.config.bundle, "train", **override)
        run_workflow(self.workflow)
        evaluator = self.workflow.parser.get_parsed_content("validate#evaluator")
        return {k: float(v) for k, v in evaluator.state.metrics.items()}

    @property
    def network(self):
        """The trained network (after :meth:`train`)."""
        if self.workflow is None:
            raise RuntimeError("Trainer.network is available after train().")
        return self.workflow.parser.get_parsed_content("network_def")
