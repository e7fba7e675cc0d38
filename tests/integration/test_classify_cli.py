"""`appliance classify IMAGE --box ...` and `appliance detect --classify IMAGE...`: JSON lines
out, one-line errors for a bad --box."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from appliance.cli import main

PICKUP_BOX = "457,81,696,174"  # the vehicle top right in dog.jpg


@pytest.fixture
def run(capsys, data_dir):
    def run(*argv: str) -> tuple[int, str, str]:
        if argv[0] == "detect":  # its thread-count cache is read from the data directory
            argv = ("detect", "--data-dir", str(data_dir), *argv[1:])
        rc = main(list(argv))
        out, err = capsys.readouterr()
        return rc, out, err
    return run


def test_classify_prints_one_json_line(run, assets_dir):
    image = str(assets_dir / "dog.jpg")
    rc, out, err = run("classify", image, "--box", PICKUP_BOX)
    assert (rc, err) == (0, "")
    (line,) = out.splitlines()
    row = json.loads(line)
    assert row["image"] == image and row["box"] == [457, 81, 696, 174]
    c = row["classification"]
    assert set(c) == {"label", "score", "model_label", "model", "version"}
    assert c["label"] in {"pickup", "truck", "suv", "van"} and 0 < c["score"] <= 1
    assert c["model"] == "efficientnet-lite0-vehicle" and c["version"]


def test_classify_with_a_model_path(run, assets_dir):
    rc, out, _ = run("classify", str(assets_dir / "dog.jpg"), "--box", "457.5,81.2,696,174",
                     "--model", "models/efficientnet-lite0-vehicle/model.yaml")
    assert rc == 0 and json.loads(out)["box"] == [457.5, 81.2, 696, 174]


@pytest.mark.parametrize("box,expect", [
    ("457,81,696", "--box: expected x1,y1,x2,y2 (4 numbers, image pixels), got '457,81,696'"),
    ("a,b,c,d", "--box: expected x1,y1,x2,y2 (4 numbers, image pixels), got 'a,b,c,d'"),
    ("nan,81,696,174", "--box: expected x1,y1,x2,y2 (4 numbers, image pixels), got 'nan,81,696,174'"),
    ("696,81,457,174", "--box 696,81,457,174: x2 must be greater than x1 and y2 greater than y1"),
    ("900,81,996,174", "--box 900,81,996,174: outside the 768x576 image"),
    ("700,100,710,110", "--box 700,100,710,110: 10x10 px inside the 768x576 image, too small for model "
                        "efficientnet-lite0-vehicle (min_size 32 px, margin included)"),
])
def test_bad_box_is_one_line_naming_it(run, assets_dir, box, expect):
    rc, out, err = run("classify", str(assets_dir / "dog.jpg"), f"--box={box}")
    assert rc == 1 and out == ""
    assert err == f"appliance: error: {expect}\n"


def test_classify_unreadable_image(run, tmp_path):
    rc, out, err = run("classify", str(tmp_path / "missing.jpg"), "--box", PICKUP_BOX)
    assert rc == 1 and out == ""
    assert err.startswith("appliance: error: ") and "missing.jpg: No such file" in err and err.count("\n") == 1


def test_classify_with_a_detector_model_is_refused(run, assets_dir):
    rc, _, err = run("classify", str(assets_dir / "dog.jpg"), "--box", PICKUP_BOX, "--model", "ssd-mobilenet-v2")
    assert rc == 1 and "is a detector manifest" in err and err.count("\n") == 1


def test_detect_classify_adds_classification_to_vehicles(run, assets_dir):
    paths = [str(assets_dir / "dog.jpg"), str(assets_dir / "person.jpg")]
    rc, out, err = run("detect", "--classify", *paths)
    assert (rc, err) == (0, "")
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["image"] for r in rows] == paths
    dets = rows[0]["detections"]
    cars = [d for d in dets if d["label"] == "car"]
    assert cars and all(set(d) == {"label", "score", "box", "classification"} for d in cars)
    big = max(cars, key=lambda d: (d["box"][2] - d["box"][0]) * (d["box"][3] - d["box"][1]))
    assert big["classification"]["label"] in {"pickup", "truck", "suv", "van"}
    assert all("classification" not in d for d in dets if d["label"] not in {"car", "truck", "bus", "motorcycle"})
    assert all("classification" not in d for d in rows[1]["detections"])


def test_detect_classify_follows_the_config_classes(run, assets_dir, tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("classify:\n  classes: [bicycle]\n")
    rc, out, _ = run("detect", "--classify", "--config", str(cfg), str(assets_dir / "dog.jpg"))
    assert rc == 0
    dets = json.loads(out)["detections"]
    (bike,) = [d for d in dets if d["label"] == "bicycle"]
    assert bike["classification"]["model"] == "efficientnet-lite0-vehicle"
    assert all("classification" not in d for d in dets if d["label"] != "bicycle")


def test_detect_without_classify_is_unchanged(run, assets_dir):
    rc, out, _ = run("detect", str(assets_dir / "dog.jpg"))
    assert rc == 0
    assert all(set(d) == {"label", "score", "box"} for d in json.loads(out)["detections"])


def test_a_missing_classifier_warns_and_the_appliance_runs_without_it(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"classify:\n  model: {tmp_path / 'gone' / 'model.yaml'}\n")
    data = tmp_path / "data"
    check = subprocess.run([sys.executable, "-m", "appliance", "config", "check", str(cfg)],
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr
    assert "classify.model" in check.stderr and "without classification" in check.stderr
    r = subprocess.run([sys.executable, "-m", "appliance", "run", "--fast", "--max-frames", "20",
                        "--config", str(cfg), "--data-dir", str(data)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = [x for x in r.stderr.splitlines() if "running without classification" in x]
    assert len(lines) == 1 and "gone" in lines[0], r.stderr
    status = json.loads((data / "status.json").read_text())
    assert status["classify"]["state"] == "unavailable" and "gone" in status["classify"]["reason"]
    assert status["cameras"]["demo"]["frames"] == 20
