"""A deterministic synthetic 2D lesion segmentation data set (PNG/JPEG + Decathlon datalist) for the 2D bundles.

Two styles, both with the labels of :data:`DEMO_2D_LABELS` (0 background, 1 benign lesion, 2 malignant lesion):

``"ultrasound"`` (default): breast-ultrasound-like B-mode images, 8-bit grayscale PNG. A linear-probe field of
view with skin line, subcutaneous fat with hypoechoic fat lobules and bright Cooper's ligaments, echogenic
fibroglandular tissue and pectoral muscle; layer boundaries undulate. The image is formed as ultrasound is:
complex scatterers weighted by the echogenicity map, convolved with an anisotropic point-spread function (the
envelope is fully developed speckle), depth attenuation with an imperfect time-gain compensation, log
compression to a per-image dynamic range and gain. Lesions follow the BI-RADS descriptors that tell the two
kinds apart:

- benign (fibroadenoma-like): oval or gently lobulated, wider than tall (parallel to the skin), circumscribed
  margin, homogeneous hypoechoic interior, sometimes a thin echogenic capsule, posterior acoustic enhancement;
- malignant (carcinoma-like): irregular, spiculated or angular margin, often taller than wide, markedly
  hypoechoic heterogeneous interior with a few bright micro-calcifications, an echogenic halo, posterior
  acoustic shadowing.

Fat lobules are as dark as a benign lesion and the shadow under a carcinoma is as dark as its interior, so a
threshold does not segment the lesions: a network has to use shape, margin and texture.

``"dermoscopy"``: ISIC-like RGB dermoscopy images (JPEG, as ISIC ships them) with PNG masks: skin of varying
tone and illumination with a vignette, skin lines and a few hairs crossing the lesion; benign nevi are
symmetric with a regular border and one or two shades of brown, melanomas are asymmetric, irregular, with
black, dark-brown, blue-grey and white (regression) areas.

Every image size differs per case (and is never a multiple of 32); about one case in six has no lesion.
Case ``i`` depends only on ``(seed, i, style, size_scale)``, so the same case is identical whatever the split
sizes. Images are stored row-major as any PNG (rows = depth for ultrasound); MONAI's ``PILReader`` loads them
as (C, W, H), like every reader in :mod:`mamba_monai.data.image2d`.
"""

from __future__ import annotations

import logging
import os

import numpy as np
from scipy import ndimage

from mamba_monai.data.demo import DATALIST_NAME, demo_splits, ensure_demo_dataset, write_demo_datalist
from mamba_monai.data.image2d import write_image_2d

__all__ = ["DEMO_2D_LABELS", "DEMO_2D_STYLES", "DEMO_2D_VERSION", "generate_demo_2d_case", "ensure_demo_2d_dataset"]

logger = logging.getLogger(__name__)

DEMO_2D_VERSION = 1
"""Bumped whenever the generator's output changes; a data set written by another version is regenerated."""

DEMO_2D_LABELS: dict[int, str] = {0: "background", 1: "benign", 2: "malignant"}
"""Label values of the demo 2D data set (both styles): 1 is a benign lesion (fibroadenoma-like in ultrasound,
a nevus in dermoscopy), 2 a malignant one (carcinoma-like, melanoma)."""

DEMO_2D_STYLES = ("ultrasound", "dermoscopy")
"""The image styles :func:`generate_demo_2d_case` can write."""

_SUBDIRS = ("imagesTr", "labelsTr", "imagesTs", "labelsTs")
_PREFIX = {"ultrasound": "us_", "dermoscopy": "derm_"}
_IMAGE_EXT = {"ultrasound": ".png", "dermoscopy": ".jpg"}
# lesion kind per case index: two benign, two malignant, one drawn at random, one without a lesion in every six
_KINDS = ("benign", "malignant", "benign", "malignant", "random", "none")


# ----------------------------------------------------------------------------------------------------------------
# shared helpers


def _smooth_noise_2d(rng: np.random.Generator, shape: tuple[int, int], coarse: tuple[int, int]) -> np.ndarray:
    """Low-frequency noise of unit standard deviation: random values on ``coarse`` control points interpolated
    separably with Gaussian weights (two small matrix products)."""
    grid = rng.standard_normal(coarse).astype(np.float32)
    weights = []
    for n, c in zip(shape, coarse):
        knots = np.linspace(-0.5, n - 0.5, c, dtype=np.float32)
        width = max((n / max(c - 1, 1)) * 0.6, 1e-3)
        w = np.exp(-0.5 * ((np.arange(n, dtype=np.float32)[:, None] - knots[None, :]) / width) ** 2)
        w[w < 1e-6] = 0.0  # no denormals: they make the matrix products 10-50x slower
        weights.append(w / w.sum(axis=1, keepdims=True))
    # two broadcast sums rather than BLAS matrix products: for these tiny factors OpenBLAS's threading costs
    # 10-100x the arithmetic on a busy 2-core machine
    half = (grid[:, None, :] * weights[1][None, :, :]).sum(-1)  # (c0, W)
    out = (weights[0][:, :, None] * half[None, :, :]).sum(1)  # (H, W)
    return (out / max(float(out.std()), 1e-6)).astype(np.float32)


def _smooth_curve(rng: np.random.Generator, n: int, knots: int) -> np.ndarray:
    """A smooth 1D curve of length ``n`` with unit standard deviation."""
    return _smooth_noise_2d(rng, (n, 1), (knots, 1))[:, 0]


def _not_multiple_of_32(n: int) -> int:
    return n + 1 if n % 32 == 0 else n


def _radial_profile(rng: np.random.Generator, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Harmonics (k, amplitude, phase) and spikes (angle, height, width) of a lesion border r(theta)."""
    if kind == "benign":  # smooth, at most gently lobulated (2-4 macro-lobulations)
        ks = np.arange(2, 6)
        amps = rng.uniform(0.0, 0.06, size=ks.size) / np.sqrt(ks - 1)
        if rng.random() < 0.35:
            amps[rng.integers(0, 3)] += rng.uniform(0.06, 0.1)
        spikes = np.zeros((0, 3))
    else:  # irregular: many harmonics, angular corners and spicules
        ks = np.arange(2, 15)
        amps = rng.uniform(0.03, 0.12, size=ks.size) / np.sqrt(ks - 1) * 1.6
        n_spikes = int(rng.integers(5, 12))
        spikes = np.stack(
            [rng.uniform(0, 2 * np.pi, n_spikes), rng.uniform(0.15, 0.55, n_spikes), rng.uniform(0.03, 0.09, n_spikes)],
            axis=1,
        )
    harmonics = np.stack([ks, amps, rng.uniform(0, 2 * np.pi, size=ks.size)], axis=1)
    return harmonics, spikes


def _border_radius(theta: np.ndarray, harmonics: np.ndarray, spikes: np.ndarray) -> np.ndarray:
    """r(theta) of a lesion border: 1 plus harmonics plus Gaussian spikes, at least 0.3."""
    r = np.ones_like(theta)
    for k, a, phi in harmonics:
        r += a * np.cos(k * theta + phi)
    for t0, height, width in spikes:
        d = (theta - t0 + np.pi) % (2 * np.pi) - np.pi
        r += height * np.exp(-0.5 * (d / width) ** 2)
    return np.maximum(r, 0.3)


def _lesion_q(
    shape: tuple[int, int], centre: tuple[float, float], radii: tuple[float, float], angle: float,
    harmonics: np.ndarray, spikes: np.ndarray, margin: float = 1.4,
) -> np.ndarray:
    """Normalised radial distance of every pixel: < 1 inside the lesion, 1 on its border (``radii`` = (axial,
    lateral) px). Computed only in the box that holds ``q < margin``; 9 elsewhere."""
    r_max = float(_border_radius(np.linspace(-np.pi, np.pi, 721, dtype=np.float32), harmonics, spikes).max())
    half = margin * r_max * max(radii) + 3.0
    y0, y1 = max(0, int(centre[0] - half)), min(shape[0], int(centre[0] + half) + 1)
    x0, x1 = max(0, int(centre[1] - half)), min(shape[1], int(centre[1] + half) + 1)
    q = np.full(shape, 9.0, dtype=np.float32)
    if y1 <= y0 or x1 <= x0:
        return q
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dy, dx = yy - centre[0], xx - centre[1]
    c, s = np.cos(angle), np.sin(angle)
    u, v = (c * dx + s * dy) / radii[1], (-s * dx + c * dy) / radii[0]
    theta = np.arctan2(v, u)
    q[y0:y1, x0:x1] = np.sqrt(u * u + v * v) / _border_radius(theta, harmonics, spikes)
    return q


def _place_lesions(rng: np.random.Generator, kind: str, shape: tuple[int, int], top: float, bottom: float):
    """Lesion specs (kind, centre, radii, angle, harmonics, spikes) for one case; a second, small benign
    lesion is added now and then."""
    h, w = shape
    if kind == "random":
        kind = "benign" if rng.random() < 0.5 else "malignant"
    if kind == "none":
        return []
    specs = []
    kinds = [kind] + (["benign"] if rng.random() < 0.15 else [])
    for i, k in enumerate(kinds):
        scale = 1.0 if i == 0 else 0.55
        if k == "benign":
            lateral = rng.uniform(0.09, 0.17) * w * scale
            axial = lateral * rng.uniform(0.5, 0.8)
            angle = rng.uniform(-0.25, 0.25)
        else:
            lateral = rng.uniform(0.07, 0.13) * w * scale
            axial = lateral * rng.uniform(0.85, 1.35)
            angle = rng.uniform(-0.6, 0.6)
        for _ in range(20):  # keep lesions apart
            cy = rng.uniform(top + axial + 4, max(top + axial + 5, bottom - axial))
            cx = rng.uniform(lateral + 0.06 * w, w - lateral - 0.06 * w)
            if all(np.hypot(cy - s[1][0], cx - s[1][1]) > 1.4 * (lateral + max(s[2])) for s in specs):
                break
        else:
            continue
        harmonics, spikes = _radial_profile(rng, k)
        specs.append((k, (cy, cx), (axial, lateral), angle, harmonics, spikes))
    return specs


# ----------------------------------------------------------------------------------------------------------------
# ultrasound


def _ultrasound_case(rng: np.random.Generator, kind: str, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    col = np.arange(w, dtype=np.float32)

    # layers (depth in px as a function of the lateral position): skin, subcutaneous fat, gland, muscle
    skin = rng.uniform(0.03, 0.06) * h + 1.5 * _smooth_curve(rng, w, 4)
    fat = skin + rng.uniform(0.12, 0.24) * h + 0.03 * h * _smooth_curve(rng, w, 5)
    muscle = rng.uniform(0.78, 0.9) * h + 0.03 * h * _smooth_curve(rng, w, 4)
    texture = _smooth_noise_2d(rng, shape, (max(3, h // 18), max(3, w // 18)))
    coarse = _smooth_noise_2d(rng, shape, (5, 6))

    echo = np.full(shape, 0.02, dtype=np.float32)  # coupling gel: almost anechoic
    in_fat = (yy >= skin[None, :]) & (yy < fat[None, :])
    in_gland = (yy >= fat[None, :]) & (yy < muscle[None, :])
    in_muscle = yy >= muscle[None, :]
    echo[in_fat] = (0.34 + 0.05 * texture)[in_fat]
    gland_level = rng.uniform(0.62, 0.78)
    echo[in_gland] = (gland_level + 0.09 * texture + 0.05 * coarse)[in_gland]
    striation = 0.5 + 0.5 * np.sin((yy - muscle[None, :]) * rng.uniform(0.5, 0.8) + 0.3 * coarse)
    echo[in_muscle] = (0.42 + 0.18 * striation)[in_muscle]
    echo = np.where(np.abs(yy - skin[None, :]) < rng.uniform(1.5, 3.0), 0.95, echo)  # skin line
    echo = np.where(np.abs(yy - muscle[None, :]) < 1.2, 0.9, echo)  # pectoral fascia

    # fat lobules (unlabelled distractors): hypoechoic ovals wider than tall, in the fat and in the gland
    for _ in range(int(rng.integers(4, 10))):
        in_sub = rng.random() < 0.6
        cx = rng.uniform(0, w)
        top_y = float(np.interp(cx, col, skin if in_sub else fat)) + 3
        bot_y = float(np.interp(cx, col, fat if in_sub else muscle)) - 3
        if bot_y <= top_y + 4:
            continue
        cy = rng.uniform(top_y, bot_y)
        ry = rng.uniform(0.02, 0.05) * h
        rx = ry * rng.uniform(1.8, 3.2)
        box = (
            slice(max(0, int(cy - 1.5 * ry)), int(cy + 1.5 * ry) + 2),
            slice(max(0, int(cx - 1.5 * rx)), int(cx + 1.5 * rx) + 2),
        )
        q = ((xx[box] - cx) / rx) ** 2 + ((yy[box] - cy) / ry) ** 2 + 0.15 * texture[box]
        e = echo[box]  # a view
        e[q <= 1.0] = (0.36 + 0.04 * texture[box])[q <= 1.0]
        rim = (q > 1.0) & (q <= 1.25)
        e[rim] = np.maximum(e[rim], 0.8)  # Cooper's ligament rim

    label = np.zeros(shape, dtype=np.uint8)
    posterior = np.ones(shape, dtype=np.float32)  # multiplicative enhancement / shadowing below lesions
    specs = _place_lesions(rng, kind, shape, float(fat.mean()), float(muscle.mean()) - 0.02 * h)
    for k, centre, radii, angle, harmonics, spikes in specs:
        q = _lesion_q(shape, centre, radii, angle, harmonics, spikes)
        inside = q <= 1.0
        size = float(np.mean(radii))
        soft_width = rng.uniform(1.0, 2.0) if k == "benign" else rng.uniform(2.0, 3.5)
        weight = 1.0 / (1.0 + np.exp(-np.clip((1.0 - q) * size / soft_width, -30, 30)))  # blurred boundary
        lateral_extent = np.abs(xx - centre[1]) / (radii[1] * 0.9)
        below = np.clip((yy - centre[0]) / max(radii[0], 1.0), 0, None)
        column = 1.0 / (1.0 + np.exp(np.clip((lateral_extent - 1.0) * 6.0, -30, 30)))
        if k == "benign":
            inner = rng.uniform(0.2, 0.28) + 0.02 * texture  # homogeneous, moderately hypoechoic
            if rng.random() < 0.5:  # thin echogenic capsule
                echo = np.where(np.abs(q - 1.0) * size < 1.0, np.maximum(echo, 0.75), echo)
            gain = rng.uniform(0.8, 1.5)
            posterior *= 1.0 + gain * column * (below > 1.0) * np.exp(-(below - 1.0) / 2.5)
        else:
            hetero = _smooth_noise_2d(rng, shape, (max(3, h // 10), max(3, w // 10)))
            inner = np.clip(rng.uniform(0.02, 0.08) + 0.07 * hetero, 0.0, None)  # markedly hypoechoic, heterogeneous
            halo = (q > 1.0) & (q < 1.0 + rng.uniform(0.15, 0.3))
            echo = np.where(halo, np.maximum(echo, 0.75 + 0.1 * texture), echo)
            shadow = rng.uniform(0.65, 0.85)
            posterior *= 1.0 - shadow * column * (below > 0.6) * (1 - np.exp(-(below - 0.6) * 2.0))
            calcs = int(rng.integers(0, 5))
            ys, xs = np.nonzero(q <= 0.8)
            if calcs and ys.size:
                pick = rng.integers(0, ys.size, size=calcs)
                inner = np.asarray(inner).copy()
                inner[ys[pick], xs[pick]] = 1.15
        echo = weight * inner + (1.0 - weight) * echo
        label[inside] = 1 if k == "benign" else 2

    # image formation: the echogenicity map (0.7 = gland = 0 dB; 30 dB per unit) sets the scatterer amplitude;
    # speckle from complex scatterers through an anisotropic PSF (envelope), attenuation with an imperfect TGC,
    # log compression to a per-image dynamic range and gain
    amp = 10.0 ** (30.0 * (echo - 0.7) / 20.0) * posterior
    sigma = (rng.uniform(0.8, 1.3), rng.uniform(1.6, 2.6))  # (axial, lateral) px
    re = ndimage.gaussian_filter(amp * rng.standard_normal(shape).astype(np.float32), sigma)
    im = ndimage.gaussian_filter(amp * rng.standard_normal(shape).astype(np.float32), sigma)
    env = np.sqrt(re * re + im * im)
    env /= max(float(np.median(env[in_gland])) if in_gland.any() else float(np.median(env)), 1e-6)
    depth = yy / h
    residual_db = rng.uniform(-8, 8) * depth + rng.uniform(-3, 3) * np.sin(np.pi * depth)  # attenuation vs TGC
    edges = np.clip(np.abs(xx - w / 2) / (w / 2) - 0.75, 0, None) / 0.25  # weaker probe elements at the edges
    dynamic_range = rng.uniform(45, 60)
    db = 20.0 * np.log10(np.maximum(env, 1e-6)) + residual_db - rng.uniform(0, 8) * edges + rng.uniform(-4, 4)
    db = ndimage.gaussian_filter(db, rng.uniform(0.6, 0.9))  # scan conversion / speckle-reduction smoothing
    grey = np.clip(db / dynamic_range + rng.uniform(0.55, 0.68), 0.0, 1.0)
    return np.rint(255.0 * grey).astype(np.uint8), label


# ----------------------------------------------------------------------------------------------------------------
# dermoscopy


def _dermoscopy_case(rng: np.random.Generator, kind: str, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    skin_tone = np.array([rng.uniform(0.78, 0.92), rng.uniform(0.55, 0.7), rng.uniform(0.45, 0.6)], np.float32)
    skin_tone *= rng.uniform(0.75, 1.05)
    mottle = _smooth_noise_2d(rng, shape, (6, 7))
    fine = _smooth_noise_2d(rng, shape, (max(4, h // 6), max(4, w // 6)))
    shade = 1.0 + 0.04 * mottle + 0.02 * fine
    angle = rng.uniform(0, np.pi)  # skin lines: faint darker crossing furrows
    lines = np.sin((np.cos(angle) * xx + np.sin(angle) * yy) * rng.uniform(0.12, 0.2) + 0.8 * mottle)
    shade *= 1.0 - 0.03 * (lines > 0.9)
    rgb = skin_tone[None, None, :] * shade[..., None]

    label = np.zeros(shape, dtype=np.uint8)
    specs = _place_lesions(rng, kind, shape, 0.2 * h, 0.8 * h)
    brown = np.array([0.45, 0.28, 0.18], np.float32)
    palette = {  # melanoma colours: dark brown, black, blue-grey veil, white regression
        "dark": np.array([0.22, 0.13, 0.1], np.float32),
        "black": np.array([0.1, 0.08, 0.08], np.float32),
        "blue": np.array([0.38, 0.42, 0.5], np.float32),
        "white": np.array([0.82, 0.76, 0.74], np.float32),
    }
    for k, centre, radii, ang, harmonics, spikes in specs:
        radii = (max(radii[0], 0.7 * radii[1]) * 1.6, radii[1] * 1.6)  # pigmented lesions: round-ish, larger
        radii = (min(radii[0], 0.42 * h), min(radii[1], 0.42 * w))
        if k == "malignant":  # asymmetric, irregular but not stellate
            harmonics = harmonics.copy()
            harmonics[:3, 1] *= 1.8
            spikes = spikes.copy()
            spikes[:, 1] *= 0.3
            spikes[:, 2] *= 2.5
        q = _lesion_q(shape, centre, radii, ang, harmonics, spikes)
        inside = q <= 1.0
        size = float(np.mean(radii))
        soft = 1.0 / (1.0 + np.exp(-np.clip((1.0 - q) * size / rng.uniform(1.5, 4.0), -30, 30)))
        pattern = _smooth_noise_2d(rng, shape, (max(3, h // 14), max(3, w // 14)))
        tone = brown * rng.uniform(0.8, 1.15)
        period = rng.uniform(0.35, 0.6)
        network = (np.sin(xx * period + 2 * mottle) * np.sin(yy * period + 2 * fine) > 0.55) & (q < 0.95)
        if k == "benign":  # one or two shades of brown, darker centre, regular pigment network
            colour = tone[None, None, :] * (0.85 + 0.2 * q[..., None] + 0.04 * pattern[..., None])
            colour[network] *= 0.85
        else:  # variegated: smooth blends of the melanoma colours, atypical (irregular) network
            colour = np.broadcast_to(tone, (h, w, 3)).copy()
            for name, level, where in (
                ("dark", 0.0, q < 1.0), ("black", 0.9, q < 0.8), ("blue", 1.4, q < 0.85), ("white", 1.8, q < 0.7)
            ):
                field = pattern if name in ("dark", "black") else _smooth_noise_2d(rng, shape, (5, 6))
                wgt = np.clip((field - level) * 1.5, 0, 1) * where
                colour += wgt[..., None] * (palette[name][None, None, :] - colour)
            colour[network & (pattern > -0.3)] *= 0.7
        rgb = soft[..., None] * colour + (1.0 - soft[..., None]) * rgb
        label[inside] = 1 if k == "benign" else 2

    # hairs: dark thin gently curved lines crossing the field
    for _ in range(int(rng.integers(0, 5))):
        y0, x0 = rng.uniform(0, h), rng.uniform(0, w)
        theta = rng.uniform(0, np.pi)
        along = np.cos(theta) * (xx - x0) + np.sin(theta) * (yy - y0)
        across = -np.sin(theta) * (xx - x0) + np.cos(theta) * (yy - y0)
        hair = np.abs(across - rng.uniform(-6e-4, 6e-4) * along**2) < rng.uniform(0.6, 1.2)
        rgb[hair] = rgb[hair] * 0.35
    # dermatoscope illumination: vignette, colour cast, blur and sensor noise
    r = np.hypot((yy - h / 2) / (h / 2), (xx - w / 2) / (w / 2))
    rgb *= (1.0 - rng.uniform(0.15, 0.45) * np.clip(r - 0.6, 0, None) ** 1.5)[..., None]
    rgb *= rng.uniform(0.9, 1.1, size=3).astype(np.float32)[None, None, :]
    sigma = rng.uniform(0.5, 1.0)
    rgb = np.stack([ndimage.gaussian_filter(rgb[..., c], sigma) for c in range(3)], axis=-1)
    rgb += rng.normal(0, 0.012, size=rgb.shape).astype(np.float32)
    return np.rint(255.0 * np.clip(rgb, 0, 1)).astype(np.uint8), label


# ----------------------------------------------------------------------------------------------------------------
# one case


def generate_demo_2d_case(
    index: int, seed: int = 0, style: str = "ultrasound", size_scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Generate one synthetic 2D case.

    Args:
        index: case number; with ``seed`` it fully determines the case. ``index % 6`` sets the lesion kind:
            0, 2 benign; 1, 3 malignant; 4 either (drawn); 5 no lesion. A second, small benign lesion is added to
            about 15% of the cases with a lesion.
        seed: data set seed. Default 0.
        style: ``"ultrasound"`` (grayscale B-mode) or ``"dermoscopy"`` (RGB). Default ``"ultrasound"``.
        size_scale: multiplies the image size, e.g. 0.5 for quick tests. Default 1.0 (ultrasound 176-256 rows x
            200-320 columns, dermoscopy 192-288 x 256-384; never a multiple of 32).

    Returns:
        ``(image, label)``: uint8 image of shape (H, W) (ultrasound) or (H, W, 3) (dermoscopy) and uint8 label
        map (H, W) with values from :data:`DEMO_2D_LABELS`, row-major as written to a PNG.
    """
    if style not in DEMO_2D_STYLES:
        raise ValueError(f"`style` must be one of {DEMO_2D_STYLES}, got {style!r}.")
    if not size_scale > 0:
        raise ValueError(f"`size_scale` must be positive, got {size_scale!r}.")
    rng = np.random.default_rng([int(seed), int(index), 2002, DEMO_2D_STYLES.index(style)])
    if style == "ultrasound":
        h, w = int(rng.integers(176, 257)), int(rng.integers(200, 321))
    else:
        h, w = int(rng.integers(192, 289)), int(rng.integers(256, 385))
    shape = (_not_multiple_of_32(max(24, round(h * size_scale))), _not_multiple_of_32(max(24, round(w * size_scale))))
    kind = _KINDS[int(index) % len(_KINDS)]
    if style == "ultrasound":
        return _ultrasound_case(rng, kind, shape)
    return _dermoscopy_case(rng, kind, shape)


# ----------------------------------------------------------------------------------------------------------------
# the data set on disk


def ensure_demo_2d_dataset(
    root_dir: str | os.PathLike,
    num_train: int = 40,
    num_val: int = 10,
    num_test: int = 10,
    seed: int = 0,
    overwrite: bool = False,
    style: str = "ultrasound",
    size_scale: float = 1.0,
) -> str:
    """Write the synthetic 2D data set under ``root_dir`` unless a complete one with the same parameters is there.

    Layout (MSD style)::

        root_dir/
            dataset_0.json        "training", "validation" (image + label), "test" (image only) and
                                  "test_labeled" (image + label) lists, paths relative to root_dir
            imagesTr/us_000.png   training then validation cases: 8-bit grayscale PNG (ultrasound) or
                                  RGB JPEG derm_000.jpg (dermoscopy, quality 92)
            labelsTr/us_000.png   8-bit PNG class-index maps, values of DEMO_2D_LABELS
            imagesTs/us_050.png   test cases
            labelsTs/us_050.png   their labels, for evaluation
            .complete             written last: generator version, parameters and file list

    The machinery (lock for concurrent callers, completion marker, refusal to write into a folder holding other
    data, atomic writes) is :func:`mamba_monai.data.demo.ensure_demo_dataset`'s. The default set (60 images)
    takes about a second.

    Args:
        root_dir: the data set folder (created if needed). It must be empty or hold a demo set written here.
        num_train: training cases. Default 40.
        num_val: validation cases. Default 10.
        num_test: test cases. Default 10.
        seed: data set seed. Default 0.
        overwrite: rewrite even a complete set (call it from one process only). Default False.
        style: ``"ultrasound"`` or ``"dermoscopy"``, see :func:`generate_demo_2d_case`. Default ``"ultrasound"``.
        size_scale: image size factor of :func:`generate_demo_2d_case`. Default 1.0.

    Returns:
        the path of ``root_dir/dataset_0.json``, for :func:`mamba_monai.data.load_datalist` or MONAI's
        ``load_decathlon_datalist``.
    """
    demo_splits(num_train, num_val, num_test)  # checks the counts
    if style not in DEMO_2D_STYLES:
        raise ValueError(f"`style` must be one of {DEMO_2D_STYLES}, got {style!r}.")
    if not size_scale > 0:
        raise ValueError(f"`size_scale` must be positive, got {size_scale!r}.")
    params = {
        "generator": "mamba_monai.data.demo_2d",
        "version": DEMO_2D_VERSION,
        "num_train": int(num_train),
        "num_val": int(num_val),
        "num_test": int(num_test),
        "seed": int(seed),
        "style": style,
        "size_scale": float(size_scale),
    }
    return ensure_demo_dataset(
        root_dir,
        params,
        lambda root: _write_dataset(root, params),
        subdirs=_SUBDIRS,
        case_prefixes=tuple(_PREFIX.values()),
        overwrite=overwrite,
    )


def _write_dataset(root_dir: str, params: dict) -> list[str]:
    """Write every case and the datalist; return the written paths relative to ``root_dir``."""
    style = params["style"]
    splits = demo_splits(params["num_train"], params["num_val"], params["num_test"])
    lists: dict[str, list[dict]] = {}
    files: list[str] = []
    for split, cases in splits.items():
        lists[split] = []
        img_dir, lab_dir = ("imagesTs", "labelsTs") if split == "test" else ("imagesTr", "labelsTr")
        for case in cases:
            image, label = generate_demo_2d_case(case, params["seed"], style, params["size_scale"])
            stem = f"{_PREFIX[style]}{case:03d}"
            rel_img, rel_lab = f"{img_dir}/{stem}{_IMAGE_EXT[style]}", f"{lab_dir}/{stem}.png"
            write_image_2d(image, os.path.join(root_dir, rel_img), quality=92)
            write_image_2d(label, os.path.join(root_dir, rel_lab))
            lists[split].append({"image": rel_img, "label": rel_lab})
            files += [rel_img, rel_lab]
    write_demo_datalist(
        root_dir,
        lists,
        name=f"mamba_monai demo 2D {style}",
        description=f"Synthetic {style} lesion images (deterministic), written by "
        "mamba_monai.data.ensure_demo_2d_dataset.",
        reference="synthetic",
        licence="Apache-2.0",
        release=f"demo_2d v{DEMO_2D_VERSION}",
        tensorImageSize="2D",
        modality={"0": "US"} if style == "ultrasound" else {"0": "R", "1": "G", "2": "B"},
        labels={str(k): v for k, v in DEMO_2D_LABELS.items()},
    )
    return files + [DATALIST_NAME]
