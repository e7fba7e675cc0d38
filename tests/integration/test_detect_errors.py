"""Bad models and bad arguments are ApplianceErrors that name the file or key, not tracebacks."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from appliance.detect import load_detector
from appliance.errors import ApplianceError

SSD_INPUT = {"width": 300, "height": 300, "resize": "stretch", "color": "rgb", "layout": "nhwc",
             "dtype": "uint8"}
YOLO_INPUT = {"width": 640, "height": 640, "resize": "letterbox", "color": "rgb",
              "layout": "nchw", "dtype": "float32"}


def manifest(tmp_path: Path, **fields) -> Path:
    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump({"name": "t", **fields}))
    return path


def ssd_manifest(tmp_path: Path, assets_dir: Path, **changes) -> Path:
    fields = {"file": str(assets_dir / "mobilenet_ssd_v2_coco_quant_postprocess.tflite"),
              "format": "tflite", "input": SSD_INPUT, "decoder": "ssd",
              "labels": str(assets_dir / "coco_labels.txt")}
    return manifest(tmp_path, **{**fields, **changes})


def test_missing_model_file(tmp_path, assets_dir):
    p = ssd_manifest(tmp_path, assets_dir, file="gone.tflite")
    with pytest.raises(ApplianceError, match=r"model\.yaml: file: file gone\.tflite not found"):
        load_detector(str(p), assets_dir)


@pytest.mark.parametrize("kind", ["random", "truncated", "empty"])
def test_corrupt_tflite(tmp_path, assets_dir, kind):
    bad = tmp_path / "bad.tflite"
    real = (assets_dir / "mobilenet_ssd_v2_coco_quant_postprocess.tflite").read_bytes()
    bad.write_bytes({"random": os.urandom(50_000), "truncated": real[:len(real) // 3],
                     "empty": b""}[kind])
    with pytest.raises(ApplianceError, match=r"bad\.tflite: not a loadable TFLite model"):
        load_detector(str(ssd_manifest(tmp_path, assets_dir, file="bad.tflite")), assets_dir)


@pytest.mark.parametrize("kind", ["random", "truncated"])
def test_corrupt_onnx(tmp_path, assets_dir, kind):
    bad = tmp_path / "bad.onnx"
    if kind == "random":
        bad.write_bytes(os.urandom(50_000))
    else:
        with open(assets_dir / "yolov8_fall_fp16.onnx", "rb") as f:
            bad.write_bytes(f.read(1_000_000))
    p = manifest(tmp_path, file="bad.onnx", format="onnx", input=YOLO_INPUT, decoder="yolo",
                 labels=["Normal", "Fall"])
    with pytest.raises(ApplianceError, match=r"bad\.onnx: not a loadable ONNX model"):
        load_detector(str(p), assets_dir)


def test_ssd_model_with_yolo_decoder(tmp_path, assets_dir):
    p = ssd_manifest(tmp_path, assets_dir, decoder="yolo")
    with pytest.raises(ApplianceError) as e:
        load_detector(str(p), assets_dir)
    msg = str(e.value)
    assert msg.startswith("yolo decoder: model ")
    assert "mobilenet_ssd_v2_coco_quant_postprocess.tflite" in msg
    assert "(1, 20, 4)" in msg and "[1, 4+nc, N]" in msg


def test_yolo_model_with_ssd_decoder(tmp_path, assets_dir):
    p = manifest(tmp_path, file=str(assets_dir / "yolov8_fall_fp16.onnx"), format="onnx",
                 input=YOLO_INPUT, decoder="ssd", labels=["Normal", "Fall"])
    with pytest.raises(ApplianceError, match=r"ssd decoder: model .*yolov8_fall_fp16\.onnx has "
                                             r"outputs \[\(1, 6, 8400\)\]"):
        load_detector(str(p), assets_dir)


def test_yolo_with_wrong_label_count(tmp_path, assets_dir):
    p = manifest(tmp_path, file=str(assets_dir / "yolov8_fall_fp16.onnx"), format="onnx",
                 input=YOLO_INPUT, decoder="yolo", labels=str(assets_dir / "coco_labels.txt"))
    with pytest.raises(ApplianceError, match=r"\(1, 6, 8400\).*nc=90"):
        load_detector(str(p), assets_dir)


def test_input_size_disagrees_with_model(tmp_path, assets_dir):
    p = ssd_manifest(tmp_path, assets_dir, input={**SSD_INPUT, "width": 320})
    with pytest.raises(ApplianceError, match=r"model\.yaml: input: says 320x300 nhwc but model "
                                             r".*declares input shape \(1, 300, 300, 3\)"):
        load_detector(str(p), assets_dir)


def test_input_dtype_disagrees_with_model(tmp_path, assets_dir):
    p = manifest(tmp_path, file=str(assets_dir / "yolov8_fall_fp16.onnx"), format="onnx",
                 input={**YOLO_INPUT, "dtype": "uint8"}, decoder="yolo")
    with pytest.raises(ApplianceError, match=r"input\.dtype: says uint8 but model .* takes float32"):
        load_detector(str(p), assets_dir)


def test_unknown_class_lists_valid_ones(assets_dir):
    with pytest.raises(ApplianceError) as e:
        load_detector("ssd-mobilenet-v2", assets_dir, classes=["person", "unicorn"])
    msg = str(e.value)
    assert "'unicorn'" in msg and "ssd-mobilenet-v2-coco" in msg and "valid: person, bicycle" in msg
    assert "'person'" not in msg


def test_unknown_manifest_key(tmp_path, assets_dir):
    p = ssd_manifest(tmp_path, assets_dir, threshold=0.3)
    with pytest.raises(ApplianceError, match=r"model\.yaml: unknown key threshold"):
        load_detector(str(p), assets_dir)


def test_backend_must_match_format(assets_dir):
    with pytest.raises(ApplianceError, match="backend onnxruntime cannot run .*tflite"):
        load_detector("ssd-mobilenet-v2", assets_dir, backend="onnxruntime")
    with pytest.raises(ApplianceError, match="backend: must be one of auto, litert, onnxruntime"):
        load_detector("ssd-mobilenet-v2", assets_dir, backend="tpu")


def test_engine_format_without_tensorrt(tmp_path, assets_dir):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("TensorRT is installed: this checks the message where it is not")
    (tmp_path / "m.engine").write_bytes(b"x")
    p = manifest(tmp_path, file="m.engine", format="engine", input=YOLO_INPUT, decoder="yolo",
                 labels=["a"])
    with pytest.raises(ApplianceError, match=r"model.yaml: format engine needs TensorRT, which cannot run here: "
                                             r"TensorRT is not installed"):
        load_detector(str(p), assets_dir)


@pytest.mark.parametrize("kwargs,expect", [
    ({"threshold": 1.5}, "threshold: must be a number in"),
    ({"threads": 0}, "threads: must be a positive integer"),
])
def test_bad_arguments(assets_dir, kwargs, expect):
    with pytest.raises(ApplianceError, match=expect):
        load_detector("ssd-mobilenet-v2", assets_dir, **kwargs)


def test_unknown_model_name(assets_dir):
    with pytest.raises(ApplianceError, match="unknown model 'nope'"):
        load_detector("nope", assets_dir)
