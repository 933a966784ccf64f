"""A trainer's batch handed to the network as plain tensors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from monai.engines.utils import PrepareBatch, default_prepare_batch
from monai.utils import convert_to_tensor

__all__ = ["PlainTensorPrepareBatch"]


class PlainTensorPrepareBatch(PrepareBatch):
    """
    Another ``prepare_batch`` (MONAI's ``default_prepare_batch`` unless given) whose outputs reach the network as
    plain tensors: MetaTensor's metadata bookkeeping runs on every operation of a forward pass, which cost EMNet about
    10% of a CPU training step (thousands of small operations; UNet about 3%). The batch itself keeps its metadata
    (``engine.state.batch``, e.g. for :class:`~mamba_monai.bundle.CaseRecorder`); use it for trainers, whose outputs
    are not inverted (an evaluator's ``Invertd`` needs the prediction's metadata).

    Args:
        prepare_batch: the ``prepare_batch`` to wrap; None uses ``monai.engines.utils.default_prepare_batch``.
    """

    def __init__(self, prepare_batch: Callable | None = None) -> None:
        self.prepare_batch = default_prepare_batch if prepare_batch is None else prepare_batch

    def __call__(
        self,
        batchdata: dict[str, torch.Tensor],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> Any:
        # MetaTensors (also inside the args tuple and kwargs dict) as plain tensor views, no copy
        return convert_to_tensor(self.prepare_batch(batchdata, device, non_blocking, **kwargs), track_meta=False)
