"""The MONAI Deploy application run as the SDK runs one locally (``python -m mamba_monai.deploy -i -o -m``) on a DICOM
study, in its own environment (built here when missing): its DICOM SEG references the CT series, names the bundle's
classes, and says slice by slice what the bundle's own inference says."""

from __future__ import annotations

import glob
import os
import subprocess

import nibabel as nib
import numpy as np
import pydicom
import pytest

from mamba_monai.bundle import bundle_dir
from mamba_monai.bundle.testing import run_bundle
from mamba_monai.data import DEMO_CT_LABELS, generate_demo_ct_case, labels_on_source_frames, write_dicom_series

hd = pytest.importorskip("highdicom")


@pytest.fixture(scope="module")
def deploy_env():
    from mamba_monai.deploy.environment import ensure_deploy_env

    try:
        return ensure_deploy_env()
    except RuntimeError as err:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no MONAI Deploy environment here: {err}")


@pytest.mark.slow
def test_deploy_app_writes_a_seg_that_matches_the_bundle(deploy_env, tmp_path):
    study = tmp_path / "study"
    image, _, affine = generate_demo_ct_case(2, size_scale=0.5)
    ct = write_dicom_series(study / "ct", image.astype(np.float32), affine, SeriesNumber=2, SeriesDescription="CT")
    # a second series of the same study that the selector must pass over (an MR localiser)
    study_uid = pydicom.dcmread(ct[0]).StudyInstanceUID
    write_dicom_series(study / "mr", np.full((16, 16, 3), 100.0), np.diag([2.0, 2.0, 5.0, 1.0]), modality="MR",
                       StudyInstanceUID=study_uid, SeriesNumber=9)
    out = tmp_path / "out"
    bundle = bundle_dir("emnet_seg3d")
    proc = subprocess.run(
        [deploy_env, "-m", "mamba_monai.deploy", "-i", str(study), "-o", str(out), "-m", bundle],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (seg_path,) = glob.glob(str(out / "*.dcm"))
    seg = hd.seg.segread(seg_path)
    sources = [pydicom.dcmread(f) for f in ct]
    referenced = [r.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence for r in s.ReferencedInstanceSequence]
    assert set(referenced) == {ds.SOPInstanceUID for ds in sources}  # the CT series, not the MR one
    assert [s.SegmentLabel for s in seg.SegmentSequence] == [DEMO_CT_LABELS[k] for k in sorted(DEMO_CT_LABELS) if k]
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Liver"

    # the bundle's own inference on the same series (our DICOM reader, SaveLikeInputd's NIfTI)
    own = tmp_path / "own"
    run_bundle("emnet_seg3d", ["inference.json"], dataset_dir=str(study / "ct"), output_dir=str(own))
    pred = nib.load(glob.glob(str(own / "*_seg.nii.gz"))[0])
    expected = labels_on_source_frames(np.asarray(pred.dataobj), pred.affine, sources)
    frames = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[ds.SOPInstanceUID for ds in sources], combine_segments=True,
        skip_overlap_checks=True, assert_missing_frames_are_empty=True,
    )
    assert frames.any()
    assert (frames == expected).mean() > 0.999, f"{(frames != expected).sum()} of {frames.size} pixels differ"
