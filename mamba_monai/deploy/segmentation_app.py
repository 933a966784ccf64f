"""A MONAI Deploy App SDK application over a 3D segmentation bundle: DICOM series in, DICOM SEG out.

The pipeline is the SDK's own operators around the bundle, composed as the SDK's example applications do::

    DICOMDataLoaderOperator -> DICOMSeriesSelectorOperator -> DICOMSeriesToVolumeOperator
        -> MonaiBundleInferenceOperator (the bundle's inference.json: preprocessing, inferer, postprocessing)
        -> DICOMSegmentationWriterOperator (segments and algorithm from the bundle's metadata.json)

Run it with the SDK's ordinary arguments (``-i`` DICOM folder, ``-o`` output folder, ``-m`` the bundle folder)::

    python -m mamba_monai.deploy -i /data/dicom_study -o /tmp/seg_out -m bundles/emnet_seg3d

It needs ``monai-deploy-app-sdk`` (``pip install "mamba-monai[deploy]"``, best in an environment of its own: the
SDK brings Holoscan, CuPy and the Triton client); nothing in it reaches the network.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from monai.deploy.conditions import CountCondition
from monai.deploy.core import AppContext, Application
from monai.deploy.core.domain import Image
from monai.deploy.core.io_type import IOType
from monai.deploy.operators.dicom_data_loader_operator import DICOMDataLoaderOperator
from monai.deploy.operators.dicom_seg_writer_operator import DICOMSegmentationWriterOperator, SegmentDescription
from monai.deploy.operators.dicom_series_selector_operator import DICOMSeriesSelectorOperator
from monai.deploy.operators.dicom_series_to_volume_operator import DICOMSeriesToVolumeOperator
from monai.deploy.operators.dicom_utils import ModelInfo
from monai.deploy.operators.monai_bundle_inference_operator import (
    BundleConfigNames,
    IOMapping,
    MonaiBundleInferenceOperator,
)

import mamba_monai  # noqa: F401  (registers the scan operator that the bundles' networks call)
from mamba_monai.bundle.utils import bundle_dir
from mamba_monai.data.dicom_seg import segment_codes, segment_names

__all__ = ["BundleSegmentationApp", "segment_descriptions", "series_rules"]

DEFAULT_BUNDLE = "emnet_seg3d"


def _metadata(bundle_path: str | os.PathLike) -> dict:
    with open(os.path.join(os.fspath(bundle_path), "configs", "metadata.json"), encoding="utf-8") as f:
        return json.load(f)


def segment_descriptions(meta: dict) -> list[SegmentDescription]:
    """One SDK ``SegmentDescription`` per class of the bundle's output (``channel_def`` of ``pred``, background
    left out), with SNOMED codes where the class name has one, and the bundle as the algorithm."""
    names = segment_names(meta["network_data_format"]["outputs"]["pred"]["channel_def"])
    descriptions = []
    for number in sorted(names):
        category, kind = segment_codes(names[number])
        descriptions.append(SegmentDescription(
            segment_label=names[number], segmented_property_category=category, segmented_property_type=kind,
            algorithm_name=meta.get("name", "mamba-monai"), algorithm_version=meta.get("version", "0"),
        ))
    return descriptions


def series_rules(modality: str | None) -> str:
    """Series selection rules for ``DICOMSeriesSelectorOperator``: the first series of the given modality per
    study (any series when ``modality`` is None)."""
    conditions = {"Modality": f"(?i){modality}"} if modality else {}
    return json.dumps({"selections": [{"name": "input series", "conditions": conditions}]})


class BundleSegmentationApp(Application):
    """
    DICOM study folder in, one DICOM SEG per selected series out, through a mamba-monai segmentation bundle.

    The bundle comes from ``-m/--model`` when it names a bundle folder (``configs/metadata.json`` inside), else
    from the ``bundle`` argument (default ``emnet_seg3d``, the shipped one). The network's weights are the bundle's
    ``models/model.pt`` (or ``model.ts``); its preprocessing, inferer and postprocessing are those of
    ``configs/inference.json``, without the file loaders and writers (the SDK operators read and write DICOM).

    Args:
        bundle: bundle name or folder used when ``-m`` does not name a bundle. Default ``"emnet_seg3d"``.
        modality: the modality of the series to segment (``"CT"``); None takes the first series of each study.
    """

    def __init__(self, *args, bundle: str = DEFAULT_BUNDLE, modality: str | None = "CT", **kwargs) -> None:
        self._bundle, self._modality = bundle, modality
        super().__init__(*args, **kwargs)

    def run(self, *args, **kwargs) -> None:
        logging.info("Starting %s", type(self).__name__)
        super().run(*args, **kwargs)

    def _bundle_path(self, app_context: AppContext) -> Path:
        model = app_context.model_path
        if model and (Path(model) / "configs" / "metadata.json").is_file():
            app_context.models = None  # a bundle folder, not a model file: the operator loads it from the bundle
            return Path(model).resolve()
        return Path(bundle_dir(self._bundle))

    def compose(self) -> None:
        app_context = Application.init_app_context(self.argv)
        input_folder, output_folder = Path(app_context.input_path), Path(app_context.output_path)
        bundle_path = self._bundle_path(app_context)
        meta = _metadata(bundle_path)
        logging.info("Bundle %s (%s %s): %s -> %s", bundle_path, meta.get("name"), meta.get("version"),
                     input_folder, output_folder)

        loader = DICOMDataLoaderOperator(self, CountCondition(self, 1), input_folder=input_folder, name="dicom_loader")
        selector = DICOMSeriesSelectorOperator(self, rules=series_rules(self._modality), name="series_selector")
        to_volume = DICOMSeriesToVolumeOperator(self, name="series_to_volume")
        inference = MonaiBundleInferenceOperator(
            self,
            input_mapping=[IOMapping("image", Image, IOType.IN_MEMORY)],
            output_mapping=[IOMapping("pred", Image, IOType.IN_MEMORY)],
            app_context=app_context,
            bundle_config_names=BundleConfigNames(config_names=["inference"]),
            bundle_path=bundle_path,
            name="bundle_inference",
        )
        writer = DICOMSegmentationWriterOperator(
            self,
            segment_descriptions=segment_descriptions(meta),
            output_folder=output_folder,
            model_info=ModelInfo("mamba-monai", meta.get("name", ""), meta.get("version", ""), ""),
            custom_tags={"SeriesDescription": f"{meta.get('name', 'mamba-monai')} segmentation"[:64]},
            name="dicom_seg_writer",
        )
        self.add_flow(loader, selector, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(selector, to_volume, {("study_selected_series_list", "study_selected_series_list")})
        self.add_flow(to_volume, inference, {("image", "image")})
        self.add_flow(inference, writer, {("pred", "seg_image")})
        self.add_flow(selector, writer, {("study_selected_series_list", "study_selected_series_list")})
