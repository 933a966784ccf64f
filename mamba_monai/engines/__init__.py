"""Engines the bundles run on, built from MONAI's: per-case isolation for inference and evaluation."""

from __future__ import annotations

from .evaluator import CaseIsolatingEvaluator, CaseReport, CasesSkippedError

__all__ = ["CaseIsolatingEvaluator", "CaseReport", "CasesSkippedError"]
