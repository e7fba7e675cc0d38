"""Detector batching and box mapping, with a stub backend standing in for a dynamic-batch model.

The real runtimes are exercised in tests/integration; the models we have are fixed batch 1,
so the batching logic is checked here.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from appliance.detect import Detections, Detector, describe, label_name
from appliance.detect.decoders import yolo_decoder
from appliance.detect.manifest import InputSpec, ModelManifest

SPEC = InputSpec(64, 64, "letterbox", "rgb", "nchw", "float32")


class StubBackend:
    """An end-to-end [B, 2, 6] model: one box round the whole letterbox area, one off-image."""

    name, device, model_file = "stub", "cpu", Path("stub.onnx")
    output_names = ["out"]
    metadata: dict = {}

    def __init__(self, max_batch, fixed):
        self.max_batch, self.fixed_batch = max_batch, fixed
        self.input_shape = (max_batch if fixed else -1, 3, 64, 64)
        self.output_shapes = [(-1, 2, 6)]
        self.batches: list[tuple] = []

    def run(self, x):
        self.batches.append(x.shape)
        out = np.zeros((len(x), 2, 6), np.float32)
        for b, img in enumerate(x):
            # Where the image is: not the 114 grey of the bars.
            ys, xs = np.nonzero(np.abs(img[0] - 114 / 255) > 1e-3)
            out[b, 0] = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1, 0.9, 1]
            out[b, 1] = [-20, -20, -10, -10, 0.8, 0]  # wholly outside: dropped
        return [out]


def detector(backend, classes=None) -> Detector:
    m = ModelManifest("stub", "1", Path("model.yaml"), Path("stub.onnx"), "onnx", SPEC, "yolo",
                      ("a", "b"))
    decode = yolo_decoder([(1, 2, 6)], 2, 64, 64, "stub.onnx", layout="end2end")
    return Detector(m, backend, decode, ["a", "b"], 0.5, classes)


def images():
    return [np.zeros((480, 640, 3), np.uint8), np.zeros((100, 50, 3), np.uint8),
            np.zeros((30, 30, 3), np.uint8)]


def test_dynamic_batch_is_one_run_and_boxes_map_to_each_image():
    be = StubBackend(None, False)
    dets = detector(be).detect(images())
    assert be.batches == [(3, 3, 64, 64)]
    for det, img in zip(dets, images()):
        h, w = img.shape[:2]
        assert len(det) == 1 and det.class_id.tolist() == [1]
        np.testing.assert_allclose(det.xyxy[0], [0, 0, w, h], atol=1e-3)


def test_fixed_batch_runs_full_batches():
    be = StubBackend(2, True)
    dets = detector(be).detect(images())
    assert be.batches == [(2, 3, 64, 64), (2, 3, 64, 64)]  # the last one padded
    assert len(dets) == 3 and all(len(d) == 1 for d in dets)


def test_allow_list_applied():
    dets = detector(StubBackend(None, False), classes=np.array([0], np.int32)).detect(images())
    assert all(len(d) == 0 for d in dets)


def test_describe_and_label_name():
    det = Detections(np.array([[1.04, 2.06, 3.0, 4.0]], np.float32),
                     np.array([0.123456], np.float32), np.array([5], np.int32))
    assert describe(det, ["a"]) == [{"label": "class5", "score": 0.1235, "box": [1.0, 2.1, 3.0, 4.0]}]
    assert label_name(["a", ""], 1) == "class1" and label_name(["a"], 0) == "a"
