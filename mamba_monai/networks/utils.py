"""Helpers the networks share (the ones called in ``forward`` are TorchScript-compatible)."""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["divisible_size_hint", "instance_norms_as_group_norms", "channels_last_on_cpu"]


def divisible_size_hint(spatial: list[int], k: int) -> str:
    """'224x224 or 256x256' (nearest sizes divisible by ``k`` below and above each axis), or '256x256' only."""
    lower: list[str] = []
    upper: list[str] = []
    has_lower = True
    for s in spatial:
        lo = (s // k) * k
        if lo < k:
            has_lower = False
        lower.append(str(lo))
        upper.append(str(lo if lo == s else lo + k))
    if has_lower and lower != upper:
        return "x".join(lower) + " or " + "x".join(upper)
    return "x".join(upper)


def instance_norms_as_group_norms(module: nn.Module) -> nn.Module:
    """
    Replace, in place, every ``nn.InstanceNorm{1,2,3}d`` of ``module`` that keeps no running statistics by
    ``nn.GroupNorm(C, C)`` with the same ``eps`` and ``affine``: the same normalisation (per sample and channel over
    space) and the same state dict keys (``weight``/``bias`` when affine, none otherwise), so checkpoints load either
    way. On a CPU GroupNorm keeps a channels-last input channels-last, where InstanceNorm returns a channels-first
    copy, which undoes the faster channels-last convolutions around it. Returns ``module``.
    """
    for parent in module.modules():
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.instancenorm._InstanceNorm) and not child.track_running_stats:
                norm = nn.GroupNorm(child.num_features, child.num_features, eps=child.eps, affine=child.affine)
                if child.affine:
                    norm.load_state_dict(child.state_dict())
                setattr(parent, name, norm)
    return module


def channels_last_on_cpu(x: torch.Tensor) -> torch.Tensor:
    """
    ``x`` in the channels-last layout (``torch.channels_last_3d`` for 5D, ``torch.channels_last`` for 4D) when it is
    on a CPU, else ``x`` unchanged. oneDNN's 3x3(x3) convolutions on few channels (4-16) run about twice as fast,
    forward and backward, in that layout (``benchmarks/profile_emnet_step.py``); on a GPU the layout is the caller's.
    A one-channel tensor gets the channels-last strides too (``contiguous`` leaves it as it is, since it is already
    contiguous in both layouts): oneDNN then gives the convolutions on it a channels-last output.
    """
    if x.device.type == "cpu" and x.dim() in (4, 5):
        layout = torch.channels_last_3d if x.dim() == 5 else torch.channels_last
        if not torch.jit.is_tracing() and x.shape[1] == 1 and x.stride(1) != 1:
            return torch.empty_like(x, memory_format=layout).copy_(x)
        return x.contiguous(memory_format=layout)
    return x
