"""The converter's own graph edits (appliance/detect/tflite_onnx.py) on small ONNX graphs run
by the real ONNX Runtime, its errors, and its check on the real default detector. The
conversion itself (tf2onnx, TensorFlow) is tests/integration/test_model_convert.py."""
from __future__ import annotations

import sys

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from appliance.detect import tflite_onnx
from appliance.errors import ApplianceError


def _graph(prefix: str, input_type=TensorProto.UINT8, first="Cast"):
    """What tf2onnx makes of a quantised TFLite's front, with names that vary by `prefix`:
    uint8 image -> Cast -> (x - zero point) * scale -> Conv -> Relu."""
    consts = [numpy_helper.from_array(np.array(128.0, np.float32), f"{prefix}zp"),
              numpy_helper.from_array(np.array(1 / 128, np.float32), f"{prefix}scale"),
              numpy_helper.from_array(np.linspace(-1, 1, 2 * 3 * 3 * 3, dtype=np.float32).reshape(2, 3, 3, 3),
                                      f"{prefix}w")]
    cast = (helper.make_node("Cast", ["image"], [f"{prefix}a"], to=TensorProto.FLOAT, name=f"{prefix}cast")
            if first == "Cast" else helper.make_node("Identity", ["image"], [f"{prefix}a"], name=f"{prefix}id"))
    nodes = [cast,
             helper.make_node("Sub", [f"{prefix}a", f"{prefix}zp"], [f"{prefix}b"], name=f"{prefix}sub"),
             helper.make_node("Mul", [f"{prefix}b", f"{prefix}scale"], [f"{prefix}c"], name=f"{prefix}mul"),
             helper.make_node("Transpose", [f"{prefix}c"], [f"{prefix}d"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", [f"{prefix}d", f"{prefix}w"], [f"{prefix}e"], kernel_shape=[3, 3]),
             helper.make_node("Relu", [f"{prefix}e"], ["scores"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("image", input_type, [1, 8, 8, 3])],
                          [helper.make_tensor_value_info("scores", TensorProto.FLOAT, None)], consts)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def _run(model, x):
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {"image": x})[0]


def test_the_input_becomes_float_0_to_1_and_computes_the_same():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (1, 8, 8, 3), dtype=np.uint8)
    model = _graph("p")
    before = _run(model, x)
    tflite_onnx.float_input(model)
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert [n.op_type for n in model.graph.node][0] == "Mul"
    after = _run(model, x.astype(np.float32) / 255.0)
    assert before.shape == after.shape and before.max() > 0
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)


def test_the_input_edit_refuses_a_graph_it_does_not_expect():
    with pytest.raises(ApplianceError, match="expected one uint8 image input"):
        tflite_onnx.float_input(_graph("p", input_type=TensorProto.FLOAT))
    with pytest.raises(ApplianceError, match=r"expected the input image to feed one Cast, found \['Identity'\]"):
        tflite_onnx.float_input(_graph("p", first="Identity"))


def test_canonical_names_give_the_same_bytes_and_the_same_outputs():
    x = np.random.default_rng(2).integers(0, 256, (1, 8, 8, 3), dtype=np.uint8)
    a, b = _graph("run1_", ), _graph("other_run__77_")
    assert a.SerializeToString() != b.SerializeToString()
    before = _run(a, x)
    for m in (a, b):
        tflite_onnx.canonical(m)
    assert a.SerializeToString() == b.SerializeToString()
    np.testing.assert_array_equal(_run(a, x), before)
    assert [i.name for i in a.graph.input] == ["image"] and [o.name for o in a.graph.output] == ["scores"]


def test_a_converter_without_tf2onnx_says_what_to_install(assets_dir):
    tflite = assets_dir / "mobilenet_ssd_v2_coco_quant_postprocess.tflite"
    with pytest.raises(ApplianceError) as e:  # this venv has no tf2onnx (not a dependency)
        tflite_onnx.convert_tflite(tflite, sys.executable)
    msg = str(e.value)
    assert f"tf2onnx could not convert {tflite}" in msg and "No module named" in msg
    assert f"fix: install the converter into that interpreter: {sys.executable} -m pip install " \
           "'tensorflow==2.20.0' 'tf2onnx==1.17.0'" in msg
    with pytest.raises(ApplianceError, match="--python /nonexistent/python: no such interpreter"):
        tflite_onnx.convert_tflite(tflite, "/nonexistent/python")


def test_the_check_matches_the_default_detector_with_itself(assets_dir):
    images = tflite_onnx.reference_images(assets_dir)
    assert len(images) == 7
    r = tflite_onnx.check("ssd-mobilenet-v2", "ssd-mobilenet-v2", assets_dir, images, backend="auto")
    assert r.ok and r.compared == r.matched and r.compared >= 20 and r.worst_score_diff == 0.0
