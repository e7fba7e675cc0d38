"""Decoders on synthetic output tensors: layouts, NMS, and refusing outputs that do not fit."""
from __future__ import annotations

import numpy as np
import pytest

from appliance.detect.decoders import nms, ssd_decoder, yolo_decoder, yolo_layout
from appliance.errors import ApplianceError

# Rows: cx, cy, w, h, class scores...  Two near-duplicates of class 0, one class-1 box on top
# of them (class-aware NMS keeps it), one separate class-2 box, one below threshold.
ROWS = np.array([
    [100, 100, 50, 80, 0.90, 0.00, 0.00],
    [102, 101, 50, 80, 0.80, 0.10, 0.00],
    [100, 100, 50, 80, 0.05, 0.70, 0.00],
    [300, 200, 40, 40, 0.00, 0.00, 0.60],
    [500, 500, 10, 10, 0.20, 0.00, 0.10],
], np.float32)
NC = 3


def _check(decoded):
    (xyxy, score, cls), = decoded
    assert xyxy.dtype == np.float32 and score.dtype == np.float32 and cls.dtype == np.int32
    np.testing.assert_allclose(score, [0.9, 0.7, 0.6], atol=1e-6)
    assert cls.tolist() == [0, 1, 2]
    np.testing.assert_allclose(xyxy[0], [75, 60, 125, 140])
    np.testing.assert_allclose(xyxy[2], [280, 180, 320, 220])


def test_channels_first_v8():
    out = ROWS.T[None]  # [1, 4+nc, N]
    assert yolo_layout([out.shape], NC, "auto", "m.onnx") == (0, "channels_first")
    _check(yolo_decoder([out.shape], NC, 640, 640, "m.onnx")([out], 0.5))


def test_channels_last_transposed():
    out = np.concatenate([ROWS, np.zeros((20, 7), np.float32)])[None]  # [1, N, 4+nc], N != 4+nc
    assert yolo_layout([out.shape], NC, "auto", "m.onnx") == (0, "channels_last")
    _check(yolo_decoder([out.shape], NC, 640, 640, "m.onnx")([out], 0.5))


def test_v5_objectness_multiplies_scores():
    obj = np.array([[1.0], [1.0], [1.0], [1.0], [1.0]], np.float32)
    rows = np.concatenate([ROWS[:, :4], obj, ROWS[:, 4:]], axis=1)
    rows[3, 4], rows[3, 5 + 2] = 0.75, 0.8  # class 2: 0.75 * 0.8 = 0.6
    out = rows[None]  # [1, N, 5+nc]
    assert yolo_layout([out.shape], NC, "auto", "m.onnx") == (0, "objectness")
    _check(yolo_decoder([out.shape], NC, 640, 640, "m.onnx")([out], 0.5))


def test_end2end_needs_no_nms():
    out = np.array([[[10, 20, 110, 220, 0.9, 5], [12, 20, 110, 220, 0.8, 5],
                     [0, 0, 5, 5, 0.1, 1]]], np.float32)  # [1, N, 6], NMS done in the model
    nc = 80
    assert yolo_layout([out.shape], nc, "auto", "m.onnx") == (0, "end2end")
    (xyxy, score, cls), = yolo_decoder([out.shape], nc, 640, 640, "m.onnx")([out], 0.5)
    assert len(score) == 2 and cls.tolist() == [5, 5]
    np.testing.assert_allclose(xyxy[0], [10, 20, 110, 220])


def test_nms_suppresses_duplicates_per_class():
    xyxy = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    score = np.array([0.8, 0.9, 0.7, 0.5], np.float32)
    cls = np.array([0, 0, 1, 0], np.int32)
    assert nms(xyxy, score, cls, 0.45).tolist() == [1, 2, 3]
    assert nms(xyxy, score, np.zeros(4, np.int32), 0.45).tolist() == [1, 3]
    assert nms(xyxy[:0], score[:0], cls[:0], 0.45).tolist() == []


def test_normalised_boxes_are_scaled_to_input_pixels():
    rows = ROWS.copy()
    rows[:, :4] /= 640
    out = rows.T[None]
    dec = yolo_decoder([out.shape], NC, 640, 640, "m.onnx", boxes="normalized")
    _check(dec([out], 0.5))


def test_fp16_outputs_and_batches():
    out = np.stack([ROWS.T, ROWS.T]).astype(np.float16)
    decoded = yolo_decoder([out.shape], NC, 640, 640, "m.onnx")([out], 0.5)
    assert len(decoded) == 2 and all(len(d[1]) == 3 for d in decoded)


def test_nothing_above_threshold():
    out = ROWS.T[None]
    (xyxy, score, cls), = yolo_decoder([out.shape], NC, 640, 640, "m.onnx")([out], 0.95)
    assert xyxy.shape == (0, 4) and len(score) == 0 and len(cls) == 0


def test_ambiguous_shape_asks_for_output_layout():
    with pytest.raises(ApplianceError, match=r"m\.onnx.*\(1, 100, 6\).*output_layout"):
        yolo_layout([(1, 100, 6)], 2, "auto", "m.onnx")  # 4+nc = 6: transposed v8 or end2end
    assert yolo_layout([(1, 100, 6)], 2, "end2end", "m.onnx") == (0, "end2end")


def test_yolo_refuses_ssd_outputs():
    shapes = [(1, 20, 4), (1, 20), (1, 20), (1,)]
    with pytest.raises(ApplianceError) as e:
        yolo_decoder(shapes, 90, 300, 300, "ssd.tflite")
    msg = str(e.value)
    assert "ssd.tflite" in msg and "(1, 20, 4)" in msg and "[1, 4+nc, N]" in msg and "nc=90" in msg


def test_yolo_refuses_wrong_class_count():
    with pytest.raises(ApplianceError, match=r"\(1, 84, 8400\).*nc=2"):
        yolo_decoder([(1, 84, 8400)], 2, 640, 640, "m.onnx")


def _ssd_outputs():
    boxes = np.zeros((1, 10, 4), np.float32)
    boxes[0, 0] = [0.1, 0.2, 0.5, 0.6]  # ymin, xmin, ymax, xmax
    boxes[0, 1] = [0.0, 0.0, 1.0, 1.0]
    classes = np.zeros((1, 10), np.float32)
    classes[0, :3] = [17, 0, 2]
    scores = np.zeros((1, 10), np.float32)
    scores[0, :3] = [0.9, 0.3, 0.8]
    return boxes, classes, scores, np.array([3], np.float32)


def test_ssd_in_canonical_order():
    boxes, classes, scores, count = _ssd_outputs()
    names = ["P", "P:1", "P:2", "P:3"]
    dec = ssd_decoder([o.shape for o in (boxes, classes, scores, count)], names, 300, 200, "m")
    (xyxy, score, cls), = dec([boxes, classes, scores, count], 0.5)
    assert cls.tolist() == [17, 2]
    np.testing.assert_allclose(score, [0.9, 0.8])
    np.testing.assert_allclose(xyxy[0], [60, 20, 180, 100], atol=1e-4)  # x by 300, y by 200


def test_ssd_outputs_found_by_shape_and_value_not_order():
    boxes, classes, scores, count = _ssd_outputs()
    outs = [scores, boxes, count, classes]  # TF2 exporters' order; names say nothing useful
    names = ["StatefulPartitionedCall:1", "StatefulPartitionedCall:3",
             "StatefulPartitionedCall:0", "StatefulPartitionedCall:2"]
    dec = ssd_decoder([o.shape for o in outs], names, 300, 300, "m", probe=lambda: outs)
    (xyxy, score, cls), = dec(outs, 0.5)
    assert cls.tolist() == [17, 2]
    np.testing.assert_allclose(score, [0.9, 0.8])


def test_ssd_refuses_yolo_outputs():
    with pytest.raises(ApplianceError, match=r"ssd decoder: model m\.onnx.*\(1, 6, 8400\)"):
        ssd_decoder([(1, 6, 8400)], ["output0"], 640, 640, "m.onnx")
