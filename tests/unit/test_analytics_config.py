"""Config errors of lines, zones and calibrations: each names its key, all at once."""
from __future__ import annotations

from pathlib import Path

import pytest

from appliance import config
from appliance.config.cameras import default_cameras
from appliance.errors import ApplianceError

ASSETS = Path(__file__).resolve().parents[2] / "data" / "assets"


def _errors(tmp_path: Path, text: str, **kw) -> list[str]:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ApplianceError) as e:
        config.load(p, **kw)
    return [line[len(f"{p}: "):] for line in str(e.value).splitlines()]


CAM = "cameras:\n  - id: a\n    source: x.mp4\n"


@pytest.mark.parametrize("text, expected", [
    ("lines: [{name: l, points: [[0.1, 0.5]]}]", "cameras[0].lines[0].points: a line needs at least 2 points, got 1"),
    ("lines: [{name: l, points: [[0.1, 0.5], [0.1, 0.5]]}]",
     "cameras[0].lines[0].points[1]: the same as points[0]: a segment needs two different points"),
    ("lines: [{name: l, points: [[0.1, 0.5, 1], [0.2, 0.5]]}]",
     "cameras[0].lines[0].points[0]: expected a point [x, y], got 3 values"),
    ("lines: [{name: l, points: [[-5, 10], [200, 10]]}]",
     "cameras[0].lines[0].points[0]: coordinates must not be negative (outside the frame), got [-5.0, 10.0]"),
    ("lines: [{name: l, points: [[0.1, 0.5], [1.2, 0.5]]}]",
     "cameras[0].lines[0].points: fractions of the frame must be within 0..1"),
    ("lines: [{name: l, points: [[0.1, 0.5], [0.9, 0.5]], anchor: feet}]",
     "cameras[0].lines[0].anchor: must be one of bottom_center, center, top_center, got 'feet'"),
    ("lines: [{name: 'a/b', points: [[0.1, 0.5], [0.9, 0.5]]}]",
     "cameras[0].lines[0].name: expected 1-64 letters"),
    ("zones: [{name: z, points: [[0, 0], [1, 1]]}]",
     "cameras[0].zones[0].points: a zone needs at least 3 points, got 2"),
    ("zones: [{name: z, points: [[0, 0], [1, 1], [1, 0], [0, 1]]}]",
     "cameras[0].zones[0].points: the polygon crosses itself (edges 0 and 2"),
    ("zones: [{name: z, points: [[0, 0], [0.5, 0.5], [1, 1]]}]",
     "cameras[0].zones[0].points: the polygon crosses itself"),
    ("zones: [{name: z, points: [[0, 0], [1, 0], [1, 1]], loiter_s: -1}]",
     "cameras[0].zones[0].loiter_s: must be between 0.0 and 86400.0, got -1"),
    ("zones: [{name: z, points: [[0, 0], [1, 0], [1, 1]], max_speed_kmh: 30}]",
     "cameras[0].zones[0].max_speed_kmh: a speed alert needs the camera's calibration"),
    ("lines: [{name: x, points: [[0, 0], [1, 1]]}]\n    zones: [{name: x, points: [[0, 0], [1, 0], [1, 1]]}]",
     "cameras[0].zones[0].name: duplicate name 'x' (also lines[0])"),
    ("lines: [{name: x, points: [[0, 0], [1, 1]]}, {name: x, points: [[0, 1], [1, 0]]}]",
     "cameras[0].lines[1].name: duplicate name 'x' (also lines[0])"),
    ("width: 640\n    height: 480\n    lines: [{name: l, points: [[10, 10], [700, 10]]}]",
     "cameras[0].lines[0].points[1]: [700.0, 10.0] is outside the 640x480 frame (the camera's width x height)"),
    ("calibration: {image: [[0, 0], [1, 0], [1, 1]], world: [[0, 0], [1, 0], [1, 1], [0, 1]]}",
     "cameras[0].calibration.image: expected exactly 4 points, got 3"),
    ("calibration: {image: [[0, 0], [0.5, 0.5], [1, 1], [0, 1]], world: [[0, 0], [1, 0], [1, 1], [0, 1]]}",
     "cameras[0].calibration.image: points [0], [1], [2] lie on one line"),
    ("calibration: {image: [[0, 0], [1, 0], [1, 1], [0, 1]], world: [[0, 0], [1, 1], [1, 0], [0, 1]]}",
     "cameras[0].calibration.world: the four points must be the corners of a convex quadrilateral"),
    ("lines: {name: l}", "cameras[0].lines: expected a list, got dict"),
    ("lines: [{name: l, points: [[a, b], [1, 2]]}]",
     "cameras[0].lines[0].points[0][0]: expected a number, got str 'a'"),
])
def test_bad_shapes_are_config_errors_naming_the_key(tmp_path, text, expected):
    lines = _errors(tmp_path, CAM + "    " + text + "\n")
    assert any(line.startswith(expected) for line in lines), lines


def test_every_shape_error_comes_at_once(tmp_path):
    lines = _errors(tmp_path, CAM + """\
    lines:
      - {name: one, points: [[0.1, 0.5]]}
      - {name: two, points: [[-1, 5], [10, 10]]}
    zones:
      - {name: z, points: [[0, 0], [1, 1], [1, 0], [0, 1]]}
""")
    assert [line.split(":")[0] for line in lines] == [
        "cameras[0].lines[0].points", "cameras[0].lines[1].points[0]", "cameras[0].zones[0].points"]


def test_pixels_beyond_the_video_file_are_errors_when_files_are_checked(tmp_path):
    text = """cameras:
  - id: a
    source: asset:vtest.avi
    lines: [{name: l, points: [[10, 10], [800, 10]]}]
"""
    lines = _errors(tmp_path, text, assets_dir=ASSETS)
    assert lines == [
        "cameras[0].lines[0].points[1]: [800.0, 10.0] is outside the 768x576 frame (the size of vtest.avi)"]
    p = tmp_path / "ok.yaml"
    p.write_text(text.replace("800", "760"))
    assert config.load(p, assets_dir=ASSETS).cameras[0].lines[0].points[1] == [760.0, 10.0]


def test_good_shapes_load_and_round_trip(tmp_path):
    text = CAM + """\
    lines: [{name: gate 1, points: [[0.1, 0.5], [0.5, 0.6], [0.9, 0.5]], anchor: center, classes: [person]}]
    zones: [{name: z, points: [[100, 100], [300, 100], [300, 300]], loiter_s: 30, max_speed_kmh: 20}]
    calibration: {image: [[0, 0.5], [1, 0.5], [1, 1], [0, 1]], world: [[0, 30], [8, 30], [8, 0], [0, 0]]}
"""
    p = tmp_path / "c.yaml"
    p.write_text(text)
    cfg = config.load(p)
    cam = cfg.cameras[0]
    assert cam.lines[0].name == "gate 1" and cam.zones[0].max_speed_kmh == 20.0
    out = tmp_path / "out.yaml"
    out.write_text(config.dump(cfg, secrets=True))
    assert config.load(out) == cfg


def test_the_demo_camera_has_a_line_and_a_zone():
    (demo,) = default_cameras()
    assert [ln.name for ln in demo.lines] == ["walkway"] and [z.name for z in demo.zones] == ["junction"]
