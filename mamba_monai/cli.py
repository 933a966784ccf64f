"""The ``mamba-monai`` command (python-fire): list bundles, make demo data, run a bundle config, describe inputs."""

from __future__ import annotations

import json
import os
from typing import Any

import fire

from mamba_monai.bundle import bundle_dir, bundle_workflow, list_bundles, run_workflow

__all__ = ["main", "Commands"]

_WORKFLOW_TYPE = {"train": "train", "evaluate": "train", "multi_gpu_train": "train", "inference": "infer"}


class Commands:
    """mamba-monai: Mamba and spectral networks for MONAI, shipped as MONAI bundles.

    Examples:
        mamba-monai bundles
        mamba-monai info emnet_seg3d
        mamba-monai demo_data ct ./demo_ct
        mamba-monai run emnet_seg3d inference --dataset_dir /data/BTCV
        mamba-monai demo
    """

    def bundles(self) -> list[str]:
        """List the bundles shipped with mamba-monai."""
        return list_bundles()

    def info(self, bundle: str) -> str:
        """Print what a bundle expects as input and produces as output (from its metadata.json)."""
        with open(os.path.join(bundle_dir(bundle), "configs", "metadata.json")) as f:
            meta = json.load(f)
        fmt = meta["network_data_format"]
        lines = [f"{meta['name']} ({bundle}, version {meta['version']})", meta["description"], ""]
        for kind in ("inputs", "outputs"):
            for key, spec in fmt[kind].items():
                lines.append(
                    f"{kind[:-1]} '{key}': {spec['num_channels']} channel(s) {spec.get('modality', '')} {spec['format']}, "
                    f"spatial {spec['spatial_shape']}, {spec['dtype']} in {spec['value_range']}, channels {spec['channel_def']}"
                )
        for key in ("image_classes", "label_classes", "data_source"):
            if key in meta:
                lines.append(f"{key}: {meta[key]}")
        return "\n".join(lines)

    def demo_data(self, task: str = "ct", root_dir: str = "./demo_data", **kwargs: Any) -> str:
        """Write a deterministic demo data set (task: ct, 2d or mri) and return the path of its datalist JSON."""
        from mamba_monai import data

        writers = {"ct": data.ensure_demo_ct_dataset, "2d": data.ensure_demo_2d_dataset, "mri": data.ensure_demo_mri_dataset}
        if task not in writers:
            raise ValueError(f"Unknown demo task '{task}', choose one of {sorted(writers)}.")
        return writers[task](root_dir, **kwargs)

    def run(self, bundle: str, config: str = "train", **override: Any) -> None:
        """Run a bundle's config (train, inference, evaluate) with `--key value` overrides, as `monai.bundle run`."""
        configs = ["train", "evaluate"] if config == "evaluate" else [config]
        workflow = bundle_workflow(bundle, configs, workflow_type=_WORKFLOW_TYPE.get(config, "train"), **override)
        run_workflow(workflow)

    def demo(self, bundle: str | None = None, epochs: int = 2, output_dir: str | None = None) -> None:
        """The main job: for every bundle (or `--bundle NAME`), demo data, a short training from the shipped weights,
        inference and evaluation, then one table of the figures and where the outputs are."""
        from mamba_monai.bundle.demo import run_demo

        run_demo(bundles=bundle, epochs=epochs, output_dir=output_dir)


def main() -> None:
    fire.Fire(Commands, name="mamba-monai")


if __name__ == "__main__":
    main()
