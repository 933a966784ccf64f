from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor, load_decathlon_datalist
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

from mamba_monai.data import (
    DEMO_CT_LABELS,
    ImageReadError,
    SafeLoadImaged,
    ValidateImaged,
    ValidateLabelsd,
    datalist_from_folder,
    ensure_demo_ct_dataset,
    filter_readable,
    generate_demo_ct_case,
    load_datalist,
    make_affine,
    write_datalist,
    write_nifti,
)
from mamba_monai.data.demo_ct import _case_geometry

SMALL = {"num_train": 2, "num_val": 1, "num_test": 1, "size_scale": 0.5}


@pytest.fixture(scope="module")
def small_ds(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo_ct")
    return str(root), ensure_demo_ct_dataset(str(root), **SMALL)


def _write_truncated(path, shape=(9, 10, 11)):
    write_nifti(np.arange(np.prod(shape), dtype=np.float32).reshape(shape), np.eye(4), path)
    raw = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(raw[: len(raw) // 2])
    return str(path)


# ---------------------------------------------------------------------------------------------------------- nifti


def test_make_affine_geometry():
    aff = make_affine((0.8, 0.8, 2.5), rotation_deg=(10, 0, 5), origin=(1, 2, 3), flip=(True, True, False))
    lin = aff[:3, :3]
    np.testing.assert_allclose(np.linalg.norm(lin, axis=0), [0.8, 0.8, 2.5])
    np.testing.assert_allclose(aff[:3, 3], [1, 2, 3])
    rot = lin / np.array([0.8, 0.8, 2.5])
    np.testing.assert_allclose(rot.T @ rot, np.eye(3), atol=1e-12)
    assert np.linalg.det(rot) == pytest.approx(1.0)  # two flips: a proper rotation
    np.testing.assert_allclose(np.diag(make_affine((1, 2, 3), flip=(True, False, False)))[:3], [-1, 2, 3])
    np.testing.assert_allclose(np.diag(make_affine((0.5, 0.7))), [0.5, 0.7, 1.0, 1.0])  # 2D
    with pytest.raises(ValueError, match="spacing"):
        make_affine((1.0, -1.0, 1.0))


def test_write_nifti_roundtrip(tmp_path):
    aff = make_affine((0.9, 0.9, 2.7), rotation_deg=(8, 0, 0), origin=(40, 30, -500), flip=(True, True, False))
    arr = (np.arange(6 * 7 * 5) - 100).reshape(6, 7, 5)
    path = write_nifti(arr, aff, tmp_path / "a.nii.gz", dtype=np.int16)
    img = nib.load(path)
    assert img.get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asarray(img.dataobj), arr)
    np.testing.assert_allclose(img.affine, aff, atol=1e-4)
    np.testing.assert_allclose(img.get_qform(), aff, atol=1e-4)
    assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 1
    np.testing.assert_allclose(img.header.get_zooms(), (0.9, 0.9, 2.7), rtol=1e-6)
    assert os.listdir(tmp_path) == ["a.nii.gz"]  # no temporary file left behind
    with pytest.raises(ValueError, match="must end with"):
        write_nifti(arr, aff, tmp_path / "a.nrrd")


# --------------------------------------------------------------------------------------------------------- demo CT


def test_generation_is_deterministic():
    a = generate_demo_ct_case(1, seed=0, size_scale=0.4)
    b = generate_demo_ct_case(1, seed=0, size_scale=0.4)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    c = generate_demo_ct_case(1, seed=1, size_scale=0.4)
    assert a[0].shape != c[0].shape or not np.array_equal(a[0], c[0])
    assert a[0].dtype == np.int16 and a[1].dtype == np.uint8


def test_default_geometry_ranges():
    """The default (size_scale=1) grids, read off without generating the volumes."""
    flips, rotated = set(), 0
    for index in range(12):
        shape, aff = _case_geometry(np.random.default_rng([0, index, 2024]), index, 1.0)
        spacing = np.linalg.norm(aff[:3, :3], axis=0)
        assert all(s % 32 for s in shape), shape
        assert spacing[0] == pytest.approx(spacing[1]) and 0.8 <= spacing[0] <= 1.0 and 2.5 <= spacing[2] <= 3.0
        resampled = np.array(shape) * spacing / np.array([1.5, 1.5, 2.0])
        assert np.all(resampled[:2] >= 55) and np.all(resampled[:2] <= 100) and 55 <= resampled[2] <= 100
        rot = aff[:3, :3] / spacing
        flips.add(tuple(np.sign(np.diag(rot)).astype(int)))
        rotated += not np.allclose(np.abs(rot), np.eye(3))
    assert len(flips) >= 3 and rotated >= 2


def test_dataset_files_geometry_labels_hu(small_ds):
    root, datalist = small_ds
    assert datalist == os.path.join(root, "dataset_0.json")
    content = json.load(open(datalist))
    assert content["labels"] == {str(k): v for k, v in DEMO_CT_LABELS.items()}
    assert [len(content[k]) for k in ("training", "validation", "test", "test_labeled")] == [2, 1, 1, 1]
    assert "label" not in content["test"][0] and not os.path.isabs(content["training"][0]["image"])
    flips = set()
    for item in content["training"] + content["validation"] + content["test_labeled"]:
        img = nib.load(os.path.join(root, item["image"]))
        lab = nib.load(os.path.join(root, item["label"]))
        assert img.get_data_dtype() == np.int16 and lab.get_data_dtype() == np.uint8
        assert img.shape == lab.shape and np.allclose(img.affine, lab.affine)
        assert not np.allclose(img.affine, np.eye(4)) and np.abs(img.affine[:3, 3]).max() > 100  # scanner origin
        flips.add(tuple(np.sign(np.diag(img.affine)[:3]).astype(int)))
        zooms = np.array(img.header.get_zooms())
        np.testing.assert_allclose(zooms, np.linalg.norm(img.affine[:3, :3], axis=0), rtol=1e-5)
        assert zooms[2] > 2.5 * zooms[0]  # anisotropic
        hu = np.asarray(img.dataobj)
        lb = np.asarray(lab.dataobj)
        assert set(np.unique(lb)) == set(DEMO_CT_LABELS)  # every class, the small ones included
        assert np.median(hu[:3, :3, :]) < -900  # air in the corners
        assert 35 < np.median(hu[lb == 1]) < 90  # liver
        assert 20 < np.median(hu[lb == 2]) < 80  # spleen
        assert 140 < np.median(hu[lb == 4]) < 280  # aorta (contrast)
        assert hu.max() > 450 and hu.min() >= -1024  # bone, air
        # the liver lies on the patient's right (+x in RAS world), the spleen on the left
        ijk = lambda k: np.argwhere(lb == k).mean(axis=0)  # noqa: E731
        world = lambda v: img.affine[:3, :3] @ v + img.affine[:3, 3]  # noqa: E731
        assert world(ijk(1))[0] > world(ijk(2))[0]
    assert len(flips) >= 2  # LPS- and RAS-ordered voxels both occur


def test_rerun_is_noop_and_interrupted_write_is_redone(tmp_path):
    root = str(tmp_path / "ds")
    params = {"num_train": 1, "num_val": 0, "num_test": 1, "size_scale": 0.3}
    path = ensure_demo_ct_dataset(root, **params)
    image = os.path.join(root, "imagesTr", "ct_000.nii.gz")
    mtimes = {p: os.stat(p).st_mtime_ns for p in (path, image)}
    data0 = np.asarray(nib.load(image).dataobj)
    assert ensure_demo_ct_dataset(root, **params) == path
    assert {p: os.stat(p).st_mtime_ns for p in (path, image)} == mtimes

    # interrupted: marker missing and a truncated image -> everything rewritten, identical content
    os.remove(os.path.join(root, ".complete"))
    _write_truncated(image)
    ensure_demo_ct_dataset(root, **params)
    assert os.path.exists(os.path.join(root, ".complete"))
    np.testing.assert_array_equal(np.asarray(nib.load(image).dataobj), data0)

    # other parameters -> regenerated, stale cases removed
    ensure_demo_ct_dataset(root, num_train=1, num_val=0, num_test=0, size_scale=0.3)
    assert os.listdir(os.path.join(root, "imagesTs")) == []
    assert "test" in json.load(open(path)) and json.load(open(path))["test"] == []


def test_refuses_foreign_folder(tmp_path):
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "imagesTr" / "patient1.nii.gz").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="patient1"):
        ensure_demo_ct_dataset(str(tmp_path), num_train=1, num_val=0, num_test=0, size_scale=0.3)


def _worker(root, queue, writes):
    import mamba_monai.data.demo_ct as demo_ct

    write = demo_ct._write_dataset

    def counted(*args):
        with writes.get_lock():
            writes.value += 1
        return write(*args)

    demo_ct._write_dataset = counted
    queue.put(ensure_demo_ct_dataset(root, num_train=1, num_val=1, num_test=0, size_scale=0.3))


def test_concurrent_callers(tmp_path):
    """Two ranks at once: the lock lets one write, the other waits and then finds the set complete."""
    ctx = mp.get_context("fork")
    queue, writes = ctx.Queue(), ctx.Value("i", 0)
    procs = [ctx.Process(target=_worker, args=(str(tmp_path), queue, writes)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert {queue.get(timeout=5), queue.get(timeout=5)} == {os.path.join(str(tmp_path), "dataset_0.json")}
    assert writes.value == 1
    items = load_datalist(os.path.join(str(tmp_path), "dataset_0.json"), "validation")
    good, errors = filter_readable(items, keys=("image", "label"))
    assert len(good) == 1 and not errors
    assert not [n for n in os.listdir(tmp_path / "imagesTr") if n.startswith(".")]


# -------------------------------------------------------------------------------------------------------- datalist


def test_datalist_resolves_with_monai(small_ds, tmp_path, monkeypatch):
    root, datalist = small_ds
    monkeypatch.chdir(tmp_path)  # relative paths must resolve against the datalist folder, not the cwd
    for key in ("training", "validation", "test", "test_labeled"):
        items = load_decathlon_datalist(datalist, True, key)
        assert items and all(os.path.isfile(i["image"]) for i in items)
        assert load_datalist(datalist, key) == items
    data = Compose([LoadImaged(("image", "label")), EnsureChannelFirstd(("image", "label"))])(
        load_datalist(datalist, "training")[0]
    )
    assert data["image"].shape[0] == 1 and data["image"].shape == data["label"].shape
    assert data["image"].meta["pixdim"][3] > 2.5 * data["image"].meta["pixdim"][1]


def test_load_datalist_errors(small_ds, tmp_path):
    root, datalist = small_ds
    with pytest.raises(FileNotFoundError, match="dataset_dir"):
        load_datalist(tmp_path / "nope.json", "training")
    with pytest.raises(ValueError, match=r"no list 'train'.*'training'"):
        load_datalist(datalist, "train")
    with pytest.raises(FileNotFoundError) as err:
        load_datalist(datalist, "training", base_dir=str(tmp_path))
    msg = str(err.value)
    assert "ct_000.nii.gz" in msg and datalist in msg and "dataset_dir" in msg and "4 file(s)" in msg


def test_write_datalist_and_folder_scan(tmp_path):
    for name in ("b.nii.gz", "a.nii.gz", ".tmp.nii.gz", "notes.txt"):
        (tmp_path / "imagesTs").mkdir(exist_ok=True)
        (tmp_path / "imagesTs" / name).write_bytes(b"")
    (tmp_path / "labelsTs").mkdir()
    (tmp_path / "labelsTs" / "b.nii.gz").write_bytes(b"")
    items = datalist_from_folder(tmp_path / "imagesTs", label_dir=tmp_path / "labelsTs")
    assert [os.path.basename(i["image"]) for i in items] == ["a.nii.gz", "b.nii.gz"]
    assert "label" not in items[0] and items[1]["label"] == str(tmp_path / "labelsTs" / "b.nii.gz")
    with pytest.raises(FileNotFoundError, match=r"'\*\.nii'.*labelsTs|labelsTs.*'\*\.nii'"):
        datalist_from_folder(tmp_path / "labelsTs", pattern="*.nii")
    path = write_datalist(tmp_path / "d.json", training=items, test=["x.nii.gz"], name="demo")
    text = open(path).read()
    assert text.startswith('{\n    "name": "demo"')
    content = json.loads(text)
    assert content["numTraining"] == 2 and content["numTest"] == 1 and "validation" not in content
    with pytest.raises(TypeError, match="training"):
        write_datalist(tmp_path / "e.json", training=["x.nii.gz"])


# ------------------------------------------------------------------------------------------------------ validation


def _meta_image(array, name="case_017.nii.gz"):
    return MetaTensor(torch.as_tensor(array), meta={"filename_or_obj": f"/data/{name}"})


def test_validate_imaged_messages():
    ok = {"image": _meta_image(torch.zeros(1, 8, 8, 4))}
    out = ValidateImaged("image", num_channels=1, min_spatial_size=(8, 8, 4))(ok)
    assert out["image"] is ok["image"]
    with pytest.raises(ValueError, match=r"case_017\.nii\.gz has 2 channel.*expects 1.*in_channels"):
        ValidateImaged("image", num_channels=1)({"image": _meta_image(torch.zeros(2, 8, 8, 4))})
    bad = torch.zeros(1, 8, 8, 4)
    bad[0, 0, 0, :3] = float("nan")
    bad[0, 1, 1, 1] = float("inf")
    with pytest.raises(ValueError, match=r"case_017\.nii\.gz has 3 NaN and 1 Inf.*nan_to_num"):
        ValidateImaged("image")({"image": _meta_image(bad)})
    ValidateImaged("image", allow_nan=True)({"image": _meta_image(bad)})
    msg = r"case_017\.nii\.gz has spatial shape \(8, 8, 4\).*\(96, 96, 4\).*SpatialPadd"
    with pytest.raises(ValueError, match=msg):
        ValidateImaged("image", min_spatial_size=(96, 96, 4))({"image": _meta_image(torch.zeros(1, 8, 8, 4))})
    with pytest.raises(ValueError, match="num_channels"):
        ValidateImaged("image", num_channels=0)


def test_validate_labelsd_messages():
    lab = torch.zeros(1, 6, 6, 3)
    lab[0, 0, 0, 0], lab[0, 1, 1, 1], lab[0, 2, 2, 2] = 5, 7, 2.5
    ValidateLabelsd("label", num_classes=8)({"label": _meta_image(torch.clamp(lab.round(), 0, 7), "lab_3.nii.gz")})
    msg = r"lab_3\.nii\.gz has unexpected label value\(s\) 2\.5 \(1 voxels\), 7 \(1 voxels\).*\[0, 6\)"
    with pytest.raises(ValueError, match=msg):
        ValidateLabelsd("label", num_classes=6)({"label": _meta_image(lab, "lab_3.nii.gz")})
    with pytest.raises(ValueError, match=r"-1"):
        ValidateLabelsd("label", num_classes=6)({"label": _meta_image(-torch.ones(1, 2, 2, 2, dtype=torch.int64))})


def test_validate_on_loaded_file(tmp_path):
    path = write_nifti(np.zeros((10, 11, 12), np.int16), make_affine((1, 1, 3)), tmp_path / "ct_555.nii.gz")
    t = Compose([LoadImaged("image"), EnsureChannelFirstd("image"), ValidateImaged("image", min_spatial_size=16)])
    with pytest.raises(RuntimeError) as err:
        t({"image": path})
    assert "ct_555.nii.gz" in str(err.value.__cause__) and "(10, 11, 12)" in str(err.value.__cause__)


def test_ensure_channel_first_handles_4d_singleton(tmp_path):
    """MONAI's EnsureChannelFirstd already turns an (X, Y, Z, 1) NIfTI into (1, X, Y, Z): no squeeze needed."""
    path = write_nifti(np.zeros((7, 8, 9, 1), np.float32), np.eye(4), tmp_path / "four_d.nii.gz")
    out = Compose([LoadImaged("image"), EnsureChannelFirstd("image")])({"image": path})
    assert tuple(out["image"].shape) == (1, 7, 8, 9)


def test_safe_load_names_truncated_file(tmp_path):
    good = write_nifti(np.ones((5, 6, 7), np.float32), np.eye(4), tmp_path / "good.nii.gz")
    bad = _write_truncated(tmp_path / "ct_trunc.nii.gz")
    loaded = SafeLoadImaged("image")({"image": good})["image"]
    np.testing.assert_array_equal(loaded, LoadImaged("image")({"image": good})["image"])
    with pytest.raises(ImageReadError, match=r"'image'.*ct_trunc\.nii\.gz.*(EOFError|truncated)"):
        SafeLoadImaged("image")({"image": bad})
    with pytest.raises(RuntimeError) as err:  # inside Compose the named error is the cause
        Compose([SafeLoadImaged("image"), EnsureChannelFirstd("image")])({"image": bad})
    assert "ct_trunc.nii.gz" in str(err.value.__cause__)
    with pytest.raises(FileNotFoundError, match="missing"):
        SafeLoadImaged("image")({"image": str(tmp_path / "missing.nii.gz")})


def test_filter_readable(tmp_path, caplog):
    good = write_nifti(np.ones((5, 6, 7), np.int16), np.eye(4), tmp_path / "ok.nii.gz")
    bad = _write_truncated(tmp_path / "cut.nii.gz")
    missing = str(tmp_path / "gone.nii.gz")
    raw = write_nifti(np.ones((20, 20, 20), np.float32), np.eye(4), tmp_path / "short.nii")
    with open(raw, "r+b") as f:
        f.truncate(2000)  # uncompressed and cut short
    items = [{"image": good}, {"image": bad}, {"image": missing}, {"image": good, "label": bad}, {"image": raw}]
    with caplog.at_level(logging.WARNING, logger="mamba_monai.data.validation"):
        ok, errors = filter_readable(items)
    assert ok == [items[0], items[3]]  # the label is not checked with keys=("image",)
    assert [e["file"] for e in errors] == [bad, missing, raw]
    assert "cut.nii.gz" in caplog.text and "gone.nii.gz" in caplog.text and "short.nii" in caplog.text
    assert "EOFError" in errors[0]["error"] and "No such file" in errors[1]["error"]
    ok, errors = filter_readable([{"image": good, "label": good}, items[3], items[0]], keys=("image", "label"))
    assert ok == [{"image": good, "label": good}]
    assert [(e["key"], e["file"]) for e in errors] == [("label", bad), ("label", "")]  # unreadable, then absent


def test_usable_from_bundle_config(small_ds):
    """The pieces instantiate from JSON-like config values, as a bundle's train.json would write them."""
    from monai.bundle import ConfigParser

    root, _ = small_ds
    parser = ConfigParser(
        {
            # note: "$import mamba_monai.data" would bind the name "mamba_monai.data" only (MONAI's import parsing)
            "imports": ["$from mamba_monai.data import load_datalist"],
            "dataset_dir": root,
            "datalist": {"_target_": "mamba_monai.data.ensure_demo_ct_dataset", "root_dir": "@dataset_dir", **SMALL},
            "data": "$load_datalist(@datalist, 'validation')",
            "check": {"_target_": "mamba_monai.data.ValidateImaged", "keys": "image", "num_channels": 1,
                      "min_spatial_size": [16, 16, 8]},
            "labels": {"_target_": "mamba_monai.data.ValidateLabelsd", "keys": "label", "num_classes": 6},
            "load": {"_target_": "mamba_monai.data.SafeLoadImaged", "keys": ["image", "label"],
                     "ensure_channel_first": True},
        }
    )
    parser.get_parsed_content("imports")  # as a bundle run does first
    item = parser.get_parsed_content("data")[0]
    d = parser.get_parsed_content("load")(item)
    d = parser.get_parsed_content("labels")(parser.get_parsed_content("check")(d))
    assert d["image"].shape[0] == 1 and d["image"].meta["filename_or_obj"].endswith("ct_002.nii.gz")
