"""Boundary IoU (Cheng et al., CVPR 2021) against hand counts and an independent scipy erosion reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.metrics import DiceMetric
from scipy import ndimage

from mamba_monai.metrics import BoundaryIoUMetric, compute_boundary_iou


def _onehot(fg: torch.Tensor) -> torch.Tensor:
    """[B, *spatial] binary foreground -> [B, 2, *spatial] one-hot (background, foreground)."""
    fg = fg.float()
    return torch.stack([1 - fg, fg], dim=1)


# ---------------------------------------------------------------- reference: plain scipy binary_erosion per case
def _ref_band(mask: np.ndarray, width: float, metric: str, spacing) -> np.ndarray:
    nd = mask.ndim
    if metric == "euclidean":
        sp = np.ones(nd) if spacing is None else np.asarray(spacing, dtype=float)
        radius = [int(math.floor(width / s)) for s in sp]
        grids = np.meshgrid(*[np.arange(-r, r + 1) for r in radius], indexing="ij")
        ball = np.sqrt(sum((g * s) ** 2 for g, s in zip(grids, sp))) <= width
        eroded = ndimage.binary_erosion(mask, structure=ball, border_value=0)
    else:
        structure = ndimage.generate_binary_structure(nd, nd if metric == "chessboard" else 1)
        eroded = ndimage.binary_erosion(mask, structure=structure, iterations=int(width), border_value=0)
    return mask & ~eroded


def _ref_boundary_iou(pred: np.ndarray, gt: np.ndarray, metric="euclidean", ratio=0.02, distance=None, spacing=None):
    pred, gt = pred.astype(bool), gt.astype(bool)
    if not pred.any() and not gt.any():
        return float("nan")
    if not pred.any() or not gt.any():
        return 0.0
    sp = np.ones(pred.ndim) if spacing is None else np.asarray(spacing, dtype=float)
    if distance is None:
        diag = math.sqrt(sum((n * s) ** 2 for n, s in zip(pred.shape, sp)))
        distance = max(ratio * diag, sp.max())
    bp, bg = _ref_band(pred, distance, metric, spacing), _ref_band(gt, distance, metric, spacing)
    return (bp & bg).sum() / (bp | bg).sum()


def _blobs(rng: np.random.RandomState, shape, n: int, sigma: float = 2.0) -> np.ndarray:
    """Smooth random blobs: thresholded Gaussian-filtered noise, with a random threshold per item."""
    out = []
    for _ in range(n):
        field = ndimage.gaussian_filter(rng.randn(*shape), sigma)
        out.append(field > rng.uniform(-0.05, 0.15) * field.std() * 4)
    return np.stack(out)


# ---------------------------------------------------------------- basic cases
@pytest.mark.parametrize("metric", ["euclidean", "chessboard", "taxicab"])
@pytest.mark.parametrize("shape", [(20, 24), (10, 12, 14)])
def test_identical_is_one_and_disjoint_is_zero(metric, shape):
    a = torch.zeros(1, *shape)
    a[(0,) + tuple(slice(1, 6) for _ in shape)] = 1
    b = torch.zeros(1, *shape)
    b[(0,) + tuple(slice(7, 10) for _ in shape)] = 1
    same = compute_boundary_iou(_onehot(a), _onehot(a), distance_metric=metric)
    assert same.shape == (1, 2)
    torch.testing.assert_close(same, torch.ones(1, 2))
    disjoint = compute_boundary_iou(_onehot(a), _onehot(b), include_background=False, distance_metric=metric)
    torch.testing.assert_close(disjoint, torch.zeros(1, 1))


def test_empty_cases_nan_and_zero_and_mean_ignores_nan():
    sq = torch.zeros(8, 8)
    sq[2:6, 2:6] = 1
    empty = torch.zeros(8, 8)
    y_pred = torch.stack([sq, empty, sq, empty])[:, None]
    y = torch.stack([sq, empty, empty, sq])[:, None]
    metric = BoundaryIoUMetric(get_not_nans=True, ignore_empty=False)
    values = metric(y_pred, y)
    assert values.shape == (4, 1)
    assert values[0].item() == 1.0
    assert math.isnan(values[1].item())  # both empty
    assert values[2].item() == 0.0 and values[3].item() == 0.0  # only one empty
    mean, not_nans = metric.aggregate()
    assert mean.item() == pytest.approx(1.0 / 3.0)  # nan skipped: (1 + 0 + 0) / 3
    assert not_nans.item() == 3
    # the default, as DiceMetric(ignore_empty=True): a case without the class in the label does not count
    default = BoundaryIoUMetric(get_not_nans=True)
    values = default(y_pred, y)
    assert math.isnan(values[1].item()) and math.isnan(values[2].item()) and values[3].item() == 0.0
    mean, not_nans = default.aggregate()
    assert mean.item() == pytest.approx(0.5) and not_nans.item() == 2


def test_hand_counted_offset_squares():
    # 4x4 squares, rows 2..5; GT at cols 2..5, prediction at cols 3..6 (one pixel to the right); d = 1 pixel.
    # Band of a 4x4 square with d = 1: the 12-pixel outer ring (the 2x2 centre is 2 px from the background).
    # Intersection of the two rings: rows 2 and 5 share cols 3..5 -> 2 * 3 = 6; rows 3 and 4: GT ring has
    # cols {2, 5}, prediction ring cols {3, 6} -> 0. Union = 12 + 12 - 6 = 18. Boundary IoU = 6 / 18 = 1/3,
    # mask IoU = 12 / 20 = 0.6. The same holds for the three distances (d = 1 erodes with the face
    # neighbours or the 3x3 square, and the ring is the same for a square).
    gt = torch.zeros(1, 8, 9)
    gt[0, 2:6, 2:6] = 1
    pred = torch.roll(gt, 1, dims=-1)
    for metric in ("euclidean", "chessboard", "taxicab"):
        v = compute_boundary_iou(pred[:, None], gt[:, None], distance=1, distance_metric=metric)
        assert v.item() == pytest.approx(1.0 / 3.0)
    assert ((pred * gt).sum() / ((pred + gt) > 0).sum()).item() == pytest.approx(0.6)


def test_large_object_boundary_error_scores_much_lower_than_mask_iou():
    yy, xx = torch.meshgrid(torch.arange(96.0), torch.arange(96.0), indexing="ij")
    r = torch.sqrt((yy - 47.5) ** 2 + (xx - 47.5) ** 2)
    gt = (r < 40).float()[None]
    pred = (r < 39).float()[None]  # the same disk, one pixel thinner all around
    mask_iou = ((gt * pred).sum() / ((gt + pred) > 0).sum()).item()
    biou = compute_boundary_iou(pred[:, None], gt[:, None]).item()  # default d = 2 % of the diagonal (2.7 px)
    assert mask_iou > 0.94
    assert biou < 0.65
    assert mask_iou - biou > 0.3


# ---------------------------------------------------------------- independent reference on random blobs
@pytest.mark.parametrize(
    "shape,metric,ratio,distance,spacing",
    [
        ((40, 36), "euclidean", 0.02, None, None),
        ((40, 36), "euclidean", 0.05, None, None),
        ((40, 36), "euclidean", 0.02, 2.5, None),
        ((40, 36), "chessboard", 0.02, 3, None),
        ((40, 36), "taxicab", 0.08, None, None),
        ((40, 36), "euclidean", 0.02, 2.0, (0.5, 1.5)),
        ((40, 36), "euclidean", 0.04, None, (2.0, 0.75)),
        ((18, 16, 12), "euclidean", 0.02, None, None),
        ((18, 16, 12), "euclidean", 0.02, 2.0, None),
        ((18, 16, 12), "chessboard", 0.1, None, None),
        ((18, 16, 12), "taxicab", 0.02, 2, None),
        ((18, 16, 12), "euclidean", 0.02, 3.0, (1.0, 1.0, 2.5)),
    ],
)
def test_matches_scipy_erosion_reference_on_random_blobs(shape, metric, ratio, distance, spacing):
    rng = np.random.RandomState(sum(shape) + int(100 * ratio) + len(metric))
    n = 4
    gt, pred = _blobs(rng, shape, n), _blobs(rng, shape, n)
    pred[1] = gt[1]  # identical
    pred[2] = ndimage.binary_dilation(gt[2])  # one-pixel boundary error
    pred[3] = False  # only the label is non-empty
    y = torch.from_numpy(gt[:, None].astype(np.float32))
    y_pred = torch.from_numpy(pred[:, None].astype(np.float32))
    got = compute_boundary_iou(
        y_pred, y, dilation_ratio=ratio, distance=distance, distance_metric=metric, spacing=spacing
    )
    expected = [_ref_boundary_iou(pred[i], gt[i], metric, ratio, distance, spacing) for i in range(n)]
    torch.testing.assert_close(got[:, 0], torch.tensor(expected, dtype=torch.float32))
    assert got[1].item() == 1.0 and got[3].item() == 0.0
    assert 0.0 < got[2].item() < 1.0


def test_per_item_spacing_in_a_batch():
    rng = np.random.RandomState(3)
    gt, pred = _blobs(rng, (24, 20), 2), _blobs(rng, (24, 20), 2)
    spacings = [(1.0, 2.0), (0.5, 0.5)]
    got = compute_boundary_iou(
        torch.from_numpy(pred[:, None]).float(), torch.from_numpy(gt[:, None]).float(), distance=2.0, spacing=spacings
    )
    expected = [_ref_boundary_iou(pred[i], gt[i], distance=2.0, spacing=spacings[i]) for i in range(2)]
    torch.testing.assert_close(got[:, 0], torch.tensor(expected, dtype=torch.float32))


# ---------------------------------------------------------------- spacing in mm
def test_anisotropic_spacing_in_mm_hand_counted():
    # Spacing 1 mm along rows, 3 mm along columns; d = 3 mm. GT: rows 2..9 x cols 2..5 (8 x 4 = 32 px);
    # prediction: the same shifted one row (1 mm) down, rows 3..10.
    # A pixel is in the band if the background is <= 3 mm away: edge columns 2 and 5 always (3 mm to cols 1/6);
    # inner cols 3, 4 (6 mm from the side) only within 3 rows of the top/bottom. GT eroded = rows 5..6 x cols 3..4,
    # GT band = 32 - 4 = 28; prediction band = 28 (eroded rows 6..7 x cols 3..4).
    # Intersection: cols 2, 5 over rows 3..9 -> 2 * 7 = 14; cols 3, 4: GT band rows {2,3,4,7,8,9}, prediction
    # band rows {3,4,5,8,9,10} -> {3,4,8,9}, 2 * 4 = 8. Total 22; union 28 + 28 - 22 = 34: Boundary IoU = 11/17.
    # In pixels (no spacing) d = 3 covers the whole 4-wide masks, so Boundary IoU = mask IoU = 28/36 = 7/9.
    gt = torch.zeros(1, 1, 14, 8)
    gt[0, 0, 2:10, 2:6] = 1
    pred = torch.roll(gt, 1, dims=2)
    in_mm = compute_boundary_iou(pred, gt, distance=3.0, spacing=[1.0, 3.0]).item()
    assert in_mm == pytest.approx(11.0 / 17.0)
    in_px = compute_boundary_iou(pred, gt, distance=3.0).item()
    assert in_px == pytest.approx(7.0 / 9.0)
    assert in_mm == pytest.approx(_ref_boundary_iou(pred[0, 0].numpy(), gt[0, 0].numpy(), distance=3.0, spacing=(1, 3)))

    # a bundle passes (y_pred, y) only: the metric reads the spacing from the label's affine ...
    affine = torch.diag(torch.tensor([1.0, 3.0, 1.0, 1.0]))
    metric = BoundaryIoUMetric(distance=3.0, use_meta_spacing=True)
    metric([MetaTensor(pred[0], affine=affine)], [MetaTensor(gt[0], affine=affine)])  # decollated, as ignite does
    assert metric.aggregate().item() == pytest.approx(11.0 / 17.0)
    # ... an explicit spacing wins, and without use_meta_spacing the affine is not used
    metric.reset()
    metric(MetaTensor(pred, affine=affine), MetaTensor(gt, affine=affine), spacing=[1.0, 1.0])
    assert metric.aggregate().item() == pytest.approx(7.0 / 9.0)
    plain = BoundaryIoUMetric(distance=3.0)
    plain(MetaTensor(pred, affine=affine), MetaTensor(gt, affine=affine))
    assert plain.aggregate().item() == pytest.approx(7.0 / 9.0)


# ---------------------------------------------------------------- MONAI metric behaviour
def _multiclass_batch(seed: int = 0, b: int = 3, c: int = 3, shape=(16, 16)):
    rng = np.random.RandomState(seed)
    lab = rng.randint(0, c, size=(b, 1) + shape)
    lab = ndimage.median_filter(lab, size=(1, 1, 5, 5))
    pred = np.roll(lab, 1, axis=-1)
    pred[0][pred[0] == 2] = 0  # class 2 missing in the prediction of item 0 -> 0
    lab[1][lab[1] == 2] = 0
    pred[1][pred[1] == 2] = 0  # class 2 absent in both for item 1 -> nan
    oh = lambda x: torch.nn.functional.one_hot(torch.from_numpy(x[:, 0]).long(), c).movedim(-1, 1).float()  # noqa: E731
    return oh(pred), oh(lab)


def test_include_background_and_reductions_like_dice_metric():
    y_pred, y = _multiclass_batch()
    full = compute_boundary_iou(y_pred, y)
    no_bg = compute_boundary_iou(y_pred, y, include_background=False)
    assert full.shape == (3, 3) and no_bg.shape == (3, 2)
    torch.testing.assert_close(no_bg, full[:, 1:], equal_nan=True)
    assert full[0, 2].item() == 0.0 and math.isnan(full[1, 2].item())

    expected = {
        "none": full,
        "mean": torch.nanmean(torch.nanmean(full, dim=1)),  # MONAI: mean over classes, then over items
        "sum": torch.nansum(full),
        "mean_batch": torch.nanmean(full, dim=0),
        "sum_batch": torch.nansum(full, dim=0),
        "mean_channel": torch.nanmean(full, dim=1),
        "sum_channel": torch.nansum(full, dim=1),
    }
    for reduction, value in expected.items():
        metric = BoundaryIoUMetric(reduction=reduction)
        metric(y_pred[:2], y[:2])  # accumulates over iterations, as the ignite handler does
        metric([y_pred[2]], [y[2]])
        out = metric.aggregate()
        torch.testing.assert_close(out.flatten(), value.flatten(), equal_nan=True)
        dice = DiceMetric(reduction=reduction)
        dice(y_pred, y)
        assert out.shape == dice.aggregate().shape, reduction
    metric = BoundaryIoUMetric(include_background=False, reduction="mean_batch", get_not_nans=True)
    metric(y_pred, y)
    value, not_nans = metric.aggregate()
    torch.testing.assert_close(value, torch.nanmean(full[:, 1:], dim=0))
    assert not_nans.tolist() == [3.0, 2.0]
    torch.testing.assert_close(metric.aggregate(reduction="none")[0], full[:, 1:], equal_nan=True)
    metric.reset()
    metric(y_pred[:1], y[:1])
    assert metric.get_buffer().shape == (1, 2)


def test_metric_class_default_band_matches_functional_3d():
    rng = np.random.RandomState(7)
    gt, pred = _blobs(rng, (12, 14, 10), 2), _blobs(rng, (12, 14, 10), 2)
    y, y_pred = _onehot(torch.from_numpy(gt)), _onehot(torch.from_numpy(pred))
    metric = BoundaryIoUMetric(include_background=False, reduction="none")
    metric(y_pred, y)
    torch.testing.assert_close(metric.aggregate(), compute_boundary_iou(y_pred, y, include_background=False))
    expected = [_ref_boundary_iou(pred[i], gt[i]) for i in range(2)]
    torch.testing.assert_close(metric.aggregate()[:, 0], torch.tensor(expected, dtype=torch.float32))


def test_ignite_handler_and_metrics_saver_per_image_csv(tmp_path):
    ignite_engine = pytest.importorskip("ignite.engine")
    from monai.handlers import IgniteMetricHandler, MetricsSaver, from_engine

    gt = torch.zeros(1, 14, 8)
    gt[0, 2:10, 2:6] = 1
    pred = torch.roll(gt, 1, dims=1)  # the anisotropic example above: 11/17 with spacing (1, 3) mm and d = 3 mm
    affine = torch.diag(torch.tensor([1.0, 3.0, 1.0, 1.0]))

    def step(engine, batch):
        return {
            "pred": [MetaTensor(torch.cat([1 - pred, pred]), affine=affine)],
            "label": [MetaTensor(torch.cat([1 - gt, gt]), affine=affine)],
        }

    evaluator = ignite_engine.Engine(step)
    metric = BoundaryIoUMetric(include_background=False, distance=3.0, use_meta_spacing=True)
    IgniteMetricHandler(
        metric_fn=metric, output_transform=from_engine(["pred", "label"]), save_details=True
    ).attach(evaluator, "val_boundary_iou")
    MetricsSaver(
        save_dir=str(tmp_path), metrics="*", metric_details="*", batch_transform=lambda b: [{"filename_or_obj": "a"}]
    ).attach(evaluator)
    evaluator.run([0], max_epochs=1)
    assert evaluator.state.metrics["val_boundary_iou"] == pytest.approx(11.0 / 17.0)
    rows = (tmp_path / "val_boundary_iou_raw.csv").read_text().splitlines()
    assert rows[0] == "filename,class0,mean" and rows[1].startswith("a,0.64705")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("metric", ["euclidean", "chessboard", "taxicab"])
def test_cuda_matches_cpu(metric):
    rng = np.random.RandomState(11)
    gt, pred = _blobs(rng, (16, 18, 12), 2), _blobs(rng, (16, 18, 12), 2)
    y, y_pred = _onehot(torch.from_numpy(gt)), _onehot(torch.from_numpy(pred))
    spacing = (1.0, 1.0, 2.0) if metric == "euclidean" else None
    cpu = compute_boundary_iou(y_pred, y, distance_metric=metric, spacing=spacing)
    gpu = compute_boundary_iou(y_pred.cuda(), y.cuda(), distance_metric=metric, spacing=spacing)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu)


# ---------------------------------------------------------------- errors
def test_errors_say_what_is_allowed():
    with pytest.raises(ValueError, match="distance_metric"):
        BoundaryIoUMetric(distance_metric="hamming")
    with pytest.raises(ValueError, match="dilation_ratio"):
        BoundaryIoUMetric(dilation_ratio=0.0)
    with pytest.raises(ValueError, match="distance"):
        BoundaryIoUMetric(distance=-1.0)
    with pytest.raises(ValueError, match="use_meta_spacing"):
        BoundaryIoUMetric(distance_metric="chessboard", use_meta_spacing=True)
    with pytest.raises(ValueError):
        BoundaryIoUMetric(reduction="median")
    a = torch.zeros(1, 2, 8, 8)
    with pytest.raises(ValueError, match="same shape"):
        compute_boundary_iou(a, torch.zeros(1, 2, 8, 9))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        compute_boundary_iou(torch.zeros(2, 8), torch.zeros(2, 8))
    with pytest.raises(ValueError, match="binary"):
        compute_boundary_iou(a + 0.5, a)
    with pytest.raises(ValueError, match="spacing"):
        compute_boundary_iou(a, a, distance_metric="taxicab", spacing=[1.0, 2.0])
    with pytest.raises(ValueError, match="smallest voxel spacing"):
        compute_boundary_iou(a, a, distance=0.5, spacing=[1.0, 2.0])
