"""`appliance model convert` for real: tf2onnx and TensorFlow in a throwaway venv (they are
no dependency of the appliance), the default detector's TFLite converted, checked against
it, and the ONNX file run by the appliance's detector on ONNX Runtime. TensorRT itself
cannot run here (docs/tensorrt.md)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from appliance import paths
from appliance.detect import tflite_onnx
from appliance.detect.detector import load_detector
from appliance.provision import platform

MANIFEST = paths.MODELS_DIR / "ssd-mobilenet-v2-onnx" / "model.yaml"


@pytest.fixture(scope="module")
def converter_python() -> str:
    """A venv with CONVERTER_REQUIREMENTS, kept under the checkout's data/ between runs."""
    venv = Path(__file__).resolve().parents[2] / "data" / "converter-venv"
    python = venv / "bin" / "python"
    if not (python.is_file() and subprocess.run([str(python), "-c", "import tf2onnx"],
                                                capture_output=True).returncode == 0):
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *tflite_onnx.CONVERTER_REQUIREMENTS],
                       check=True, timeout=1200)
    return str(python)


@pytest.fixture(scope="module")
def converted(converter_python, assets_dir, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("convert") / "ssd_mobilenet_v2_coco.onnx"
    env = {**os.environ, "APPLIANCE_ASSETS_DIR": str(assets_dir)}
    p = subprocess.run([sys.executable, "-m", "appliance", "model", "convert", "--python", converter_python,
                        "--out", str(out)], capture_output=True, text=True, env=env, timeout=1200)
    assert p.returncode == 0, p.stdout + p.stderr
    return out, p.stdout


def test_the_conversion_finds_what_the_tflite_finds_and_is_reproducible(converted):
    out, stdout = converted
    m = re.search(r"check: (\d+)/(\d+) TFLite detections \(score >= 0.5\) found by the ONNX model on 7 images", stdout)
    assert m and m.group(1) == m.group(2) and int(m.group(2)) >= 20, stdout
    assert f"sha256 {tflite_onnx.REFERENCE_SHA256} (the reference build)" in stdout, stdout
    assert out.is_file() and not out.with_name(out.name + ".tmp").exists()


def test_the_converted_model_runs_as_the_manifest_says(converted, assets_dir, tmp_path):
    out, _ = converted
    # What `appliance model convert` does without --out: the file in the asset directory.
    assets = tmp_path / "assets"
    assets.mkdir()
    shutil.copy(assets_dir / "coco_labels.txt", assets)
    assert not platform.onnx_model_ready(assets)
    shutil.copy(out, assets / out.name)
    assert platform.onnx_model_ready(assets)
    det = load_detector(str(MANIFEST), assets, backend="auto", threshold=0.5, classes=None, threads=1)
    assert det.backend.name == "onnxruntime"  # no TensorRT here: auto falls back
    cap = cv2.VideoCapture(str(assets_dir / "vtest.avi"))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 100)
    ok, frame = cap.read()
    assert ok
    (d,) = det.detect([frame])
    labels = [det.labels[int(c)] for c in d.class_id]
    # vtest.avi frame 100: the TFLite finds 7 people and 2 cars at 0.5 (docs/assets.md).
    assert labels.count("person") >= 5, labels
    image = cv2.imread(str(assets_dir / "dog.jpg"))
    (d,) = det.detect([image])
    found = {det.labels[int(c)] for c in d.class_id}
    assert {"bicycle", "dog"} <= found, found
