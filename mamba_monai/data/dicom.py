"""DICOM in: series found in a folder and read with MONAI's ``PydicomReader``; DICOM written as scanners do.

- :func:`find_dicom_series`: the DICOM series under a folder, one entry per ``SeriesInstanceUID`` (a flat folder of
  mixed series is split; a folder per series is kept as that folder).
- :class:`DicomSeriesReader`: MONAI's ``PydicomReader`` that takes one series as a folder or as a list of files,
  stacks its slices in the order of their positions (not of ``InstanceNumber``, which scanners do not always keep
  in step) and rejects a folder that mixes series.
- :func:`write_dicom_image` / :func:`write_dicom_series`: write a slice, or a volume with its affine as a series of
  axial slices, with the modules a scanner writes (for tests and the demo's DICOM case).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from monai.data import PydicomReader
from monai.utils import ensure_tuple, optional_import

pydicom, _ = optional_import("pydicom")
FileDataset, _ = optional_import("pydicom.dataset", name="FileDataset")
FileMetaDataset, _ = optional_import("pydicom.dataset", name="FileMetaDataset")
ExplicitVRLittleEndian, _ = optional_import("pydicom.uid", name="ExplicitVRLittleEndian")
generate_uid, _ = optional_import("pydicom.uid", name="generate_uid")

__all__ = [
    "DicomSeriesReader",
    "find_dicom_series",
    "series_name",
    "series_source",
    "write_derived_series",
    "write_dicom_image",
    "write_dicom_like",
    "write_dicom_series",
]

# attributes of the patient, study and equipment modules that a scanner writes and DICOM SEG writers copy
_SCANNER_DEFAULTS = {
    "PatientID": "ANON0001",
    "PatientName": "Anon^Patient",
    "PatientBirthDate": "19700101",
    "PatientSex": "O",
    "StudyID": "1",
    "StudyDate": "20260101",
    "StudyTime": "120000",
    "AccessionNumber": "A0001",
    "ReferringPhysicianName": "",
    "Manufacturer": "mamba-monai demo",
}


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
    ds.Modality = modality
    for keyword, value in _SCANNER_DEFAULTS.items():
        setattr(ds, keyword, tags.pop(keyword, value))
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


def write_dicom_series(
    folder: str | os.PathLike,
    volume: np.ndarray,
    affine: np.ndarray | None = None,
    modality: str = "CT",
    prefix: str = "IM",
    **tags: Any,
) -> list[str]:
    """
    Write a 3D volume as a DICOM series of single-frame slices, one file per index of the last axis, as a scanner
    writes an axial series: one Study/Series/FrameOfReference UID, ``ImagePositionPatient`` /
    ``ImageOrientationPatient`` / ``PixelSpacing`` / ``SliceThickness`` from ``affine`` (LPS, as DICOM is),
    ``InstanceNumber`` from 1; CT values stored as unsigned integers with ``RescaleIntercept`` -1024 (Hounsfield
    units come back on reading), other modalities as uint16 after rounding.

    Reading the folder back with :class:`DicomSeriesReader` gives ``volume`` and ``affine`` again.

    Args:
        folder: destination folder (created).
        volume: (X, Y, Z) array in the voxel order of ``affine`` (as a NIfTI volume): X runs along the columns of
            a slice, Y along its rows.
        affine: 4x4 voxel-to-world affine in RAS (NIfTI and MONAI's convention). Default identity.
        modality: ``"CT"`` or ``"MR"``. Default ``"CT"``.
        prefix: file name prefix (``IM0001.dcm``...). Default ``"IM"``.
        tags: DICOM attributes by keyword for every slice (``SeriesDescription``, ``SeriesNumber``,
            ``StudyInstanceUID``...).

    Returns:
        the paths written, in slice order.
    """
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"write_dicom_series expects a 3D (X, Y, Z) volume, got shape {volume.shape}.")
    affine_lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ (np.eye(4) if affine is None else np.asarray(affine, float))
    col_step, row_step = affine_lps[:3, 0], affine_lps[:3, 1]  # one column / one row further along the slice
    col_spacing, row_spacing = float(np.linalg.norm(col_step)), float(np.linalg.norm(row_step))
    orientation = [float(v) for v in np.concatenate([col_step / col_spacing, row_step / row_spacing])]
    if modality == "CT":
        pixels_of, extra = (lambda sl: np.clip(np.round(sl) + 1024, 0, 65535).astype(np.uint16)), {
            "RescaleIntercept": -1024, "RescaleSlope": 1, "RescaleType": "HU"}
    else:
        pixels_of, extra = (lambda sl: np.clip(np.round(sl), 0, 65535).astype(np.uint16)), {}
    shared = {
        "StudyInstanceUID": tags.pop("StudyInstanceUID", None) or generate_uid(),
        "SeriesInstanceUID": tags.pop("SeriesInstanceUID", None) or generate_uid(),
        "FrameOfReferenceUID": tags.pop("FrameOfReferenceUID", None) or generate_uid(),
        "PositionReferenceIndicator": "",
        "ImageOrientationPatient": orientation,
        "PixelSpacing": [row_spacing, col_spacing],
        "SliceThickness": float(np.linalg.norm(affine_lps[:3, 2])),
        "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"],
        **extra,
        **tags,
    }
    os.makedirs(folder, exist_ok=True)
    paths = []
    for k in range(volume.shape[2]):
        position = [float(v) for v in (affine_lps @ np.array([0.0, 0.0, k, 1.0]))[:3]]
        path = os.path.join(os.fspath(folder), f"{prefix}{k + 1:04d}.dcm")
        # a slice's row r, column c is voxel (c, r, k): rows run along Y, columns along X
        write_dicom_image(
            path, pixels_of(volume[:, :, k].T), modality=modality, InstanceNumber=k + 1,
            ImagePositionPatient=position, SliceLocation=position[2], **shared,
        )
        paths.append(path)
    return paths


def write_dicom_like(source: str | os.PathLike, folder: str | os.PathLike, modality: str | None = None) -> str:
    """
    Write an image file as a scanner would have sent it: a 3D NIfTI volume as a series of slices in
    ``folder/<name>/`` (:func:`write_dicom_series`, ``modality`` default ``"CT"``), a 2D image (PNG, JPEG, a NIfTI
    slice) as one single-frame file ``folder/<name>.dcm`` (:func:`write_dicom_image`, default ``"US"``, pixel
    spacing from a NIfTI's header, else 1 mm). For demos and tests of the DICOM path.

    Returns:
        the series folder, or the file.
    """
    import nibabel as nib
    from PIL import Image

    source = os.fspath(source)
    name = os.path.basename(source)
    for ext in (".nii.gz", ".nii", ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    if source.lower().endswith((".nii", ".nii.gz")):
        img = nib.load(source)
        data = np.asarray(img.dataobj, dtype=np.float32)
        if data.ndim == 3 and min(data.shape) > 1:
            return os.path.dirname(write_dicom_series(
                os.path.join(os.fspath(folder), name), data, img.affine, modality=modality or "CT",
                SeriesDescription=name,
            )[0])
        pixels = np.squeeze(data).T  # a NIfTI slice is (x, y): rows run along y
        spacing = [float(v) for v in img.header.get_zooms()[:2]][::-1]
    else:
        pixels, spacing = np.asarray(Image.open(source)), [1.0, 1.0]
    if pixels.dtype != np.uint8:
        pixels = np.clip(np.round(pixels), 0, 65535).astype(np.uint16)
    os.makedirs(os.fspath(folder), exist_ok=True)
    return write_dicom_image(os.path.join(os.fspath(folder), f"{name}.dcm"), pixels, modality=modality or "US",
                             PixelSpacing=spacing, SeriesDescription=name)


def _header(path: str) -> Any:
    return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID", "SeriesNumber",
                                                                          "SeriesDescription", "SOPClassUID"])


def dicom_files_in(folder: str | os.PathLike) -> list[str]:
    """The DICOM files directly in ``folder`` (by suffix or ``DICM`` preamble), sorted by name; headers unread."""
    from mamba_monai.data.image2d import is_dicom_file

    folder = os.fspath(folder)
    paths = (os.path.join(folder, n) for n in sorted(os.listdir(folder)) if not n.startswith("."))
    return [p for p in paths if is_dicom_file(p)]


def find_dicom_series(folder: str | os.PathLike, recursive: bool = True) -> list[list[str]]:
    """
    The DICOM series under ``folder``: the DICOM files (by suffix or ``DICM`` preamble, see
    :func:`~mamba_monai.data.is_dicom_file`) grouped by ``SeriesInstanceUID``, each group sorted by path, groups in
    the order of their first file. Files whose header cannot be read are left out here (reading them names them).

    Args:
        folder: the folder to search.
        recursive: also search sub-folders (a folder per series, or per patient/study/series). Default True.
    """
    from mamba_monai.data.image2d import is_dicom_file

    files = []
    for root, dirs, names in os.walk(os.fspath(folder)):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
        files.extend(os.path.join(root, n) for n in sorted(names) if not n.startswith("."))
    groups: dict[str, list[str]] = {}
    for path in files:
        if not is_dicom_file(path):
            continue
        try:
            uid = str(_header(path).get("SeriesInstanceUID", "")) or path
        except Exception:
            uid = path  # named when it is read
        groups.setdefault(uid, []).append(path)
    return list(groups.values())


def _alone_in_its_folder(files: Sequence[str]) -> bool:
    """Whether ``files`` (2 or more) share one folder that holds no other DICOM file."""
    from mamba_monai.data.image2d import is_dicom_file

    parent = os.path.dirname(os.path.abspath(files[0]))
    members = set(map(os.path.abspath, files))
    if len(members) < 2 or any(os.path.dirname(f) != parent for f in members):
        return False
    others = (os.path.join(parent, n) for n in os.listdir(parent))
    return not any(is_dicom_file(p) for p in others if p not in members)


def series_source(files: Sequence[str], top: str | os.PathLike) -> str | list[str]:
    """How a datalist names one series found under the folder ``top``: its folder when the folder holds this
    series alone (and is not ``top`` itself), else the list of its files (a flat folder of mixed series), or the
    file of a single-file series. :class:`DicomSeriesReader` reads all three as one image."""
    if len(files) == 1:
        return files[0]
    parent = os.path.dirname(os.path.abspath(files[0]))
    if parent != os.path.abspath(os.fspath(top)) and _alone_in_its_folder(files):
        return parent
    return list(files)


def series_name(files: Sequence[str]) -> str:
    """A file-name-safe name for a series: its folder's name when the folder holds only this series' files,
    else ``<folder>_series<SeriesNumber>`` (a flat folder of mixed series)."""
    folder = os.path.dirname(os.path.abspath(files[0]))
    if _alone_in_its_folder(files):
        return os.path.basename(folder)
    try:
        number = str(_header(files[0]).get("SeriesNumber", "") or "")
    except Exception:
        number = ""
    return f"{os.path.basename(folder)}_series{number or len(files)}"


def _slice_position(ds: Any) -> float:
    """Position of a slice along its normal (the row x column directions); 0 when the geometry is missing."""
    try:
        orientation = np.asarray(ds.ImageOrientationPatient, float)
        return float(np.dot(np.cross(orientation[:3], orientation[3:]), np.asarray(ds.ImagePositionPatient, float)))
    except (AttributeError, ValueError, TypeError):
        return float(getattr(ds, "InstanceNumber", 0) or 0)


class DicomSeriesReader(PydicomReader):
    """
    MONAI's ``PydicomReader`` for one DICOM series given as a folder or as a list of files (a series out of a
    flat folder of mixed series, as :func:`find_dicom_series` gives it); a single file is read as
    ``PydicomReader`` reads it. The slices are stacked in the order of their positions along the slice normal,
    so the affine (built by ``PydicomReader`` from the first and last ``ImagePositionPatient``) holds even when
    ``InstanceNumber`` does not follow the geometry. Files are stacked as one volume, never as channels.

    Same arguments as ``PydicomReader``. Registered by :class:`~mamba_monai.data.SafeLoadImaged`, so a bundle's
    datalist may name a series folder or a list of slice files as its ``image``.

    Raises:
        ValueError: a folder or list that holds several series (the message lists them and says how to split).
    """

    def verify_suffix(self, filename: Sequence[os.PathLike | str] | os.PathLike | str) -> bool:
        from mamba_monai.data.image2d import is_dicom_file

        names = [os.fspath(n) for n in ensure_tuple(filename)]
        return bool(names) and all(os.path.isdir(n) or is_dicom_file(n) for n in names)

    def read(self, data: Sequence[os.PathLike | str] | os.PathLike | str, **kwargs: Any) -> Any:
        names = [os.fspath(n) for n in ensure_tuple(data)]
        if len(names) == 1 and not os.path.isdir(names[0]):
            return super().read(names[0], **kwargs)
        files: list[str] = []
        for name in names:
            if os.path.isdir(name):  # one series is checked once they are read
                found = dicom_files_in(name)
                if not found:
                    raise ValueError(f"Folder '{name}' holds no DICOM file.")
                files.extend(found)
            else:
                files.append(name)
        options = {**self.kwargs, **kwargs}
        datasets = [pydicom.dcmread(f, **options) for f in files]
        self._check_one_series(datasets, files)
        order = sorted(range(len(files)), key=lambda i: (_slice_position(datasets[i]), files[i]))
        datasets, files = [datasets[i] for i in order], [files[i] for i in order]
        for rank, ds in enumerate(datasets):
            ds.InstanceNumber = rank + 1  # in memory only: PydicomReader stacks by InstanceNumber
        self.filenames = [files]
        self.has_series = len(files) > 1
        return datasets if self.has_series else datasets[0]

    @staticmethod
    def _check_one_series(datasets: Sequence[Any], files: Sequence[str]) -> None:
        series: dict[str, list[str]] = {}
        for ds, f in zip(datasets, files):
            series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append(f)
        if len(series) > 1:
            listing = "; ".join(f"{uid or '<no UID>'} ({len(fs)} files, e.g. {fs[0]})" for uid, fs in series.items())
            raise ValueError(
                f"{len(series)} DICOM series given as one image: {listing}. Give each series its own folder or "
                "datalist entry (`mamba_monai.data.find_dicom_series` splits a folder by SeriesInstanceUID)."
            )


def write_derived_series(
    volume: np.ndarray,
    affine: np.ndarray,
    source_files: Sequence[str],
    folder: str | os.PathLike,
    series_description: str,
    derivation: str = "",
) -> list[str]:
    """
    Write ``volume`` as a DICOM series derived from a source series, slice for slice: each output slice takes the
    geometry, patient and study of its source slice, the values of ``volume`` at its pixels (nearest voxel, by
    world position, see :func:`~mamba_monai.data.labels_on_source_frames`), a new series and instance UIDs,
    ``ImageType`` DERIVED\\SECONDARY, ``DerivationDescription`` and a ``SourceImageSequence`` pointing at the source
    instance. Values are stored as unsigned 16-bit integers (rounded, clipped at 0); the series number is the
    source's + 1000.

    Args:
        volume: (X, Y, Z) array with its 4x4 RAS ``affine`` (e.g. a synthesis on the source's grid).
        affine: its voxel-to-world affine.
        source_files: the source series' files.
        folder: the output folder (created), one ``IM<nnnn>.dcm`` per source slice.
        series_description: the new series' description (64 characters at most are kept).
        derivation: ``DerivationDescription`` text. Default: none.

    Returns:
        the paths written, in the order of ``source_files``.
    """
    from mamba_monai.data.dicom_seg import labels_on_source_frames

    sources = [pydicom.dcmread(f) for f in source_files]
    frames = labels_on_source_frames(np.asarray(volume, dtype=np.float32), affine, sources)
    series_uid = generate_uid()
    os.makedirs(folder, exist_ok=True)
    paths = []
    for n, (ds, frame) in enumerate(zip(sources, frames)):
        out = copy.deepcopy(ds)
        for keyword in ("RescaleSlope", "RescaleIntercept", "RescaleType", "WindowCenter", "WindowWidth",
                        "SmallestImagePixelValue", "LargestImagePixelValue"):
            if keyword in out:
                delattr(out, keyword)
        source = pydicom.Dataset()
        source.ReferencedSOPClassUID, source.ReferencedSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
        out.SourceImageSequence = [source]
        out.SOPInstanceUID = generate_uid()
        if not hasattr(out, "file_meta"):  # the deep copy carries the source's file meta when it has one
            out.file_meta = FileMetaDataset()
        out.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        out.file_meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
        out.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        out.SeriesInstanceUID = series_uid
        out.SeriesNumber = int(getattr(ds, "SeriesNumber", 0) or 0) + 1000
        out.SeriesDescription = series_description[:64]
        out.ImageType = ["DERIVED", "SECONDARY"]
        if derivation:
            out.DerivationDescription = derivation[:1024]
        pixels = np.clip(np.rint(frame), 0, 65535).astype(np.uint16)
        out.BitsAllocated, out.BitsStored, out.HighBit, out.PixelRepresentation = 16, 16, 15, 0
        out.SamplesPerPixel, out.PhotometricInterpretation = 1, "MONOCHROME2"
        out.PixelData = pixels.tobytes()
        path = os.path.join(os.fspath(folder), f"IM{n + 1:04d}.dcm")
        try:
            out.save_as(path, enforce_file_format=True)  # pydicom >= 3
        except TypeError:  # pragma: no cover - pydicom 2.x
            out.save_as(path, write_like_original=False)
        paths.append(path)
    return paths
