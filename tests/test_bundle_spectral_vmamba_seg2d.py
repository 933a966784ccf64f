"""Tests specific to bundles/spectral_vmamba_seg2d (the checks every bundle passes are in test_bundles.py): the
seed's Python API (network, loss, Trainer running the bundle's workflow), every 2D input format through the
bundle's inference, and training from paired image/mask folders without a datalist (ISIC naming)."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from mamba_monai.bundle import Trainer, TrainingConfig, bundle_workflow, run_workflow
from mamba_monai.bundle.testing import assert_outputs_match_inputs
from mamba_monai.data import (
    generate_demo_2d_case,
    make_affine,
    write_dicom_image,
    write_image_2d,
    write_nifti,
)
from mamba_monai.losses import SpectralDualLoss
from mamba_monai.networks import SpectralVMUNet

BUNDLE = "spectral_vmamba_seg2d"
SMALL = {"network_def#base_channels": 8, "network_def#depth": 1, "img_size": 64}


def test_seed_python_api():
    """The calls of the seed's README work as written."""
    model = SpectralVMUNet(in_channels=1, out_channels=3, img_size=256)
    with torch.no_grad():
        output = model(torch.randn(1, 1, 256, 256))
    assert output.shape == (1, 3, 256, 256) and torch.isfinite(output).all()
    loss_fn = SpectralDualLoss(spatial_weight=1.0, freq_weight=0.1, use_dice=True, use_focal=True)
    target = torch.randint(0, 3, (1, 1, 256, 256))
    loss, components = loss_fn(output, target, return_components=True)
    assert loss.ndim == 0 and {"dice", "focal", "frequency"} <= set(components)


def _loader(items, batch_size):
    return torch.utils.data.DataLoader(items, batch_size=batch_size, shuffle=False)


def test_trainer_runs_the_bundle_workflow_on_user_loaders(tmp_path):
    """``Trainer(TrainingConfig(...)).train(train_loader, val_loader)``: the bundle's own training (its network,
    loss, checkpoints and validation), fed by the user's loaders."""
    rng = np.random.default_rng(0)

    def item():
        label = np.zeros((1, 64, 64), np.int64)
        r, c = rng.integers(8, 40, 2)
        label[0, r:r + 16, c:c + 16] = rng.integers(1, 3)
        image = (label > 0).astype(np.float32) + 0.1 * rng.standard_normal((1, 64, 64)).astype(np.float32)
        return {"image": torch.as_tensor(image), "label": torch.as_tensor(label)}

    train_items, val_items = [item() for _ in range(4)], [item() for _ in range(2)]
    config = TrainingConfig(learning_rate=1e-3, num_epochs=2, batch_size=2, val_interval=1,
                            ckpt_dir=str(tmp_path / "models"), output_dir=str(tmp_path / "eval"))
    trainer = Trainer(config, **SMALL)
    metrics = trainer.train(_loader(train_items, 2), _loader(val_items, 1))
    assert set(metrics) == {"val_mean_dice"} and 0.0 <= metrics["val_mean_dice"] <= 1.0
    assert isinstance(trainer.network, SpectralVMUNet)
    assert trainer.workflow.parser.get_parsed_content("train#trainer").state.epoch == 2
    state = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert state.keys() == trainer.network.state_dict().keys()


def test_training_from_image_and_mask_folders_without_a_datalist(tmp_path):
    """ISIC naming (``ISIC_0000000.jpg`` + ``ISIC_0000000_segmentation.png``, masks 0/255), RGB images into a
    one-channel network, split into training and validation by the bundle, through the Trainer."""
    root = tmp_path / "isic"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(5):
        image, label = generate_demo_2d_case(i, size_scale=0.4, style="dermoscopy")
        write_image_2d(image, root / "images" / f"ISIC_{i:07d}.jpg")
        write_image_2d(((label > 0) * 255).astype(np.uint8), root / "masks" / f"ISIC_{i:07d}_segmentation.png")
    config = TrainingConfig(num_epochs=1, batch_size=2, val_interval=1, ckpt_dir=str(tmp_path / "models"),
                            output_dir=str(tmp_path / "eval"))
    trainer = Trainer(config, dataset_dir=str(root), class_names=["background", "lesion"],
                      label_mapping={"0": 0, "255": 1}, **SMALL)
    metrics = trainer.train()
    assert 0.0 <= metrics["val_mean_dice"] <= 1.0
    cases = trainer.workflow.parser.get_parsed_content("cases")
    assert (len(cases["training"]), len(cases["validation"])) == (4, 1)


@pytest.fixture(scope="module")
def every_format(tmp_path_factory):
    """One demo image in every 2D format a user may have."""
    root = tmp_path_factory.mktemp("formats")
    folder = root / "imagesTs"
    folder.mkdir()
    image, _ = generate_demo_2d_case(0, size_scale=0.5)
    rgb = np.stack([image, (image * 0.9).astype(np.uint8), image], axis=-1)
    paths = {
        "png": write_image_2d(image, folder / "gray.png"),
        "jpeg_rgb": write_image_2d(rgb, folder / "colour.jpg"),
        "tiff": write_image_2d(image, folder / "scan.tif"),
        "nifti": write_nifti(image.T.copy(), make_affine((0.3, 0.3), rotation_deg=5.0, origin=(10.0, -4.0, 7.5)),
                             folder / "slice.nii.gz"),
        "dicom": write_dicom_image(folder / "frame.dcm", image, modality="US", PixelSpacing=[0.25, 0.25]),
    }
    return root, paths


def test_inference_reads_every_format_and_writes_on_its_grid(every_format, tmp_path):
    root, paths = every_format
    out = tmp_path / "pred"
    run_workflow(bundle_workflow(BUNDLE, "inference", workflow_type="infer", dataset_dir=str(root), output_dir=str(out)))
    outputs = assert_outputs_match_inputs([p for k, p in paths.items() if k != "dicom"], str(out))
    assert outputs[paths["png"]].endswith(".png") and outputs[paths["jpeg_rgb"]].endswith(".png")
    # a NIfTI slice keeps its place in the world (its 4x4 affine, z position included)
    np.testing.assert_allclose(nib.load(outputs[paths["nifti"]]).affine, nib.load(paths["nifti"]).affine, atol=1e-4)
    dicom_out = nib.load(out / "frame_seg.nii.gz")
    assert dicom_out.shape[:2] == Image.open(paths["png"]).size and np.allclose(dicom_out.header.get_zooms()[:2], 0.25)
    for name in os.listdir(out):
        if name.endswith(".png") and not name.endswith("_overlay.png"):
            assert set(np.unique(np.asarray(Image.open(out / name)))) <= {0, 1, 2}
    # an overlay for a person to look at, per input, in the input's size: RGB, the prediction tinted on the image
    for kind, path in paths.items():
        stem = os.path.basename(path).split(".")[0]
        overlay = Image.open(out / f"{stem}_seg_overlay.png")
        assert overlay.mode == "RGB" and overlay.size == Image.open(paths["png"]).size, kind
