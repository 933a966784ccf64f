"""2D data: the demo ultrasound/dermoscopy generator, reading every 2D format into one (C, X, Y) form, channel and
label-value transforms, and image/label folder pairing."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import LoadImage, Spacingd
from PIL import Image
from pydicom.dataset import Dataset
from scipy import ndimage

from mamba_monai.data import (
    write_dicom_image,
    DEMO_2D_LABELS,
    EnsureChannelsd,
    ImageReadError,
    LoadImage2Dd,
    RemapLabelsd,
    datalist_from_image_label_folders,
    ensure_demo_2d_dataset,
    generate_demo_2d_case,
    is_dicom_file,
    load_datalist,
    write_datalist,
    write_image_2d,
)

SMALL = {"num_train": 6, "num_val": 2, "num_test": 4, "size_scale": 0.5}
H, W = 13, 17  # rows, columns of the format test images


@pytest.fixture(scope="module")
def small_ds(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo_2d")
    return str(root), ensure_demo_2d_dataset(str(root), **SMALL)


def _digest(root: str) -> dict[str, str]:
    out = {}
    for folder, _, names in os.walk(root):
        for n in names:
            if not n.startswith("."):
                path = os.path.join(folder, n)
                out[os.path.relpath(path, root)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return out


def _load(path, key="image", label=False, channels=1):
    d = LoadImage2Dd(keys=key)({key: path})
    return EnsureChannelsd(key, num_channels=channels, label=label)(d)[key]


# ----------------------------------------------------------------------------------------------------- demo data


def test_generation_is_deterministic_and_depends_on_seed_and_index():
    a_img, a_lab = generate_demo_2d_case(3, seed=5, size_scale=0.5)
    b_img, b_lab = generate_demo_2d_case(3, seed=5, size_scale=0.5)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    c_img, _ = generate_demo_2d_case(3, seed=6, size_scale=0.5)
    d_img, _ = generate_demo_2d_case(4, seed=5, size_scale=0.5)
    assert a_img.shape != c_img.shape or not np.array_equal(a_img, c_img)
    assert a_img.shape != d_img.shape or not np.array_equal(a_img, d_img)
    with pytest.raises(ValueError, match="style"):
        generate_demo_2d_case(0, style="mri")


def test_same_seed_same_bytes(tmp_path):
    kw = {"num_train": 3, "num_val": 1, "num_test": 1, "size_scale": 0.4}
    ensure_demo_2d_dataset(tmp_path / "a", **kw)
    ensure_demo_2d_dataset(tmp_path / "b", **kw)
    da, db = _digest(str(tmp_path / "a")), _digest(str(tmp_path / "b"))
    assert da == db and len(da) == 11  # 5 images + 5 labels + datalist
    ensure_demo_2d_dataset(tmp_path / "c", **{**kw, "seed": 1})
    dc = _digest(str(tmp_path / "c"))
    assert dc["imagesTr/us_000.png"] != da["imagesTr/us_000.png"]


def test_default_set_sizes_classes_and_empty_cases():
    """Over the default 60 cases: mixed sizes (none a multiple of 32), both lesion kinds, some without lesion."""
    shapes, kinds, empty = set(), set(), 0
    for i in range(0, 60, 5):  # a sample of the default set, full size
        img, lab = generate_demo_2d_case(i)
        assert img.dtype == np.uint8 and img.ndim == 2 and lab.dtype == np.uint8 and lab.shape == img.shape
        assert all(s % 32 for s in img.shape)
        shapes.add(img.shape)
        values = set(np.unique(lab).tolist())
        assert values <= set(DEMO_2D_LABELS)
        kinds |= values - {0}
        empty += values == {0}
    assert len(shapes) >= 10
    assert kinds == {1, 2} and empty >= 1


def test_lesions_visible_but_not_thresholdable():
    """Lesions are darker than the tissue around them (visible), but no grey-level threshold segments them: the
    best threshold's Dice stays low, because fat lobules, the fat layer and posterior shadows are as dark."""
    best_dice = []
    for i in range(12):
        img, lab = generate_demo_2d_case(i)
        fg = lab > 0
        if not fg.any():
            continue
        ring = ndimage.binary_dilation(fg, iterations=6) & ~ndimage.binary_dilation(fg, iterations=2)
        assert img[fg].mean() < img[ring].mean() - 25, i
        smooth = ndimage.gaussian_filter(img.astype(np.float32), 2.0)  # even after speckle smoothing
        best_dice.append(
            max(2 * np.sum((smooth < t) & fg) / (np.sum(smooth < t) + fg.sum()) for t in np.linspace(20, 200, 37))
        )
    assert np.median(best_dice) < 0.6 and max(best_dice) < 0.85, best_dice


def test_dataset_files_and_datalist(small_ds):
    root, datalist = small_ds
    content = json.load(open(datalist))
    assert content["labels"] == {str(k): v for k, v in DEMO_2D_LABELS.items()}
    assert {k: len(content[k]) for k in ("training", "validation", "test", "test_labeled")} == {
        "training": 6, "validation": 2, "test": 4, "test_labeled": 4,
    }
    assert content["test"][0] == {"image": "imagesTs/us_008.png"}
    items = load_datalist(datalist, "training") + load_datalist(datalist, "test_labeled")
    sizes = set()
    for item in items:
        img, lab = Image.open(item["image"]), Image.open(item["label"])
        assert img.mode == "L" and lab.mode == "L" and img.size == lab.size
        sizes.add(img.size)
    assert len(sizes) > 1


def test_rerun_is_noop(small_ds):
    root, datalist = small_ds
    before = {p: os.stat(os.path.join(root, p)).st_mtime_ns for p in _digest(root)}
    assert ensure_demo_2d_dataset(root, **SMALL) == datalist
    assert {p: os.stat(os.path.join(root, p)).st_mtime_ns for p in _digest(root)} == before


def test_dermoscopy_style(tmp_path):
    datalist = ensure_demo_2d_dataset(tmp_path, num_train=2, num_val=0, num_test=0, style="dermoscopy", size_scale=0.4)
    item = load_datalist(datalist)[1]
    assert item["image"].endswith(".jpg") and item["label"].endswith(".png")
    img = _load(item["image"], channels=3)
    lab = _load(item["label"], key="label", label=True)
    assert img.shape[0] == 3 and lab.shape == (1, *img.shape[1:])
    assert set(torch.unique(lab).tolist()) <= {0.0, 1.0, 2.0}


# ------------------------------------------------------------------------------------------- reading 2D formats


def _gray():
    return ((np.arange(H * W).reshape(H, W) * 7) % 256).astype(np.uint8)


@pytest.fixture()
def format_files(tmp_path):
    """The same gray image (H rows, W columns) in every 2D format; NIfTI/DICOM store it x (column) first."""
    g = _gray()
    rgb = np.stack([g, g, g], -1)
    f = {}
    f["png"] = write_image_2d(g, tmp_path / "g.png")
    f["png_rgb"] = write_image_2d(rgb, tmp_path / "rgb.png")
    f["png_rgba"] = write_image_2d(np.dstack([rgb, np.full((H, W), 255, np.uint8)]), tmp_path / "rgba.png")
    f["jpg"] = write_image_2d(g, tmp_path / "g.jpg", quality=100)
    f["jpg_rgb"] = write_image_2d(rgb, tmp_path / "rgb.jpg", quality=100)
    f["tif"] = write_image_2d(g, tmp_path / "g.tif")
    f["tif_rgb"] = write_image_2d(rgb, tmp_path / "rgb.tiff")
    f["bmp"] = write_image_2d(g, tmp_path / "g.bmp")
    aff = np.diag([0.5, 0.7, 2.0, 1.0])
    f["nii"] = str(tmp_path / "g.nii.gz")
    nib.save(nib.Nifti1Image(g.T.astype(np.int16), aff), f["nii"])
    f["nii_3d1"] = str(tmp_path / "g1.nii")
    nib.save(nib.Nifti1Image(g.T[:, :, None].astype(np.int16), aff), f["nii_3d1"])
    f["nii_rgb"] = str(tmp_path / "rgb.nii.gz")
    nib.save(nib.Nifti1Image(np.transpose(rgb, (1, 0, 2))[:, :, None, :], aff), f["nii_rgb"])
    f["dcm"] = write_dicom_image(
        tmp_path / "ct.dcm", g.astype(np.uint16) + 1000, "CT", PixelSpacing=[0.7, 0.5],
        ImagePositionPatient=[-120.0, -100.0, 35.0], ImageOrientationPatient=[1, 0, 0, 0, 1, 0], SliceThickness=2.5,
        RescaleSlope=1, RescaleIntercept=-1000, BitsStored=12,
    )
    f["dcm_noext"] = write_dicom_image(tmp_path / "IM000001", g, "MR", PixelSpacing=[0.7, 0.5],
                                  ImagePositionPatient=[0, 0, 0], ImageOrientationPatient=[1, 0, 0, 0, 1, 0])
    f["dcm_us_rgb"] = write_dicom_image(tmp_path / "us.dcm", rgb, "US")
    return f


@pytest.mark.parametrize(
    "fmt", ["png", "png_rgb", "png_rgba", "jpg", "jpg_rgb", "tif", "tif_rgb", "bmp", "nii", "nii_3d1", "nii_rgb",
            "dcm", "dcm_noext", "dcm_us_rgb"],
)
def test_every_format_loads_to_the_same_c_x_y(format_files, fmt):
    expected = torch.as_tensor(_gray().T, dtype=torch.float32)  # x (column) axis first, as MONAI's readers give
    atol = 2.0 if fmt.startswith("jpg") else 1e-4
    one = _load(format_files[fmt], channels=1)
    three = _load(format_files[fmt], channels=3)
    assert one.shape == (1, W, H) and three.shape == (3, W, H)
    assert one.affine.shape == (3, 3) and three.affine.shape == (3, 3)
    torch.testing.assert_close(one[0].as_tensor(), expected, atol=atol, rtol=0)
    for c in range(3):
        torch.testing.assert_close(three[c].as_tensor(), expected, atol=atol, rtol=0)


def test_orientation_matches_monai_png_reader(format_files):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        monai_png = LoadImage(ensure_channel_first=True)(format_files["png"])
        monai_nii = LoadImage(ensure_channel_first=True)(format_files["nii"])
    assert tuple(monai_png.shape) == (1, W, H) and tuple(monai_nii.shape) == (1, W, H)
    torch.testing.assert_close(_load(format_files["png"]).as_tensor(), monai_png.as_tensor())
    torch.testing.assert_close(_load(format_files["nii"]).as_tensor(), monai_nii.as_tensor())


def test_spacing_from_the_file(format_files):
    np.testing.assert_allclose(_load(format_files["png"]).pixdim.tolist(), [1.0, 1.0])
    np.testing.assert_allclose(_load(format_files["nii"]).pixdim.tolist(), [0.5, 0.7], rtol=1e-6)
    np.testing.assert_allclose(_load(format_files["nii_3d1"]).pixdim.tolist(), [0.5, 0.7], rtol=1e-6)
    ct = _load(format_files["dcm"])
    # DICOM PixelSpacing is (row spacing, column spacing); x runs along the columns
    np.testing.assert_allclose(ct.pixdim.tolist(), [0.5, 0.7], rtol=1e-6)
    assert float(ct[0, 0, 0]) == pytest.approx(float(_gray()[0, 0]))  # stored + 1000, intercept -1000
    # Spacingd uses it, as for the NIfTI of the same spacing: 0.5 x 0.7 mm pixels resampled to 1 mm
    spacing = Spacingd("image", pixdim=(1.0, 1.0))
    out = spacing({"image": ct})["image"]
    out_nii = spacing({"image": _load(format_files["nii"])})["image"]
    assert tuple(out.shape) == tuple(out_nii.shape) == (1, 9, 9)
    np.testing.assert_allclose(out.pixdim.tolist(), [1.0, 1.0])


def test_dicom_ultrasound_regions_monochrome1_and_multiframe(tmp_path):
    g = _gray()
    region = Dataset()
    region.RegionSpatialFormat, region.RegionDataType = 1, 1
    region.PhysicalUnitsXDirection, region.PhysicalUnitsYDirection = 3, 3  # cm
    region.PhysicalDeltaX, region.PhysicalDeltaY = 0.012, 0.015
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 0, 0
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = W - 1, H - 1
    us = write_dicom_image(tmp_path / "us.dcm", g, "US", SequenceOfUltrasoundRegions=[region])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "ImageOrientationPatient missing" warning: the affine is rebuilt
        img = _load(us)
    np.testing.assert_allclose(img.pixdim.tolist(), [0.12, 0.15], rtol=1e-6)
    torch.testing.assert_close(img[0].as_tensor(), torch.as_tensor(g.T, dtype=torch.float32))

    cr = write_dicom_image(tmp_path / "cr.dcm", g, "CT", PhotometricInterpretation="MONOCHROME1")
    torch.testing.assert_close(_load(cr)[0].as_tensor(), torch.as_tensor(255.0 - g.T, dtype=torch.float32))

    mf = write_dicom_image(tmp_path / "cine.dcm", np.concatenate([g, g, g]), "US", NumberOfFrames=3)
    mf_ds = pydicom.dcmread(mf)
    mf_ds.Rows = H
    mf_ds.save_as(mf)
    with pytest.raises(ValueError, match=r"cine\.dcm is a 3D volume .*multi-frame DICOM with 3 frames"):
        _load(mf)
    assert is_dicom_file(mf) and not is_dicom_file(tmp_path / "none.png")


def test_volume_and_bad_channel_errors_name_the_file(tmp_path):
    vol = str(tmp_path / "ct_volume.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((9, 8, 5), np.float32), np.eye(4)), vol)
    with pytest.raises(ValueError, match=r"'image' of .*ct_volume\.nii\.gz is a 3D volume of shape \(9, 8, 5\).*"
                                         r"2D images.*emnet_seg3d"):
        _load(vol)
    # the same check after a plain MONAI LoadImaged
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = LoadImage(ensure_channel_first=True)(vol)
    with pytest.raises(ValueError, match="ct_volume.nii.gz is a 3D volume"):
        EnsureChannelsd("image", 1)({"image": loaded})
    four = str(tmp_path / "four.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((9, 8, 1, 4), np.float32), np.eye(4)), four)
    with pytest.raises(ValueError, match=r"four\.nii\.gz has 4 channel\(s\) \(shape \(4, 9, 8\)\); the network takes"):
        _load(four, channels=3)
    folder = tmp_path / "series"
    folder.mkdir()
    with pytest.raises(ValueError, match="is a folder"):
        _load(str(folder))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ImageReadError, match="broken.png"):
        _load(str(broken))
    with pytest.raises(ValueError, match="num_channels"):
        EnsureChannelsd("image", num_channels=3, label=True)


def test_channel_conversions_values(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    path = write_image_2d(rgb, tmp_path / "c.png")
    gray = _load(path, channels=1)[0].as_tensor().numpy()
    expected = (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]).T
    np.testing.assert_allclose(gray, expected, rtol=1e-5)
    # the same as PIL's own RGB -> L conversion (to its integer rounding)
    np.testing.assert_allclose(gray, np.asarray(Image.fromarray(rgb).convert("L"), np.float32).T, atol=1.0)
    rgba = write_image_2d(np.dstack([rgb, rng.integers(0, 256, size=(H, W), dtype=np.uint8)]), tmp_path / "a.png")
    expected_rgb = torch.as_tensor(rgb.transpose(2, 1, 0), dtype=torch.float32)  # alpha dropped, (C, X, Y)
    torch.testing.assert_close(_load(rgba, channels=3).as_tensor(), expected_rgb)


def test_loader_is_quiet_and_usable_from_config(small_ds, caplog):
    root, datalist = small_ds
    item = load_datalist(datalist)[0]
    with warnings.catch_warnings(), caplog.at_level(logging.WARNING):
        warnings.simplefilter("error")
        parser = ConfigParser(
            {
                "mapping": {"0": 0, "1": 1, "2": 2},
                "pre": {
                    "_target_": "Compose",
                    "transforms": [
                        {"_target_": "mamba_monai.data.LoadImage2Dd", "keys": ["image", "label"]},
                        {"_target_": "mamba_monai.data.EnsureChannelsd", "keys": "image", "num_channels": 3},
                        {"_target_": "mamba_monai.data.EnsureChannelsd", "keys": "label", "label": True},
                        {"_target_": "mamba_monai.data.RemapLabelsd", "keys": "label", "mapping": "@mapping"},
                        {"_target_": "mamba_monai.data.ValidateLabelsd", "keys": "label", "num_classes": 3},
                    ],
                },
            }
        )
        out = parser.get_parsed_content("pre")(item)
    assert out["image"].shape[0] == 3 and out["label"].shape == (1, *out["image"].shape[1:])
    assert out["label"].meta["filename_or_obj"] == item["label"]
    assert not caplog.records  # MONAI 1.6.1's nvImageCodec notices (pydicom installed, no CUDA) are silenced


# ---------------------------------------------------------------------------------------------------- labels


def test_binary_mask_mapping_and_unknown_value_error(tmp_path):
    mask = np.zeros((H, W), np.uint8)
    mask[3:8, 4:10] = 255
    path = write_image_2d(mask, tmp_path / "m.png")
    remap = RemapLabelsd("label", {"0": 0, "255": 1})  # JSON keys are strings
    lab = remap({"label": _load(path, "label", label=True)})["label"]
    assert lab.shape == (1, W, H) and set(torch.unique(lab).tolist()) == {0.0, 1.0}
    assert int(lab.sum()) == 30 and lab.meta["filename_or_obj"] == path
    # three levels
    mask3 = mask.copy()
    mask3[0, 0] = 128
    loaded3 = _load(write_image_2d(mask3, tmp_path / "m3.png"), "label", label=True)
    three = RemapLabelsd("label", {0: 0, 128: 1, 255: 2})({"label": loaded3})
    assert sorted(torch.unique(three["label"]).tolist()) == [0.0, 1.0, 2.0]
    # an unknown value: the error names the file, the value and its pixel count
    mask[0, :2] = 7
    bad = write_image_2d(mask, tmp_path / "bad_mask.png")
    with pytest.raises(ValueError, match=r"'label' of .*bad_mask\.png has value\(s\) 7 \(2 pixels\).*\{0: 0, 255: 1\}"):
        remap({"label": _load(bad, "label", label=True)})
    with pytest.raises(ValueError, match="class indices"):
        RemapLabelsd("label", {0: 0, 255: -1})


def test_jpeg_mask_tolerance_rgb_and_one_bit_masks(tmp_path):
    mask = np.zeros((32, 40), np.uint8)
    mask[8:24, 10:30] = 255
    jpg = write_image_2d(np.stack([mask] * 3, -1), tmp_path / "k.jpg", quality=75)  # Kvasir-style lossy RGB mask
    loaded = LoadImage2Dd("label")({"label": jpg})["label"]
    lab = EnsureChannelsd("label", label=True)({"label": loaded[:1].repeat(3, 1, 1)})["label"]  # identical copies
    with pytest.raises(ValueError, match="lossy JPEG"):
        RemapLabelsd("label", {0: 0, 255: 1})({"label": lab})
    mapped = RemapLabelsd("label", {0: 0, 255: 1}, tolerance=100)({"label": lab})["label"]
    assert abs(int(mapped.sum()) - 16 * 20) <= 8
    # an RGB mask with identical channels -> one channel; a colour-coded one raises
    rgb = write_image_2d(np.stack([mask] * 3, -1), tmp_path / "rgb_mask.png")
    assert _load(rgb, "label", label=True).shape == (1, 40, 32)
    colour = np.stack([mask, np.zeros_like(mask), mask], -1)
    with pytest.raises(ValueError, match=r"colour_mask\.png has 3 different channels"):
        _load(write_image_2d(colour, tmp_path / "colour_mask.png"), "label", label=True)
    # a 1-bit mask reads as 0/255 like an 8-bit one
    Image.fromarray(mask > 0).save(tmp_path / "bit.png")
    assert set(torch.unique(_load(str(tmp_path / "bit.png"), "label", label=True)).tolist()) == {0.0, 255.0}
    # a palette (class-index) PNG keeps its indices as labels
    pal = Image.fromarray((mask // 255).astype(np.uint8) * 2, mode="P")
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    pal.save(tmp_path / "pal.png")
    assert set(torch.unique(_load(str(tmp_path / "pal.png"), "label", label=True)).tolist()) == {0.0, 2.0}


# --------------------------------------------------------------------------------------------- folder pairing


def _touch_png(path, value=0, shape=(6, 5)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return write_image_2d(np.full(shape, value, np.uint8), path)


def test_pairing_isic(tmp_path):
    img_dir, lab_dir = tmp_path / "ISIC2018_Task1-2_Training_Input", tmp_path / "ISIC2018_Task1_Training_GroundTruth"
    for i in (0, 1, 10):
        write_image_2d(np.zeros((6, 5, 3), np.uint8), _dir(img_dir) / f"ISIC_{i:07d}.jpg")
        _touch_png(str(lab_dir / f"ISIC_{i:07d}_segmentation.png"))
    _touch_png(str(img_dir / "ISIC_0000000_superpixels.png"))  # ISIC 2017 ships these beside the inputs
    (img_dir / "LICENSE.txt").write_text("cc-by-nc")
    items = datalist_from_image_label_folders(img_dir, lab_dir)
    assert [os.path.basename(i["image"]) for i in items] == ["ISIC_0000000.jpg", "ISIC_0000001.jpg", "ISIC_0000010.jpg"]
    for i in items:
        assert i["label"] == str(lab_dir / os.path.basename(i["image"]).replace(".jpg", "_segmentation.png"))


def test_pairing_busi_same_folder_merges_masks(tmp_path, caplog):
    root = tmp_path / "Dataset_BUSI_with_GT"
    for cls in ("benign", "malignant"):
        for i in (1, 2, 10):
            _touch_png(str(root / cls / f"{cls} ({i}).png"), 100)
            m = np.zeros((6, 5), np.uint8)
            m[1:3, 1:3] = 255
            write_image_2d(m, root / cls / f"{cls} ({i})_mask.png")
    second = np.zeros((6, 5), np.uint8)
    second[4:6, 3:5] = 255
    write_image_2d(second, root / "benign" / "benign (2)_mask_1.png")
    items = datalist_from_image_label_folders(root / "benign")
    assert [os.path.basename(i["image"]) for i in items] == ["benign (1).png", "benign (2).png", "benign (10).png"]
    assert items[0]["label"] == str(root / "benign" / "benign (1)_mask.png")
    assert items[1]["label"] == [str(root / "benign" / f"benign (2)_mask{s}.png") for s in ("", "_1")]
    # the loader merges them into one mask: the union of the two lesions
    lab = LoadImage2Dd(["image", "label"])(items[1])["label"]
    assert lab.shape == (1, 5, 6) and int((lab > 0).sum()) == 8
    assert lab.meta["filename_or_obj"] == items[1]["label"][0]
    # recursive over the class folders; datalist round trip keeps the merged list
    both = datalist_from_image_label_folders(root, recursive=True)
    assert len(both) == 6 and all("label" in i for i in both)
    write_datalist(tmp_path / "busi.json", training=both)
    assert load_datalist(tmp_path / "busi.json")[1]["label"] == items[1]["label"]


def test_pairing_plain_pairs_extensions_and_folder_names(tmp_path):
    # images/ + masks/, image .jpg with label .png, NIfTI with NIfTI
    root = tmp_path / "kvasir"
    write_image_2d(np.zeros((6, 5, 3), np.uint8), _dir(root / "images") / "cju0qkwl35piu0993l0dewei2.jpg")
    _touch_png(str(root / "masks" / "cju0qkwl35piu0993l0dewei2.png"))
    nib.save(nib.Nifti1Image(np.zeros((5, 6), np.float32), np.eye(4)), root / "images" / "slice_7.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((5, 6), np.uint8), np.eye(4)), root / "masks" / "slice_7.nii.gz")
    items = datalist_from_image_label_folders(root)
    assert [(os.path.basename(i["image"]), os.path.basename(i["label"])) for i in items] == [
        ("cju0qkwl35piu0993l0dewei2.jpg", "cju0qkwl35piu0993l0dewei2.png"), ("slice_7.nii.gz", "slice_7.nii.gz"),
    ]
    # imagesTr/ + labelsTr/
    ds = tmp_path / "Task"
    _touch_png(str(ds / "imagesTr" / "case1.png"))
    _touch_png(str(ds / "labelsTr" / "case1.png"))
    assert datalist_from_image_label_folders(ds) == [
        {"image": str(ds / "imagesTr" / "case1.png"), "label": str(ds / "labelsTr" / "case1.png")}
    ]


def _dir(path):
    os.makedirs(path, exist_ok=True)
    return path


def test_pairing_ambiguities_and_missing_labels(tmp_path, caplog):
    img, lab = tmp_path / "img", tmp_path / "lab"
    for n in ("a", "b", "c"):
        _touch_png(str(img / f"{n}.png"))
    _touch_png(str(lab / "a.png"))
    _touch_png(str(lab / "b.png"))
    _touch_png(str(lab / "b_mask.png"))
    with pytest.raises(ValueError, match=r"'.*img/b\.png' matches several label files .*'b\.png', 'b_mask\.png'"):
        datalist_from_image_label_folders(img, lab)
    os.remove(lab / "b_mask.png")
    with caplog.at_level(logging.WARNING):
        items = datalist_from_image_label_folders(img, lab)
    assert [("label" in i) for i in items] == [True, True, False]
    assert "1 of 3 image(s) have no label" in caplog.text and "c.png" in caplog.text
    assert len(datalist_from_image_label_folders(img, lab, missing_labels="skip")) == 2
    with pytest.raises(ValueError, match=r"1 of 3 image\(s\) have no label .*c\.png"):
        datalist_from_image_label_folders(img, lab, missing_labels="error")
    # two images with one stem
    write_image_2d(np.zeros((6, 5, 3), np.uint8), img / "a.jpg")
    with pytest.raises(ValueError, match=r"a\.jpg.*share the name stem|a\.png.*share the name stem"):
        datalist_from_image_label_folders(img, lab)
    # inference: a folder of images alone
    only = tmp_path / "only"
    _touch_png(str(only / "x.png"))
    with caplog.at_level(logging.WARNING):
        assert datalist_from_image_label_folders(only) == [{"image": str(only / "x.png")}]
    with pytest.raises(FileNotFoundError, match="No image"):
        datalist_from_image_label_folders(_dir(tmp_path / "empty"))
