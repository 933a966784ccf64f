"""Paired (conditional) GAN training for image-to-image translation, e.g. missing MRI contrast synthesis.

MONAI's ``GanTrainer`` is unconditional (the generator starts from random latents) and its ``AdversarialTrainer``
shows the discriminator the generator's input, never the target it should produce, so neither trains a pix2pix-style
translation model. :class:`PairedGANTrainer` is that workflow, built like MONAI's trainers (a
``monai.engines.Trainer`` with one ``_iteration``) from MONAI's pieces: a conditional PatchGAN discriminator
(``monai.networks.nets.PatchDiscriminator``), the least-squares adversarial loss (``monai.losses.PatchAdversarialLoss``)
and an L1 reconstruction term, optionally a frequency loss (:class:`mamba_monai.losses.FrequencyLoss`).
:class:`SynthesisPrepareBatch` hands the generator the availability mask of the inputs beside the image.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from monai.engines import Trainer
from monai.engines.utils import IterationEvents, PrepareBatch, default_metric_cmp_fn, default_prepare_batch
from monai.inferers import Inferer, SimpleInferer
from monai.losses import PatchAdversarialLoss
from monai.transforms import Transform
from monai.utils import CommonKeys as Keys
from monai.utils import min_version, optional_import
from torch.optim.optimizer import Optimizer
from torch.utils.data import DataLoader

Metric, _ = optional_import("ignite.metrics", "0.4.11", min_version, "Metric")
EventEnum, _ = optional_import("ignite.engine", "0.4.11", min_version, "EventEnum")

__all__ = ["PairedGANKeys", "PairedGANTrainer", "SynthesisPrepareBatch"]


class PairedGANKeys:
    """Keys of the loss terms that :class:`PairedGANTrainer` puts in ``engine.state.output`` (besides MONAI's
    ``image``, ``label``, ``pred`` and ``loss`` = the generator's total loss)."""

    D_LOSS = "loss_d"
    """discriminator loss: ``0.5 * (adv(D(src, real), real) + adv(D(src, fake), fake))``."""
    G_ADV_LOSS = "loss_g_adv"
    """generator's adversarial term (before ``adversarial_weight``)."""
    RECON_LOSS = "loss_l1"
    """reconstruction term (before ``recon_weight``)."""
    FREQ_LOSS = "loss_freq"
    """frequency term (before ``frequency_weight``); present only with a ``frequency_loss``."""
    ALL = (D_LOSS, G_ADV_LOSS, RECON_LOSS, FREQ_LOSS)


class SynthesisPrepareBatch(PrepareBatch):
    """
    ``prepare_batch`` for synthesis engines: the image (B, M, *spatial), the target (B, 1, *spatial) or None when
    the batch has none (inference on cases without the target), and the availability mask (B, M) as the network's
    extra positional argument, so that MONAI's engines call ``network(image, mask)``.

    Args:
        image_key: key of the stacked inputs. Default ``"image"``.
        target_key: key of the target. Default ``"target"``.
        mask_key: key of the availability mask; None passes no mask (the network infers it). Default ``"mask"``.
    """

    def __init__(self, image_key: str = "image", target_key: str = "target", mask_key: str | None = "mask") -> None:
        self.image_key, self.target_key, self.mask_key = image_key, target_key, mask_key

    def __call__(
        self,
        batchdata: dict[str, torch.Tensor],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None, tuple, dict]:
        if not isinstance(batchdata, dict) or self.image_key not in batchdata:
            found = sorted(map(str, batchdata)) if isinstance(batchdata, dict) else type(batchdata).__name__
            raise KeyError(f"SynthesisPrepareBatch expects a dict batch with '{self.image_key}', got {found}.")

        def to(x: Any) -> Any:
            return x.to(device=device, non_blocking=non_blocking, **kwargs) if isinstance(x, torch.Tensor) else x

        image = to(batchdata[self.image_key])
        target = to(batchdata.get(self.target_key))
        args = () if self.mask_key is None else (to(batchdata[self.mask_key]),)
        return image, target, args, {}


def _logits(out: Any) -> torch.Tensor:
    """The patch logits of a discriminator's output (``PatchDiscriminator`` returns every layer's features)."""
    return out[-1] if isinstance(out, (list, tuple)) else out


def _unwrap(net: torch.nn.Module) -> torch.nn.Module:
    return net.module if isinstance(net, torch.nn.parallel.DistributedDataParallel) else net


class PairedGANTrainer(Trainer):
    """
    Paired (conditional) GAN training of an image-to-image generator, as pix2pix (Isola et al., "Image-to-Image
    Translation with Conditional Adversarial Networks", CVPR 2017, https://arxiv.org/abs/1611.07004) and the
    many-to-one MRI synthesis models built on it (ResViT, https://arxiv.org/abs/2106.16031; MedGAN-SSM,
    https://github.com/Charles-wmz/MedGAN-SSM) train: the discriminator judges (source, image) pairs, so it learns
    whether an image is the right target *for this source*, not only whether it looks real.

    One iteration, with ``src`` the input (B, M, *S), ``real`` the target (B, 1, *S) and ``fake = G(src, *args)``:

    1. discriminator step: one forward of D on ``cat([cat(src, real), cat(src, fake.detach())], batch)`` (one call,
       so that ``DistributedDataParallel`` sees one forward per backward), loss
       ``0.5 * (adv(D(src, real), real) + adv(D(src, fake), fake))``;
    2. generator step: ``adversarial_weight * adv(D(src, fake), real) + recon_weight * recon(fake, real)
       (+ frequency_weight * frequency(fake, real))``, with D's parameters frozen (and D called through its
       ``module`` under ``DistributedDataParallel``: D is not updated here).

    ``engine.state.output`` holds ``image``, ``label`` (the target), ``pred`` (the synthesis), ``loss`` (the
    generator's total) and the terms of :class:`PairedGANKeys` (detached scalars), for ``StatsHandler`` /
    ``TensorBoardStatsHandler``. Automatic mixed precision works as in MONAI's trainers (``torch.autocast("cuda")``,
    one gradient scaler per optimiser). The networks and optimisers are the attributes ``g_network``,
    ``g_optimizer``, ``d_network``, ``d_optimizer``: checkpoint them with a handler such as
    :class:`mamba_monai.bundle.ResumableCheckpoint`.

    Args:
        device: device of the run.
        max_epochs: epochs to run.
        train_data_loader: the training loader (dict batches with the input, target and mask keys).
        g_network: the generator, called ``g_network(src, *args)`` (e.g.
            :class:`~mamba_monai.networks.MedGANSSMGenerator` with the availability mask as ``args``).
        g_optimizer: its optimiser.
        d_network: the discriminator, taking ``M + 1`` channels (e.g. ``PatchDiscriminator(spatial_dims,
            channels=64, in_channels=M + 1, num_layers_d=3)``); a list output (all layers' features) gives its
            logits as the last item.
        d_optimizer: its optimiser.
        adversarial_loss: the adversarial criterion, called ``(logits, target_is_real, for_discriminator)``. Default
            None: ``PatchAdversarialLoss(criterion="least_squares")`` (LSGAN).
        recon_loss: reconstruction criterion ``(fake, real)``. Default None: ``torch.nn.L1Loss()``.
        recon_weight: weight of the reconstruction term. Default 100.0 (pix2pix, ResViT).
        adversarial_weight: weight of the generator's adversarial term. Default 1.0.
        frequency_loss: an optional third term ``(fake, real)``, e.g. :class:`mamba_monai.losses.FrequencyLoss`.
            Default None.
        frequency_weight: its weight. Default 1.0.
        epoch_length: iterations per epoch. Default None: ``len(train_data_loader)``; a larger value goes round the
            loader again (e.g. several random slices per volume and epoch).
        non_blocking: as MONAI's trainers.
        prepare_batch: returns ``(src, real)`` or ``(src, real, args, kwargs)`` (args and kwargs go to the
            generator). Default ``default_prepare_batch``; use :class:`SynthesisPrepareBatch` to pass the mask.
        iteration_update: replaces :meth:`_iteration` when given.
        g_inferer: how the generator is called. Default ``SimpleInferer()``.
        postprocessing: transforms applied to the decollated output.
        key_train_metric, additional_metrics, metric_cmp_fn: metrics computed on the training output, as MONAI's
            trainers.
        train_handlers: ignite handlers (checkpoints, learning-rate schedules, validation, logging).
        amp: automatic mixed precision. Default False.
        event_names, event_to_attr, decollate, to_kwargs, amp_kwargs: as MONAI's trainers.
        optim_set_to_none: ``zero_grad(set_to_none=...)``. Default False.

    Raises:
        ValueError: negative loss weights.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable | DataLoader,
        g_network: torch.nn.Module,
        g_optimizer: Optimizer,
        d_network: torch.nn.Module,
        d_optimizer: Optimizer,
        adversarial_loss: Callable | None = None,
        recon_loss: Callable | None = None,
        recon_weight: float = 100.0,
        adversarial_weight: float = 1.0,
        frequency_loss: Callable | None = None,
        frequency_weight: float = 1.0,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        prepare_batch: Callable = default_prepare_batch,
        iteration_update: Callable | None = None,
        g_inferer: Inferer | None = None,
        postprocessing: Transform | None = None,
        key_train_metric: dict[str, Metric] | None = None,
        additional_metrics: dict[str, Metric] | None = None,
        metric_cmp_fn: Callable = default_metric_cmp_fn,
        train_handlers: Sequence | None = None,
        amp: bool = False,
        event_names: list[str | EventEnum | type[EventEnum]] | None = None,
        event_to_attr: dict | None = None,
        decollate: bool = True,
        optim_set_to_none: bool = False,
        to_kwargs: dict | None = None,
        amp_kwargs: dict | None = None,
    ) -> None:
        for name, value in (
            ("recon_weight", recon_weight),
            ("adversarial_weight", adversarial_weight),
            ("frequency_weight", frequency_weight),
        ):
            if not float(value) >= 0.0:
                raise ValueError(f"`{name}` must be a non-negative number, got {value!r}.")
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch,
            iteration_update=iteration_update,
            postprocessing=postprocessing,
            key_metric=key_train_metric,
            additional_metrics=additional_metrics,
            metric_cmp_fn=metric_cmp_fn,
            handlers=train_handlers,
            amp=amp,
            event_names=event_names,
            event_to_attr=event_to_attr,
            decollate=decollate,
            to_kwargs=to_kwargs,
            amp_kwargs=amp_kwargs,
        )
        self.g_network, self.g_optimizer = g_network, g_optimizer
        self.d_network, self.d_optimizer = d_network, d_optimizer
        if adversarial_loss is None:
            adversarial_loss = PatchAdversarialLoss(criterion="least_squares")
        self.adversarial_loss = adversarial_loss
        self.recon_loss = torch.nn.L1Loss() if recon_loss is None else recon_loss
        self.frequency_loss = frequency_loss
        self.recon_weight, self.adversarial_weight = float(recon_weight), float(adversarial_weight)
        self.frequency_weight = float(frequency_weight)
        self.g_inferer = SimpleInferer() if g_inferer is None else g_inferer
        self.optim_set_to_none = optim_set_to_none
        self.g_scaler = torch.amp.GradScaler("cuda") if self.amp else None
        self.d_scaler = torch.amp.GradScaler("cuda") if self.amp else None

    def _autocast(self) -> Any:
        return torch.autocast("cuda", **self.amp_kwargs) if self.amp else torch.autocast("cpu", enabled=False)

    def _step(self, loss: torch.Tensor, optimizer: Optimizer, scaler: Any) -> None:
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()

    def _iteration(self, engine: PairedGANTrainer, batchdata: dict[str, torch.Tensor]) -> dict:
        """One discriminator step and one generator step on a batch; returns ``engine.state.output``.

        Raises:
            ValueError: no batch, or a batch without a target.
        """
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        if len(batch) == 2:
            src, real = batch
            args: tuple = ()
            kwargs: dict = {}
        else:
            src, real, args, kwargs = batch
        if real is None:
            raise ValueError("PairedGANTrainer needs the target of every training case; the batch has none.")
        engine.state.output = {Keys.IMAGE: src, Keys.LABEL: real}
        g_net, d_net = engine.g_network, engine.d_network
        g_net.train()
        d_net.train()

        with engine._autocast():
            fake = engine.g_inferer(src, g_net, *args, **kwargs)
        engine.state.output[Keys.PRED] = fake
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)

        # discriminator: real and fake pairs in one forward
        engine.d_optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        with engine._autocast():
            pairs = torch.cat([torch.cat([src, real], dim=1), torch.cat([src, fake.detach()], dim=1)], dim=0)
            logits_real, logits_fake = torch.chunk(_logits(d_net(pairs.float().contiguous())), 2, dim=0)
            loss_d = 0.5 * (
                engine.adversarial_loss(logits_real, target_is_real=True, for_discriminator=True)
                + engine.adversarial_loss(logits_fake, target_is_real=False, for_discriminator=True)
            )
        engine._step(loss_d, engine.d_optimizer, engine.d_scaler)

        # generator: D frozen and called without its DDP wrapper (it is not updated by this loss)
        d_plain = _unwrap(d_net)
        frozen = [p for p in d_plain.parameters() if p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
        try:
            engine.g_optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
            with engine._autocast():
                logits = _logits(d_plain(torch.cat([src, fake], dim=1).float().contiguous()))
                loss_adv = engine.adversarial_loss(logits, target_is_real=True, for_discriminator=False)
                loss_rec = engine.recon_loss(fake, real)
                loss_g = engine.adversarial_weight * loss_adv + engine.recon_weight * loss_rec
                loss_freq = None
                if engine.frequency_loss is not None:
                    loss_freq = engine.frequency_loss(fake, real)
                    loss_g = loss_g + engine.frequency_weight * loss_freq
            engine.state.output[Keys.LOSS] = loss_g
            engine.fire_event(IterationEvents.LOSS_COMPLETED)
            engine._step(loss_g, engine.g_optimizer, engine.g_scaler)
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        finally:
            for p in frozen:
                p.requires_grad_(True)

        out = engine.state.output
        out[Keys.LOSS] = loss_g.detach()
        out[PairedGANKeys.D_LOSS] = loss_d.detach()
        out[PairedGANKeys.G_ADV_LOSS] = loss_adv.detach()
        out[PairedGANKeys.RECON_LOSS] = loss_rec.detach()
        if loss_freq is not None:
            out[PairedGANKeys.FREQ_LOSS] = loss_freq.detach()
        out[Keys.PRED] = fake.detach()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output  # decollated by MODEL_COMPLETED's handler when `decollate`
