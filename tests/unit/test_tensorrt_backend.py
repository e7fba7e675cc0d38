"""The TensorRT backend for real: builds, caches, reloads and runs engines of the YOLOv8
test model, and checks its detections against ONNX Runtime's on vtest.avi.

Needs TensorRT, cuda-python and an NVIDIA GPU (a Jetson with JetPack 6, or a GPU
machine): skipped elsewhere, with the reason. Builds take about a minute each on a
desktop GPU and several on a Jetson.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from appliance.assets import sha256_of

trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed here: runs on a Jetson / a GPU machine")

from appliance.detect import engine_build as trt_backend  # noqa: E402
from appliance.detect import engine_cache as ec  # noqa: E402
from appliance.detect.backends import open_backend  # noqa: E402
from appliance.detect.engine_cache import EngineOptions  # noqa: E402
from appliance.detect.manifest import load_manifest  # noqa: E402

_WHY = trt_backend.unavailable()
if _WHY:
    pytest.skip(f"TensorRT {trt.__version__} is installed but cannot run here: {_WHY}", allow_module_level=True)

MODEL = "yolov8-fall-test"


@pytest.fixture(scope="module")
def manifest(assets_dir):
    return load_manifest(MODEL, assets_dir)


@pytest.fixture(scope="module")
def engines(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("engines")


@pytest.fixture(scope="module")
def frames(assets_dir) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(assets_dir / "vtest.avi"))
    out = []
    for i in range(101):
        ok, img = cap.read()
        assert ok
        if i in (0, 50, 100):
            out.append(img)
    cap.release()
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def test_builds_an_fp16_engine_then_loads_it_from_the_cache(manifest, engines):
    seen: list[float] = []
    opts = EngineOptions(cache_dir=engines, progress=seen.append)
    be = open_backend(manifest, "tensorrt", 1, engine=opts)
    assert be.name == "tensorrt" and be.device == "cuda" and be.engine_source == "built"
    assert seen and seen[-1] == 1.0
    record = ec.read_sidecar(be.model_file)
    assert record["key"]["tensorrt"] == trt.__version__ and record["key"]["precision"] == "fp16"
    assert record["key"]["onnx_sha256"] == sha256_of(manifest.file)
    assert be.input_shape == (1, 3, 640, 640) and be.output_shapes == [(1, 6, 8400)]
    again = open_backend(manifest, "tensorrt", 1, engine=opts)
    assert again.engine_source == "cache" and again.model_file == be.model_file


def test_auto_picks_tensorrt_here(manifest, engines):
    be = open_backend(manifest, "auto", 1, engine=EngineOptions(cache_dir=engines))
    assert be.name == "tensorrt"


def test_outputs_match_onnxruntime_within_fp16_tolerance(manifest, engines, frames):
    from appliance.detect import preprocess

    be = open_backend(manifest, "tensorrt", 1, engine=EngineOptions(cache_dir=engines))
    ort = open_backend(manifest, "onnxruntime", 1)
    x = preprocess.prepare(frames[1:2], manifest.input)[0]
    got, want = be.run(x)[0], ort.run(x)[0]
    assert got.shape == want.shape and got.dtype == np.float32
    # Boxes in input pixels (0..640) and class scores 0..1: fp16 keeps them within about 1 px / 0.02.
    assert np.abs(got[:, :4] - want[:, :4]).max() < 4.0
    assert np.abs(got[:, 4:] - want[:, 4:]).max() < 0.05


def test_detector_on_tensorrt_finds_the_people_onnxruntime_finds(assets_dir, engines, frames, tmp_path):
    from appliance.detect import load_detector

    trt_det = load_detector(MODEL, assets_dir, backend="tensorrt", threshold=0.4, threads=1,
                            cache_dir=tmp_path, engine=EngineOptions(cache_dir=engines))
    ort_det = load_detector(MODEL, assets_dir, backend="onnxruntime", threshold=0.4, threads=1, cache_dir=tmp_path)
    assert trt_det.backend.name == "tensorrt"
    matched = total = 0
    for got, want in zip(trt_det.detect(frames), ort_det.detect(frames)):
        total += len(want.xyxy)
        matched += sum(any(_iou(w, g) > 0.8 for g in got.xyxy) for w in want.xyxy)
    assert total >= 3 and matched >= 0.9 * total


def test_an_engine_recorded_for_another_tensorrt_is_rebuilt(manifest, engines, caplog):
    opts = EngineOptions(cache_dir=engines)
    path = open_backend(manifest, "tensorrt", 1, engine=opts).model_file
    side = ec.sidecar_path(path)
    record = json.loads(side.read_text())
    record["key"]["tensorrt"] = "0.0.1"
    side.write_text(json.dumps(record))
    be = open_backend(manifest, "tensorrt", 1, engine=opts)
    assert be.engine_source == "built"
    assert ec.read_sidecar(be.model_file)["key"]["tensorrt"] == trt.__version__


def test_a_corrupt_engine_is_rebuilt(manifest, engines):
    opts = EngineOptions(cache_dir=engines)
    path = open_backend(manifest, "tensorrt", 1, engine=opts).model_file
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF
    path.write_bytes(bytes(data))
    assert open_backend(manifest, "tensorrt", 1, engine=opts).engine_source == "built"


def test_a_prebuilt_engine_manifest_loads_its_engine_here(manifest, engines, tmp_path, assets_dir):
    import yaml

    built = open_backend(manifest, "tensorrt", 1, engine=EngineOptions(cache_dir=engines)).model_file
    d = tmp_path / "prebuilt"
    d.mkdir()
    (d / "yolo.engine").write_bytes(built.read_bytes())
    (d / "yolo.json").write_text(ec.sidecar_path(built).read_text())
    raw = {"name": "yolo-prebuilt", "file": "yolo.engine", "format": "engine", "decoder": "yolo",
           "labels": ["Normal", "Fall"],
           "input": {"width": 640, "height": 640, "resize": "letterbox", "layout": "nchw", "dtype": "float32"}}
    (d / "model.yaml").write_text(yaml.safe_dump(raw))
    m = load_manifest(d / "model.yaml", assets_dir)
    be = open_backend(m, "auto", 1, engine=EngineOptions(cache_dir=tmp_path / "engines"))
    assert be.engine_source == "prebuilt" and be.model_file == (d / "yolo.engine").resolve()


def test_int8_engine_calibrated_on_video_frames(manifest, tmp_path, assets_dir, frames):
    from appliance.detect.detector import make_decoder

    opts = EngineOptions(cache_dir=tmp_path, precision="int8", calibration_source=str(assets_dir / "vtest.avi"),
                         calibration_frames=16)
    be = open_backend(manifest, "tensorrt", 1, engine=opts)
    assert be.engine_source == "built"
    assert be.model_file.with_suffix(".calib").is_file()  # the frames are sampled once per key
    from appliance.detect import preprocess

    decode = make_decoder(manifest, be, ["Normal", "Fall"])
    x = preprocess.prepare(frames[1:2], manifest.input)[0]
    xyxy, score, cls = decode(be.run(x), 0.4)[0]
    assert len(score) >= 1  # people are still found at int8


def test_dla_core_when_the_device_has_one(manifest, tmp_path):
    builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
    if getattr(builder, "num_DLA_cores", 0) < 1:
        pytest.skip("no DLA core on this GPU (Jetson Orin/Xavier have them)")
    be = open_backend(manifest, "tensorrt", 1, engine=EngineOptions(cache_dir=tmp_path, dla_core=0))
    assert be.device == "dla0"


def test_model_build_command_builds_every_input_size(tmp_path, capsys):
    from appliance.cli import main

    assert main(["model", "build", "--model", MODEL, "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out] == [f"{MODEL} {s}x{s} fp16" for s in (640, 480, 320)]
    assert all(": built in " in line for line in out)
    assert main(["model", "build", "--model", MODEL, "--data-dir", str(tmp_path)]) == 0
    assert all(": cache: " in line for line in capsys.readouterr().out.splitlines())
    assert len(list((tmp_path / "engines").glob("*.engine"))) == 3


def test_key_changes_with_precision_on_this_device(manifest, tmp_path):
    fp16 = trt_backend.make_key(manifest, manifest.file, EngineOptions(cache_dir=tmp_path))
    fp32 = trt_backend.make_key(manifest, manifest.file, EngineOptions(cache_dir=tmp_path, precision="fp32"))
    assert fp16.gpu and fp16.compute and fp16.digest() != fp32.digest()
    assert dataclasses.replace(fp16, precision="fp32") == fp32
