"""The real models on real media: SSD MobileNet (LiteRT) and a YOLOv8 export (ONNX Runtime)."""
from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

from appliance.detect import Detections, describe, load_detector

FRAMES = (100, 200)


@pytest.fixture(scope="module")
def vtest(assets_dir):
    """vtest.avi frames 100 and 200 (768x576), read in order as the pipeline would."""
    cap = cv2.VideoCapture(str(assets_dir / "vtest.avi"))
    frames = {}
    for i in range(max(FRAMES) + 1):
        ok, frame = cap.read()
        assert ok, f"vtest.avi ended at frame {i}"
        if i in FRAMES:
            frames[i] = frame
    cap.release()
    return frames


@pytest.fixture(scope="module")
def ssd(assets_dir):
    return load_detector("ssd-mobilenet-v2", assets_dir, threshold=0.4)


@pytest.fixture(scope="module")
def yolo(assets_dir):
    # The fall model is weakly confident on this footage (0.4 to 0.65 for clear people).
    return load_detector("yolov8-fall-test", assets_dir, threshold=0.3, threads=2)


def names(det: Detections, labels) -> list[str]:
    return [d["label"] for d in describe(det, labels)]


def inside(det: Detections, w: int, h: int) -> bool:
    b = det.xyxy
    return bool(((b[:, 0] >= 0) & (b[:, 1] >= 0) & (b[:, 2] <= w) & (b[:, 3] <= h)
                 & (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])).all())


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of each box in a against each in b: (len(a), len(b))."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda z: (z[:, 2] - z[:, 0]) * (z[:, 3] - z[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def test_ssd_identity(ssd):
    assert ssd.name == "ssd-mobilenet-v2-coco" and ssd.version
    assert ssd.backend.name == "litert" and ssd.backend.device == "cpu"
    assert len(ssd.labels) == 90 and ssd.labels[0] == "person" and ssd.labels[12] == "stop sign"


def test_ssd_vtest_frame_100(ssd, vtest):
    det, = ssd.detect([vtest[100]])
    labels = names(det, ssd.labels)
    assert labels.count("person") >= 5 and labels.count("car") >= 1, labels
    assert inside(det, 768, 576)
    assert det.xyxy.dtype == np.float32 and det.score.dtype == np.float32
    assert det.class_id.dtype == np.int32
    assert (det.score >= 0.4).all() and (np.diff(det.score) <= 0).all()


def test_ssd_dog_jpg(ssd, assets_dir):
    img = cv2.imread(str(assets_dir / "dog.jpg"))
    det, = ssd.detect([img])
    labels = set(names(det, ssd.labels))
    assert {"dog", "bicycle"} <= labels and labels & {"car", "truck"}, labels
    h, w = img.shape[:2]
    assert inside(det, w, h)
    dog = det.xyxy[np.array(names(det, ssd.labels)) == "dog"][0]
    assert dog[0] < w / 2 and dog[1] > h / 3  # lower left, where the dog sits


def test_ssd_batch_equals_one_by_one(ssd, vtest, assets_dir):
    dog = cv2.imread(str(assets_dir / "dog.jpg"))
    frames = [vtest[100], dog, vtest[200]]
    batch = ssd.detect(frames)
    assert len(batch) == 3
    for got, frame in zip(batch, frames):
        want, = ssd.detect([frame])
        np.testing.assert_array_equal(got.xyxy, want.xyxy)
        np.testing.assert_array_equal(got.class_id, want.class_id)
    assert ssd.detect([]) == []


def test_threshold_filters(assets_dir, vtest):
    low = load_detector("ssd-mobilenet-v2", assets_dir, threshold=0.3).detect([vtest[100]])[0]
    high = load_detector("ssd-mobilenet-v2", assets_dir, threshold=0.8).detect([vtest[100]])[0]
    assert len(high) < len(low)
    assert (high.score >= 0.8).all() and (low.score >= 0.3).all()


def test_class_allow_list_filters(assets_dir, vtest):
    cars = load_detector("ssd-mobilenet-v2", assets_dir, threshold=0.4, classes=["car"])
    det, = cars.detect([vtest[100]])
    assert len(det) >= 1 and set(names(det, cars.labels)) == {"car"}
    both = load_detector("ssd-mobilenet-v2", assets_dir, threshold=0.4, classes=["Person", "car"])
    assert set(names(both.detect([vtest[100]])[0], both.labels)) == {"person", "car"}


def test_no_coral_falls_back_to_cpu_with_info_log(assets_dir, caplog):
    with caplog.at_level(logging.INFO, logger="appliance.detect"):
        det = load_detector("ssd-mobilenet-v2", assets_dir)
    if det.backend.device == "edgetpu":  # pragma: no cover - only on a box with a Coral
        pytest.skip("a Coral Edge TPU is attached")
    assert det.backend.model_file.name == "mobilenet_ssd_v2_coco_quant_postprocess.tflite"
    assert any("no Coral Edge TPU found" in r.getMessage() and r.levelno == logging.INFO
               for r in caplog.records)


def test_describe_format(ssd, vtest):
    det, = ssd.detect([vtest[100]])
    rows = describe(det, ssd.labels)
    assert len(rows) == len(det)
    for row in rows:
        assert set(row) == {"label", "score", "box"}
        assert isinstance(row["label"], str) and row["label"]
        assert row["score"] == round(row["score"], 4) and 0 <= row["score"] <= 1
        assert len(row["box"]) == 4 and all(v == round(v, 1) for v in row["box"])


def test_yolo_identity(yolo):
    assert yolo.backend.name == "onnxruntime"
    assert yolo.labels == ["Normal", "Fall"]  # from the ONNX metadata


@pytest.mark.parametrize("index", FRAMES)
def test_yolo_finds_people_matching_ssd(yolo, ssd, vtest, index):
    frame = vtest[index]
    det, = yolo.detect([frame])
    assert len(det) >= 3, describe(det, yolo.labels)
    assert inside(det, 768, 576)
    people = ssd.detect([frame])[0]
    people = people.xyxy[people.class_id == 0]
    # Overlap with SSD's people shows the letterbox was undone into source pixels.
    best = iou(det.xyxy, people).max(axis=1)
    assert (best > 0.3).mean() > 0.5, best


def test_yolo_several_frames_in_one_call(yolo, vtest):
    """A fixed batch-1 ONNX model is looped over, in order."""
    both = yolo.detect([vtest[100], vtest[200]])
    one = yolo.detect([vtest[200]])[0]
    assert len(both) == 2
    np.testing.assert_allclose(both[1].xyxy, one.xyxy, atol=1e-3)
