"""The YOLO input-size converter on a small graph built here with the layout of an Ultralytics
YOLOv8 detect head (levels at strides 8, 16, 32, a DFL box head, anchor and stride constants
sized for the export's input). The real export is in tests/integration/test_resize_model.py."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from appliance.detect.resize import anchor_points, resize_model, resized_file
from appliance.errors import ApplianceError

STRIDES = (8, 16, 32)
BINS, NC = 4, 2  # DFL bins per box side, classes
C = 4 * BINS + NC


def cells(w: int, h: int) -> int:
    return sum((w // s) * (h // s) for s in STRIDES)


def toy_head(w: int = 64, h: int = 64, zeros: bool = False, extra: str | None = None) -> onnx.ModelProto:
    """A static export for w x h. zeros: box logits all 0, so every box is centred on its
    cell with sides 3 x stride. extra: add a construct the converter must refuse."""
    n = cells(w, h)
    rng = np.random.default_rng(1)
    nodes, inits = [], []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value, name))
        return name

    const("flat", np.array([1, C, -1], np.int64))
    levels = []
    for s in STRIDES:
        wt = np.zeros((C, 3, s, s), np.float32) if zeros else rng.normal(0, 0.05, (C, 3, s, s)).astype(np.float32)
        nodes.append(helper.make_node("Conv", ["images", const(f"w{s}", wt)], [f"p{s}"], strides=[s, s]))
        nodes.append(helper.make_node("Reshape", [f"p{s}", "flat"], [f"f{s}"]))
        levels.append(f"f{s}")
    nodes += [
        helper.make_node("Concat", levels, ["all"], axis=2),
        helper.make_node("Split", ["all", const("split", np.array([4 * BINS, NC], np.int64))], ["box", "cls"], axis=1),
        helper.make_node("Reshape", ["box", const("dfl_shape", np.array([1, 4, BINS, n], np.int64))], ["bins"]),
        helper.make_node("Softmax", ["bins"], ["prob"], axis=2),
        helper.make_node("Mul", ["prob", const("idx", np.arange(BINS, dtype=np.float32).reshape(1, 1, BINS, 1))],
                         ["weighted"]),
        helper.make_node("ReduceSum", ["weighted", const("axis2", np.array([2], np.int64))], ["dist4"], keepdims=1),
        helper.make_node("Reshape", ["dist4", const("dist_shape", np.array([1, 4, n], np.int64))], ["dist"]),
        helper.make_node("Slice", ["dist", const("z", np.array([0], np.int64)), const("two", np.array([2], np.int64)),
                                   const("one", np.array([1], np.int64))], ["lt"]),
        helper.make_node("Slice", ["dist", "two", const("four", np.array([4], np.int64)), "one"], ["rb"]),
    ]
    points, each = anchor_points(w, h, STRIDES)
    nodes += [
        helper.make_node("Sub", [const("anchors_a", points[None].astype(np.float32)), "lt"], ["x1y1"]),
        helper.make_node("Add", [const("anchors_b", points[None].astype(np.float32)), "rb"], ["x2y2"]),
        helper.make_node("Add", ["x1y1", "x2y2"], ["sum"]),
        helper.make_node("Div", ["sum", const("half", np.array(2.0, np.float32))], ["centre"]),
        helper.make_node("Sub", ["x2y2", "x1y1"], ["wh"]),
        helper.make_node("Concat", ["centre", "wh"], ["xywh"], axis=1),
        helper.make_node("Mul", ["xywh", const("strides", each[None].astype(np.float32))], ["pixels"]),
        helper.make_node("Sigmoid", ["cls"], ["scores"]),
    ]
    out = "output0"
    if extra == "unknown_constant":  # a per-anchor constant that is neither anchors nor strides
        nodes.append(helper.make_node("Mul", ["scores", const("weights", np.ones((1, n), np.float32))], ["sw"]))
        nodes.append(helper.make_node("Concat", ["pixels", "sw"], [out], axis=1))
    else:
        nodes.append(helper.make_node("Concat", ["pixels", "scores"], [out], axis=1))
    if extra == "grid_reshape":  # a level's grid size baked into a shape
        nodes.insert(1, helper.make_node("Reshape", ["p8", const("grid", np.array([1, C, w // 8, h // 8], np.int64))],
                                         ["g8"]))
    if extra == "resize_sizes":
        nodes.insert(1, helper.make_node("Resize", ["p8", "", "", const("sizes", np.array([1, C, 4, 4], np.int64))],
                                         ["r8"], mode="nearest"))
    if extra == "no_strides":
        inits = [i for i in inits if i.name != "strides"]
        inits.append(numpy_helper.from_array(np.ones((1, n), np.float32) * 3, "strides"))
    dims = [1, 3, "h", "w"] if extra == "dynamic" else [1, 3, h, w]
    graph = helper.make_graph(nodes, "toy", [helper.make_tensor_value_info("images", TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, 4 + NC, n])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    helper.set_model_props(model, {"imgsz": f"[{h}, {w}]", "names": "{0: 'a', 1: 'b'}"})
    onnx.checker.check_model(model)
    return model


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"images": x})[0]


def test_same_size_gives_the_same_outputs():
    model = toy_head()
    x = np.random.default_rng(0).random((1, 3, 64, 64), np.float32)
    np.testing.assert_array_equal(run(resize_model(model, 64, 64), x), run(model, x))


@pytest.mark.parametrize("w, h", [(128, 96), (32, 32), (96, 160)])
def test_other_sizes_put_every_box_on_its_own_cell(w, h):
    model = resize_model(toy_head(zeros=True), w, h)
    out = run(model, np.zeros((1, 3, h, w), np.float32))
    assert out.shape == (1, 4 + NC, cells(w, h))
    centres, sides = [], []
    for s in STRIDES:  # rows first, level by level, as the head orders its anchors
        for y in range(h // s):
            for x in range(w // s):
                centres.append(((x + 0.5) * s, (y + 0.5) * s))
                sides.append(1.5 * 2 * s)  # uniform bins: 1.5 bins each side
    np.testing.assert_allclose(out[0, :2].T, np.array(centres), atol=1e-4)
    np.testing.assert_allclose(out[0, 2], np.array(sides), atol=1e-4)
    np.testing.assert_allclose(out[0, 3], np.array(sides), atol=1e-4)
    assert {p.key: p.value for p in model.metadata_props}["imgsz"] == f"[{h}, {w}]"
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [1, 3, h, w]


def test_the_original_is_not_changed():
    model = toy_head()
    before = model.SerializeToString()
    resize_model(model, 32, 32)
    assert model.SerializeToString() == before


@pytest.mark.parametrize("w, h, bad", [(48, 64, "width 48"), (64, 40, "height 40"), (0, 64, "width 0")])
def test_sizes_must_be_multiples_of_the_largest_stride(w, h, bad):
    with pytest.raises(ApplianceError, match=rf"toy: {bad} must be a positive multiple of 32"):
        resize_model(toy_head(), w, h, "toy")


@pytest.mark.parametrize("extra, message", [
    ("unknown_constant", r"constant weights \[1, 84\] depends on the input size and is not one"),
    ("grid_reshape", r"Reshape shape grid \[1, 18, 8, 8\] has grid sizes \[8, 8\]"),
    ("resize_sizes", r"resizes to fixed sizes"),
    ("no_strides", r"no per-anchor stride constant found"),
    ("dynamic", r"is already dynamic"),
])
def test_graphs_it_does_not_understand_are_refused(extra, message):
    with pytest.raises(ApplianceError, match=message):
        resize_model(toy_head(extra=extra), 32, 32, "toy.onnx")


def test_resized_file_is_made_once_and_keyed_by_the_source(tmp_path):
    src = tmp_path / "toy.onnx"
    onnx.save(toy_head(), str(src))
    first = resized_file(src, 32, 32, tmp_path / "cache")
    made = first.stat().st_mtime_ns
    assert resized_file(src, 32, 32, tmp_path / "cache") == first and first.stat().st_mtime_ns == made
    assert [d.dim_value for d in onnx.load(str(first)).graph.input[0].type.tensor_type.shape.dim] == [1, 3, 32, 32]
    onnx.save(toy_head(zeros=True), str(src))  # new weights, same name: converted again
    assert resized_file(src, 32, 32, tmp_path / "cache") != first
    assert not list((tmp_path / "cache").glob("*.part"))


def test_a_file_that_is_not_onnx_is_named(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ApplianceError, match=r"bad\.onnx: not a readable ONNX model"):
        resized_file(bad, 32, 32, tmp_path)


# -- the manifest's input_sizes ---------------------------------------------------------------

def manifest(tmp_path, **changes):
    import yaml

    d = tmp_path / "m"
    d.mkdir(exist_ok=True)
    (d / "toy.onnx").write_bytes(b"placeholder")
    raw = {"name": "toy", "file": "toy.onnx", "format": "onnx", "decoder": "yolo", "labels": ["a", "b"],
           "input": {"width": 640, "height": 384, "resize": "letterbox", "layout": "nchw", "dtype": "float32"},
           **changes}
    (d / "model.yaml").write_text(yaml.safe_dump(raw))
    return d / "model.yaml"


def test_manifest_input_sizes_largest_first_with_the_inputs_aspect(tmp_path):
    from appliance.detect.manifest import input_spec_at, load_manifest

    m = load_manifest(manifest(tmp_path, input_sizes=[320, 640, 480]), tmp_path)
    assert m.input_sizes == (640, 480, 320)
    spec = input_spec_at(m.input, 320)
    assert (spec.width, spec.height, spec.resize, spec.layout) == (320, 192, "letterbox", "nchw")
    assert load_manifest(manifest(tmp_path), tmp_path).input_sizes == ()


@pytest.mark.parametrize("changes, message", [
    ({"input_sizes": [480, 320]}, r"input_sizes: must include input.width \(640\), got \[480, 320\]"),
    ({"input_sizes": [640, 322]}, r"input_sizes: \[322\] give no whole height at the input's aspect 640x384"),
    ({"input_sizes": [640, 640]}, r"input_sizes: must be a list of different positive integers"),
    ({"input_sizes": [640, -320]}, r"input_sizes: must be a list of different positive integers"),
    ({"input_sizes": "640"}, r"input_sizes: must be a list of different positive integers, got '640'"),
    ({"input_sizes": []}, r"input_sizes: must be a list"),
    ({"input_sizes": [640, 320], "format": "tflite", "file": "toy.onnx"},
     r"input_sizes: only applies to format onnx or engine"),
])
def test_manifest_input_sizes_errors_name_the_key(tmp_path, changes, message):
    from appliance.detect.manifest import load_manifest

    with pytest.raises(ApplianceError, match=r"model\.yaml: " + message):
        load_manifest(manifest(tmp_path, **changes), tmp_path)
