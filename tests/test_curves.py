"""Training curves read back from TensorBoard logs and drawn as a PNG (the demo's per-bundle curve)."""

from __future__ import annotations

import numpy as np
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

from mamba_monai.visualize import plot_training_curves, read_scalars


def test_scalars_read_back_and_plotted_one_panel_each(tmp_path):
    with SummaryWriter(log_dir=str(tmp_path)) as writer:
        for step in range(1, 7):
            writer.add_scalar("train_loss", 1.0 / step, step)
        for epoch in (1, 2):
            writer.add_scalar("val_mean_dice", 0.4 + 0.2 * epoch, epoch)
    scalars = read_scalars(tmp_path)
    assert scalars["train_loss"][0] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose(scalars["train_loss"][1], [1.0 / s for s in range(1, 7)], rtol=1e-6)
    np.testing.assert_allclose(scalars["val_mean_dice"][1], [0.6, 0.8], rtol=1e-6)
    path = plot_training_curves(tmp_path, tmp_path / "curves.png", title="demo")
    width, height = Image.open(path).size
    assert width > 1.8 * height  # two panels side by side


def test_no_scalars_no_png(tmp_path):
    assert plot_training_curves(tmp_path, tmp_path / "curves.png") is None
    assert not (tmp_path / "curves.png").exists()


def test_label_overlay_tints_each_class_and_draws_its_border():
    from mamba_monai.visualize import label_overlay

    image = np.tile(np.linspace(50.0, 150.0, 30), (20, 1))  # a gray ramp
    label = np.zeros((20, 30), int)
    label[5:15, 5:12], label[5:15, 18:25] = 1, 2
    rgb = label_overlay(image, label, alpha=0.5)
    assert rgb.shape == (20, 30, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[5, 8], [0, 200, 0])  # class 1 border: solid green
    np.testing.assert_array_equal(rgb[5, 20], [230, 40, 40])  # class 2 border: solid red
    inside, background = rgb[10, 8].astype(int), rgb[2, 8].astype(int)  # same column of the ramp, outside
    assert inside[1] > background[1] and inside[0] < background[0]  # green tint inside class 1
    assert (rgb[2, 2] == rgb[2, 2][0]).all()  # background stays gray
