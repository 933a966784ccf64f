"""DICOM out: a label map written as a DICOM SEG object (highdicom) that references its source series.

- :func:`labels_on_source_frames`: the label map resampled (nearest voxel) onto the pixel grid of every source
  slice, by the slices' own geometry (``ImagePositionPatient``, ``ImageOrientationPatient``, ``PixelSpacing``), so
  the SEG's frames line up with the source frames whatever order or orientation the network worked in.
- :func:`write_dicom_seg`: a binary DICOM SEG with one segment per class (label, SNOMED codes where the name has
  one, algorithm identification), in the source's study and frame of reference.
- :class:`SaveDicomSegd`: the postprocessing transform a bundle adds after its NIfTI writer: cases read from DICOM
  (``meta["dicom_files"]``, set by :class:`~mamba_monai.data.SafeLoadImaged` and
  :class:`~mamba_monai.data.LoadImage2Dd`) also get ``<name>_<postfix>.dcm`` beside the NIfTI; other cases pass.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform
from monai.utils import optional_import

pydicom, _ = optional_import("pydicom")
hd, has_highdicom = optional_import("highdicom")
codes, _ = optional_import("pydicom.sr.codedict", name="codes")

__all__ = ["SaveDicomSegd", "labels_on_source_frames", "segment_codes", "segment_names", "write_dicom_seg"]

logger = logging.getLogger(__name__)

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
_LESION_WORDS = ("lesion", "tumor", "tumour", "mass", "nodule", "cyst", "metasta", "malignant", "benign", "edema")


def segment_names(class_names: Mapping[Any, str] | Sequence[str]) -> dict[int, str]:
    """Segment number -> label from a bundle's class names (``{"0": "background", "1": "liver"}``, as a
    metadata ``channel_def``, or a list); class 0 is the background and gets no segment."""
    items = class_names.items() if isinstance(class_names, Mapping) else enumerate(class_names)
    return {int(k): str(v) for k, v in items if int(k) > 0}


def segment_codes(name: str) -> tuple[Any, Any]:
    """(segmented property category, type) codes for a class name: the SNOMED CT concept of that name when
    pydicom's code dictionary has one (``liver``, ``spleen``...), lesion words as morphologically abnormal
    structures, anything else as tissue."""
    words = name.replace("_", " ").replace("-", " ").split()
    keyword = "".join(w.capitalize() for w in words)
    concept = getattr(codes.SCT, keyword, None) if keyword else None
    if any(w in name.lower() for w in _LESION_WORDS):
        return codes.SCT.MorphologicallyAbnormalStructure, concept or codes.SCT.Lesion
    if concept is not None:
        return codes.SCT.AnatomicalStructure, concept
    return codes.SCT.Tissue, codes.SCT.Tissue


def labels_on_source_frames(label: np.ndarray, affine: np.ndarray, sources: Sequence[Any]) -> np.ndarray:
    """
    The label value at every pixel of every source frame, by nearest voxel.

    Args:
        label: (X, Y, Z) label map with a 4x4 RAS ``affine`` (a volume read from the series, as MONAI reads it),
            or (X, Y) for a single image (X along the columns, as :class:`~mamba_monai.data.LoadImage2Dd` reads a
            DICOM) whose frame is then its transpose.
        affine: the label map's voxel-to-world affine (RAS); unused for a 2D label map.
        sources: the source datasets (single-frame), in any order.

    Returns:
        (len(sources), Rows, Columns) array of label values, frame i for ``sources[i]``; pixels outside the
        label map are 0.
    """
    label = np.asarray(label)
    if label.ndim == 2:
        (ds,) = sources
        if label.shape != (ds.Columns, ds.Rows):
            raise ValueError(
                f"The label map {label.shape} is not on the source image's grid ({ds.Columns} columns x {ds.Rows} "
                "rows): invert the preprocessing (Invertd) before writing a DICOM SEG."
            )
        return label.T[None]
    to_voxel = np.linalg.inv(np.asarray(affine, dtype=float))
    frames = np.zeros((len(sources), sources[0].Rows, sources[0].Columns), dtype=label.dtype)
    for n, ds in enumerate(sources):
        try:
            origin = np.asarray(ds.ImagePositionPatient, float)
            orientation = np.asarray(ds.ImageOrientationPatient, float)
            row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
        except AttributeError as err:
            raise ValueError(
                f"Source slice {getattr(ds, 'filename', '')} has no plane geometry ({err}); a DICOM SEG for a "
                "volume needs ImagePositionPatient, ImageOrientationPatient and PixelSpacing in every slice."
            ) from None
        rows, cols = np.meshgrid(np.arange(ds.Rows), np.arange(ds.Columns), indexing="ij")
        world_lps = origin + cols[..., None] * col_spacing * orientation[:3] + rows[..., None] * row_spacing * orientation[3:]
        world = world_lps @ _LPS_TO_RAS.T
        voxel = np.rint(world @ to_voxel[:3, :3].T + to_voxel[:3, 3]).astype(np.int64)
        inside = np.all((voxel >= 0) & (voxel < np.asarray(label.shape)), axis=-1)
        i, j, k = (voxel[..., a].clip(0, label.shape[a] - 1) for a in range(3))
        frames[n] = np.where(inside, label[i, j, k], 0)
    return frames


def write_dicom_seg(
    label: np.ndarray,
    affine: np.ndarray,
    source_files: Sequence[str],
    path: str | os.PathLike,
    class_names: Mapping[Any, str] | Sequence[str],
    algorithm_name: str = "mamba-monai",
    algorithm_version: str = "0",
    series_description: str = "Segmentation",
) -> str:
    """
    Write ``label`` as a binary DICOM SEG object over the source series (highdicom): one segment per class other
    than background, frames on the source slices (:func:`labels_on_source_frames`; empty frames omitted),
    referencing the source SOP instances, in their study and frame of reference.

    Args:
        label: (X, Y, Z) or (X, Y) integer label map (class indices).
        affine: its 4x4 RAS affine (see :func:`labels_on_source_frames`).
        source_files: the source series' files (any order).
        path: the ``.dcm`` to write.
        class_names: class index -> name (``channel_def``), or a list; index 0 is background.
        algorithm_name, algorithm_version: the algorithm identification (a bundle's name and version).
        series_description: the SEG series' description.

    Returns:
        ``path`` as a string.
    """
    if not has_highdicom:
        raise ImportError("Writing DICOM SEG needs highdicom: `pip install highdicom`.")
    sources = [pydicom.dcmread(f) for f in source_files]
    frames = labels_on_source_frames(label, affine, sources).astype(np.uint8)
    names = segment_names(class_names)
    unknown = sorted(set(np.unique(frames).tolist()) - set(names) - {0})
    if unknown:
        raise ValueError(f"Label values {unknown} have no class name (classes: {names}).")
    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name, family=codes.cid7162.ArtificialIntelligence, version=str(algorithm_version)
    )
    descriptions = []
    for number, name in names.items():
        category, kind = segment_codes(name)
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number, segment_label=name[:64], segmented_property_category=category,
                segmented_property_type=kind, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
            )
        )
    from mamba_monai import __version__

    pixel_measures = None
    if "ImageOrientationPatient" not in sources[0]:  # e.g. ultrasound: no plane geometry to derive them from
        spacing = [float(v) for v in getattr(sources[0], "PixelSpacing", [1.0, 1.0])]
        pixel_measures = hd.PixelMeasuresSequence(
            pixel_spacing=spacing, slice_thickness=float(getattr(sources[0], "SliceThickness", 1.0) or 1.0)
        )

    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=int(getattr(sources[0], "SeriesNumber", 0) or 0) + 1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="mamba-monai",
        manufacturer_model_name=algorithm_name[:64],
        software_versions=f"mamba-monai {__version__}",
        device_serial_number="0",
        series_description=series_description[:64],
        pixel_measures=pixel_measures,
    )
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    seg.save_as(os.fspath(path))
    return os.fspath(path)


def _strip_ext(path: str) -> str:
    for ext in (".nii.gz", ".nii", ".png", ".dcm"):
        if path.lower().endswith(ext):
            return path[: -len(ext)]
    return os.path.splitext(path)[0]


class SaveDicomSegd(MapTransform):
    """
    For each case read from DICOM, write its label map as a DICOM SEG (:func:`write_dicom_seg`) beside the file
    the bundle's writer saved (``<name>_seg.nii.gz`` -> ``<name>_seg.dcm``; ``SaveImaged`` with
    ``savepath_in_metadict=True`` records that path) or as ``<output_dir>/<name>_<output_postfix>.dcm``. Cases
    not read from DICOM pass unchanged. The SEG's path goes to ``meta["dicom_seg"]``.

    Args:
        keys: keys of the label maps (channel-first, one channel of class indices, on the source grid: after
            ``Invertd`` and ``AsDiscreted(argmax=True)``).
        class_names: class index -> name (a metadata ``channel_def``, e.g.
            ``"@_meta_#network_data_format#outputs#pred#channel_def"``), or a list.
        algorithm_name, algorithm_version: written as the algorithm identification (``"@_meta_#name"``,
            ``"@_meta_#version"``).
        output_dir: where to write when the saved path is unknown. Default: beside the source's name in the
            current folder.
        output_postfix: name postfix when the saved path is unknown. Default ``"seg"``.
        series_description: the SEG series' description. Default ``"Segmentation"``.
        allow_missing_keys: don't raise when a key is absent. Default False.
    """

    def __init__(
        self,
        keys: KeysCollection,
        class_names: Mapping[Any, str] | Sequence[str],
        algorithm_name: str = "mamba-monai",
        algorithm_version: str = "0",
        output_dir: str = ".",
        output_postfix: str = "seg",
        series_description: str = "Segmentation",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.class_names = class_names
        self.algorithm_name, self.algorithm_version = algorithm_name, algorithm_version
        self.output_dir, self.output_postfix = output_dir, output_postfix
        self.series_description = series_description

    def _path(self, meta: Mapping[str, Any]) -> str:
        saved = meta.get("saved_to")
        if saved:
            return _strip_ext(os.fspath(saved)) + ".dcm"
        name = os.path.basename(_strip_ext(os.fspath(meta.get("filename_or_obj", "image")).rstrip(os.sep)))
        return os.path.join(self.output_dir, f"{name}_{self.output_postfix}.dcm")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            pred = d[key]
            meta = getattr(pred, "meta", {})
            files = meta.get("dicom_files")
            if not files:
                continue
            array = np.asarray(pred.detach().cpu().numpy() if hasattr(pred, "detach") else pred)
            if array.shape[0] != 1:
                raise ValueError(f"SaveDicomSegd expects one channel of class indices, got shape {array.shape}.")
            path = write_dicom_seg(
                array[0].astype(np.int64), np.asarray(meta.get("affine", np.eye(4)), dtype=float),
                str(files).split("\n"), self._path(meta), self.class_names,
                self.algorithm_name, self.algorithm_version, self.series_description,
            )
            meta["dicom_seg"] = path
            logger.info("DICOM SEG of %s written to %s", meta.get("filename_or_obj"), path)
        return d
