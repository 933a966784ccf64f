"""Demo data writers and the data utilities the bundles share.

Generic: :mod:`~mamba_monai.data.nifti` (affines, atomic NIfTI writes), :mod:`~mamba_monai.data.datalist`
(Decathlon datalists), :mod:`~mamba_monai.data.validation` (input checks that name the file).
Task-specific: :mod:`~mamba_monai.data.demo_ct` (synthetic abdominal CT for the 3D segmentation bundle),
:mod:`~mamba_monai.data.demo_2d` (synthetic ultrasound / dermoscopy lesions, PNG/JPEG),
:mod:`~mamba_monai.data.image2d` (reading any 2D image: PNG/JPEG/TIFF/NIfTI/DICOM, channels, label values),
:mod:`~mamba_monai.data.demo_mri` (synthetic multi-contrast brain MRI, BraTS layout) and
:mod:`~mamba_monai.data.mri` (BraTS / IXI case discovery and the transforms of the synthesis bundle),
:mod:`~mamba_monai.data.synthesis` (writing a synthesis with the record of its inputs).
"""

from __future__ import annotations

from mamba_monai.data.datalist import (
    datalist_from_folder,
    datalist_from_image_label_folders,
    load_datalist,
    missing_files,
    segmentation_lists,
    write_datalist,
)
from mamba_monai.data.demo_ct import DEMO_CT_LABELS, DEMO_CT_VERSION, ensure_demo_ct_dataset, generate_demo_ct_case
from mamba_monai.data.demo import ensure_demo_dataset
from mamba_monai.data.dicom import write_dicom_image
from mamba_monai.data.demo_2d import (
    DEMO_2D_LABELS,
    DEMO_2D_STYLES,
    DEMO_2D_VERSION,
    ensure_demo_2d_dataset,
    generate_demo_2d_case,
)
from mamba_monai.data.demo_mri import (
    DEMO_MRI_CONTRASTS,
    DEMO_MRI_LABELS,
    DEMO_MRI_SPLITS,
    DEMO_MRI_VERSION,
    DemoMRICase,
    ensure_demo_mri_dataset,
    generate_demo_mri_case,
)
from mamba_monai.data.image2d import (
    IMAGE_2D_SUFFIXES,
    EnsureChannelsd,
    LoadImage2Dd,
    RemapLabelsd,
    is_dicom_file,
    write_image_2d,
)
from mamba_monai.data.isolation import (
    CASE_FAILURE_KEY,
    CaseFailure,
    InvalidCasesError,
    IsolatedDataset,
    describe_failure,
    isolated_collate,
    validate_cases,
    validate_datalist,
)
from mamba_monai.data.mri import (
    CONTRAST_ALIASES,
    MRI_CONTRASTS,
    DropContrastsd,
    LoadMRIContrastsd,
    RandDropContrastsd,
    RestoreIntensityd,
    ScaleIntensityPercentiled,
    ZeroOutsideInputsd,
    canonical_contrast,
    find_mri_cases,
    mri_dataset_splits,
    restore_intensity,
    select_mri_cases,
    split_mri_cases,
)
from mamba_monai.data.nifti import atomic_write_text, make_affine, rotation_matrix, write_nifti
from mamba_monai.data.outputs import SaveLikeInputd, UniqueNameFormatter, check_output_dir, output_ext_like
from mamba_monai.data.synthesis import SaveSynthesisd, synthesis_description
from mamba_monai.data.validation import (
    CaseError,
    ImageReadError,
    InvalidCaseError,
    SafeLoadImaged,
    ValidateImaged,
    ValidateLabelsd,
    check_readable,
    filter_readable,
    source_filename,
)

__all__ = [
    "CASE_FAILURE_KEY",
    "CaseError",
    "CaseFailure",
    "InvalidCaseError",
    "InvalidCasesError",
    "IsolatedDataset",
    "SaveLikeInputd",
    "UniqueNameFormatter",
    "output_ext_like",
    "check_output_dir",
    "describe_failure",
    "ensure_demo_dataset",
    "write_dicom_image",
    "isolated_collate",
    "validate_cases",
    "validate_datalist",
    "DEMO_CT_LABELS",
    "DEMO_CT_VERSION",
    "ImageReadError",
    "SafeLoadImaged",
    "ValidateImaged",
    "ValidateLabelsd",
    "atomic_write_text",
    "check_readable",
    "datalist_from_folder",
    "ensure_demo_ct_dataset",
    "filter_readable",
    "generate_demo_ct_case",
    "load_datalist",
    "make_affine",
    "missing_files",
    "rotation_matrix",
    "source_filename",
    "segmentation_lists",
    "write_datalist",
    "write_nifti",
    "CONTRAST_ALIASES",
    "DEMO_MRI_CONTRASTS",
    "DEMO_MRI_LABELS",
    "DEMO_MRI_SPLITS",
    "DEMO_MRI_VERSION",
    "DemoMRICase",
    "DropContrastsd",
    "LoadMRIContrastsd",
    "MRI_CONTRASTS",
    "RandDropContrastsd",
    "RestoreIntensityd",
    "ScaleIntensityPercentiled",
    "ZeroOutsideInputsd",
    "canonical_contrast",
    "ensure_demo_mri_dataset",
    "find_mri_cases",
    "mri_dataset_splits",
    "generate_demo_mri_case",
    "restore_intensity",
    "SaveSynthesisd",
    "synthesis_description",
    "select_mri_cases",
    "split_mri_cases",
    "DEMO_2D_LABELS",
    "DEMO_2D_STYLES",
    "DEMO_2D_VERSION",
    "EnsureChannelsd",
    "IMAGE_2D_SUFFIXES",
    "LoadImage2Dd",
    "RemapLabelsd",
    "datalist_from_image_label_folders",
    "ensure_demo_2d_dataset",
    "generate_demo_2d_case",
    "is_dicom_file",
    "write_image_2d",
]
