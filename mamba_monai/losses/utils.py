"""Input checks and activation helpers shared by the losses (MONAI's DiceLoss conventions)."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from monai.networks import one_hot
from monai.utils import LossReduction

__all__: list[str] = []


def _check_spatial_dims(spatial_dims: int | None) -> int | None:
    """Validate a ``spatial_dims`` constructor argument (2, 3 or None)."""
    if spatial_dims is not None and spatial_dims not in (2, 3):
        raise ValueError(f"`spatial_dims` can only be 2, 3 or None (inferred from the input), got {spatial_dims}.")
    return spatial_dims


def _check_activation(sigmoid: bool, softmax: bool, other_act: Callable | None) -> None:
    """MONAI's checks on the activation options (as in ``monai.losses.DiceLoss``)."""
    if other_act is not None and not callable(other_act):
        raise TypeError(f"other_act must be None or callable but is {type(other_act).__name__}.")
    if int(sigmoid) + int(softmax) + int(other_act is not None) > 1:
        raise ValueError("Incompatible values: more than 1 of [sigmoid=True, softmax=True, other_act is not None].")


def _check_input_rank(input: torch.Tensor, target: torch.Tensor, spatial_dims: int | None, name: str) -> int:
    """Check that ``input``/``target`` are BNHW or BNHWD tensors of the same rank; return the spatial dims."""
    if input.dim() not in (4, 5):
        raise ValueError(
            f"{name} expects a 4D (BNHW) or 5D (BNHWD) input, got {input.dim()}D input with shape {tuple(input.shape)}."
        )
    if spatial_dims is not None and input.dim() != spatial_dims + 2:
        raise ValueError(
            f"{name} was built with spatial_dims={spatial_dims}, so it expects a {spatial_dims + 2}D input, "
            f"got {input.dim()}D input with shape {tuple(input.shape)}."
        )
    if input.dim() != target.dim():
        raise ValueError(
            "the number of dimensions for input and target should be the same, "
            f"got shape {tuple(input.shape)} (nb dims: {input.dim()}) and {tuple(target.shape)} "
            f"(nb dims: {target.dim()}). if target is not one-hot encoded, please provide a tensor with shape B1H[WD]."
        )
    return input.dim() - 2


def _onehot_target(input: torch.Tensor, target: torch.Tensor, to_onehot_y: bool) -> torch.Tensor:
    """One-hot encode a B1H[WD] label map to the number of channels of ``input`` (MONAI's rules)."""
    if to_onehot_y:
        n_pred_ch = input.shape[1]
        if n_pred_ch == 1:
            warnings.warn("single channel prediction, `to_onehot_y=True` ignored.", stacklevel=3)
        else:
            if target.shape[1] != 1:
                raise ValueError(
                    "`to_onehot_y=True` needs a label map target with one channel (B1H[WD]), "
                    f"got target shape {tuple(target.shape)} for input shape {tuple(input.shape)}."
                )
            target = one_hot(target, num_classes=n_pred_ch)
    return target


def _activate(
    input: torch.Tensor, sigmoid: bool, softmax: bool, other_act: Callable | None
) -> torch.Tensor:
    """Turn logits into probabilities following MONAI's ``sigmoid`` / ``softmax`` / ``other_act`` options."""
    if sigmoid:
        input = torch.sigmoid(input)
    if softmax:
        if input.shape[1] == 1:
            warnings.warn("single channel prediction, `softmax=True` ignored.", stacklevel=3)
        else:
            input = torch.softmax(input, 1)
    if other_act is not None:
        input = other_act(input)
    return input


def _drop_background(input: torch.Tensor, target: torch.Tensor, include_background: bool):
    """Remove channel 0 of ``input`` and ``target`` unless ``include_background``."""
    if not include_background:
        if input.shape[1] == 1:
            warnings.warn("single channel prediction, `include_background=False` ignored.", stacklevel=3)
        else:
            input, target = input[:, 1:], target[:, 1:]
    return input, target


def _reduce(f: torch.Tensor, reduction: str, ndim: int) -> torch.Tensor:
    """Reduce a (B, C) tensor of per-image, per-channel values the way ``monai.losses.DiceLoss`` does."""
    if reduction == LossReduction.MEAN.value:
        return f.mean()
    if reduction == LossReduction.SUM.value:
        return f.sum()
    if reduction == LossReduction.NONE.value:
        return f.view(list(f.shape[:2]) + [1] * (ndim - 2))
    raise ValueError(f'Unsupported reduction: {reduction}, available options are ["mean", "sum", "none"].')


def _float32_at_least(x: torch.Tensor) -> torch.Tensor:
    """Half and bfloat16 go to float32 (FFTs are unsupported or imprecise there); float64 stays float64."""
    return x.float() if x.dtype not in (torch.float32, torch.float64) else x
