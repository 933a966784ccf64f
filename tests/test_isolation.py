"""Per-case isolation pieces in process: failure descriptions, IsolatedDataset, CaseIsolatingEvaluator, the
new validation checks, datalist validation and collision-safe output names."""

from __future__ import annotations

import csv
import json
import logging
import os

import numpy as np
import pytest
import torch
from monai.data import DataLoader, MetaTensor
from monai.handlers import MeanDice, from_engine
from monai.transforms import Compose, Lambdad, LoadImaged, SaveImaged, WriteFileMappingd

from mamba_monai.data import (
    CASE_FAILURE_KEY,
    CaseFailure,
    InvalidCaseError,
    InvalidCasesError,
    IsolatedDataset,
    SafeLoadImaged,
    UniqueNameFormatter,
    ValidateImaged,
    ValidateLabelsd,
    check_output_dir,
    describe_failure,
    isolated_collate,
    make_affine,
    validate_cases,
    write_nifti,
)
from mamba_monai.engines import CaseIsolatingEvaluator, CasesSkippedError


def _meta(array, name="case_1.nii.gz", affine=None):
    meta = {"filename_or_obj": f"/data/{name}"}
    if affine is not None:
        meta["affine"] = torch.as_tensor(affine, dtype=torch.float64)
    return MetaTensor(torch.as_tensor(array), meta=meta)


# ------------------------------------------------------------------------------------------------- validation


def test_validate_imaged_names_wrong_dimensionality_both_ways():
    with pytest.raises(InvalidCaseError, match=r"case_1\.nii\.gz is a 2D image.*takes 3D.*2D bundle") as err:
        ValidateImaged("image", spatial_dims=3)({"image": _meta(torch.zeros(1, 8, 8))})
    assert err.value.file == "/data/case_1.nii.gz" and "stack the slices" in err.value.fix
    with pytest.raises(InvalidCaseError, match=r"has 3 spatial dimensions.*takes 2D.*extract 2D slices"):
        ValidateImaged("image", spatial_dims=2)({"image": _meta(torch.zeros(1, 8, 8, 4))})
    with pytest.raises(InvalidCaseError, match=r"has 4 spatial dimensions.*drop the extra dimensions"):
        ValidateImaged("image", spatial_dims=3)({"image": _meta(torch.zeros(1, 8, 8, 4, 2))})
    ValidateImaged("image", spatial_dims=3)({"image": _meta(torch.rand(1, 8, 8, 4))})


def test_validate_imaged_rejects_unusable_affines_and_warns_on_constant(caplog):
    singular = make_affine((1.0, 1.0, 2.0))
    singular[:3, 2] = 0.0
    with pytest.raises(InvalidCaseError, match=r"degenerate affine.*spacing \[1\.0, 1\.0, 0\.0\]") as err:
        ValidateImaged("image")({"image": _meta(torch.rand(1, 4, 4, 4), affine=singular)})
    assert "set_sform" in err.value.fix
    non_finite = make_affine(1.0)
    non_finite[1, 3] = float("inf")
    with pytest.raises(InvalidCaseError, match="non-finite affine"):
        ValidateImaged("image")({"image": _meta(torch.rand(1, 4, 4, 4), affine=non_finite)})
    ValidateImaged("image", check_affine=False)({"image": _meta(torch.rand(1, 4, 4, 4), affine=singular)})
    with caplog.at_level(logging.WARNING, logger="mamba_monai.data.validation"):
        ValidateImaged("image")({"image": _meta(torch.full((1, 4, 4, 4), -1000.0))})
    assert "case_1.nii.gz is constant (every voxel is -1000)" in caplog.text


def test_safe_load_rejects_a_header_that_monai_would_replace_by_identity(tmp_path):
    """MONAI's NIfTI reader silently puts an identity in place of a singular affine: SafeLoadImaged says so."""
    import nibabel as nib

    affine = make_affine((0.8, 0.8, 2.5))
    affine[:3, 1] = 0.0
    img = nib.Nifti1Image(np.ones((6, 7, 8), np.float32), None)
    img.set_sform(affine, code=1)
    nib.save(img, tmp_path / "flat.nii.gz")
    assert np.allclose(LoadImaged("image")({"image": str(tmp_path / "flat.nii.gz")})["image"].affine, np.eye(4))
    with pytest.raises(InvalidCaseError, match=r"flat\.nii\.gz has a degenerate affine.*in its header"):
        SafeLoadImaged("image")({"image": str(tmp_path / "flat.nii.gz")})


def test_validate_labelsd_checks_the_shape_against_the_image():
    data = {"image": _meta(torch.zeros(1, 8, 8, 4), "img.nii.gz"), "label": _meta(torch.zeros(1, 8, 8, 5), "lab.nii.gz")}
    with pytest.raises(InvalidCaseError, match=r"lab\.nii\.gz has spatial shape \(8, 8, 5\), its image .*img\.nii\.gz"):
        ValidateLabelsd("label", num_classes=3, image_key="image")(data)
    ValidateLabelsd("label", num_classes=3)(data)  # without image_key only the values are checked


# --------------------------------------------------------------------------------------------- descriptions


def test_describe_failure_finds_the_named_error_inside_compose():
    transform = Compose([Lambdad("image", lambda x: x), ValidateImaged("image", num_channels=1)])
    with pytest.raises(RuntimeError) as err:
        transform({"image": _meta(torch.zeros(2, 4, 4, 4), "two.nii.gz")})
    failure = describe_failure(err.value, ["/elsewhere/x.nii.gz"])
    assert failure.file == "/data/two.nii.gz" and failure.stage == "validate"
    assert "2 channel(s)" in failure.reason and "in_channels" in failure.fix
    missing = describe_failure(FileNotFoundError(2, "No such file", "/d/gone.nii.gz"), ["/d/img.nii.gz"])
    assert missing.file == "/d/gone.nii.gz" and missing.stage == "read"
    assert CaseFailure.from_json(missing.to_json()) == missing


def _chain(err, cause):
    err.__cause__ = cause
    return err


def test_describe_failure_takes_the_innermost_error():
    err = _chain(RuntimeError("applying transform <Orientationd>"), _chain(ValueError("wrapped"), KeyError("pixdim")))
    failure = describe_failure(err, ["/d/y.nii.gz"], stage="preprocess")
    assert failure.reason == "KeyError: 'pixdim'" and failure.file == "/d/y.nii.gz" and "header" in failure.fix


# ----------------------------------------------------------------------------------- dataset and evaluator


def _case_files(tmp_path, shapes_and_kinds):
    items = []
    for i, (shape, kind) in enumerate(shapes_and_kinds):
        path = str(tmp_path / f"c{i}_{kind}.nii.gz")
        data = np.random.default_rng(i).random(shape).astype(np.float32)
        if kind == "nan":
            data[0, 0, 0] = np.nan
        write_nifti(data, make_affine((1.0, 1.0, 2.0)), path)
        label = (data > 0.5).astype(np.uint8) if kind != "nan" else np.zeros(shape, np.uint8)
        lab_path = write_nifti(label, make_affine((1.0, 1.0, 2.0)), str(tmp_path / f"c{i}_{kind}_label.nii.gz"))
        items.append({"image": path, "label": lab_path})
    return items


def _preprocessing():
    return Compose([
        SafeLoadImaged(["image", "label"], ensure_channel_first=True),
        ValidateImaged("image", num_channels=1, spatial_dims=3),
    ])


def test_isolated_dataset_and_collate(tmp_path):
    items = _case_files(tmp_path, [((6, 6, 4), "good"), ((6, 6, 4), "nan"), ((6, 6, 4), "good")])
    ds = IsolatedDataset(items, _preprocessing())
    assert isinstance(ds[0]["image"], MetaTensor)
    failure = CaseFailure.from_json(ds[1][CASE_FAILURE_KEY])
    assert failure.file.endswith("c1_nan.nii.gz") and failure.stage == "validate" and "NaN" in failure.reason
    batch = isolated_collate([ds[0], ds[1], ds[2]])
    assert batch["image"].shape == (2, 1, 6, 6, 4) and len(batch[CASE_FAILURE_KEY]) == 1
    # a batch of one failed item collates by default into the same form
    default = next(iter(DataLoader(IsolatedDataset(items[1:2], _preprocessing()), batch_size=1)))
    assert list(default) == [CASE_FAILURE_KEY] and len(default[CASE_FAILURE_KEY]) == 1


class _FailsOnWideInputs(torch.nn.Module):
    """Predicts (x > 0.5) as two-class logits; raises for inputs 9 voxels wide (an 'inference' failure)."""

    def forward(self, x):
        if x.shape[2] == 9:
            raise RuntimeError("out of memory (simulated)")
        fg = (x > 0.5).float()
        return torch.cat([1 - fg, fg], dim=1) * 10


def test_evaluator_skips_bad_cases_computes_metrics_on_the_rest_and_reports(tmp_path):
    items = _case_files(tmp_path, [((6, 6, 4), "good"), ((6, 6, 4), "nan"), ((9, 6, 4), "wide"), ((6, 7, 4), "good")])
    items.append({"image": str(tmp_path / "gone.nii.gz"), "label": items[0]["label"]})
    out = tmp_path / "out"
    evaluator = CaseIsolatingEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(IsolatedDataset(items, _preprocessing()), batch_size=1),
        network=_FailsOnWideInputs(),
        postprocessing=Compose([Lambdad("pred", lambda p: torch.nn.functional.one_hot(p.argmax(0), 2).permute(3, 0, 1, 2)),
                                Lambdad("label", lambda y: torch.nn.functional.one_hot(y[0].long(), 2).permute(3, 0, 1, 2))]),
        key_val_metric={"dice": MeanDice(include_background=False, output_transform=from_engine(["pred", "label"]))},
        report_dir=str(out),
    )
    with pytest.raises(CasesSkippedError) as err:
        evaluator.run()
    assert err.value.code and "3 of 5 case(s) skipped" in str(err.value)
    assert evaluator.state.metrics["dice"] == pytest.approx(1.0)  # the network is perfect on the two good cases
    with open(out / "skipped.csv") as f:
        rows = {os.path.basename(r["file"]): r for r in csv.DictReader(f)}
    assert {k: r["stage"] for k, r in rows.items()} == {
        "c1_nan.nii.gz": "validate", "c2_wide.nii.gz": "inference", "gone.nii.gz": "read"}
    assert "out of memory (simulated)" in rows["c2_wide.nii.gz"]["reason"]
    assert [os.path.basename(f) for f in evaluator.report.done] == ["c0_good.nii.gz", "c3_good.nii.gz"]

    # a run with nothing to skip leaves an empty list (header only) and raises nothing
    evaluator.data_loader = DataLoader(IsolatedDataset([items[0]], _preprocessing()), batch_size=1)
    evaluator.state.epoch_length = 1
    evaluator.run()
    with open(out / "skipped.csv") as f:
        assert list(csv.DictReader(f)) == []


def test_evaluator_with_every_case_bad_reports_them_without_a_metric_crash(tmp_path):
    items = _case_files(tmp_path, [((6, 6, 4), "nan"), ((6, 6, 4), "nan")])
    evaluator = CaseIsolatingEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(IsolatedDataset(items, _preprocessing()), batch_size=1),
        network=_FailsOnWideInputs(),
        key_val_metric={"dice": MeanDice(output_transform=from_engine(["pred", "label"]))},
    )
    with pytest.raises(CasesSkippedError, match="2 of 2 case"):
        evaluator.run()


def test_postprocessing_failure_is_isolated_and_staged(tmp_path):
    items = _case_files(tmp_path, [((6, 6, 4), "good"), ((6, 6, 5), "good")])

    def fail_on_depth_5(p):
        if p.shape[-1] == 5:
            raise OSError("No space left on device")
        return p

    evaluator = CaseIsolatingEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(IsolatedDataset(items, _preprocessing()), batch_size=1),
        network=_FailsOnWideInputs(),
        postprocessing=Lambdad("pred", fail_on_depth_5),
        raise_on_skipped=False,
    )
    evaluator.run()  # raise_on_skipped=False: the run ends normally
    [failure] = evaluator.report.skipped
    assert failure.stage == "postprocess" and "No space left" in failure.reason and "output_dir" in failure.fix


# ------------------------------------------------------------------------------------ datalist validation


def test_validate_cases_reports_every_bad_case_at_once(tmp_path, caplog):
    items = _case_files(tmp_path, [((6, 6, 4), "good"), ((6, 6, 4), "nan"), ((6, 6, 4), "good"), ((6, 6, 4), "nan")])
    with pytest.raises(InvalidCasesError, match=r"2 of 4 training case\(s\)") as err:
        validate_cases(items, _preprocessing(), what="training")
    assert [os.path.basename(f.file) for f in err.value.failures] == ["c1_nan.nii.gz", "c3_nan.nii.gz"]
    assert "--skip_bad_cases True" in str(err.value)
    with caplog.at_level(logging.WARNING, logger="mamba_monai.data.isolation"):
        good = validate_cases(items, _preprocessing(), skip_bad_cases=True, what="training")
    assert good == [items[0], items[2]] and "using 2 of 4 training" in caplog.text
    with pytest.raises(InvalidCasesError, match="none of the 2"):
        validate_cases([items[1], items[3]], _preprocessing(), skip_bad_cases=True, what="training")


# --------------------------------------------------------------------------------------------------- outputs


def test_unique_name_formatter_keeps_other_inputs_outputs(tmp_path, caplog):
    out = tmp_path / "out"
    mapping = str(out / "mapping.json")
    writer = Compose([
        SaveImaged("pred", output_dir=str(out), output_postfix="seg", separate_folder=False, print_log=False,
                   savepath_in_metadict=True, output_name_formatter=UniqueNameFormatter(mapping)),
        WriteFileMappingd("pred", mapping_file_path=mapping),
    ])

    def save(source, value):
        writer({"pred": MetaTensor(torch.full((1, 3, 3, 3), float(value)), meta={"filename_or_obj": source})})

    save("/site_a/case.nii.gz", 1)
    save("/site_b/case.nii.gz", 2)  # same name, other input: a suffix, not an overwrite
    with caplog.at_level(logging.WARNING, logger="mamba_monai.data.outputs"):
        save("/site_b/case.nii.gz", 3)  # the same input again: refreshes its own output
    save("/site_c/case.nii.gz", 4)
    assert sorted(os.listdir(out)) == ["case_seg.nii.gz", "case_seg_2.nii.gz", "case_seg_3.nii.gz", "mapping.json",
                                       "mapping.json.lock"]
    import nibabel as nib

    values = {n: float(nib.load(out / n).get_fdata().max()) for n in os.listdir(out) if n.endswith(".nii.gz")}
    assert values == {"case_seg.nii.gz": 1.0, "case_seg_2.nii.gz": 3.0, "case_seg_3.nii.gz": 4.0}
    with open(mapping) as f:
        assert len(json.load(f)) == 4


def test_check_output_dir(tmp_path):
    data = tmp_path / "data"
    with pytest.raises(ValueError, match="inside the data folder"):
        check_output_dir(str(data / "pred"), str(data))
    with pytest.raises(ValueError, match="inside the data folder"):
        check_output_dir(str(data), str(data))
    assert check_output_dir(str(tmp_path / "data_pred"), str(data), None) == str(tmp_path / "data_pred")
