"""Model manifests: parsing, file lookup, and errors that name the manifest and the key."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from appliance.detect.manifest import load_manifest, parse_labels, show_path
from appliance.errors import ApplianceError

BASE = {
    "name": "tiny",
    "version": "1",
    "file": "tiny.tflite",
    "format": "tflite",
    "input": {"width": 300, "height": 300, "resize": "stretch", "color": "rgb",
              "layout": "nhwc", "dtype": "uint8"},
    "decoder": "ssd",
    "labels": ["person", "car"],
}


def write(tmp_path: Path, **changes) -> Path:
    """A manifest in tmp_path/m/model.yaml next to a placeholder weights file."""
    d = tmp_path / "m"
    d.mkdir(exist_ok=True)
    (d / "tiny.tflite").write_bytes(b"placeholder")
    raw = {**BASE, **changes}
    raw = {k: v for k, v in raw.items() if v is not None}
    (d / "model.yaml").write_text(yaml.safe_dump(raw))
    return d / "model.yaml"


def test_loads_and_resolves_beside_manifest(tmp_path):
    m = load_manifest(write(tmp_path), tmp_path / "assets")
    assert m.name == "tiny" and m.version == "1" and m.format == "tflite"
    assert m.file == (tmp_path / "m" / "tiny.tflite").resolve()
    assert m.input.width == 300 and m.input.resize == "stretch"
    assert m.labels == ("person", "car") and m.edgetpu_file is None


def test_file_found_in_asset_cache(tmp_path):
    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / "other.tflite").write_bytes(b"x")
    m = load_manifest(write(tmp_path, file="other.tflite"), assets)
    assert m.file == (assets / "other.tflite").resolve()


def test_directory_path_means_its_model_yaml(tmp_path):
    write(tmp_path)
    assert load_manifest(tmp_path / "m", tmp_path).name == "tiny"


def test_missing_model_file_names_it(tmp_path):
    with pytest.raises(ApplianceError, match=r"model\.yaml: file: file nowhere\.tflite not found.*appliance fetch"):
        load_manifest(write(tmp_path, file="nowhere.tflite"), tmp_path)


def test_unknown_key(tmp_path):
    with pytest.raises(ApplianceError, match=r"m/model\.yaml: unknown key thresh\b"):
        load_manifest(write(tmp_path, thresh=0.5), tmp_path)


def test_unknown_input_key(tmp_path):
    with pytest.raises(ApplianceError, match=r"m/model\.yaml: unknown key input\.mean"):
        load_manifest(write(tmp_path, input={**BASE["input"], "mean": 127}), tmp_path)


def test_bad_resize_value(tmp_path):
    with pytest.raises(ApplianceError) as e:
        load_manifest(write(tmp_path, input={**BASE["input"], "resize": "crop"}), tmp_path)
    assert str(e.value).endswith("m/model.yaml: input.resize: must be one of stretch, letterbox, got 'crop'")


@pytest.mark.parametrize("key,value,expect", [
    ("format", "pb", "format: must be one of tflite, onnx, engine"),
    ("decoder", "rcnn", "decoder: must be one of ssd, yolo"),
    ("input", {"width": 0, "height": 300}, "input.width: must be a positive integer"),
    ("input", "300x300", "input: must be a mapping"),
    ("nms_iou", 0.5, "nms_iou: only applies to decoder yolo"),
    ("name", None, "missing required key name"),
    ("labels", None, "labels: required for format tflite"),
    ("labels", [], "labels: must be a non-empty list"),
    ("edgetpu_file", 3, "edgetpu_file: must be a file name"),
])
def test_bad_values_name_the_key(tmp_path, key, value, expect):
    with pytest.raises(ApplianceError, match="m/model.yaml: " + expect.replace(".", r"\.")):
        load_manifest(write(tmp_path, **{key: value}), tmp_path)


def test_yolo_options_checked(tmp_path):
    p = write(tmp_path, decoder="yolo", output_layout="sideways")
    with pytest.raises(ApplianceError, match="output_layout: must be one of auto, channels_first"):
        load_manifest(p, tmp_path)
    p = write(tmp_path, decoder="yolo", nms_iou=2)
    with pytest.raises(ApplianceError, match=r"nms_iou: must be a number in \(0, 1\]"):
        load_manifest(p, tmp_path)
    m = load_manifest(write(tmp_path, decoder="yolo", output_layout="end2end", nms_iou=0.6), tmp_path)
    assert (m.output_layout, m.nms_iou) == ("end2end", 0.6)


def test_not_yaml_mapping(tmp_path):
    p = tmp_path / "model.yaml"
    p.write_text("- just\n- a list\n")
    with pytest.raises(ApplianceError, match="model.yaml: must be a YAML mapping"):
        load_manifest(p, tmp_path)
    p.write_text("name: [unclosed\n")
    with pytest.raises(ApplianceError, match="model.yaml: not a readable YAML file"):
        load_manifest(p, tmp_path)


def test_unknown_model_name_lists_known():
    with pytest.raises(ApplianceError, match=r"unknown model 'no-such-model'.*ssd-mobilenet-v2"):
        load_manifest("no-such-model", Path("."))


def test_missing_manifest_path(tmp_path):
    with pytest.raises(ApplianceError, match=r"nope/model\.yaml does not exist"):
        load_manifest(tmp_path / "nope" / "model.yaml", tmp_path)


def test_labels_file_with_ids_and_gaps(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "labels.txt").write_text("0  person\n2  car\n3 traffic light\n")
    m = load_manifest(write(tmp_path, labels="labels.txt"), tmp_path)
    assert m.labels == ("person", "", "car", "traffic light")


def test_parse_labels_one_per_line():
    assert parse_labels(["person", "", "bicycle ", "car"]) == ["person", "bicycle", "car"]
    assert parse_labels(["0 person", "1 bicycle"]) == ["person", "bicycle"]


def test_onnx_labels_may_come_from_metadata(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "y.onnx").write_bytes(b"x")
    m = load_manifest(write(tmp_path, file="y.onnx", format="onnx", decoder="yolo", labels=None),
                      tmp_path)
    assert m.labels is None


def test_shipped_manifests_load(assets_dir):
    ssd = load_manifest("ssd-mobilenet-v2", assets_dir)
    assert ssd.decoder == "ssd" and ssd.labels[0] == "person" and ssd.labels[17] == "dog"
    assert ssd.labels[11] == ""  # a gap in the TF 90-id map
    assert ssd.edgetpu_file is not None and ssd.edgetpu_file.is_file()
    yolo = load_manifest("yolov8-fall-test", assets_dir)
    assert yolo.format == "onnx" and yolo.input.resize == "letterbox" and yolo.labels is None
    assert "AGPL" in yolo.license


def test_every_problem_of_a_manifest_at_once(tmp_path):
    p = write(tmp_path, format="pb", thresh=1, input={"width": -1, "height": 300, "resize": "crop"})
    with pytest.raises(ApplianceError) as e:
        load_manifest(p, tmp_path)
    lines = str(e.value).splitlines()
    assert all(line.startswith(show_path(p) + ": ") for line in lines)
    text = str(e.value)
    for expect in ("format: must be one of tflite, onnx, engine, got 'pb'", "input.width: must be a positive integer",
                   "input.resize: must be one of stretch, letterbox, got 'crop'", "unknown key thresh"):
        assert expect in text
    assert len(lines) == 4


@pytest.mark.parametrize("data", [b"\xff\xfen\x00a\x00", b"name: a\nname: b\n", b"a: " + b"[" * 5000])
def test_unreadable_manifests_name_the_file(tmp_path, data):
    p = tmp_path / "model.yaml"
    p.write_bytes(data)
    with pytest.raises(ApplianceError, match="model.yaml: not a readable YAML file"):
        load_manifest(p, tmp_path)
