"""The classifier on both runtimes: LiteRT with the shipped EfficientNet-Lite0, and ONNX Runtime
with a tiny classifier written here; and the models it must refuse, naming the file.

The `onnx` package is not a dependency, so the tiny ONNX model is encoded by hand: an ONNX
file is a protobuf ModelProto, and the few messages it needs are written with the field
numbers of onnx.proto (onnx/onnx, Apache-2.0; numbers only, no code).
"""
from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from appliance.classify import load_classifier
from appliance.detect.manifest import show_path
from appliance.errors import ApplianceError

# -- a protobuf writer, just enough for a ModelProto ------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _int(field: int, n: int) -> bytes:
    return _varint(field << 3) + _varint(n)


def _bytes(field: int, data: bytes | str) -> bytes:
    data = data.encode() if isinstance(data, str) else data
    return _varint(field << 3 | 2) + _varint(len(data)) + data


FLOAT, UINT8 = 1, 2  # TensorProto.DataType


def _value_info(name: str, elem_type: int, shape: list) -> bytes:
    dims = b"".join(_bytes(1, _bytes(2, d) if isinstance(d, str) else _int(1, d)) for d in shape)
    tensor_type = _int(1, elem_type) + _bytes(2, dims)  # TypeProto.Tensor: elem_type, shape
    return _bytes(1, name) + _bytes(2, _bytes(1, tensor_type))  # ValueInfoProto: name, type


def _node(op: str, inputs: list[str], outputs: list[str], **ints: int) -> bytes:
    attrs = b"".join(_bytes(5, _bytes(1, k) + _int(3, v) + _int(20, 2)) for k, v in ints.items())  # INT
    return b"".join(_bytes(1, i) for i in inputs) + b"".join(_bytes(2, o) for o in outputs) + \
        _bytes(4, op) + attrs


def _scalar(name: str, value: float) -> bytes:
    return _int(2, FLOAT) + _bytes(8, name) + _bytes(9, struct.pack("<f", value))  # dims (), data_type, raw


def tiny_onnx(path: Path, batch: int | str = "N", classes: int = 3, gain: float = 10.0,
              softmax: bool = False, metadata: dict[str, str] | None = None) -> Path:
    """An NCHW float32 [batch, 3, 8, 8] classifier whose class c's score is `gain` times the
    mean of input channel c (channels beyond 3 repeat them): with color rgb, a red crop is
    class 0, green 1, blue 2. Logits, or probabilities with softmax=True."""
    nodes = [_node("GlobalAveragePool", ["images"], ["pooled"]),
             _node("Flatten", ["pooled"], ["flat"], axis=1),
             _node("Mul", ["flat", "gain"], ["logits3"])]
    last = "logits3"
    if classes != 3:
        reps = -(-classes // 3)
        nodes += [_node("Concat", [last] * reps, ["tiled"], axis=1),
                  _node("Slice", ["tiled", "starts", "ends", "axes"], ["logits"])]
        last = "logits"
    if softmax:
        nodes.append(_node("Softmax", [last], ["probs"], axis=1))
        last = "probs"
    nodes.append(_node("Identity", [last], ["scores"]))
    inits = [_scalar("gain", gain)]
    if classes != 3:
        for name, v in (("starts", 0), ("ends", classes), ("axes", 1)):
            inits.append(_int(1, 1) + _int(2, 7) + _bytes(8, name) + _bytes(9, struct.pack("<q", v)))  # INT64
    graph = b"".join(_bytes(1, n) for n in nodes) + _bytes(2, "tiny") + \
        b"".join(_bytes(5, t) for t in inits) + \
        _bytes(11, _value_info("images", FLOAT, [batch, 3, 8, 8])) + \
        _bytes(12, _value_info("scores", FLOAT, [batch, classes]))
    model = _int(1, 8) + _bytes(2, "appliance-tests") + _bytes(7, graph) + _bytes(8, _int(2, 13))
    for k, v in (metadata or {}).items():
        model += _bytes(14, _bytes(1, k) + _bytes(2, v))
    path.write_bytes(model)
    return path


TINY_INPUT = {"width": 8, "height": 8, "resize": "stretch", "color": "rgb", "layout": "nchw",
              "dtype": "float32", "mean": 0, "std": 255}


def tiny_manifest(tmp_path: Path, **changes) -> Path:
    fields = {"name": "tiny-colour", "version": "1", "file": "tiny.onnx", "format": "onnx",
              "input": TINY_INPUT, "output": {"softmax": True}, "labels": ["red", "green", "blue"],
              "label_map": {"red": "warm", "green": "cold", "blue": "cold"}, "min_size": 4}
    fields.update(changes)
    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in fields.items() if v is not None}, sort_keys=False))
    return path


def bgr(b: int, g: int, r: int, size: tuple[int, int] = (20, 30)) -> np.ndarray:
    return np.full((*size, 3), (b, g, r), np.uint8)


# -- ONNX Runtime -----------------------------------------------------------------------------


@pytest.mark.parametrize("batch", ["N", 1])
def test_onnx_classifier_folds_and_batches(tmp_path, batch):
    tiny_onnx(tmp_path / "tiny.onnx", batch=batch)
    clf = load_classifier(str(tiny_manifest(tmp_path)), tmp_path)
    assert clf.backend.name == "onnxruntime" and clf.labels == ("warm", "cold", "other")
    assert clf.backend.max_batch == (None if batch == "N" else 1)
    red, green, blue, teal = bgr(0, 0, 255), bgr(0, 255, 0), bgr(255, 0, 0), bgr(200, 200, 0)
    preds = clf.classify([red, green, blue, teal])
    assert [p.model_label for p in preds] == ["red", "green", "blue", "green"]
    assert [p.label for p in preds] == ["warm", "cold", "cold", "cold"]
    # softmax of 10 * channel means: red is e^10 / (e^10 + 2) of warm
    assert preds[0].score == pytest.approx(np.exp(10) / (np.exp(10) + 2), abs=1e-4)
    # teal: green and blue both count for "cold", so cold has nearly all of it
    assert preds[3].score == pytest.approx(2 * np.exp(200 / 255 * 10) / (2 * np.exp(200 / 255 * 10) + 1), abs=1e-4)
    assert clf.classify([]) == []


def test_onnx_labels_from_metadata(tmp_path):
    tiny_onnx(tmp_path / "tiny.onnx", metadata={"names": "{0: 'red', 1: 'green', 2: 'blue'}"})
    clf = load_classifier(str(tiny_manifest(tmp_path, labels=None, label_map=None)), tmp_path)
    assert clf.labels == ("red", "green", "blue", "other")
    assert clf.classify([bgr(255, 0, 0)])[0].label == "blue"


def test_bgr_and_normalisation_reach_the_model(tmp_path):
    tiny_onnx(tmp_path / "tiny.onnx")
    # color bgr: channel 0 is blue, so a blue crop is the model's class 0 ("red")
    clf = load_classifier(str(tiny_manifest(tmp_path, input={**TINY_INPUT, "color": "bgr"})), tmp_path)
    assert clf.classify([bgr(255, 0, 0)])[0].model_label == "red"
    # mean 255 per channel except the green one: only green stays at 0, the rest go negative
    clf = load_classifier(str(tiny_manifest(tmp_path, input={**TINY_INPUT, "mean": [255, 0, 255]})), tmp_path)
    assert clf.classify([bgr(0, 0, 0)])[0].model_label == "green"


def test_labels_must_match_the_output(tmp_path):
    tiny_onnx(tmp_path / "tiny.onnx", classes=5)
    with pytest.raises(ApplianceError, match=r"model\.yaml: labels: 3 labels \(the labels list\) but model "
                                             r".*tiny\.onnx gives 5 class scores"):
        load_classifier(str(tiny_manifest(tmp_path, label_map=None)), tmp_path)
    clf = load_classifier(str(tiny_manifest(tmp_path, labels=list("abcde"), label_map=None)), tmp_path)
    assert len(clf.model_labels) == 5


def test_logits_without_softmax_refused(tmp_path):
    tiny_onnx(tmp_path / "tiny.onnx", gain=10.0)
    with pytest.raises(ApplianceError, match=r"output\.softmax: false, but model .*tiny\.onnx gives scores "
                                             r"from .* not probabilities; set output\.softmax: true"):
        load_classifier(str(tiny_manifest(tmp_path, output={"softmax": False})), tmp_path)
    # a model that ends in a softmax itself is read as it is
    tiny_onnx(tmp_path / "tiny.onnx", softmax=True)
    clf = load_classifier(str(tiny_manifest(tmp_path, output={"softmax": False})), tmp_path)
    assert clf.classify([bgr(0, 0, 255)])[0].model_label == "red"


def test_label_map_keys_must_be_model_classes(tmp_path):
    tiny_onnx(tmp_path / "tiny.onnx")
    (tmp_path / "map.yaml").write_text("red: warm\nmagenta: warm\n")
    with pytest.raises(ApplianceError, match=r"model\.yaml: label_map \(.*map\.yaml\): 'magenta' not a class "
                                             r"of model .*tiny\.onnx"):
        load_classifier(str(tiny_manifest(tmp_path, label_map="map.yaml")), tmp_path)


def test_yolo_detector_file_as_a_classifier_is_refused(tmp_path, assets_dir):
    # A real ONNX model whose single output ([1, 6, 8400]) is not a score per label.
    p = tiny_manifest(tmp_path, file=str(assets_dir / "yolov8_fall_fp16.onnx"), labels=["Normal", "Fall"],
                      label_map=None, input={**TINY_INPUT, "width": 640, "height": 640})
    with pytest.raises(ApplianceError, match=r"model\.yaml: labels: 2 labels .*yolov8_fall_fp16\.onnx gives "
                                             r"50400 class scores"):
        load_classifier(str(p), assets_dir)
    p = tiny_manifest(tmp_path, file=str(assets_dir / "yolov8_fall_fp16.onnx"), labels=["Normal", "Fall"])
    with pytest.raises(ApplianceError, match=r"model\.yaml: input: says 8x8 nchw but model .*yolov8_fall_fp16"):
        load_classifier(str(p), assets_dir)


def test_missing_and_corrupt_model_files(tmp_path):
    with pytest.raises(ApplianceError, match=r"model\.yaml: file: file tiny\.onnx not found.*appliance fetch"):
        load_classifier(str(tiny_manifest(tmp_path)), tmp_path)
    (tmp_path / "tiny.onnx").write_bytes(b"not a model")
    with pytest.raises(ApplianceError, match=r"tiny\.onnx: not a loadable ONNX model"):
        load_classifier(str(tiny_manifest(tmp_path)), tmp_path)


def test_backend_must_fit_the_format(tmp_path):
    tiny_onnx(tmp_path / "tiny.onnx")
    with pytest.raises(ApplianceError, match=r"backend litert cannot run .*tiny\.onnx \(format onnx\)"):
        load_classifier(str(tiny_manifest(tmp_path)), tmp_path, backend="litert")


# -- LiteRT: the shipped model ---------------------------------------------------------------


@pytest.fixture(scope="module")
def lite0(assets_dir):
    return load_classifier("efficientnet-lite0-vehicle", assets_dir)


def test_shipped_classifier_loads(lite0):
    assert lite0.backend.name == "litert" and lite0.name == "efficientnet-lite0-vehicle"
    assert len(lite0.model_labels) == 1000 and lite0.model_labels[717] == "pickup"
    assert set(lite0.labels) == {"car", "suv", "pickup", "van", "bus", "truck", "motorcycle", "bicycle",
                                 "emergency", "other"}
    assert lite0.labels[-1] == "other" and (lite0.margin, lite0.min_size) == (0.1, 32)


def test_probabilities_are_dequantised_from_the_model(lite0, assets_dir):
    image = cv2.imread(str(assets_dir / "dog.jpg"))
    crops = [lite0.crop(image, box) for box in ([457, 81, 696, 174], [128, 226, 320, 546])]
    p = lite0.probabilities(crops)
    assert p.shape == (2, 1000)
    # uint8 softmax, scale 1/256: probabilities are multiples of 1/256. They sum to less than 1:
    # the many classes under 1/512 each read as 0.
    assert np.allclose(p * 256, np.round(p * 256), atol=1e-3)
    assert np.all((p.sum(axis=1) > 0.5) & (p.sum(axis=1) < 1.02))
    # batch of two through a batch-1 backend: the same as one at a time
    assert np.array_equal(p[1], lite0.probabilities(crops[1:])[0])
    # folded scores sum the classes of a label; the labels' scores sum to the total
    preds = lite0.classify(crops)
    folded = p @ lite0._fold
    assert preds[0].score == pytest.approx(folded[0].max()) and np.allclose(folded.sum(axis=1), p.sum(axis=1))


def test_crops_of_any_size(lite0):
    rng = np.random.default_rng(1)
    crops = [rng.integers(0, 256, (h, w, 3), np.uint8) for h, w in ((1, 1), (32, 500), (900, 40), (224, 224))]
    preds = lite0.classify(crops)
    assert len(preds) == 4 and all(p.label in lite0.labels and 0.0 <= p.score <= 1.0 for p in preds)
    with pytest.raises(ValueError, match="expected a BGR uint8 HxWx3 array"):
        lite0.classify([np.zeros((10, 10), np.uint8)])


def test_label_count_mismatch_on_tflite_names_the_manifest(tmp_path, assets_dir):
    p = tmp_path / "model.yaml"

    def write(labels: list[str]) -> str:
        p.write_text(yaml.safe_dump({
            "name": "lite0-own-labels", "file": "efficientnet_lite0.tflite", "format": "tflite",
            "input": {"width": 224, "height": 224, "dtype": "uint8"}, "output": {"softmax": False},
            "labels": labels}))
        return str(p)

    names = [f"c{i}" for i in range(1000)]
    assert load_classifier(write(names), assets_dir).labels == (*names, "other")
    with pytest.raises(ApplianceError) as e:
        load_classifier(write(names[:999]), assets_dir)
    model = show_path(assets_dir / "efficientnet_lite0.tflite")
    assert f"{show_path(p)}: labels: 999 labels (the labels list) but model {model} " \
           "gives 1000 class scores (a background class" in str(e.value)
    with pytest.raises(ApplianceError, match=r"labels: 1001 labels .* gives 1000 class scores \(the labels start "
                                             r"with a background class the model does not have\?\)"):
        load_classifier(write(["background", *names]), assets_dir)
