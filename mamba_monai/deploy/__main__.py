"""``python -m mamba_monai.deploy -i DICOM_DIR -o OUT_DIR [-m BUNDLE_DIR]``: the segmentation application, run as
MONAI Deploy applications are run locally."""

import logging

from mamba_monai.deploy.segmentation_app import BundleSegmentationApp

if __name__ == "__main__":
    logging.info("mamba-monai deploy application")
    BundleSegmentationApp().run()
