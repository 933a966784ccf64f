"""Engines the bundles run on, built from MONAI's: per-case isolation for inference and evaluation, paired GAN
training for image-to-image synthesis."""

from __future__ import annotations

from .evaluator import CaseIsolatingEvaluator, CaseReport, CasesSkippedError
from .gan import PairedGANKeys, PairedGANTrainer, SynthesisPrepareBatch

__all__ = [
    "CaseIsolatingEvaluator",
    "CaseReport",
    "CasesSkippedError",
    "PairedGANKeys",
    "PairedGANTrainer",
    "SynthesisPrepareBatch",
]
