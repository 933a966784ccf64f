"""Demo data writers and the data utilities the bundles share.

Generic: :mod:`~mamba_monai.data.nifti` (affines, atomic NIfTI writes), :mod:`~mamba_monai.data.datalist`
(Decathlon datalists), :mod:`~mamba_monai.data.validation` (input checks that name the file).
Task-specific: :mod:`~mamba_monai.data.demo_ct` (synthetic abdominal CT for the 3D segmentation bundle).
"""

from __future__ import annotations

from mamba_monai.data.datalist import datalist_from_folder, load_datalist, missing_files, write_datalist
from mamba_monai.data.demo_ct import DEMO_CT_LABELS, DEMO_CT_VERSION, ensure_demo_ct_dataset, generate_demo_ct_case
from mamba_monai.data.nifti import atomic_write_text, make_affine, rotation_matrix, write_nifti
from mamba_monai.data.validation import (
    ImageReadError,
    SafeLoadImaged,
    ValidateImaged,
    ValidateLabelsd,
    check_readable,
    filter_readable,
    source_filename,
)

__all__ = [
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
    "write_datalist",
    "write_nifti",
]
