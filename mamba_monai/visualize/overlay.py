"""A label map drawn over its image, for a person to look at (the 2D bundle writes one per predicted image)."""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform
from PIL import Image

__all__ = ["label_overlay", "SaveOverlayd"]

logger = logging.getLogger(__name__)

# class 1, 2, ... colours (RGB): green, red, blue, yellow, magenta, cyan, orange
_COLOURS = np.array(
    [[0, 200, 0], [230, 40, 40], [40, 110, 255], [240, 220, 0], [220, 0, 220], [0, 210, 210], [255, 140, 0]], np.float32
)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(image, [0.5, 99.5]) if image.size else (0.0, 1.0)
    return (np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)


def label_overlay(image: np.ndarray, label: np.ndarray, alpha: float = 0.35) -> np.ndarray:
    """
    RGB picture of ``label`` over ``image``: each class a colour (green, red, blue...), its area tinted by
    ``alpha`` and its border drawn solid.

    Args:
        image: (rows, columns) gray or (rows, columns, 3) RGB, any range (shown from its 0.5th to 99.5th percentile).
        label: (rows, columns) class indices, 0 the background.
        alpha: tint of a class's area. Default 0.35.

    Returns:
        (rows, columns, 3) uint8.
    """
    image, label = np.asarray(image, np.float32), np.asarray(label).astype(np.int64)
    if image.shape[:2] != label.shape:
        raise ValueError(f"image {image.shape[:2]} and label {label.shape} must have the same rows and columns.")
    gray = _to_uint8(image)
    rgb = (np.repeat(gray[..., None], 3, axis=-1) if gray.ndim == 2 else gray[..., :3]).astype(np.float32)
    padded = np.pad(label, 1, mode="edge")
    border = np.zeros(label.shape, bool)
    for dr, dc in ((0, 1), (2, 1), (1, 0), (1, 2)):
        border |= padded[dr : dr + label.shape[0], dc : dc + label.shape[1]] != label
    for cls in np.unique(label):
        if cls <= 0:
            continue
        colour = _COLOURS[(cls - 1) % len(_COLOURS)]
        area = label == cls
        rgb[area] = (1 - alpha) * rgb[area] + alpha * colour
        rgb[area & border] = colour
    return rgb.round().astype(np.uint8)


class SaveOverlayd(MapTransform):
    """
    Write ``<saved name>_overlay.png`` for each case: the predicted label map (``keys``, channel-first (1, X, Y),
    X along the columns as :class:`~mamba_monai.data.LoadImage2Dd` reads images) over its image (``image_key``,
    (C, X, Y) on the same grid, e.g. a copy of the input put back through ``Invertd``). The PNG goes beside the
    file the bundle's writer saved (``meta["saved_to"]``), else to ``output_dir``.

    Args:
        keys: the label map key (one).
        image_key: the image on the label's grid.
        output_dir: where to write when the saved path is unknown. Default ``"."``.
        alpha: tint of a class's area. Default 0.35.
    """

    def __init__(self, keys: KeysCollection, image_key: str, output_dir: str = ".", alpha: float = 0.35) -> None:
        super().__init__(keys)
        self.image_key, self.output_dir, self.alpha = image_key, output_dir, float(alpha)

    def _path(self, meta: Mapping[str, Any]) -> str:
        saved = str(meta.get("saved_to") or "")
        if saved:
            for ext in (".nii.gz", ".nii", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"):
                if saved.lower().endswith(ext):
                    return saved[: -len(ext)] + "_overlay.png"
        name = os.path.basename(str(meta.get("filename_or_obj", "image"))).split(".")[0]
        return os.path.join(self.output_dir, f"{name}_overlay.png")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            label = np.asarray(d[key].detach().cpu() if hasattr(d[key], "detach") else d[key])
            image = np.asarray(d[self.image_key].detach().cpu() if hasattr(d[self.image_key], "detach")
                               else d[self.image_key])
            if label.ndim != 3 or image.ndim != 3:
                raise ValueError(f"SaveOverlayd draws 2D images: '{key}' {label.shape}, '{self.image_key}' {image.shape}.")
            picture = image[0] if image.shape[0] != 3 else np.moveaxis(image, 0, -1)
            rows_cols = np.swapaxes(picture, 0, 1)  # (X, Y[, 3]) -> (rows, columns[, 3])
            path = self._path(getattr(d[key], "meta", {}))
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            Image.fromarray(label_overlay(rows_cols, label[0].T, self.alpha)).save(path)
            logger.info("overlay written to %s", path)
        return d
