"""Ignite handlers that bundles share."""

from __future__ import annotations

import logging
import os

import torch
from monai.data import MetaTensor
from monai.utils import optional_import

Events, _ = optional_import("ignite.engine", name="Events")
idist, _ = optional_import("ignite.distributed")

__all__ = ["CaseRecorder", "GradientClipping", "ResumableCheckpoint"]

logger = logging.getLogger(__name__)


class ResumableCheckpoint:
    """
    Keeps one file with everything a training run needs to go on after an interruption: the
    objects in ``save_dict`` (network, optimizer, scheduler, ...) and the trainer's own state
    (epoch, iteration). It is rewritten atomically (temporary file + rename) every ``save_interval``
    epochs by rank 0 only, so a run killed mid-write still leaves the previous checkpoint intact.

    With ``resume=True`` and the file present, the objects and the trainer state are restored when
    the handler is attached, and training continues from the next epoch. A checkpoint that already holds
    ``max_epochs`` epochs is left as it is: the run ends at once with a message saying how to train longer
    (ignite would otherwise start a finished run again from epoch 0).

    Args:
        save_dir: folder of the checkpoint file.
        save_dict: name -> object with ``state_dict``/``load_state_dict`` (``DistributedDataParallel``
            is unwrapped so the file loads into a plain network).
        filename: checkpoint file name. Defaults to ``"checkpoint_latest.pt"``.
        resume: restore from the file when it exists. Defaults to False.
        save_interval: epochs between saves. Defaults to 1.
    """

    def __init__(
        self,
        save_dir: str,
        save_dict: dict,
        filename: str = "checkpoint_latest.pt",
        resume: bool = False,
        save_interval: int = 1,
    ) -> None:
        if save_interval < 1:
            raise ValueError(f"save_interval must be >= 1, got {save_interval}.")
        self.path = os.path.join(save_dir, filename)
        self.save_dict = {k: _unwrap(v) for k, v in save_dict.items()}
        self.resume = resume
        self.save_interval = save_interval
        self._already_done = False

    def attach(self, engine) -> None:
        if self.resume and os.path.isfile(self.path):
            self._load(engine)
        engine.add_event_handler(Events.STARTED, self._stop_if_done)
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_interval), self._save)

    def _stop_if_done(self, engine) -> None:
        if self._already_done:
            logger.warning(
                f"{self.path} already holds {engine.state.max_epochs} epoch(s) of training, as many as asked: "
                "nothing to do (pass a larger `epochs` with `resume` to train longer)."
            )
            engine.terminate()

    def _load(self, engine) -> None:
        ckpt = torch.load(self.path, map_location="cpu", weights_only=False)
        for name, obj in self.save_dict.items():
            if name not in ckpt:
                raise KeyError(f"{self.path} has no '{name}' entry (found {sorted(ckpt)}); it was saved by another configuration.")
            obj.load_state_dict(ckpt[name])
        max_epochs = engine.state.max_epochs
        engine.load_state_dict(ckpt["trainer"])
        engine.state.max_epochs = max(max_epochs or 0, engine.state.max_epochs or 0)  # the config may ask for more
        self._already_done = engine.state.epoch >= engine.state.max_epochs
        logger.info(f"resumed from {self.path} at epoch {engine.state.epoch}.")

    def _save(self, engine) -> None:
        if idist.get_rank() != 0:
            return
        ckpt = {name: obj.state_dict() for name, obj in self.save_dict.items()}
        ckpt["trainer"] = engine.state_dict()
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        tmp = f"{self.path}.tmp{os.getpid()}"
        torch.save(ckpt, tmp)
        os.replace(tmp, self.path)


class GradientClipping:
    """
    Clips the gradients' total norm (``torch.nn.utils.clip_grad_norm_`` over the optimizer's parameters) right before
    every optimizer step of a trainer: with gradient accumulation only the accumulated gradient is clipped, and under
    AMP the gradients are clipped after ``GradScaler`` has unscaled them (the clip runs as a step pre-hook of the
    optimizer, which ``GradScaler.step`` calls after unscaling). The last norm before clipping is kept in
    ``engine.state.grad_norm``.

    It lets a network train at a higher peak learning rate without the loss spikes that end a run early (EMNet on the
    emnet_seg3d demo data: see that bundle's docs).

    Args:
        max_norm: largest total gradient norm; larger gradients are scaled down to it. ``None`` or 0 turns clipping
            off (the handler then does nothing), so a bundle can expose it as a plain config value.
        norm_type: the p of the p-norm (``inf`` for the largest absolute value). Defaults to 2.0.
        optimizer: the optimizer to hook; None uses the engine's ``optimizer``.
    """

    def __init__(self, max_norm: float | None, norm_type: float = 2.0, optimizer: torch.optim.Optimizer | None = None) -> None:
        if max_norm is not None and not float(max_norm) >= 0:
            raise ValueError(f"GradientClipping: `max_norm` must be a non-negative number or None, got {max_norm}.")
        self.max_norm = float(max_norm) if max_norm else 0.0
        self.norm_type = float(norm_type)
        self.optimizer = optimizer
        self.engine = None
        self._hooked = None

    def attach(self, engine) -> None:
        if self.max_norm:
            self.engine = engine
            # a MONAI trainer attaches its handlers before it stores its optimizer: hook it when the run starts
            engine.add_event_handler(Events.STARTED, self._hook_optimizer)

    def _hook_optimizer(self, engine) -> None:
        optimizer = self.optimizer if self.optimizer is not None else getattr(engine, "optimizer", None)
        if optimizer is None:
            raise ValueError("GradientClipping: the engine has no `optimizer`; pass one with `optimizer=`.")
        if self._hooked is not optimizer:
            optimizer.register_step_pre_hook(self._clip)
            self._hooked = optimizer

    def _clip(self, optimizer, args, kwargs) -> None:
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, self.max_norm, norm_type=self.norm_type)
        if self.engine is not None:
            self.engine.state.grad_norm = float(norm)


def _unwrap(obj):
    return obj.module if isinstance(obj, torch.nn.parallel.DistributedDataParallel) else obj


class CaseRecorder:
    """
    Writes the source file of every case an engine receives, one line per case and iteration (``<epoch>\t
    <iteration>\t<file>``), to ``output_file``: which cases each process of a ``torchrun`` run trained on
    (give each rank its own file, e.g. ``"$@output_dir + '/cases_rank' + str(dist.get_rank()) + '.txt'"``), or
    what a run actually read. The file is the ``filename_or_obj`` of the batch's first MetaTensor (per item).

    Args:
        output_file: the text file to write (truncated when the handler is attached).
    """

    def __init__(self, output_file: str | os.PathLike) -> None:
        self.output_file = os.fspath(output_file)

    def attach(self, engine) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.output_file)), exist_ok=True)
        open(self.output_file, "w").close()
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    @staticmethod
    def _sources(batch) -> list[str]:
        """One name per item: of a collated batch, or of the list of items MONAI's engines decollate it into."""
        names: list[str] = []
        for item in batch if isinstance(batch, (list, tuple)) else [batch]:
            values = item.values() if isinstance(item, dict) else [item]
            meta = next((v.meta for v in values if isinstance(v, MetaTensor) and "filename_or_obj" in v.meta), None)
            if meta is not None:
                value = meta["filename_or_obj"]
                names.extend(str(n) for n in (value if isinstance(value, (list, tuple)) else [value]))
        return names

    def __call__(self, engine) -> None:
        with open(self.output_file, "a", encoding="utf-8") as f:
            for name in self._sources(engine.state.batch):
                f.write(f"{engine.state.epoch}\t{engine.state.iteration}\t{name}\n")
