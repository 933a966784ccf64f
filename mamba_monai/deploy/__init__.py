"""MONAI Deploy App SDK applications over the bundles (needs ``monai-deploy-app-sdk``: ``pip install
"mamba-monai[deploy]"``). Run ``python -m mamba_monai.deploy -i DICOM_DIR -o OUT_DIR -m BUNDLE_DIR``; see
:mod:`mamba_monai.deploy.segmentation_app`. Nothing is imported here so that ``mamba_monai`` stays usable without
the SDK."""

__all__: list[str] = []
