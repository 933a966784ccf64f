"""Writing a synthesised MRI contrast: one NIfTI per case on the case's own grid, with a record of the inputs used.

:class:`SaveSynthesisd` ends the inference chain of the synthesis bundle (after ``Invertd`` has put the synthesis
back on the case's voxel grid and :class:`~mamba_monai.data.RestoreIntensityd` in the target contrast's scale).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Hashable, Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from monai.config import DtypeLike, KeysCollection
from monai.data import FolderLayout, MetaTensor
from monai.transforms import MapTransform
from monai.utils import ImageMetaKey, optional_import

from mamba_monai.data.nifti import atomic_write_text, write_nifti
from mamba_monai.data.outputs import UniqueNameFormatter
from mamba_monai.data.validation import source_filename

FileLock, has_filelock = optional_import("filelock", name="FileLock")

__all__ = ["SaveSynthesisd", "synthesis_description"]

logger = logging.getLogger(__name__)

_DESCRIP_LEN = 79  # the NIfTI-1 header's descrip holds 80 bytes, NUL-terminated


def synthesis_description(target: str, inputs_used: Sequence[str], prefix: str = "synthesised") -> str:
    """The NIfTI header description of a synthesis, e.g. ``"synthesised flair from t1+t1ce"`` (at most 79
    characters)."""
    text = f"{prefix} {target} from {'+'.join(inputs_used) if inputs_used else 'nothing'}".strip()
    return text if len(text) <= _DESCRIP_LEN else text[: _DESCRIP_LEN - 3] + "..."


def _numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _middle_slice(image: np.ndarray) -> int:
    """Index along the last axis through the middle of the non-zero extent of ``image`` (C, X, Y, Z)."""
    occupied = np.flatnonzero(np.abs(image).reshape(-1, image.shape[-1]).max(axis=0) > 0)
    if occupied.size == 0:
        return image.shape[-1] // 2
    return int((occupied[0] + occupied[-1]) // 2)


class SaveSynthesisd(MapTransform):
    """
    Write the synthesis of each case, with what it was made from.

    For a case ``<case>`` (its ``case_key`` entry, as :func:`~mamba_monai.data.find_mri_cases` gives it) and the
    target contrast ``<target>``, in ``output_dir``:

    - ``<case>_<target>_<postfix>.nii.gz``: the synthesis, a 3D float NIfTI with the array's shape and affine (put
      it back on the case's grid with ``Invertd`` first: it then has the source's shape and affine); the header's
      description reads e.g. ``"synthesised flair from t1+t1ce"``;
    - ``<case>_<target>_<postfix>.json``: the case, the inputs used and missing, their files, the intensity scale
      the synthesis was put back in, and the output files;
    - ``<case>_<target>_<postfix>_panel.png`` (with ``panel``): the middle axial slice of each input, the
      synthesis and, when the case has the target, the real image and the error map, labelled
      (:func:`mamba_monai.visualize.synthesis_panel`), drawn from the network's own view of the case
      (``display_key``, ``image_key``, ``target_key``: RAS-oriented, intensities in [0, 1]);
    - an entry in ``mapping_file`` (the JSON list of MONAI's ``WriteFileMappingd``, ``{"input", "output", ...}``,
      "input" being the file the synthesis stands for: ``<case folder>/<case>_<target>.nii.gz``). Through
      :class:`~mamba_monai.data.UniqueNameFormatter` it keeps the synthesis of another case (another folder with
      the same case id, or an earlier run on other data) from being overwritten: that output goes to
      ``..._<n>`` instead, with a warning. A re-run on the same case replaces its own files.

    The saved path goes to the synthesis' metadata (``saved_to``).

    Args:
        keys: the synthesis key (one), (1, X, Y, Z). Default ``"pred"``.
        output_dir: the output folder. Default ``"./eval"``.
        input_names: the input contrasts in channel order (the bundle's ``input_modalities``). Default
            ``("t1", "t1ce", "t2")``.
        target_name: the synthesised contrast. Default ``"flair"``.
        output_postfix: the file-name postfix. Default ``"synth"``.
        output_dtype: data type on disk. Default ``np.float32``.
        mask_key: key of the availability mask (M,) of the inputs the network was given. Default ``"mask"``.
        case_key: key of the case id. Default ``"case"``.
        image_key: key of the network's input (M, X, Y, Z) for the panel. Default ``"image"``.
        target_key: key of the real target (1, X, Y, Z) on the same grid, for the panel. Default ``"target"``.
        display_key: key of a copy of the synthesis on the network's grid (before ``Invertd``, e.g. made with
            ``CopyItemsd``) for the panel; None draws the panel from ``keys`` itself, which must then lie on the
            grid of ``image_key``. Default None.
        scale_key: key of the target's intensity scale (``ScaleIntensityPercentiled``), recorded in the JSON.
            Default ``"target_scale"``.
        default_scale: the scale used when the case has no target (``RestoreIntensityd``'s ``default_scale``),
            recorded in the JSON. Default None.
        mapping_file: the mapping JSON. Default None: ``output_dir/mapping.json``.
        panel: write the PNG panel. Default True.
        error_range: error shown white in the panel (in [0, 1] units). Default 0.5.
        description_prefix: first word(s) of the NIfTI description. Default ``"synthesised"``.
    """

    def __init__(
        self,
        keys: KeysCollection = "pred",
        output_dir: str | os.PathLike = "./eval",
        input_names: Sequence[str] = ("t1", "t1ce", "t2"),
        target_name: str = "flair",
        output_postfix: str = "synth",
        output_dtype: DtypeLike = np.float32,
        mask_key: str = "mask",
        case_key: str = "case",
        image_key: str = "image",
        target_key: str = "target",
        display_key: str | None = None,
        scale_key: str = "target_scale",
        default_scale: float | None = None,
        mapping_file: str | os.PathLike | None = None,
        panel: bool = True,
        error_range: float = 0.5,
        description_prefix: str = "synthesised",
    ) -> None:
        super().__init__(keys)
        if len(self.keys) != 1:
            raise ValueError(f"`keys` must name one synthesis, got {list(self.keys)}.")
        self.input_names = [str(n) for n in ([input_names] if isinstance(input_names, str) else input_names)]
        if not self.input_names:
            raise ValueError("`input_names` must name the input contrasts in channel order.")
        self.output_dir = os.fspath(output_dir)
        self.target_name = str(target_name)
        self.output_postfix = str(output_postfix)
        self.output_dtype = output_dtype
        self.mask_key, self.case_key, self.image_key = mask_key, case_key, image_key
        self.target_key, self.display_key, self.scale_key = target_key, display_key, scale_key
        self.default_scale = default_scale
        self.mapping_file = os.fspath(mapping_file) if mapping_file else os.path.join(self.output_dir, "mapping.json")
        self.panel = bool(panel)
        self.error_range = float(error_range)
        self.description_prefix = description_prefix
        self._layout = FolderLayout(self.output_dir, postfix=self.output_postfix, extension=".nii.gz", makedirs=True)

    def _inputs_used(self, d: Mapping[Hashable, Any]) -> list[bool]:
        if self.mask_key not in d:
            raise KeyError(f"SaveSynthesisd needs the availability mask '{self.mask_key}' (from LoadMRIContrastsd).")
        mask = _numpy(d[self.mask_key]).reshape(-1)
        if mask.size != len(self.input_names):
            raise ValueError(
                f"'{self.mask_key}' has {mask.size} entries but `input_names` {self.input_names} has "
                f"{len(self.input_names)}; give the bundle's input_modalities."
            )
        return [bool(m > 0) for m in mask]

    def _output_path(self, stand_in: str) -> str:
        saver = SimpleNamespace(folder_layout=self._layout)
        kwargs = UniqueNameFormatter(self.mapping_file)({ImageMetaKey.FILENAME_OR_OBJ: stand_in}, saver)
        return os.fspath(self._layout.filename(**kwargs))

    def _write_panel(self, d: Mapping[Hashable, Any], path: str, used: list[bool], title: str) -> str:
        from mamba_monai.visualize import write_synthesis_panel

        syn = _numpy(d[self.display_key or self.keys[0]])
        image = _numpy(d[self.image_key])
        if syn.shape[1:] != image.shape[1:] or syn.ndim != 4:
            raise ValueError(
                f"The panel needs the synthesis on the network's grid: '{self.display_key or self.keys[0]}' has shape "
                f"{syn.shape}, '{self.image_key}' {image.shape}; set `display_key` to a copy made before Invertd."
            )
        z = _middle_slice(image)
        inputs = {n: (image[i, ..., z] if used[i] else None) for i, n in enumerate(self.input_names)}
        target = d.get(self.target_key)
        real = _numpy(target)[0, ..., z] if target is not None and _numpy(target).shape[1:] == syn.shape[1:] else None
        return write_synthesis_panel(
            path, inputs, syn[0, ..., z], real, target_name=self.target_name, error_range=self.error_range, title=title
        )

    def _write_dicom(self, pred: Any, volume: np.ndarray, affine: np.ndarray, stem: str, used: list[str]) -> str | None:
        """For a case read from DICOM, the synthesis also as a DICOM series derived from the reference series
        (:func:`~mamba_monai.data.write_derived_series`) in ``<stem>_dicom/``; None otherwise."""
        files = pred.meta.get("dicom_files") if isinstance(pred, MetaTensor) else None
        if not files:
            return None
        from mamba_monai.data.dicom import write_derived_series

        folder = stem + "_dicom"
        inputs = "+".join(n.upper() for n in used)
        write_derived_series(
            volume, affine.astype(np.float64), str(files).split("\n"), folder,
            series_description=f"synthetic {self.target_name.upper()} from {inputs}",
            derivation=f"{self.target_name} synthesised from {inputs} by mamba-monai (not acquired)",
        )
        return folder

    def _append_mapping(self, entry: dict) -> None:
        def write() -> None:
            try:
                with open(self.mapping_file, encoding="utf-8") as f:
                    entries = json.load(f)
            except (OSError, ValueError):
                entries = []
            entries.append(entry)
            atomic_write_text(json.dumps(entries, indent=4), self.mapping_file)

        if has_filelock:
            with FileLock(self.mapping_file + ".lock"):
                write()
        else:
            write()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        key = self.keys[0]
        pred = d[key]
        array = _numpy(pred)
        if array.ndim != 4 or array.shape[0] != 1:
            raise ValueError(f"'{key}' must be one synthesised channel (1, X, Y, Z), got shape {array.shape}.")
        affine = _numpy(pred.affine if isinstance(pred, MetaTensor) else d[f"{key}_meta_dict"]["affine"])
        reference = source_filename(d, key)
        case = str(d.get(self.case_key) or os.path.basename(reference).split(".")[0])
        used = self._inputs_used(d)
        names_used = [n for n, u in zip(self.input_names, used) if u]
        stand_in = os.path.join(os.path.dirname(os.path.abspath(reference)), f"{case}_{self.target_name}.nii.gz")
        os.makedirs(self.output_dir, exist_ok=True)
        out_path = self._output_path(stand_in)
        stem = out_path[: -len(".nii.gz")]
        description = synthesis_description(self.target_name, names_used, self.description_prefix)
        write_nifti(array[0], affine.astype(np.float64), out_path, dtype=self.output_dtype, description=description)

        dicom_out = self._write_dicom(pred, array[0], affine, stem, names_used)

        has_target = self.scale_key in d
        scale = float(_numpy(d[self.scale_key]).reshape(-1)[0]) if has_target else self.default_scale
        panel_path = None
        if self.panel:
            title = f"{case}: {self.target_name} from {'+'.join(names_used) or 'nothing'}"
            panel_path = self._write_panel(d, stem + "_panel.png", used, title)
        record = {
            "case": case,
            "target": self.target_name,
            "inputs_used": names_used,
            "inputs_missing": [n for n, u in zip(self.input_names, used) if not u],
            "input_files": {n: os.fspath(d[n]) for n in self.input_names if isinstance(d.get(n), (str, os.PathLike))},
            "reference_file": reference,
            "intensity_scale": scale,
            "intensity_scale_from": "the case's target (its brain percentile)" if has_target else "reference_scale",
            "output": out_path,
            "dicom_series": dicom_out,
            "panel": panel_path,
            "description": description,
        }
        atomic_write_text(json.dumps(record, indent=4), stem + ".json")
        self._append_mapping({"input": stand_in, "output": out_path, "case": case, "inputs_used": names_used,
                              "record": stem + ".json", "panel": panel_path})
        if isinstance(pred, MetaTensor):
            pred.meta["saved_to"] = out_path
        logger.info("synthesised %s of case %s from %s -> %s", self.target_name, case, "+".join(names_used), out_path)
        return d
