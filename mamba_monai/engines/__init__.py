"""Engines the bundles run on, built from MONAI's: per-case isolation for inference and evaluation, paired GAN
training for image-to-image synthesis, training batches as plain tensors."""

from __future__ import annotations

from .evaluator import CaseIsolatingEvaluator, CaseReport, CasesSkippedError
from .gan import PairedGANKeys, PairedGANTrainer, SynthesisPrepareBatch
from .prepare_batch import PlainTensorPrepareBatch

__all__ = [
    "CaseIsolatingEvaluator",
    "CaseReport",
    "CasesSkippedError",
    "PairedGANKeys",
    "PairedGANTrainer",
    "PlainTensorPrepareBatch",
    "SynthesisPrepareBatch",
]
