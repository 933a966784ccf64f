"""The MONAI Label app for real: ``monailabel start_server`` on a loopback port in MONAI Label's own environment (built
here when missing, see ``mamba_monai.label.environment``), inference over REST for the three bundles, one short
training of a segmentation bundle, and inference from the checkpoint it wrote.

Marked ``label``: the environment takes several GB and minutes to build, so CI runs these in a step of their own
(``.ci/run``); ``python -m pytest -m label`` runs them by hand."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from mamba_monai.bundle.testing import run_bundle
from mamba_monai.data import (
    DEMO_2D_LABELS,
    DEMO_CT_LABELS,
    ensure_demo_mri_dataset,
    generate_demo_2d_case,
    generate_demo_ct_case,
    write_image_2d,
    write_nifti,
)
from mamba_monai.label import APP_DIR

pytestmark = [pytest.mark.label, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, fields: dict[str, str] | None = None, file: str | None = None, body: dict | None = None,
          timeout: float = 900) -> bytes:
    """POST as a client does: multipart form (``params`` + ``file``) for /infer, JSON for /train."""
    if body is not None:
        data, headers = json.dumps(body).encode(), {"Content-Type": "application/json"}
    else:
        boundary = uuid.uuid4().hex
        parts = []
        for key, value in (fields or {}).items():
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode())
        if file:
            with open(file, "rb") as f:
                payload = f.read()
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{os.path.basename(file)}"'
                         f"\r\nContent-Type: application/octet-stream\r\n\r\n".encode() + payload + b"\r\n")
        data = b"".join(parts) + f"--{boundary}--\r\n".encode()
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """Three labelled CT volumes in MONAI Label's datastore layout (labels in labels/final)."""
    root = tmp_path_factory.mktemp("studies")
    (root / "labels" / "final").mkdir(parents=True)
    for i in range(3):
        image, label, affine = generate_demo_ct_case(i, size_scale=0.5)
        write_nifti(image, affine, root / f"ct_{i:03d}.nii.gz")
        write_nifti(label, affine, root / "labels" / "final" / f"ct_{i:03d}.nii.gz")
    return root


@pytest.fixture(scope="module")
def server(studies, tmp_path_factory):
    from mamba_monai.label.environment import ensure_label_env

    python = ensure_label_env()
    port = _free_port()
    log = open(tmp_path_factory.mktemp("server") / "server.log", "w+")
    # the monailabel script runs the `python` it finds on PATH: the environment's own first
    env = dict(os.environ, PATH=os.path.dirname(python) + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.Popen(
        [os.path.join(os.path.dirname(python), "monailabel"), "start_server", "--app", APP_DIR, "--studies",
         str(studies), "--conf", "models", "emnet_seg3d,spectral_vmamba_seg2d,medgan_ssm_synthesis",
         "--conf", "zoo_source", "local", "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    url = f"http://127.0.0.1:{port}"
    info = None
    try:
        for _ in range(180):
            try:
                with urllib.request.urlopen(url + "/info/", timeout=5) as r:
                    info = json.loads(r.read())
                break
            except OSError:
                if proc.poll() is not None:
                    break
                time.sleep(2)
        if info is None:
            log.seek(0)
            pytest.fail(f"monailabel start_server did not come up:\n{log.read()[-5000:]}")
        yield {"url": url, "info": info, "log": log}
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


def test_the_server_lists_every_bundle_with_its_classes(server):
    models = server["info"]["models"]
    assert set(models) == {"emnet_seg3d", "spectral_vmamba_seg2d", "medgan_ssm_synthesis"}
    assert models["emnet_seg3d"]["labels"] == {v: k for k, v in DEMO_CT_LABELS.items() if k}
    assert models["spectral_vmamba_seg2d"]["labels"] == {v: k for k, v in DEMO_2D_LABELS.items() if k}
    assert set(server["info"]["trainers"]) == {"emnet_seg3d", "spectral_vmamba_seg2d"}


def test_infer_ct_volume_gives_a_label_on_its_grid(server, studies, tmp_path):
    source = str(studies / "ct_000.nii.gz")
    out = tmp_path / "label.nii.gz"
    out.write_bytes(_post(f"{server['url']}/infer/emnet_seg3d?output=image", {"params": json.dumps({"device": "cpu"})},
                          source))
    pred, image = nib.load(str(out)), nib.load(source)
    assert pred.shape == image.shape and np.allclose(pred.affine, image.affine, atol=1e-3)
    values = np.asarray(pred.dataobj)
    truth = np.asarray(nib.load(str(studies / "labels" / "final" / "ct_000.nii.gz")).dataobj)
    assert set(np.unique(values).tolist()) <= set(DEMO_CT_LABELS)
    liver = 2 * ((values == 1) & (truth == 1)).sum() / ((values == 1).sum() + (truth == 1).sum())
    assert liver > 0.8  # the shipped weights segment the demo liver


def test_infer_2d_image_matches_the_bundle_own_inference(server, tmp_path):
    image, _ = generate_demo_2d_case(3, size_scale=0.5)
    data = tmp_path / "data"
    data.mkdir()
    png = write_image_2d(image, data / "us.png")
    out = tmp_path / "label.png"
    out.write_bytes(_post(f"{server['url']}/infer/spectral_vmamba_seg2d?output=image",
                          {"params": json.dumps({"device": "cpu"})}, png))
    served = np.asarray(Image.open(out))
    run_bundle("spectral_vmamba_seg2d", ["inference.json"], dataset_dir=str(data), output_dir=str(tmp_path / "own"))
    own = np.asarray(Image.open(tmp_path / "own" / "us_seg.png"))
    assert served.shape == own.shape == image.shape[:2]
    np.testing.assert_array_equal(served, own)


def test_infer_synthesis_from_a_single_contrast(server, tmp_path):
    root = tmp_path / "mri"
    ensure_demo_mri_dataset(str(root), num_train=1, num_val=1, num_test=1, size_scale=0.4)
    (case,) = [c for c in (root / "test").iterdir() if c.is_dir()]
    # one contrast the case has (demo cases lack some inputs on purpose)
    modality, source = next((m, p) for m in ("t2", "t1", "t1ce") for p in case.glob(f"*_{m}.nii.gz"))
    out = tmp_path / "flair.nii.gz"
    out.write_bytes(_post(f"{server['url']}/infer/medgan_ssm_synthesis?output=image",
                          {"params": json.dumps({"device": "cpu", "modality": modality})}, str(source)))
    synth, real = nib.load(str(out)), nib.load(str(next(case.glob("*_flair.nii.gz"))))
    assert synth.shape == real.shape and np.allclose(synth.affine, real.affine, atol=1e-3)
    a, b = np.asarray(synth.dataobj, float), np.asarray(real.dataobj, float)
    brain = b > 0
    assert np.corrcoef(a[brain], b[brain])[0, 1] > 0.6  # the synthesis follows the real FLAIR


def test_one_short_training_then_inference_from_its_checkpoint(server, studies, tmp_path):
    trained = studies / ".mamba_monai_label" / "emnet_seg3d"
    shutil.rmtree(trained, ignore_errors=True)
    shipped = os.path.join(APP_DIR, "..", "..", "bundles", "emnet_seg3d", "models", "model.pt")
    before = os.path.getmtime(shipped)
    _post(f"{server['url']}/train/emnet_seg3d?run_sync=true",
          body={"max_epochs": 1, "device": "cpu", "val_split": 0.34, "multi_gpu": False})
    assert (trained / "model.pt").is_file() and (trained / "checkpoint_latest.pt").is_file()
    assert os.path.getmtime(shipped) == before  # the shipped weights are never overwritten
    _post(f"{server['url']}/infer/emnet_seg3d?output=image", {"params": json.dumps({"device": "cpu"})},
          str(studies / "ct_001.nii.gz"))
    server["log"].flush()
    server["log"].seek(0)
    used = [line for line in server["log"].read().splitlines() if "Infer model path" in line]
    assert used and used[-1].rstrip().endswith(str(trained / "model.pt")), used[-3:]
