from __future__ import annotations

import logging
import os

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd, Orientationd, RandCropByPosNegLabeld, SqueezeDimd

from mamba_monai.data import (
    DEMO_MRI_CONTRASTS,
    DropContrastsd,
    LoadMRIContrastsd,
    RandDropContrastsd,
    RestoreIntensityd,
    ScaleIntensityPercentiled,
    canonical_contrast,
    ensure_demo_mri_dataset,
    find_mri_cases,
    generate_demo_mri_case,
    make_affine,
    restore_intensity,
    select_mri_cases,
    split_mri_cases,
    write_nifti,
)
from mamba_monai.data.demo_mri import _case_geometry

SMALL = {"num_train": 2, "num_val": 1, "num_test": 3, "size_scale": 0.35}
INPUTS = ["t1", "t1ce", "t2"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("demo_mri"))
    ensure_demo_mri_dataset(root, **SMALL)
    return root


@pytest.fixture(scope="module")
def physics_case():
    return generate_demo_mri_case(1, seed=0, size_scale=0.5)


def _mtimes(root):
    return {
        os.path.join(f, n): os.path.getmtime(os.path.join(f, n))
        for f, _, names in os.walk(root)
        for n in names
        if n.endswith(".nii.gz")
    }


# ----------------------------------------------------------------------------------------------------- demo data


def test_demo_case_is_deterministic():
    a = generate_demo_mri_case(2, seed=5, size_scale=0.3)
    b = generate_demo_mri_case(2, seed=5, size_scale=0.3)
    c = generate_demo_mri_case(2, seed=6, size_scale=0.3)
    for name in DEMO_MRI_CONTRASTS:
        np.testing.assert_array_equal(a.images[name], b.images[name])
        assert a.images[name].dtype == np.int16
        assert not np.array_equal(a.images[name], c.images[name])
    np.testing.assert_array_equal(a.seg, b.seg)
    np.testing.assert_array_equal(a.affine, b.affine)
    assert set(np.unique(a.seg)) <= {0, 1, 2, 4}


def test_demo_default_geometry():
    for index in range(6):
        shape, affine = _case_geometry(np.random.default_rng([0, index, 2018]), index, 1.0)
        assert 96 <= shape[0] <= 128 and 96 <= shape[1] <= 128 and 60 <= shape[2] <= 80, shape
        spacing = np.linalg.norm(affine[:3, :3], axis=0)
        assert spacing[2] > spacing[0] * 1.2  # anisotropic: thicker slices
        assert not np.allclose(affine, np.eye(4))
        assert (np.diag(affine)[:2] < 0).all() == (index % 3 != 1)  # LPS voxel order except every third case
    # the field of view stays the same at another size_scale
    shape_s, affine_s = _case_geometry(np.random.default_rng([0, 0, 2018]), 0, 0.5)
    shape_1, affine_1 = _case_geometry(np.random.default_rng([0, 0, 2018]), 0, 1.0)
    fov = lambda s, a: np.array(s) * np.linalg.norm(a[:3, :3], axis=0)  # noqa: E731
    np.testing.assert_allclose(fov(shape_s, affine_s), fov(shape_1, affine_1), rtol=1e-6)


def _ratio(case, contrast, tissue):
    """Median intensity of a tissue relative to white matter (gains differ per contrast, ratios do not)."""
    img = case.images[contrast].astype(np.float64)
    return np.median(img[case.tissue == tissue]) / np.median(img[case.tissue == 3])


def test_demo_contrasts_follow_the_physics(physics_case):
    case = physics_case
    csf, gm, edema, rim = 1, 2, 5, 7
    for tissue in (csf, gm, edema, rim):
        assert (case.tissue == tissue).sum() > 20, tissue
    # T1-weighted spin echo: WM > GM > CSF, lesion hypointense
    assert 1.0 > _ratio(case, "t1", gm) > _ratio(case, "t1", csf)
    assert _ratio(case, "t1", csf) < 0.6
    assert _ratio(case, "t1", edema) < _ratio(case, "t1", gm)
    # T2-weighted: CSF > oedema > GM > WM
    assert _ratio(case, "t2", csf) > _ratio(case, "t2", edema) > _ratio(case, "t2", gm) > 1.0
    # FLAIR nulls CSF, keeps oedema bright
    assert _ratio(case, "flair", csf) < 0.35
    assert _ratio(case, "flair", edema) > 1.3 * _ratio(case, "flair", gm)
    # gadolinium: the rim enhances on T1ce (brighter than WM), not on T1
    assert _ratio(case, "t1", rim) < 1.0
    assert _ratio(case, "t1ce", rim) > 1.3
    assert _ratio(case, "t1ce", rim) > 1.5 * _ratio(case, "t1", rim)
    # tumour labels sit on the lesion tissue
    assert (case.seg[case.tissue == rim] == 4).all() and (case.seg[case.tissue == edema] == 2).all()
    # skull-stripped: exactly 0 outside the brain, positive (noisy) inside
    for name in DEMO_MRI_CONTRASTS:
        img = case.images[name]
        assert (img[case.tissue == 0] == 0).all()
        assert (img[case.tissue == 3] > 0).mean() > 0.99


def test_demo_dataset_layout(demo):
    names = {"train": ["mri_000", "mri_001"], "val": ["mri_002"], "test": ["mri_003", "mri_004", "mri_005"]}
    for split, cases in names.items():
        assert sorted(os.listdir(os.path.join(demo, split))) == cases
    present = {c["case"]: set(c) - {"case", "layout"} for c in find_mri_cases(os.path.join(demo, "test"))}
    assert present == {
        "mri_003": {"t1", "t1ce", "flair"},  # no t2: a missing input
        "mri_004": {"t1", "t1ce", "t2"},  # no flair: a missing target
        "mri_005": {"t1", "t1ce", "t2", "flair"},
    }
    imgs = [nib.load(os.path.join(demo, "train", "mri_000", f"mri_000_{c}.nii.gz")) for c in DEMO_MRI_CONTRASTS]
    for img in imgs:
        assert img.get_data_dtype() == np.int16
        np.testing.assert_allclose(img.affine, imgs[0].affine)
        assert img.shape == imgs[0].shape
    # what is on disk is the generator's output for that case index
    expected = generate_demo_mri_case(0, seed=0, size_scale=SMALL["size_scale"])
    np.testing.assert_array_equal(np.asarray(imgs[0].dataobj), expected.images["t1"])
    np.testing.assert_allclose(imgs[0].affine, expected.affine, atol=1e-4)
    seg = nib.load(os.path.join(demo, "train", "mri_000", "mri_000_seg.nii.gz"))
    assert seg.get_data_dtype() == np.uint8


def test_demo_dataset_rerun_and_resize(tmp_path):
    root = str(tmp_path / "d")
    params = {"num_train": 2, "num_val": 0, "num_test": 0, "size_scale": 0.3}
    ensure_demo_mri_dataset(root, **params)
    before = _mtimes(root)
    ensure_demo_mri_dataset(root, **params)
    assert _mtimes(root) == before  # complete: untouched
    ensure_demo_mri_dataset(root, num_train=1, num_val=1, num_test=0, size_scale=0.3)
    assert os.listdir(os.path.join(root, "train")) == ["mri_000"]  # mri_001 moved to val: no stale copy
    assert os.listdir(os.path.join(root, "val")) == ["mri_001"]
    assert [c["case"] for c in find_mri_cases(root)] == ["mri_000", "mri_001"]


def test_demo_dataset_refuses_foreign_folder(tmp_path):
    case = tmp_path / "train" / "BraTS2021_00000"
    write_nifti(np.ones((4, 4, 4), np.int16), np.eye(4), case / "BraTS2021_00000_t1.nii.gz")
    with pytest.raises(FileExistsError, match="not written by"):
        ensure_demo_mri_dataset(str(tmp_path), num_train=1, num_val=0, num_test=0, size_scale=0.3)
    assert os.listdir(case) == ["BraTS2021_00000_t1.nii.gz"]
    with pytest.raises(ValueError, match="drop_in_test"):
        ensure_demo_mri_dataset(str(tmp_path / "x"), drop_in_test=("pd",))


# ----------------------------------------------------------------------------------------------------- discovery


def _vol(path, shape=(6, 7, 5), affine=None, value=1.0):
    arr = np.full(shape, value, dtype=np.float32)
    return write_nifti(arr, np.eye(4) if affine is None else affine, path)


def test_find_brats2021(tmp_path):
    for cid in ("BraTS2021_00002", "BraTS2021_00000"):
        for c in ("t1", "t1ce", "t2", "flair", "seg"):
            if cid.endswith("2") and c == "t1ce":
                continue
            _vol(tmp_path / "BraTS2021_Training_Data" / cid / f"{cid}_{c}.nii.gz")
    _vol(tmp_path / "BraTS2021_Training_Data" / "BraTS2021_00000" / ".BraTS2021_00000_t1.nii.gz.tmp.nii.gz")
    (tmp_path / "notes_t1.txt").write_text("not an image")
    cases = find_mri_cases(tmp_path)  # the folder above the data: searched recursively
    assert [c["case"] for c in cases] == ["BraTS2021_00000", "BraTS2021_00002"]
    assert list(cases[0]) == ["case", "layout", "t1", "t1ce", "t2", "flair"]
    assert cases[0]["layout"] == "brats2021"
    assert cases[0]["t1ce"] == str(tmp_path / "BraTS2021_Training_Data/BraTS2021_00000/BraTS2021_00000_t1ce.nii.gz")
    assert "t1ce" not in cases[1]
    with_seg = find_mri_cases(tmp_path, contrasts=["T1", "FLAIR"], include_seg=True)
    assert set(with_seg[1]) == {"case", "layout", "t1", "flair", "seg"}
    # a second copy of a file is an error that names both
    _vol(tmp_path / "BraTS2021_Training_Data" / "BraTS2021_00000" / "BraTS2021_00000_t2.nii")
    with pytest.raises(ValueError, match="two 't2' files"):
        find_mri_cases(tmp_path)


def test_find_brats2023(tmp_path):
    cid = "BraTS-GLI-00000-000"
    for suffix in ("t1n", "t1c", "t2w", "t2f", "seg"):
        _vol(tmp_path / cid / f"{cid}-{suffix}.nii.gz")
    (cases,) = find_mri_cases(tmp_path)
    assert cases["case"] == cid and cases["layout"] == "brats2023"
    assert cases["t1"].endswith("-t1n.nii.gz") and cases["t1ce"].endswith("-t1c.nii.gz")
    assert cases["t2"].endswith("-t2w.nii.gz") and cases["flair"].endswith("-t2f.nii.gz")
    assert canonical_contrast("t2f") == "flair" and canonical_contrast("T1c") == "t1ce"
    with pytest.raises(ValueError, match="Unknown MRI contrast"):
        canonical_contrast("dwi")


def _ixi_tree(root):
    """IXI as distributed: T1 sagittal (its own grid), T2 and PD axial on another grid; MRA ignored."""
    shapes = {"T1": (64, 70, 40), "T2": (66, 72, 40), "PD": (66, 72, 40)}
    # T1: array axes run anterior, superior, right (a sagittal stack of 1.2 mm slices), centred at the origin
    t1_aff = np.eye(4)
    t1_aff[:3, :3] = np.array([[0.0, 0.0, 1.2], [0.94, 0.0, 0.0], [0.0, 0.94, 0.0]])
    t1_aff[:3, 3] = -t1_aff[:3, :3] @ ((np.array(shapes["T1"]) - 1) / 2.0)
    # T2 / PD: axial, LPS voxel order, slightly oblique, shifted
    ax_aff = make_affine((0.94, 0.94, 1.2), rotation_deg=(4, 0, 2), flip=(True, True, False))
    ax_aff[:3, 3] = np.array([2.0, 1.0, -3.0]) - ax_aff[:3, :3] @ ((np.array(shapes["T2"]) - 1) / 2.0)
    affines = {"T1": t1_aff, "T2": ax_aff, "PD": ax_aff}
    for subject, mods in (("IXI002-Guys-0828", ("T1", "T2", "PD", "MRA")), ("IXI012-HH-1211", ("T1", "PD"))):
        for mod in mods:
            aff = affines.get(mod, ax_aff)
            shape = shapes.get(mod, (10, 10, 10))
            idx = np.indices(shape).reshape(3, -1)
            world = aff[:3, :3] @ idx + aff[:3, 3:4]
            values = (200.0 + world[0] + 2.0 * world[1] + 3.0 * world[2]).reshape(shape)  # linear in world mm
            write_nifti(values.astype(np.float32), aff, os.path.join(root, f"IXI-{mod}", f"{subject}-{mod}.nii.gz"))
    return affines, shapes


def test_find_ixi(tmp_path):
    _ixi_tree(tmp_path)
    cases = find_mri_cases(tmp_path)
    assert [(c["case"], c["layout"]) for c in cases] == [("IXI002-Guys-0828", "ixi"), ("IXI012-HH-1211", "ixi")]
    assert set(cases[0]) == {"case", "layout", "t1", "t2", "pd"}
    assert cases[0]["t2"] == str(tmp_path / "IXI-T2" / "IXI002-Guys-0828-T2.nii.gz")
    assert set(cases[1]) == {"case", "layout", "t1", "pd"}
    with pytest.raises(FileNotFoundError, match="No MRI case found"):
        find_mri_cases(tmp_path / "IXI-MRA")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_mri_cases(tmp_path / "nowhere")


def test_split_skips_cases_without_target_or_inputs(demo, caplog, tmp_path):
    cases = find_mri_cases(os.path.join(demo, "test"))
    with caplog.at_level(logging.WARNING, logger="mamba_monai.data.mri"):
        kept, skipped = split_mri_cases(cases, INPUTS, "flair")
    assert [c["case"] for c in kept] == ["mri_003", "mri_005"]  # mri_003 lacks t2 (an input): kept
    assert [s["case"] for s in skipped] == ["mri_004"]
    missing = os.path.join(demo, "test", "mri_004", "mri_004_flair.nii.gz")
    assert any("mri_004" in r.getMessage() and missing in r.getMessage() for r in caplog.records)
    # inference (no target): every case with an input is kept
    assert len(select_mri_cases(cases, INPUTS)) == 3
    # no input at all, or a stale path: skipped with the reason
    only_flair = {"case": "x", "layout": "brats2021", "flair": cases[0]["flair"]}
    stale = dict(cases[2], t1=str(tmp_path / "gone_t1.nii.gz"))
    kept, skipped = split_mri_cases([only_flair, stale], ["t1", "t2"], "flair")
    assert not kept
    assert "none of the input contrasts" in skipped[0]["reason"] and "x_t1.nii.gz" in skipped[0]["reason"]
    assert "gone_t1.nii.gz" in skipped[1]["reason"]
    with pytest.raises(ValueError, match="also one of the `inputs`"):
        split_mri_cases(cases, ["t1", "flair"], "flair")


# ------------------------------------------------------------------------------------------------------- loading


def test_load_zero_fills_and_masks_missing_inputs(demo):
    case = next(c for c in find_mri_cases(os.path.join(demo, "test")) if c["case"] == "mri_003")  # no t2
    out = LoadMRIContrastsd(INPUTS, target="flair")(case)
    img, mask, target = out["image"], out["mask"], out["target"]
    assert isinstance(img, MetaTensor) and img.dtype == torch.float32
    assert img.shape[0] == 3 and img.shape[1:] == target.shape[1:] and target.shape[0] == 1
    np.testing.assert_array_equal(mask.numpy(), [1.0, 1.0, 0.0])
    assert float(img[2].abs().max()) == 0.0
    for i, c in enumerate(["t1", "t1ce"]):  # same grid as the target: loaded as they are
        np.testing.assert_array_equal(img[i].numpy(), np.asarray(nib.load(case[c]).dataobj, dtype=np.float32))
    np.testing.assert_allclose(img.affine.numpy(), nib.load(case["flair"]).affine, atol=1e-4)
    assert img.meta["filename_or_obj"] == case["flair"]

    no_target = next(c for c in find_mri_cases(os.path.join(demo, "test")) if c["case"] == "mri_004")
    with pytest.raises(ValueError, match="mri_004.*no target 'flair'"):
        LoadMRIContrastsd(INPUTS, target="flair")(no_target)
    out = LoadMRIContrastsd(INPUTS, target="flair", allow_missing_target=True)(no_target)
    assert "target" not in out and out["image"].meta["filename_or_obj"] == no_target["t1"]  # first input's grid
    with pytest.raises(ValueError, match="none of the input contrasts"):
        LoadMRIContrastsd(["t2"], target="flair")(case)
    with pytest.raises(ValueError, match="also one of the input"):
        LoadMRIContrastsd(["t1", "flair"], target="flair")


def _world(img: MetaTensor) -> np.ndarray:
    aff = img.affine.numpy()
    idx = np.indices(img.shape[1:]).reshape(3, -1)
    return (aff[:3, :3] @ idx + aff[:3, 3:4]).reshape(3, *img.shape[1:])


def test_ixi_contrasts_are_resampled_onto_the_reference_grid(tmp_path):
    affines, shapes = _ixi_tree(tmp_path)
    case = find_mri_cases(tmp_path)[0]
    out = LoadMRIContrastsd(["t2", "pd"], target="t1")(case)
    img = out["image"]
    assert tuple(img.shape) == (2, *shapes["T1"])
    assert tuple(out["target"].shape[1:]) == shapes["T1"]
    np.testing.assert_allclose(img.affine.numpy(), affines["T1"], atol=1e-5)
    np.testing.assert_array_equal(out["mask"].numpy(), [1.0, 1.0])
    # the source volumes are linear in world coordinates: trilinear resampling reproduces them exactly inside
    # their field of view (checked against the analytic value at each reference voxel), zeros outside
    x, y, z = _world(img)
    expected = 200.0 + x + 2.0 * y + 3.0 * z
    inside_src = np.linalg.inv(affines["T2"]) @ np.stack([x.ravel(), y.ravel(), z.ravel(), np.ones(x.size)])
    lo, hi = np.zeros(3) + 0.01, np.array(shapes["T2"]) - 1.01
    inside = ((inside_src[:3].T >= lo) & (inside_src[:3].T <= hi)).all(axis=1).reshape(x.shape)
    assert 0.2 < inside.mean() < 1.0  # partly overlapping fields of view
    np.testing.assert_allclose(img[0].numpy()[inside], expected[inside], atol=0.05)
    outside = ((inside_src[:3].T < -1.0) | (inside_src[:3].T > np.array(shapes["T2"]))).any(axis=1).reshape(x.shape)
    assert outside.any() and float(np.abs(img[0].numpy()[outside]).max()) == 0.0
    # without the target, the reference is the first available input (t2's axial grid)
    no_t1 = {k: v for k, v in case.items() if k != "t1"}
    out = LoadMRIContrastsd(["t2", "pd"], target="t1", allow_missing_target=True)(no_t1)
    assert tuple(out["image"].shape[1:]) == shapes["T2"]
    np.testing.assert_allclose(out["image"].affine.numpy(), affines["T2"], atol=1e-5)


# ----------------------------------------------------------------------------------------------------- intensity


def test_percentile_scaling_and_its_inverse_round_trip():
    rng = np.random.default_rng(0)
    vol = np.zeros((2, 12, 13, 9), dtype=np.float32)
    vol[0, 2:10, 2:11, 1:8] = rng.gamma(4.0, 250.0, size=(8, 9, 7))  # a "brain" in a zero background
    # channel 1: a zero-filled missing input
    affine = make_affine((1.0, 1.0, 2.0), flip=(True, True, False))
    img = MetaTensor(torch.as_tensor(vol), affine=torch.as_tensor(affine))
    t = ScaleIntensityPercentiled(["image"], percentile=99.5)
    out = t({"image": img})
    brain = vol[0][vol[0] > 0]
    np.testing.assert_allclose(out["image_scale"].numpy(), [np.percentile(brain, 99.5), 1.0], rtol=1e-6)
    assert float(out["image"].max()) <= 1.0 and float(out["image"].min()) >= 0.0
    assert float(out["image"][1].abs().max()) == 0.0
    below = vol[0] < np.percentile(brain, 99.5)  # not clipped
    back = restore_intensity(out["image"], out["image_scale"])
    np.testing.assert_allclose(back[0].numpy()[below], vol[0][below], rtol=1e-5)
    # the transform's own inverse (used by Invertd) and RestoreIntensityd agree
    inv = t.inverse(out)["image"]
    np.testing.assert_allclose(inv.numpy(), back.numpy(), rtol=1e-6)
    restore = RestoreIntensityd("pred", scale_key="image_scale")
    restored = restore({"pred": out["image"], "image_scale": out["image_scale"]})
    np.testing.assert_allclose(restored["pred"].numpy(), back.numpy(), rtol=1e-6)
    # batched form: (B, C, ...) with scales (B, C)
    batch = restore_intensity(torch.stack([out["image"].as_tensor()] * 2), torch.stack([out["image_scale"]] * 2))
    np.testing.assert_allclose(batch[1].numpy(), back.numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="does not match"):
        restore_intensity(torch.zeros(2, 4, 4), torch.ones(3))
    with pytest.raises(KeyError, match="default_scale"):
        RestoreIntensityd("pred")({"pred": torch.zeros(1, 2, 2)})
    np.testing.assert_allclose(
        RestoreIntensityd("pred", default_scale=7.0)({"pred": torch.ones(1, 2, 2)})["pred"].numpy(), 7.0
    )


def test_invertd_restores_the_target_scale_and_grid(demo):
    case = find_mri_cases(os.path.join(demo, "val"))[0]
    pre = Compose(
        [
            LoadMRIContrastsd(INPUTS, target="flair"),
            Orientationd(["image", "target"], axcodes="RAS", labels=None),
            ScaleIntensityPercentiled(["image", "target"]),
        ]
    )
    d = pre(case)
    assert d["target"].affine[0, 0] > 0  # reoriented (the file is LPS)
    d["pred"] = d["target"].clone()  # a perfect synthesis
    d = Invertd("pred", transform=pre, orig_keys="target", nearest_interp=False)(d)
    original = np.asarray(nib.load(case["flair"]).dataobj, dtype=np.float32)
    below = original < float(d["target_scale"][0])
    np.testing.assert_allclose(d["pred"][0].numpy()[below], original[below], rtol=1e-5, atol=1e-3)


def test_axial_slice_pipeline_for_2d_training(demo):
    case = find_mri_cases(os.path.join(demo, "train"))[0]
    pipeline = Compose(
        [
            LoadMRIContrastsd(INPUTS, target="flair"),
            Orientationd(["image", "target"], axcodes="RAS", labels=None),
            ScaleIntensityPercentiled(["image", "target"]),
            RandCropByPosNegLabeld(
                ["image", "target"], label_key="target", spatial_size=[-1, -1, 1], pos=1, neg=0, num_samples=4
            ),
            SqueezeDimd(["image", "target"], dim=-1),
        ]
    )
    pipeline.set_random_state(0)
    samples = pipeline(case)
    assert len(samples) == 4
    for s in samples:
        assert s["image"].shape[0] == 3 and s["image"].ndim == 3 and s["target"].shape == (1, *s["image"].shape[1:])
        assert float(s["target"].sum()) > 0  # a slice through the brain
        assert s["image"].affine.shape == (3, 3)
        np.testing.assert_array_equal(s["mask"].numpy(), [1.0, 1.0, 1.0])


# ------------------------------------------------------------------------------------------------ hiding inputs


def test_rand_drop_keeps_a_nonempty_subset_and_never_revives_missing_inputs():
    img = torch.arange(1, 5, dtype=torch.float32).reshape(4, 1, 1).expand(4, 3, 3).clone()
    data = {"image": img, "mask": torch.tensor([1.0, 1.0, 0.0, 1.0])}
    data["image"][2] = 0
    t = RandDropContrastsd("image", prob=1.0)
    t.set_random_state(0)
    sizes = set()
    for _ in range(60):
        out = t(data)
        m = out["mask"].numpy()
        assert m[2] == 0 and 1 <= m.sum() <= 2  # at least one kept, at least one of the 3 available hidden
        for c in range(4):
            assert float(out["image"][c].abs().max()) == (c + 1.0 if m[c] else 0.0)
        sizes.add(int(m.sum()))
    assert sizes == {1, 2}
    np.testing.assert_array_equal(data["mask"].numpy(), [1, 1, 0, 1])  # the input dict is untouched
    assert float(data["image"][0, 0, 0]) == 1.0
    never = RandDropContrastsd("image", prob=0.0)(data)
    np.testing.assert_array_equal(never["mask"].numpy(), data["mask"].numpy())
    fixed = DropContrastsd("image", channels=[0, -1])(data)
    np.testing.assert_array_equal(fixed["mask"].numpy(), [0, 1, 0, 0])
    with pytest.raises(ValueError, match="out of range"):
        DropContrastsd("image", channels=[4])(data)


def test_usable_from_bundle_config(demo):
    config = {
        "dataset_dir": os.path.join(demo, "test"),
        "inputs": INPUTS,
        "target": "flair",
        "cases": "$mamba_monai.data.select_mri_cases(mamba_monai.data.find_mri_cases(@dataset_dir), @inputs, @target)",
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "mamba_monai.data.LoadMRIContrastsd", "keys": "@inputs", "target": "@target"},
                {"_target_": "mamba_monai.data.ScaleIntensityPercentiled", "keys": ["image", "target"]},
                {"_target_": "mamba_monai.data.RandDropContrastsd", "keys": "image", "prob": 0.5},
            ],
        },
    }
    parser = ConfigParser(config, globals={"mamba_monai": "mamba_monai"})
    cases = parser.get_parsed_content("cases")
    assert [c["case"] for c in cases] == ["mri_003", "mri_005"]
    out = parser.get_parsed_content("preprocessing")(cases[0])
    assert out["image"].shape[0] == 3 and out["mask"].shape == (3,) and out["target_scale"].shape == (1,)
