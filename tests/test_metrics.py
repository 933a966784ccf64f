"""HD95 and surface Dice in mm, with the spacing read from each case's affine."""

from __future__ import annotations

import torch
from monai.data import MetaTensor
from monai.metrics import compute_hausdorff_distance, compute_surface_dice

from mamba_monai.metrics import HausdorffDistanceMMMetric, SurfaceDiceMMMetric, spacing_from_meta


def _pair(shift: int, axis: int):
    """One-hot (2 channels) cube and the same cube shifted by ``shift`` voxels along ``axis``."""
    y = torch.zeros(2, 12, 12, 12)
    y[1, 3:7, 3:7, 3:7] = 1
    p = torch.roll(y[1:], shifts=shift, dims=axis + 1)
    return torch.cat([1 - p, p]), torch.cat([1 - y[1:], y[1:]])


def test_hd95_uses_each_cases_spacing():
    spacings = [(2.0, 1.0, 3.0), (0.5, 0.5, 0.5)]
    preds, labels = [], []
    for sp in spacings:
        p, y = _pair(shift=1, axis=2)
        affine = torch.diag(torch.tensor([*sp, 1.0]))
        preds.append(MetaTensor(p, affine=affine))
        labels.append(MetaTensor(y, affine=affine))
    metric = HausdorffDistanceMMMetric()
    metric(preds, labels)
    per_case = metric.get_buffer().flatten()
    expected = [
        compute_hausdorff_distance(p[None], y[None], percentile=95, spacing=list(sp)).item()
        for p, y, sp in zip(preds, labels, spacings)
    ]
    torch.testing.assert_close(per_case, torch.tensor(expected))
    assert per_case.tolist() == [3.0, 0.5]  # a one-voxel shift along the third axis, in mm


def test_surface_dice_uses_spacing_and_plain_tensors_fall_back_to_voxels():
    p, y = _pair(shift=1, axis=0)
    affine = torch.diag(torch.tensor([3.0, 1.0, 1.0, 1.0]))
    metric = SurfaceDiceMMMetric(class_thresholds=[2.0])
    metric([MetaTensor(p, affine=affine)], [MetaTensor(y, affine=affine)])
    in_mm = metric.aggregate().item()
    ref = compute_surface_dice(p[None], y[None], class_thresholds=[2.0], spacing=[3.0, 1.0, 1.0]).item()
    assert abs(in_mm - ref) < 1e-6
    voxels = SurfaceDiceMMMetric(class_thresholds=[2.0])
    voxels([p], [y])
    # a 3 mm shift is outside the 2 mm tolerance, a 1 voxel shift is inside 2 voxels
    assert in_mm < voxels.aggregate().item() == 1.0


def test_spacing_from_meta():
    x = MetaTensor(torch.zeros(1, 1, 4, 4, 4), affine=torch.diag(torch.tensor([0.8, 0.9, 2.5, 1.0])))
    torch.testing.assert_close(torch.tensor(spacing_from_meta(x)), torch.tensor([[0.8, 0.9, 2.5]]))
    assert spacing_from_meta(torch.zeros(1, 1, 4, 4, 4)) is None
