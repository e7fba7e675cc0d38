"""Classifier manifests: parsing, file lookup, labels inside a .tflite, the label map, and
errors that name the manifest and the key."""
from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import yaml

from appliance.classify.manifest import load_manifest
from appliance.detect.manifest import load_manifest as load_detector_manifest
from appliance.detect.manifest import show_path
from appliance.errors import ApplianceError

BASE = {
    "name": "tiny",
    "version": "1",
    "file": "tiny.tflite",
    "format": "tflite",
    "input": {"width": 224, "height": 224, "resize": "stretch", "color": "rgb", "layout": "nhwc",
              "dtype": "uint8"},
    "output": {"softmax": False},
    "labels": ["pickup", "jeep", "tabby"],
}


def write(tmp_path: Path, **changes) -> Path:
    """A manifest in tmp_path/m/model.yaml next to a placeholder weights file."""
    d = tmp_path / "m"
    d.mkdir(exist_ok=True)
    if not (d / "tiny.tflite").exists():
        (d / "tiny.tflite").write_bytes(b"placeholder")
    raw = {**BASE, **changes}
    raw = {k: v for k, v in raw.items() if v is not None}
    (d / "model.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return d / "model.yaml"


def test_loads_with_defaults(tmp_path):
    m = load_manifest(write(tmp_path), tmp_path / "assets")
    assert (m.name, m.version, m.format) == ("tiny", "1", "tflite")
    assert m.file == (tmp_path / "m" / "tiny.tflite").resolve() and m.path == (tmp_path / "m" / "model.yaml")
    assert m.labels == ("pickup", "jeep", "tabby") and m.labels_source == "the labels list"
    assert m.label_map is None and m.softmax is False
    assert (m.margin, m.min_size) == (0.1, 32)
    assert (m.input.width, m.input.dtype, m.input.mean, m.input.std) == (224, "uint8", (0, 0, 0), (255, 255, 255))


def test_label_map_inline_and_from_a_file(tmp_path):
    m = load_manifest(write(tmp_path, label_map={"pickup": "pickup", "jeep": "suv"}), tmp_path)
    assert m.label_map == {"pickup": "pickup", "jeep": "suv"} and m.label_map_source == "label_map"
    (tmp_path / "m" / "map.yaml").write_text("# comment\npickup: pickup\njeep: suv\n")
    m = load_manifest(write(tmp_path, label_map="map.yaml"), tmp_path)
    assert m.label_map == {"pickup": "pickup", "jeep": "suv"}
    assert m.label_map_source == show_path(tmp_path / "m" / "map.yaml")


@pytest.mark.parametrize("text,expect", [
    ("- a\n- list\n", "must be a mapping of model class names to labels"),
    ("pickup: [a]\n", "must be a mapping of model class names to labels (text: text), got entries 'pickup': ['a']"),
    ("pickup: [unclosed\n", "is not readable YAML"),
])
def test_bad_label_map_file(tmp_path, text, expect):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "map.yaml").write_text(text)
    with pytest.raises(ApplianceError) as e:
        load_manifest(write(tmp_path, label_map="map.yaml"), tmp_path)
    assert str(e.value).startswith(f"{show_path(tmp_path / 'm' / 'model.yaml')}: label_map: ")
    assert expect in str(e.value)


def test_missing_label_map_file_names_it(tmp_path):
    with pytest.raises(ApplianceError, match=r"model\.yaml: label_map: file nowhere\.yaml not found"):
        load_manifest(write(tmp_path, label_map="nowhere.yaml"), tmp_path)


def test_labels_inside_the_tflite(tmp_path):
    (tmp_path / "m").mkdir()
    with zipfile.ZipFile(tmp_path / "m" / "tiny.tflite", "w") as z:
        z.writestr("labels_without_background.txt", "tench\ngoldfish\npickup\n")
    m = load_manifest(write(tmp_path, labels="tflite:labels_without_background.txt"), tmp_path)
    assert m.labels == ("tench", "goldfish", "pickup")
    assert m.labels_source.startswith("labels_without_background.txt inside ")
    with pytest.raises(ApplianceError, match=r"model\.yaml: labels: tflite:labels\.txt: model .*tiny\.tflite has "
                                             r"no labels\.txt inside \(it holds: labels_without_background\.txt\)"):
        load_manifest(write(tmp_path, labels="tflite:labels.txt"), tmp_path)


def test_labels_inside_a_tflite_without_metadata(tmp_path):
    with pytest.raises(ApplianceError, match=r"model\.yaml: labels: tflite:labels\.txt: model .*tiny\.tflite has "
                                             r"no files packed inside"):
        load_manifest(write(tmp_path, labels="tflite:labels.txt"), tmp_path)


def test_missing_model_file_names_it(tmp_path):
    with pytest.raises(ApplianceError, match=r"m/model\.yaml: file: file nowhere\.tflite not found.*appliance fetch"):
        load_manifest(write(tmp_path, file="nowhere.tflite"), tmp_path)


def test_unknown_keys_name_their_place(tmp_path):
    with pytest.raises(ApplianceError) as e:
        load_manifest(write(tmp_path, threshold=0.5, input={**BASE["input"], "crop": 0.9},
                            output={"softmax": True, "sigmoid": True}), tmp_path)
    text = str(e.value)
    assert "m/model.yaml: unknown key threshold (allowed: " in text and "label_map" in text
    assert "m/model.yaml: unknown key input.crop (allowed: color, dtype, height, layout, mean, resize, scale, " \
           "std, width)" in text
    assert "m/model.yaml: unknown key output.sigmoid (allowed: softmax)" in text
    assert len(text.splitlines()) == 3


@pytest.mark.parametrize("changes,expect", [
    ({"format": "engine"}, "format: must be one of tflite, onnx, got 'engine'"),
    ({"margin": "10%"}, "margin: must be a number in [0, 1], got '10%'"),
    ({"margin": 1.5}, "margin: must be a number in [0, 1], got 1.5"),
    ({"min_size": 0}, "min_size: must be a positive integer (pixels), got 0"),
    ({"min_size": 32.5}, "min_size: must be a positive integer (pixels), got 32.5"),
    ({"output": {"softmax": "yes"}}, "output.softmax: must be true or false, got 'yes'"),
    ({"output": None}, "missing required key output"),
    ({"output": {}}, "missing required key output.softmax"),
    ({"labels": []}, "labels: must be a file name, tflite:<file inside the model> or a non-empty list"),
    ({"labels": None}, "labels: required for format tflite"),
    ({"labels": "tflite:"}, "labels: tflite: needs the name of the file inside the model"),
    ({"label_map": {"pickup": 3}}, "label_map: must be a file name or a non-empty mapping"),
    ({"label_map": []}, "label_map: must be a file name or a non-empty mapping"),
    ({"input": {**BASE["input"], "resize": "crop"}}, "input.resize: must be one of stretch, letterbox, got 'crop'"),
    ({"input": {**BASE["input"], "width": 0}}, "input.width: must be a positive integer, got 0"),
    ({"input": {**BASE["input"], "mean": 127}}, "input.mean: only applies to dtype float32"),
    ({"input": {**BASE["input"], "dtype": "float32", "mean": [1, 2]}}, "input.mean: must be a number or a list of 3"),
    ({"input": {**BASE["input"], "dtype": "float32", "std": [0.229, 0.224, 0.225]}},
     "input.std: must be in pixel units (0..255) and at least 1"),
    ({"input": {**BASE["input"], "dtype": "float32", "scale": 0.5, "std": 2}},
     "input.scale: give either scale or mean/std, not both"),
    ({"input": {**BASE["input"], "dtype": "float32", "scale": -1}}, "input.scale: must be a positive number"),
    ({"edgetpu_file": "x.tflite", "format": "onnx", "file": "tiny.tflite"},
     "edgetpu_file: only applies to format tflite"),
    ({"name": ""}, "name: must be a non-empty string"),
])
def test_bad_values_name_the_file_and_key(tmp_path, changes, expect):
    p = write(tmp_path, **changes)
    with pytest.raises(ApplianceError) as e:
        load_manifest(p, tmp_path)
    assert f"{show_path(p)}: {expect}" in str(e.value)


def test_float_normalisation(tmp_path):
    f32 = {**BASE["input"], "dtype": "float32", "layout": "nchw"}
    m = load_manifest(write(tmp_path, input={**f32, "mean": [123.675, 116.28, 103.53], "std": 58}), tmp_path)
    assert m.input.mean == (123.675, 116.28, 103.53) and m.input.std == (58.0, 58.0, 58.0)
    m = load_manifest(write(tmp_path, input={**f32, "scale": 0.5}), tmp_path)
    assert m.input.mean == (0, 0, 0) and m.input.std == (2.0, 2.0, 2.0)
    m = load_manifest(write(tmp_path, input=f32), tmp_path)  # default: 0..1, as detectors
    assert m.input.std == (255.0, 255.0, 255.0)


def test_onnx_labels_may_come_from_metadata(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "c.onnx").write_bytes(b"x")
    m = load_manifest(write(tmp_path, file="c.onnx", format="onnx", labels=None), tmp_path)
    assert m.labels is None and m.labels_source == "the model's metadata"


def test_detector_and_classifier_manifests_are_told_apart(tmp_path, assets_dir):
    with pytest.raises(ApplianceError, match=r"ssd-mobilenet-v2/model\.yaml: is a detector manifest \(it has "
                                             r"decoder and no output\); a classifier is wanted here"):
        load_manifest("ssd-mobilenet-v2", assets_dir)
    with pytest.raises(ApplianceError, match=r"efficientnet-lite0-vehicle/model\.yaml: is a classifier manifest "
                                             r"\(it has output and no decoder\); a detector is wanted here"):
        load_detector_manifest("efficientnet-lite0-vehicle", assets_dir)


def test_shipped_manifest(assets_dir):
    m = load_manifest("efficientnet-lite0-vehicle", assets_dir)
    assert m.format == "tflite" and m.input.dtype == "uint8" and m.softmax is False
    assert len(m.labels) == 1000 and m.labels[717] == "pickup" and m.labels[609] == "jeep"
    assert set(m.label_map.values()) == {"car", "suv", "pickup", "van", "bus", "truck", "emergency",
                                         "motorcycle", "bicycle", "other"}
    # every key is a class of the model (load_classifier refuses others; checked here without a runtime)
    assert set(m.label_map) <= set(m.labels)
    assert m.label_map["police van"] == m.label_map["ambulance"] == m.label_map["fire engine"] == "emergency"
