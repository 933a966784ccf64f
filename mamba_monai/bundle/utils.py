"""Helpers to find, verify, run and export the bundles shipped with mamba-monai (shared by all bundles and their tests)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from monai.bundle import ConfigWorkflow, verify_metadata

__all__ = [
    "SCHEMA_PATH",
    "BUNDLES_DIR",
    "list_bundles",
    "bundle_dir",
    "bundle_workflow",
    "run_workflow",
    "verify_bundle_metadata",
    "inference_datalist",
]

SCHEMA_PATH = str(Path(__file__).with_name("schema") / "meta_schema_mamba_monai_v1.json")
BUNDLES_DIR = os.environ.get("MAMBA_MONAI_BUNDLES", str(Path(__file__).resolve().parents[2] / "bundles"))


def list_bundles() -> list[str]:
    """Names of the bundles under ``BUNDLES_DIR`` (folders with ``configs/metadata.json``)."""
    root = Path(BUNDLES_DIR)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "configs" / "metadata.json").is_file())


def bundle_dir(name: str) -> str:
    """Absolute path of a shipped bundle, or of ``name`` itself when it is a bundle folder."""
    for candidate in (Path(name), Path(BUNDLES_DIR) / name):
        if (candidate / "configs" / "metadata.json").is_file():
            return str(candidate.resolve())
    raise FileNotFoundError(
        f"No bundle '{name}': expected a folder with configs/metadata.json, as a path or under {BUNDLES_DIR} "
        f"(bundles there: {list_bundles()}). Set MAMBA_MONAI_BUNDLES to the repository's bundles/ folder."
    )


def bundle_workflow(
    bundle: str, config: str | list[str] = "train", workflow_type: str = "train", **override: Any
) -> ConfigWorkflow:
    """
    A ``ConfigWorkflow`` over a bundle's configs, with ``bundle_root`` set to the bundle folder.

    Args:
        bundle: bundle name under ``BUNDLES_DIR`` or a bundle folder.
        config: config name(s) without ``.json`` in ``configs/``, merged in order (``["train", "evaluate"]``).
        workflow_type: "train", "infer" or "eval" (which properties ``check_properties`` expects).
        override: config overrides, e.g. ``epochs=1``, ``dataset_dir="/data/BTCV"``.
    """
    root = bundle_dir(bundle)
    names = [config] if isinstance(config, str) else list(config)
    files = [os.path.join(root, "configs", f"{n}.json") for n in names]
    override.setdefault("bundle_root", root)
    return ConfigWorkflow(
        workflow_type=workflow_type,
        config_file=files if len(files) > 1 else files[0],
        meta_file=os.path.join(root, "configs", "metadata.json"),
        logging_file=os.path.join(root, "configs", "logging.conf"),
        **override,
    )


def run_workflow(workflow: ConfigWorkflow, check_properties: bool = True) -> Any:
    """initialize -> check_properties -> run -> finalize, as the model zoo's bundle tests do; returns run's result."""
    workflow.initialize()
    if check_properties:
        missing = workflow.check_properties()
        if missing:
            raise ValueError(f"bundle config misses required properties: {missing}")
    try:
        return workflow.run()
    finally:
        workflow.finalize()


def verify_bundle_metadata(bundle: str) -> None:
    """``monai.bundle.verify_metadata`` against the schema kept in this package (no download)."""
    verify_metadata(meta_file=os.path.join(bundle_dir(bundle), "configs", "metadata.json"), filepath=SCHEMA_PATH)


def inference_datalist(image_dir: str, pattern: str | None = None, dicom_series: bool = True) -> list[dict]:
    """
    Every image in ``image_dir``, or in its ``imagesTs/`` sub-folder when it has one (the Decathlon layout), as
    ``[{"image": ...}, ...]`` sorted by name, for a bundle's inference: NIfTI and the 2D formats PNG, JPEG, BMP,
    TIFF at the top of the folder (``pattern``, e.g. ``"*.nii.gz"``, narrows it to matching files), and DICOM.

    DICOM files are found in the folder and its sub-folders (by suffix or by their ``DICM`` preamble) and, with
    ``dicom_series`` (3D bundles), grouped by ``SeriesInstanceUID`` (:func:`~mamba_monai.data.find_dicom_series`):
    a series alone in its folder is listed as that folder, a series in a flat folder of mixed series as the list
    of its files (both read as one volume by :class:`~mamba_monai.data.SafeLoadImaged`). Without ``dicom_series``
    (2D bundles), every DICOM file is an image of its own.

    Files are not read here: an unreadable or invalid one is skipped and named by the inference itself
    (:class:`~mamba_monai.data.IsolatedDataset` with :class:`~mamba_monai.engines.CaseIsolatingEvaluator`), so
    each file is read once, and a file of the wrong kind (a 2D image given to a 3D bundle) is named there.
    """
    from mamba_monai.data import IMAGE_2D_SUFFIXES, datalist_from_folder, find_dicom_series, is_dicom_file
    from mamba_monai.data.dicom import series_source

    folder = os.path.join(image_dir, "imagesTs")
    folder = folder if os.path.isdir(folder) else image_dir
    if pattern is not None:
        return datalist_from_folder(folder, pattern=pattern)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"Image folder '{folder}' does not exist; check `dataset_dir` / `image_dir`.")
    folder = os.path.abspath(folder)
    suffixes = tuple(IMAGE_2D_SUFFIXES)  # NIfTI is among them
    items = [
        (n, {"image": os.path.join(folder, n)}) for n in os.listdir(folder)
        if not n.startswith(".") and n.lower().endswith(suffixes) and os.path.isfile(os.path.join(folder, n))
        and not is_dicom_file(os.path.join(folder, n))
    ]
    for files in find_dicom_series(folder):
        if not dicom_series:
            items.extend((os.path.relpath(f, folder), {"image": f}) for f in files)
            continue
        items.append((os.path.relpath(files[0], folder), {"image": series_source(files, folder)}))
    if not items:
        raise FileNotFoundError(
            f"No image in '{folder}' (looked for {', '.join(sorted(suffixes))} and DICOM series); check "
            "`dataset_dir` / `image_dir`."
        )
    return [item for _, item in sorted(items, key=lambda t: t[0])]
