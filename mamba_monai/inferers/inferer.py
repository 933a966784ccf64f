"""Slice-by-slice inference of a 2D network over 3D volumes, with extra network arguments."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from monai.inferers import SliceInferer, SlidingWindowInferer
from monai.utils import ensure_tuple

__all__ = ["SliceInfererWithArgs"]


class SliceInfererWithArgs(SliceInferer):
    """
    MONAI's ``SliceInferer`` (a 2D network run over the slices of 3D volumes along ``spatial_dim``, the slices
    restacked into a volume) that also passes extra arguments to the network: ``inferer(volume, net, *args,
    **kwargs)`` calls ``net(slices, *args, **kwargs)`` for every batch of ``sw_batch_size`` slices. MONAI 1.6's
    ``SliceInferer`` drops them (it forwards only a spatial ``condition``), so a network that needs a per-case input
    besides the image, such as the (1, M) contrast-availability mask of
    :class:`~mamba_monai.networks.MedGANSSMGenerator`, would not get it. The arguments are passed unchanged (not
    sliced): a per-case tensor must broadcast over the batch of slices (batch size 1 per case), as the mask does.

    Args:
        spatial_dim: the axis the slices are taken along: 0, 1 or 2 for the volume's (H, W, D); 2 gives axial slices
            of a RAS-oriented volume. Default 0 (as MONAI's).
        args, kwargs: MONAI ``SlidingWindowInferer`` arguments: ``roi_size`` is 2D, non-positive values meaning the
            whole slice along that axis (e.g. ``[-1, -1]``: whole slices, no windows), ``sw_batch_size`` slices per
            network call, ``overlap``, ``mode``, ``progress``...

    Example::

        inferer = SliceInfererWithArgs(roi_size=[-1, -1], spatial_dim=2, sw_batch_size=8)
        synthesis = inferer(volume, generator, mask)  # volume (1, M, H, W, D), mask (1, M) -> (1, 1, H, W, D)
    """

    def __call__(  # type: ignore[override]
        self,
        inputs: torch.Tensor,
        network: Callable[..., torch.Tensor | Sequence[torch.Tensor] | dict[Any, torch.Tensor]],
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor | tuple[torch.Tensor, ...] | dict[Any, torch.Tensor]:
        """
        Args:
            inputs: (B, C, H, W, D) volume(s).
            network: a 2D network, called ``network(x, *args, **kwargs)`` with x (n, C, *slice_shape).
            args, kwargs: passed unchanged to every network call (a ``condition`` keyword is sliced with the input,
                as in MONAI's ``SliceInferer``).

        Returns:
            the network's output(s) restacked into volumes, (B, C_out, H, W, D).
        """
        if self.spatial_dim not in (0, 1, 2):
            raise ValueError(f"`spatial_dim` can only be 0, 1 or 2 for [H, W, D], got {self.spatial_dim}.")
        if len(self.orig_roi_size) != 2 or inputs.ndim != 5:
            raise ValueError(
                f"SliceInfererWithArgs takes a 2D `roi_size` (got {self.orig_roi_size}) and (B, C, H, W, D) volumes "
                f"(got shape {tuple(inputs.shape)})."
            )
        roi = list(ensure_tuple(self.orig_roi_size))
        roi.insert(self.spatial_dim, 1)
        self.roi_size = roi
        condition = kwargs.get("condition")
        if condition is not None and condition.shape != inputs.shape:
            raise ValueError(f"`condition` must match the shape of `inputs` {inputs.shape}, got {condition.shape}.")
        return SlidingWindowInferer.__call__(self, inputs, self._slice_forward(network), *args, **kwargs)

    def _slice_forward(self, network: Callable) -> Callable:
        axis = self.spatial_dim + 2

        def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if kwargs.get("condition") is not None:
                kwargs = dict(kwargs, condition=kwargs["condition"].squeeze(dim=axis))
            out = network(x.squeeze(dim=axis), *args, **kwargs)
            if isinstance(out, torch.Tensor):
                return out.unsqueeze(dim=axis)
            if isinstance(out, Mapping):
                return {k: v.unsqueeze(dim=axis) for k, v in out.items()}
            return tuple(o.unsqueeze(dim=axis) for o in out)

        return forward
