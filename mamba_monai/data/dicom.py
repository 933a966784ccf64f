"""Writing DICOM files as scanners do, for tests and demo data (reading is MONAI's, with pydicom)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from monai.utils import optional_import

pydicom, _ = optional_import("pydicom")
FileDataset, _ = optional_import("pydicom.dataset", name="FileDataset")
FileMetaDataset, _ = optional_import("pydicom.dataset", name="FileMetaDataset")
ExplicitVRLittleEndian, _ = optional_import("pydicom.uid", name="ExplicitVRLittleEndian")
generate_uid, _ = optional_import("pydicom.uid", name="generate_uid")

__all__ = ["write_dicom_image"]


def write_dicom_image(path: str | os.PathLike, pixels: np.ndarray, modality: str = "CT", **tags: Any) -> str:
    """
    Write a single-frame DICOM file as a scanner writes it: file meta (explicit VR little endian), SOP class of the
    modality, Study/Series/SOP instance UIDs, patient module, pixel module; geometry and any other attribute come
    from ``tags`` (e.g. ``PixelSpacing=[0.5, 0.7]``, ``ImagePositionPatient``, ``ImageOrientationPatient``,
    ``RescaleSlope``, ``StudyInstanceUID`` / ``SeriesInstanceUID`` to put several files in one series).

    Args:
        path: destination file.
        pixels: (rows, columns) gray or (rows, columns, 3) RGB; uint8, uint16 or int16.
        modality: ``"CT"``, ``"MR"`` or ``"US"``. Default ``"CT"``.
        tags: DICOM attributes by keyword.

    Returns:
        ``path`` as a string.
    """
    sop = {"CT": "1.2.840.10008.5.1.4.1.1.2", "MR": "1.2.840.10008.5.1.4.1.1.4", "US": "1.2.840.10008.5.1.4.1.1.6.1"}
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop[modality]
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID, ds.PatientName = modality, "ANON0001", "Anon^Patient"
    ds.StudyInstanceUID = tags.pop("StudyInstanceUID", None) or generate_uid()
    ds.SeriesInstanceUID = tags.pop("SeriesInstanceUID", None) or generate_uid()
    ds.SeriesNumber, ds.InstanceNumber = tags.pop("SeriesNumber", 1), tags.pop("InstanceNumber", 1)
    pixels = np.asarray(pixels)
    ds.Rows, ds.Columns = pixels.shape[:2]
    rgb = pixels.ndim == 3
    ds.SamplesPerPixel = 3 if rgb else 1
    ds.PhotometricInterpretation = "RGB" if rgb else "MONOCHROME2"
    if rgb:
        ds.PlanarConfiguration = 0
    bits = 8 * pixels.dtype.itemsize
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, tags.pop("BitsStored", bits), bits - 1
    ds.PixelRepresentation = int(pixels.dtype.kind == "i")
    for k, v in tags.items():
        setattr(ds, k, v)
    data = pixels.tobytes()
    ds.PixelData = data + b"\0" * (len(data) % 2)  # DICOM values have even length
    try:
        ds.save_as(str(path), enforce_file_format=True)  # pydicom >= 3
    except TypeError:  # pragma: no cover - pydicom 2.x
        ds.save_as(str(path), write_like_original=False)
    return str(path)
