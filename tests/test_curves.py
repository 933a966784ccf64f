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
