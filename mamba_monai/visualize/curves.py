"""Training curves read back from the TensorBoard logs that every bundle's training writes."""

from __future__ import annotations

import glob
import os

__all__ = ["read_scalars", "plot_training_curves"]


def read_scalars(log_dir: str | os.PathLike) -> dict[str, tuple[list[int], list[float]]]:
    """Every scalar in the TensorBoard event files of ``log_dir`` (not its sub-folders): tag -> (steps, values),
    steps ascending. Later files win where two files log the same step (a resumed run)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    merged: dict[str, dict[int, float]] = {}
    for path in sorted(glob.glob(os.path.join(os.fspath(log_dir), "events.out.tfevents.*")), key=os.path.getmtime):
        events = EventAccumulator(path, size_guidance={"scalars": 0})
        events.Reload()
        for tag in events.Tags().get("scalars", []):
            merged.setdefault(tag, {}).update({e.step: float(e.value) for e in events.Scalars(tag)})
    return {tag: (sorted(points), [points[s] for s in sorted(points)]) for tag, points in merged.items()}


def plot_training_curves(log_dir: str | os.PathLike, path: str | os.PathLike, title: str = "") -> str | None:
    """
    Write a PNG with one panel per scalar that the training logged in ``log_dir`` (the loss per iteration, the
    validation metrics per epoch), and return its path; None when the folder holds no scalars.

    Args:
        log_dir: the bundle's ``output_dir`` (where ``TensorBoardStatsHandler`` writes).
        path: the PNG to write.
        title: the figure's title (e.g. the bundle's name).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scalars = read_scalars(log_dir)
    if not scalars:
        return None
    fig, axes = plt.subplots(1, len(scalars), figsize=(4.2 * len(scalars), 3.4), squeeze=False)
    for ax, (tag, (steps, values)) in zip(axes[0], sorted(scalars.items())):
        ax.plot(steps, values, marker="o" if len(steps) < 30 else None, linewidth=1.5)
        ax.set_title(tag)
        ax.set_xlabel("iteration" if "loss" in tag.lower() else "epoch")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    fig.savefig(os.fspath(path), dpi=100)
    plt.close(fig)
    return os.fspath(path)
