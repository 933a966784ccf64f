"""DICOM in and DICOM SEG out: series found and read with their geometry, SEG frames on the source slices, and the
segmentation bundles' inference on a folder of DICOM series (one sub-folder per series and a flat folder of mixed
series) as a user runs it."""

from __future__ import annotations

import copy
import os
import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from mamba_monai.bundle import inference_datalist
from mamba_monai.bundle.testing import run_bundle
from mamba_monai.data import (
    DEMO_2D_LABELS,
    DEMO_CT_LABELS,
    DicomSeriesReader,
    SafeLoadImaged,
    find_dicom_series,
    generate_demo_ct_case,
    labels_on_source_frames,
    write_dicom_image,
    write_dicom_seg,
    write_dicom_series,
)

hd = pytest.importorskip("highdicom")

AFFINE = np.array([[-0.8, 0.0, 0.0, 10.0], [0.0, 0.7, 0.0, -20.0], [0.0, 0.0, 2.5, 30.0], [0.0, 0.0, 0.0, 1.0]])


def _world_consistent(img, volume, affine):
    """Every voxel of ``img`` holds the value of ``volume`` at the same world position."""
    ijk = np.indices(img.shape[1:]).reshape(3, -1)
    world = np.asarray(img.affine, float) @ np.vstack([ijk, np.ones(ijk.shape[1])])
    src = np.rint(np.linalg.inv(affine) @ world)[:3].astype(int)
    np.testing.assert_array_equal(np.asarray(img[0]).reshape(-1), volume[src[0], src[1], src[2]])


def _ct_small_series(folder, n=6):
    """A series built from pydicom's own CT_small.dcm: n slices 5 mm apart, new instance UIDs, one series."""
    source = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    series_uid = pydicom.uid.generate_uid()
    os.makedirs(folder, exist_ok=True)
    paths = []
    for k in range(n):
        ds = copy.deepcopy(source)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        ds.SeriesInstanceUID, ds.InstanceNumber = series_uid, k + 1
        x, y, z = (float(v) for v in source.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + 5.0 * k]
        paths.append(os.path.join(folder, f"CT{k:03d}.dcm"))
        ds.save_as(paths[-1])
    return paths


def test_series_read_back_with_its_geometry_whatever_the_instance_numbers(tmp_path):
    volume = np.random.default_rng(0).integers(-1000, 1000, (20, 24, 7)).astype(np.float32)
    files = write_dicom_series(tmp_path / "s1", volume, AFFINE, SeriesNumber=3)
    for i, f in enumerate(files):  # scanners do not always number instances in slice order
        ds = pydicom.dcmread(f)
        ds.InstanceNumber = (i * 3) % 7 + 1
        ds.save_as(f)
    load = SafeLoadImaged("image", ensure_channel_first=True)
    for source in (str(tmp_path / "s1"), files[::-1]):
        img = load({"image": source})["image"]
        assert tuple(img.shape) == (1, 20, 24, 7)
        _world_consistent(img, volume, AFFINE)  # values in Hounsfield units, at their world positions
        assert sorted(img.meta["dicom_files"].split("\n")) == sorted(map(os.path.abspath, files))


def test_a_folder_of_mixed_series_is_split_and_never_read_as_one(tmp_path):
    flat = tmp_path / "flat"
    a = write_dicom_series(flat, np.zeros((8, 8, 3)), AFFINE, prefix="A", SeriesNumber=1)
    b = write_dicom_series(flat, np.ones((8, 8, 4)), AFFINE, prefix="B", SeriesNumber=2)
    nested = write_dicom_series(tmp_path / "patient" / "study" / "series", np.zeros((8, 8, 2)), AFFINE)
    (tmp_path / "notes.txt").write_text("not an image")
    assert sorted(map(sorted, find_dicom_series(tmp_path))) == sorted([sorted(a), sorted(b), sorted(nested)])
    items = inference_datalist(str(tmp_path))
    images = [item["image"] for item in items]
    assert str(tmp_path / "patient" / "study" / "series") in images  # a series alone in its folder: the folder
    assert sorted(a) in [sorted(x) for x in images if isinstance(x, list)]  # a series of a mixed folder: its files
    assert len(items) == 3
    loaded = SafeLoadImaged("image", ensure_channel_first=True)({"image": b})["image"]
    assert tuple(loaded.shape) == (1, 8, 8, 4) and loaded.meta["filename_or_obj"] == str(flat / "flat_series2")
    with pytest.raises(ValueError, match="2 DICOM series given as one image.*own folder"):
        DicomSeriesReader().read(str(flat))
    # 2D bundles take every DICOM file as an image of its own
    assert len(inference_datalist(str(tmp_path), dicom_series=False)) == 3 + 4 + 2


def test_seg_frames_line_up_with_the_source_slices(tmp_path):
    files = _ct_small_series(tmp_path / "ct")
    img = SafeLoadImaged("image", ensure_channel_first=True)({"image": str(tmp_path / "ct")})["image"]
    label = np.zeros(img.shape[1:], np.int64)
    label[10:60, 20:50, 1:4], label[70:100, 80:120, 2:6] = 1, 2
    path = write_dicom_seg(label, np.asarray(img.affine), files, tmp_path / "out" / "ct_seg.dcm",
                           {"0": "background", "1": "liver", "2": "benign lesion"}, "emnet_seg3d", "0.3.0")
    seg = hd.seg.segread(path)
    sources = [pydicom.dcmread(f) for f in files]
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    referenced = {r.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence for r in s.ReferencedInstanceSequence}
    assert referenced == {ds.SOPInstanceUID for ds in sources}
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["liver", "benign lesion"]
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"  # SNOMED liver
    assert seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0].AlgorithmName == "emnet_seg3d"
    frames = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[ds.SOPInstanceUID for ds in sources], combine_segments=True,
        skip_overlap_checks=True,
    )
    # the slice at z = origin + 5k mm is label[:, :, k] (rows along y): reference built from the indices alone
    np.testing.assert_array_equal(frames, np.stack([label[:, :, k].T for k in range(len(files))]))
    np.testing.assert_array_equal(frames, labels_on_source_frames(label, np.asarray(img.affine), sources))


def test_seg_of_a_single_ultrasound_frame(tmp_path):
    path = write_dicom_image(tmp_path / "us.dcm", np.full((30, 40), 90, np.uint8), modality="US",
                             PixelSpacing=[0.25, 0.25])
    label = np.zeros((40, 30), np.int64)
    label[5:10, 3:20] = 2
    seg = hd.seg.segread(write_dicom_seg(label, np.eye(3), [path], tmp_path / "us_seg.dcm", ["bg", "benign", "malignant"]))
    frames = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[pydicom.dcmread(path).SOPInstanceUID], combine_segments=True, skip_overlap_checks=True
    )
    np.testing.assert_array_equal(frames[0], label.T)
    with pytest.raises(ValueError, match="not on the source image's grid"):
        write_dicom_seg(label[:20], np.eye(3), [path], tmp_path / "bad.dcm", ["bg", "benign", "malignant"])


@pytest.fixture(scope="module")
def dicom_study(tmp_path_factory):
    """A user's DICOM export: one demo CT volume as a series in its own folder, two series in a flat folder."""
    root = tmp_path_factory.mktemp("pacs")
    image, _, affine = generate_demo_ct_case(0, size_scale=0.5)
    write_dicom_series(root / "case0" / "CT_abdomen", image.astype(np.float32), affine, SeriesNumber=2)
    image1, _, affine1 = generate_demo_ct_case(1, size_scale=0.5)
    write_dicom_series(root / "export", image1.astype(np.float32), affine1, prefix="A", SeriesNumber=5)
    write_dicom_series(root / "export", image1[:, :, ::2].astype(np.float32),
                       affine1 @ np.diag([1.0, 1.0, 2.0, 1.0]), prefix="B", SeriesNumber=6)
    return root


@pytest.mark.slow
def test_emnet_inference_on_dicom_series_writes_nifti_and_seg(dicom_study, tmp_path):
    out = tmp_path / "pred"
    run_bundle("emnet_seg3d", ["inference.json"], dataset_dir=str(dicom_study), output_dir=str(out))
    for name in ("CT_abdomen", "export_series5", "export_series6"):
        nifti, seg_path = out / f"{name}_seg.nii.gz", out / f"{name}_seg.dcm"
        assert nifti.is_file() and seg_path.is_file(), sorted(os.listdir(out))
        seg = hd.seg.segread(str(seg_path))
        assert {s.SegmentLabel for s in seg.SegmentSequence} == {v for k, v in DEMO_CT_LABELS.items() if k > 0}
        assert seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0].AlgorithmName.startswith("EM-Net")
        uids = [r.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence for r in s.ReferencedInstanceSequence]
        pred = nib.load(str(nifti))
        by_uid = {}
        for folder, _, names in os.walk(dicom_study):
            for n in names:
                ds = pydicom.dcmread(os.path.join(folder, n))
                by_uid[ds.SOPInstanceUID] = ds
        sources = [by_uid[u] for u in uids]
        assert len({ds.SeriesInstanceUID for ds in sources}) == 1 and len(sources) == pred.shape[2]
        frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=True,
                                                   skip_overlap_checks=True)
        expected = labels_on_source_frames(np.asarray(pred.dataobj), pred.affine, sources)
        np.testing.assert_array_equal(frames, expected)  # the SEG and the NIfTI say the same, slice by slice
        assert frames.any()


@pytest.mark.slow
def test_seg2d_inference_writes_a_seg_for_a_dicom_image(tmp_path):
    from mamba_monai.data import generate_demo_2d_case

    data = tmp_path / "data"
    data.mkdir()
    image, _ = generate_demo_2d_case(0, size_scale=0.5)
    path = write_dicom_image(data / "us.dcm", image, modality="US", PixelSpacing=[0.25, 0.25])
    out = tmp_path / "pred"
    run_bundle("spectral_vmamba_seg2d", ["inference.json"], dataset_dir=str(data), output_dir=str(out))
    pred = np.asarray(nib.load(str(out / "us_seg.nii.gz")).dataobj)
    seg = hd.seg.segread(str(out / "us_seg.dcm"))
    frames = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[pydicom.dcmread(path).SOPInstanceUID], combine_segments=True, skip_overlap_checks=True
    )
    np.testing.assert_array_equal(frames[0], pred.reshape(pred.shape[:2]).T)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == [v for k, v in DEMO_2D_LABELS.items() if k > 0]


def test_write_dicom_like_sends_a_volume_as_a_series_and_an_image_as_a_frame(tmp_path):
    from PIL import Image

    from mamba_monai.data import make_affine, write_dicom_like, write_nifti

    volume = np.random.default_rng(1).integers(-200, 300, (12, 10, 5)).astype(np.int16)
    affine = make_affine((0.9, 0.8, 3.0), rotation_deg=10.0, origin=(5.0, -7.0, 12.0))
    series = write_dicom_like(write_nifti(volume, affine, tmp_path / "vol.nii.gz"), tmp_path / "dicom")
    assert series == str(tmp_path / "dicom" / "vol") and len(os.listdir(series)) == 5
    img = SafeLoadImaged("image", ensure_channel_first=True)({"image": series})["image"]
    _world_consistent(img, volume.astype(np.float32), affine)

    Image.fromarray(np.arange(12 * 7, dtype=np.uint8).reshape(12, 7)).save(tmp_path / "us.png")
    frame = pydicom.dcmread(write_dicom_like(tmp_path / "us.png", tmp_path / "dicom"))
    assert (frame.Rows, frame.Columns, frame.Modality) == (12, 7, "US")
    np.testing.assert_array_equal(frame.pixel_array, np.arange(12 * 7).reshape(12, 7))


def test_mri_contrast_named_by_series_description():
    from mamba_monai.data.mri import dicom_contrast

    named = {"AX T2 FLAIR": "flair", "T1 POST GD": "t1ce", "T1 3D +C": "t1ce", "t1ce": "t1ce", "T1 MPRAGE": "t1",
             "AX T2 TSE": "t2", "PD": "pd", "DWI b1000": None, "Localizer": None}
    assert {text: dicom_contrast(text) for text in named} == named


@pytest.mark.slow
def test_synthesis_from_a_dicom_study_is_written_as_a_derived_series(tmp_path):
    from mamba_monai.data import ensure_demo_mri_dataset, find_mri_cases

    ensure_demo_mri_dataset(str(tmp_path / "nifti"), num_train=1, num_val=1, num_test=1, size_scale=0.4)
    (case,) = [c for c in (tmp_path / "nifti" / "test").iterdir() if c.is_dir()]
    study, study_uid = tmp_path / "study", pydicom.uid.generate_uid()
    described = {"t1": "AX T1 SE", "t1ce": "AX T1 POST GD", "t2": "AX T2 TSE", "flair": "AX T2 FLAIR"}
    sources = {}
    for number, (contrast, description) in enumerate(described.items(), start=1):
        nifti = case / f"{case.name}_{contrast}.nii.gz"
        if nifti.is_file():
            img = nib.load(str(nifti))
            sources[contrast] = write_dicom_series(study / "patient1" / contrast, np.asarray(img.dataobj, np.float32),
                                                   img.affine, modality="MR", SeriesDescription=description,
                                                   StudyInstanceUID=study_uid, SeriesNumber=number)
    write_dicom_series(study / "patient1" / "loc", np.zeros((8, 8, 3)), np.eye(4), modality="MR",
                       SeriesDescription="3-plane localizer", StudyInstanceUID=study_uid, SeriesNumber=9)
    (found,) = find_mri_cases(str(study))
    assert found["layout"] == "dicom" and set(found) - {"case", "layout"} == set(sources)

    out = tmp_path / "out"
    run_bundle("medgan_ssm_synthesis", ["inference.json"], dataset_dir=str(study), output_dir=str(out))
    synthesis = nib.load(str(out / "patient1_flair_synth.nii.gz"))
    series = sorted((out / "patient1_flair_synth_dicom").glob("*.dcm"))
    reference = sources["flair"]  # the grid of the case: its real FLAIR series
    assert len(series) == len(reference)
    written = [pydicom.dcmread(str(p)) for p in series]
    originals = {ds.SOPInstanceUID: ds for ds in (pydicom.dcmread(f) for f in reference)}
    for ds in written:
        (source,) = ds.SourceImageSequence
        original = originals[source.ReferencedSOPInstanceUID]
        assert list(ds.ImagePositionPatient) == list(original.ImagePositionPatient)
        assert ds.SeriesInstanceUID != original.SeriesInstanceUID and ds.StudyInstanceUID == study_uid
        assert list(ds.ImageType) == ["DERIVED", "SECONDARY"] and "synthetic FLAIR" in ds.SeriesDescription
    # read back as a volume, the series holds the synthesis (rounded to integers) on the same grid
    img = SafeLoadImaged("image", ensure_channel_first=True)({"image": str(out / "patient1_flair_synth_dicom")})["image"]
    np.testing.assert_allclose(np.asarray(img.affine), synthesis.affine, atol=1e-3)
    np.testing.assert_allclose(np.asarray(img[0]), np.clip(np.rint(np.asarray(synthesis.dataobj)), 0, None), atol=0.5)
