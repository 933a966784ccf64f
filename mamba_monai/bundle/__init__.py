"""Shared pieces of the mamba-monai bundles: handlers, the offline metadata schema, workflow helpers."""

from __future__ import annotations

from .handlers import CaseRecorder, GradientClipping, ResumableCheckpoint
from .trainer import Trainer, TrainingConfig
from .utils import (
    BUNDLES_DIR,
    SCHEMA_PATH,
    bundle_dir,
    bundle_workflow,
    inference_datalist,
    list_bundles,
    run_workflow,
    verify_bundle_metadata,
)

__all__ = [
    "BUNDLES_DIR",
    "SCHEMA_PATH",
    "CaseRecorder",
    "GradientClipping",
    "ResumableCheckpoint",
    "Trainer",
    "TrainingConfig",
    "bundle_dir",
    "bundle_workflow",
    "inference_datalist",
    "list_bundles",
    "run_workflow",
    "verify_bundle_metadata",
]
