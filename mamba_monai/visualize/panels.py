"""Labelled side-by-side panels of a synthesis: its inputs, the synthesised image and, when known, the real image
and the error map. Written with Pillow only (its built-in bitmap font works offline)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from mamba_monai.data.nifti import _temp_path_beside

__all__ = ["synthesis_panel", "write_synthesis_panel"]

_HEADER = 16  # px of the label strip above each tile
_GAP = 4  # px between tiles
_BACKGROUND = (24, 24, 24)
_MISSING = (64, 64, 64)


def _as_2d(name: str, value: Any) -> np.ndarray:
    arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    arr = np.squeeze(arr)
    if arr.ndim != 2:
        raise ValueError(
            f"Panel tile '{name}' must be a 2D slice (after squeezing), got shape {tuple(np.shape(value))}."
        )
    return arr.astype(np.float32)


def _display(arr: np.ndarray) -> np.ndarray:
    """A slice in RAS voxel order (x, y) as shown radiologically: anterior up, the patient's right on the left."""
    return np.ascontiguousarray(np.flip(arr.T, axis=(0, 1)))


def _gray(arr: np.ndarray) -> np.ndarray:
    v = np.clip(np.nan_to_num(arr), 0.0, 1.0)
    g = (v * 255.0 + 0.5).astype(np.uint8)
    return np.stack([g, g, g], axis=-1)


def _hot(arr: np.ndarray, vmax: float) -> np.ndarray:
    """Black -> red -> yellow -> white for 0 .. vmax (values above are white)."""
    v = np.clip(np.nan_to_num(arr) / vmax, 0.0, 1.0)
    rgb = np.stack([np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1), np.clip(3 * v - 2, 0, 1)], axis=-1)
    return (rgb * 255.0 + 0.5).astype(np.uint8)


def synthesis_panel(
    inputs: Mapping[str, Any],
    synthesis: Any,
    target: Any = None,
    target_name: str = "target",
    error_range: float = 0.5,
    min_tile: int = 160,
    title: str | None = None,
) -> Any:
    """
    One row of labelled tiles: each input contrast (an unavailable one as a grey tile labelled "missing"), the
    synthesis, and when ``target`` is given the real image and the absolute error map.

    All slices are 2D arrays (or tensors, squeezed) of one shape in RAS voxel order ``(x, y)`` (an axial slice of
    an ``Orientationd(axcodes="RAS")`` volume), with intensities in [0, 1] (e.g. scaled by
    :class:`~mamba_monai.data.ScaleIntensityPercentiled`; values outside are clipped). They are shown as radiology
    viewers do (anterior up, the patient's right on the viewer's left), enlarged by an integer factor (nearest
    neighbour, so voxels stay visible) until the smaller side is at least ``min_tile`` pixels.

    Args:
        inputs: contrast name -> slice, or None for a contrast the case lacks (or that was hidden), in display
            order, e.g. ``{"t1": a, "t1ce": b, "t2": None}``.
        synthesis: the synthesised slice.
        target: the real slice of the synthesised contrast, when the case has it. Default None.
        target_name: the synthesised contrast's name in the labels, e.g. ``"flair"``. Default ``"target"``.
        error_range: the error shown white (black = 0, red, yellow in between). Default 0.5.
        min_tile: smallest tile side in pixels. Default 160.
        title: an optional line above the row (e.g. the case id and the inputs used). Default None.

    Returns:
        an RGB ``PIL.Image.Image``.

    Raises:
        ValueError: slices that are not 2D or differ in shape; a non-positive ``error_range`` or ``min_tile``.
    """
    from PIL import Image, ImageDraw

    if not error_range > 0:
        raise ValueError(f"`error_range` must be positive, got {error_range!r}.")
    if int(min_tile) < 1:
        raise ValueError(f"`min_tile` must be a positive number of pixels, got {min_tile!r}.")
    syn = _as_2d("synthesis", synthesis)
    shape = syn.shape
    tiles: list[tuple[str, np.ndarray | None]] = []
    for name, value in inputs.items():
        if value is None:
            tiles.append((f"{name} (missing)", None))
            continue
        arr = _as_2d(str(name), value)
        if arr.shape != shape:
            raise ValueError(f"Panel tile '{name}' has shape {arr.shape}, the synthesis {shape}; they must match.")
        tiles.append((str(name), _gray(_display(arr))))
    tiles.append((f"{target_name} synthesised", _gray(_display(syn))))
    if target is not None:
        real = _as_2d(target_name, target)
        if real.shape != shape:
            raise ValueError(
                f"Panel tile '{target_name}' has shape {real.shape}, the synthesis {shape}; they must match."
            )
        tiles.append((f"{target_name} real", _gray(_display(real))))
        tiles.append((f"|error| 0-{error_range:g}", _hot(_display(np.abs(syn - real)), float(error_range))))

    h, w = shape[1], shape[0]  # displayed: rows = y, columns = x
    factor = max(1, math.ceil(int(min_tile) / max(1, min(h, w))))
    th, tw = h * factor, w * factor
    top = _HEADER if title else 0
    canvas = Image.new("RGB", (len(tiles) * tw + (len(tiles) + 1) * _GAP, top + _HEADER + th + 2 * _GAP), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((_GAP, 2), title, fill=(255, 255, 255))
    for i, (label, rgb) in enumerate(tiles):
        x0, y0 = _GAP + i * (tw + _GAP), top + _HEADER + _GAP
        draw.text((x0 + 2, top + 3), label, fill=(255, 255, 255))
        if rgb is None:
            draw.rectangle([x0, y0, x0 + tw - 1, y0 + th - 1], fill=_MISSING)
            draw.text((x0 + tw // 2 - 20, y0 + th // 2 - 5), "missing", fill=(200, 200, 200))
            continue
        canvas.paste(Image.fromarray(rgb).resize((tw, th), Image.Resampling.NEAREST), (x0, y0))
    return canvas


def write_synthesis_panel(path: str | os.PathLike, *args: Any, **kwargs: Any) -> str:
    """:func:`synthesis_panel` written to ``path`` as PNG, atomically (temporary file + rename); returns ``path``."""
    path = os.fspath(path)
    image = synthesis_panel(*args, **kwargs)
    tmp = _temp_path_beside(path, ".png")
    try:
        image.save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
