"""run_images, behind `appliance detect IMAGE...`: JSON lines out, one error line per bad image."""
from __future__ import annotations

import io
import json

import pytest

from appliance.detect import load_detector, run_images


@pytest.fixture(scope="module")
def ssd(assets_dir):
    return load_detector("ssd-mobilenet-v2", assets_dir)


def test_json_lines_for_each_image(ssd, assets_dir):
    paths = [str(assets_dir / "dog.jpg"), str(assets_dir / "person.jpg")]
    out, err = io.StringIO(), io.StringIO()
    assert run_images(paths, ssd, out, err) == 0
    assert err.getvalue() == ""
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    rows = [json.loads(line) for line in lines]
    assert [r["image"] for r in rows] == paths
    for r in rows:
        assert set(r) == {"image", "detections"}
        for d in r["detections"]:
            assert set(d) == {"label", "score", "box"} and len(d["box"]) == 4
    assert {"dog", "bicycle"} <= {d["label"] for d in rows[0]["detections"]}
    assert "person" in {d["label"] for d in rows[1]["detections"]}


def test_unreadable_images_fail_alone(ssd, assets_dir, tmp_path):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 10)
    missing = tmp_path / "missing.png"
    good = str(assets_dir / "dog.jpg")
    out, err = io.StringIO(), io.StringIO()
    assert run_images([str(corrupt), good, str(missing)], ssd, out, err) == 1
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["image"] == good
    errors = err.getvalue().splitlines()
    assert len(errors) == 2
    assert str(corrupt) in errors[0] and "not a readable image" in errors[0]
    assert str(missing) in errors[1] and "No such file" in errors[1]
