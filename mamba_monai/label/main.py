"""The MONAI Label app of mamba-monai: the shipped bundles served from where they are (no copies).

Start it the ordinary way, in an environment that has MONAI Label (``python -m mamba_monai.label.environment``
builds one; see ``docs``)::

    export PATH=$(dirname $(python -m mamba_monai.label.environment)):$PATH
    monailabel start_server --app <mamba_monai>/label --studies /data/images \\
        --conf models emnet_seg3d,spectral_vmamba_seg2d,medgan_ssm_synthesis --conf zoo_source local

- Segmentation bundles (``emnet_seg3d``, ``spectral_vmamba_seg2d``): MONAI Label's ``BundleInferTask`` and
  ``BundleTrainTask`` over the bundle folder. Training writes its checkpoints to ``<studies>/.mamba_monai_label/
  <bundle>/`` (the shipped ``models/model.pt`` is never overwritten) and inference then uses the newest of the two.
- The synthesis bundle (``medgan_ssm_synthesis``): an infer task that runs the bundle's own inference on the image
  it is given, read as the contrast named by the request's ``modality`` (default: the first input contrast); the
  generator fills in the missing inputs (any non-empty subset works) and returns the synthesised target contrast.

Config (``--conf key value``): ``models`` (comma-separated bundle names, or ``all``; default all), ``preload``
(``false``). The bundles are those of ``mamba_monai.bundle.BUNDLES_DIR`` (the repository's ``bundles/``, or
``$MAMBA_MONAI_BUNDLES``).
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any

import numpy as np
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.tasks.train.bundle import BundleTrainTask

from PIL import Image

import mamba_monai
from mamba_monai.bundle.utils import bundle_dir, bundle_workflow, list_bundles, run_workflow

logger = logging.getLogger(__name__)

SYNTHESIS_BUNDLES = ("medgan_ssm_synthesis",)
TRAINED_SUBDIR = ".mamba_monai_label"


def _workspace(studies: str, bundle: str) -> str:
    return os.path.join(studies, TRAINED_SUBDIR, bundle)


class _RenameKey:
    """Move ``data[old]`` to ``data[new]`` (a pre-transform step; MONAI Label logs it by class name)."""

    def __init__(self, old: str, new: str) -> None:
        self.old, self.new = old, new

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        if self.old in d:
            d[self.new] = d.pop(self.old)
        return d


class SegmentationBundleInfer(BundleInferTask):
    """
    ``BundleInferTask`` that also considers the checkpoint MONAI Label training wrote (the newest wins).

    MONAI Label puts the request's file under ``image_path``; MONAI 1.6's ``Spacingd`` updates every key that
    starts with ``image_`` as a metadata dict and fails on that string, so the key is set aside during the
    bundle's preprocessing and put back after it (MONAI Label's writer reads it).
    """

    def __init__(self, path: str, conf: dict, trained_dir: str, **kwargs: Any) -> None:
        super().__init__(path, conf, **kwargs)
        if self.valid:
            self.path = [self.path if isinstance(self.path, str) else self.path[0], os.path.join(trained_dir, "model.pt")]

    def pre_transforms(self, data=None):
        stash = "source_path_of_request"
        return [_RenameKey("image_path", stash), *super().pre_transforms(data), _RenameKey(stash, "image_path")]

    def writer(self, data, extension=None, dtype=None):
        """A 2D label map is returned as a PNG of rows x columns (MONAI Label's ITK writer takes no 2D affine)."""
        if self.dimension != 2:
            return super().writer(data, extension, dtype)
        label = np.asarray(data[self.output_label_key])
        label = label[0] if label.ndim == 3 else label  # (1, X, Y) -> (X, Y)
        path = tempfile.NamedTemporaryFile(suffix=".png", delete=False).name
        Image.fromarray(np.ascontiguousarray(label.T).astype(np.uint8)).save(path)
        return path, data.get(self.output_json_key, {})


class SegmentationBundleTrain(BundleTrainTask):
    """``BundleTrainTask`` whose checkpoints and logs go to ``trained_dir`` instead of the bundle's folder, and
    that goes on from the last checkpoint trained here when there is one (else from the shipped weights)."""

    def __init__(self, path: str, conf: dict, trained_dir: str, **kwargs: Any) -> None:
        self.trained_dir = trained_dir
        super().__init__(path, conf, **kwargs)

    def _load_checkpoint(self, model_pytorch, pretrained, train_handlers):
        trained = os.path.join(self.trained_dir, "model.pt")
        super()._load_checkpoint(trained if os.path.isfile(trained) else model_pytorch, pretrained, train_handlers)

    def _update_overrides(self, overrides):
        os.makedirs(self.trained_dir, exist_ok=True)
        # validation every epoch: model.pt (best validation Dice), which inference then takes, exists after any run
        overrides.update({"ckpt_dir": self.trained_dir, "output_dir": os.path.join(self.trained_dir, "logs"),
                          "resume": False, "val_interval": 1})
        return overrides


class SynthesisBundleInfer(InferTask):
    """
    Synthesis of the bundle's target contrast from the image MONAI Label sends, read as one input contrast
    (``request["modality"]``, default the first of the bundle's ``input_modalities``), through the bundle's own
    ``inference.json`` (same preprocessing, generator, writer). Returns the synthesised NIfTI on the input's grid.
    """

    def __init__(self, bundle: str) -> None:
        self.bundle = bundle
        parser = bundle_workflow(bundle, "inference", workflow_type="infer").parser
        self.inputs = list(parser.get_parsed_content("input_modalities"))
        self.target = parser.get_parsed_content("target_modality")
        super().__init__(
            type=InferType.OTHERS, labels=None, dimension=3,
            description=f"{self.target} synthesised from any of {', '.join(self.inputs)} ({bundle})",
            config={"modality": self.inputs[0]},
        )

    def is_valid(self) -> bool:
        return os.path.isfile(os.path.join(bundle_dir(self.bundle), "models", "model.pt"))

    def __call__(self, request) -> tuple[str | None, dict]:
        modality = str(request.get("modality", self.inputs[0])).lower()
        if modality not in self.inputs:
            raise ValueError(f"`modality` {modality!r} is not an input of {self.bundle}: choose one of {self.inputs}.")
        image = os.path.abspath(str(request["image"]))
        work = tempfile.mkdtemp(prefix=f"{self.bundle}_")
        # the image as a one-contrast case in the BraTS layout, which the bundle reads as any data set folder
        case = "case"
        os.makedirs(os.path.join(work, "input", case))
        suffix = ".nii.gz" if image.endswith(".nii.gz") else os.path.splitext(image)[1]
        os.symlink(image, os.path.join(work, "input", case, f"{case}_{modality}{suffix}"))
        out = os.path.join(work, "output")
        workflow = bundle_workflow(
            self.bundle, "inference", workflow_type="infer", dataset_dir=os.path.join(work, "input"),
            output_dir=out, write_panel=False, device=f"$torch.device('{request.get('device', 'cpu')}')",
        )
        run_workflow(workflow)
        written = sorted(os.path.join(root, f) for root, _, files in os.walk(out) for f in files if f.endswith(".nii.gz"))
        if not written:
            raise RuntimeError(f"{self.bundle} wrote no synthesis for {image} (see {out}/skipped.csv).")
        return written[0], {"inputs": [modality], "target": self.target, "bundle": self.bundle}


class MambaMonaiLabelApp(MONAILabelApp):
    """MONAI Label app over the bundles shipped with mamba-monai (see the module docstring for its config)."""

    def __init__(self, app_dir: str, studies: str, conf: dict) -> None:
        wanted = conf.get("models", "all")
        available = list_bundles()
        self.bundle_names = available if wanted == "all" else [m.strip() for m in wanted.split(",") if m.strip()]
        unknown = sorted(set(self.bundle_names) - set(available))
        if unknown:
            raise ValueError(f"Unknown bundle(s) {unknown} in --conf models; available: {available} (or 'all').")
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, name="mamba-monai",
                         description="Mamba and spectral networks for MONAI: the mamba-monai bundles",
                         version=mamba_monai.__version__)

    def _bundle_path(self, name: str) -> str:
        return bundle_dir(name)

    def init_infers(self) -> dict[str, InferTask]:
        infers: dict[str, InferTask] = {}
        for name in self.bundle_names:
            if name in SYNTHESIS_BUNDLES:
                infers[name] = SynthesisBundleInfer(name)
            else:
                infers[name] = SegmentationBundleInfer(self._bundle_path(name), self.conf,
                                                       trained_dir=_workspace(self.studies, name))
            logger.info("+++ Adding infer task %s (%s)", name, self._bundle_path(name))
        return infers

    def init_trainers(self):
        return {
            name: SegmentationBundleTrain(self._bundle_path(name), self.conf, trained_dir=_workspace(self.studies, name))
            for name in self.bundle_names
            if name not in SYNTHESIS_BUNDLES
        }
