"""The lines-and-zones API of the dashboard (web/analytics.py) on real parts: a real config
file edited in place, the real analytics processor the pipeline runs (fed tracks that
cross its line), and per-minute counts written by the real store writer.

The browser side (drawing with the mouse, saving, seeing it counted on the demo video) is
tests/integration/test_web_editor_browser.py.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest

from appliance import config
from appliance.analytics.events import LineEvent, ZoneEvent
from appliance.analytics.processor import CameraAnalytics
from appliance.capture.frame import Frame
from appliance.detect.types import Detections
from appliance.live import LiveView
from appliance.result import FrameResult
from appliance.store.writer import EventWriter
from appliance.track.sort import Track
from web import create_app
from web.analytics import pipeline_hooks
from web.auth import hash_password

PASSWORD = "correct horse battery"
LABELS = ["person", "bicycle", "car"]
W, H = 768, 576

SITE = """\
# Gate 3: the walkway counter
device: {id: gate-3}   # printed on the box
cameras:
  - id: demo           # the walkway camera
    source: 'asset:vtest.avi'
    lines:
      - name: walkway  # across the path, by the lamp post
        points: [[0.4, 0.3], [0.4, 0.6]]
        anchor: bottom_center
    zones:
      - name: plaza
        points: [[0.1, 0.5], [0.5, 0.5], [0.5, 0.9], [0.1, 0.9]]
        loiter_s: 30   # the benches
  - id: gate
    source: 'asset:vtest.avi'
web:
  port: 8081  # the customer's firewall allows this one
  password_hash: "{hash}"
"""


class _Status:
    def status(self):
        return {"running": True, "heartbeat_age_s": 0.1, "cameras": {}, "services": {}}


class _Pipeline:
    """The two members of appliance.pipeline.Pipeline that the web app uses, over the real
    per-camera analytics processors."""

    def __init__(self, cfg):
        self.analytics = {c.id: CameraAnalytics(cfg.device.id, c.id, LABELS, c) for c in cfg.cameras}
        self.applied: list = []

    def apply_analytics(self, camera_id, camera_cfg):
        self.analytics[camera_id].reconfigure(camera_cfg)
        self.applied.append((camera_id, camera_cfg))


def _frame(seq: int) -> Frame:
    return Frame(np.zeros((H, W, 3), np.uint8), "demo", seq, 100.0 + seq * 0.1, time.time())


def _walk_across(proc: CameraAnalytics, live: LiveView, x_from: float, x_to: float, track_id: int = 7) -> list:
    """A person walking left to right through the line at x = 0.4 W, feet at y = 0.45 H."""
    events = []
    xs = np.linspace(x_from, x_to, 20)
    for i, x in enumerate(xs):
        box = np.array([x - 20, 0.45 * H - 120, x + 20, 0.45 * H])
        r = FrameResult(_frame(i), Detections.empty(),
                        tracks=[Track(track_id, box, 0.9, 0, i + 1, i + 1, i + 1, 0, True)])
        proc.process(r)
        live.update(r)
        events += r.events
    return events


@pytest.fixture
def site(tmp_path, assets_dir, monkeypatch):
    monkeypatch.setenv("APPLIANCE_ASSETS_DIR", str(assets_dir))
    path = tmp_path / "config.yaml"
    path.write_text(SITE.replace("{hash}", hash_password(PASSWORD)))
    cfg = config.load(path, assets_dir)
    pipeline = _Pipeline(cfg)
    live = LiveView(LABELS)
    live.update(FrameResult(_frame(0), Detections.empty()))  # the camera's picture: its size is known
    app = create_app(cfg, _Status(), tmp_path / "appliance.db", live, config_path=path,
                     analytics_hooks=pipeline_hooks(pipeline))
    app.config["TESTING"] = True
    return path, app, pipeline, live


def _csrf(client, page="/login") -> str:
    html = client.get(page).get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def _logged_in(app):
    c = app.test_client()
    r = c.post("/login", data={"password": PASSWORD, "csrf_token": _csrf(c)})
    assert r.status_code == 302
    return c, _api_token(c)


def _api_token(client) -> str:
    """The CSRF token the dashboard gives its scripts (a <meta> tag)."""
    html = client.get("/").get_data(as_text=True)
    return re.search(r'<meta name="csrf-token" content="([^"]+)"', html).group(1)


def _put(client, token, camera, body, **kw):
    headers = {"X-CSRFToken": token} if token else {}
    return client.put(f"/api/analytics/{camera}", data=json.dumps(body), content_type="application/json",
                      headers=headers, **kw)


NEW_LINES = {"lines": [{"name": "walkway", "points": [[0.4, 0.3], [0.4, 0.6]], "anchor": "bottom_center"},
                       {"name": "door", "points": [[0.7, 0.2], [0.9, 0.2], [0.95, 0.4]]}],
             "zones": [{"name": "plaza", "points": [[0.1, 0.5], [0.5, 0.5], [0.5, 0.9], [0.1, 0.9]],
                        "loiter_s": 30}]}


def test_lists_lines_zones_frame_size_and_live_counts(site):
    path, app, pipeline, live = site
    proc = pipeline.analytics["demo"]
    events = _walk_across(proc, live, 0.2 * W, 0.6 * W)
    assert [(e.line, e.direction) for e in events if e.type == "line"] == [("walkway", "out")]
    c, _ = _logged_in(app)
    body = c.get("/api/analytics").get_json()
    assert body["editable"] is True and body["config_file"] == str(path) and body["reason"] is None
    demo = body["cameras"]["demo"]
    assert demo["frame"] == [W, H]
    assert demo["lines"] == [{"name": "walkway", "points": [[0.4, 0.3], [0.4, 0.6]], "anchor": "bottom_center",
                              "classes": []}]
    assert [z["name"] for z in demo["zones"]] == ["plaza"] and demo["zones"][0]["loiter_s"] == 30
    assert demo["counts"]["lines"]["walkway"]["out"] == 1 and demo["counts"]["lines"]["walkway"]["in"] == 0
    assert demo["counts"]["lines"]["walkway"]["by_label"] == {"person": {"in": 0, "out": 1}}
    assert body["cameras"]["gate"]["frame"] is None  # no frame yet
    one = c.get("/api/analytics/demo").get_json()
    assert one["camera"] == "demo" and one["lines"] == demo["lines"]
    assert c.get("/api/analytics/nowhere").status_code == 404
    r = c.get("/api/analytics?camera=demo")
    assert r.status_code == 400 and r.get_json() == {"error": "camera: unknown parameter (this route takes none)"}


def test_save_writes_the_file_keeping_comments_and_applies_without_restart(site):
    path, app, pipeline, live = site
    proc = pipeline.analytics["demo"]
    _walk_across(proc, live, 0.2 * W, 0.6 * W)
    before = path.read_text()
    c, token = _logged_in(app)
    r = _put(c, token, "demo", NEW_LINES)
    assert r.status_code == 200, r.get_json()
    answer = r.get_json()
    assert answer["applied"] is True and answer["saved"] == str(path)
    assert [ln["name"] for ln in answer["lines"]] == ["walkway", "door"]

    text = path.read_text()
    # Every comment and every untouched line is still there, in order; the new line is added.
    for line in before.splitlines():
        assert line in text, line
    assert "      - name: door\n        points: [[0.7, 0.2], [0.9, 0.2], [0.95, 0.4]]\n" in text
    assert text.index("walkway") < text.index("door") < text.index("plaza") < text.index("web:")
    saved = config.load(path)
    assert [ln.name for ln in saved.cameras[0].lines] == ["walkway", "door"]

    # Applied: the processor has the new line, and the unchanged one kept its count.
    assert pipeline.applied[-1][0] == "demo"
    assert [ln.name for ln in pipeline.applied[-1][1].lines] == ["walkway", "door"]
    assert pipeline.applied[-1][1].source == "asset:vtest.avi"
    counts = c.get("/api/analytics/demo").get_json()["counts"]
    assert set(counts["lines"]) == {"walkway", "door"} and counts["lines"]["walkway"]["out"] == 1
    # The effective config the dashboard shows follows.
    shown = c.get("/api/config").get_json()
    assert [ln["name"] for ln in shown["cameras"][0]["lines"]] == ["walkway", "door"]

    # Removing everything: empty lists, the rest of the file as it was.
    r = _put(c, token, "demo", {"lines": [], "zones": []})
    assert r.status_code == 200, r.get_json()
    assert config.load(path).cameras[0].lines == [] and config.load(path).cameras[0].zones == []
    assert "# Gate 3: the walkway counter" in path.read_text() and "# the walkway camera" in path.read_text()
    assert pipeline.applied[-1][1].lines == []


def test_a_changed_line_keeps_its_comment_and_an_unchanged_one_its_text(site):
    path, app, _, _ = site
    c, token = _logged_in(app)
    body = json.loads(json.dumps(NEW_LINES))
    body["lines"][0]["points"] = [[0.45, 0.3], [0.45, 0.6]]  # moved
    r = _put(c, token, "demo", {"lines": body["lines"]})  # zones left out: kept
    assert r.status_code == 200, r.get_json()
    text = path.read_text()
    assert ("      - name: walkway  # across the path, by the lamp post\n"
            "        points: [[0.45, 0.3], [0.45, 0.6]]") in text
    assert "loiter_s: 30   # the benches" in text  # the zones were not sent: untouched


@pytest.mark.parametrize("body, message", [
    ({"lines": [{"name": "walkway", "points": [[0.4, 0.3]]}]},
     "cameras[0].lines[0].points: a line needs at least 2 points, got 1"),
    ({"zones": [{"name": "plaza", "points": [[0.1, 0.1], [0.5, 0.5], [0.5, 0.1], [0.1, 0.5]]}]},
     "cameras[0].zones[0].points: the polygon crosses itself"),
    ({"zones": [{"name": "plaza", "points": [[0.1, 0.1], [0.5, 0.5]]}]},
     "cameras[0].zones[0].points: a zone needs at least 3 points, got 2"),
    ({"lines": [{"name": "walkway", "points": [[0.4, 0.3], [0.4, 0.6]]},
                {"name": "walkway", "points": [[0.5, 0.3], [0.5, 0.6]]}]},
     "cameras[0].lines[1].name: duplicate name 'walkway'"),
    ({"lines": [{"name": "plaza", "points": [[0.4, 0.3], [0.4, 0.6]]}]},
     "cameras[0].zones[0].name: duplicate name 'plaza'"),
    ({"lines": [{"name": "walkway", "points": [[0.4, 0.3], [0.4, 0.6]], "colour": "red"}]},
     "cameras[0].lines[0].colour: unknown key"),
    ({"lines": [{"name": "walkway", "points": [[-5, 10], [100, 10]]}]},
     "cameras[0].lines[0].points[0]: coordinates must not be negative"),
    ({"lines": [{"name": "walkway", "points": [[10, 10], [900, 10]]}]},
     "cameras[0].lines[0].points[1]: [900.0, 10.0] is outside the 768x576 frame"),
    ({"lines": "walkway"}, "cameras[0].lines: expected a list"),
    ({"lines": [{"points": [[0.4, 0.3], [0.4, 0.6]]}]}, "cameras[0].lines[0].name: required key is missing"),
])
def test_bad_lines_and_zones_are_a_400_with_the_config_message_and_the_file_untouched(site, body, message):
    path, app, pipeline, _ = site
    before = path.read_bytes()
    c, token = _logged_in(app)
    r = _put(c, token, "demo", body)
    assert r.status_code == 400
    answer = r.get_json()
    assert any(line == f"{path}: {message}" or line.startswith(f"{path}: {message}") for line in answer["errors"]), \
        answer
    assert answer["error"] == "\n".join(answer["errors"])
    assert path.read_bytes() == before
    assert pipeline.applied == []


def test_the_same_messages_as_config_check(site, tmp_path):
    """The editor's errors are `appliance config check`'s lines for the same file."""
    import subprocess
    import sys

    path, app, _, _ = site
    c, token = _logged_in(app)
    body = {"lines": [{"name": "walkway", "points": [[0.4, 0.3]]}],
            "zones": [{"name": "plaza", "points": [[0.1, 0.1], [0.5, 0.5], [0.5, 0.1], [0.1, 0.5]]}]}
    errors = _put(c, token, "demo", body).get_json()["errors"]
    broken = path.read_text().replace("points: [[0.4, 0.3], [0.4, 0.6]]", "points: [[0.4, 0.3]]").replace(
        "[[0.1, 0.5], [0.5, 0.5], [0.5, 0.9], [0.1, 0.9]]", "[[0.1, 0.1], [0.5, 0.5], [0.5, 0.1], [0.1, 0.5]]")
    path.write_text(broken)
    r = subprocess.run([sys.executable, "-m", "appliance", "config", "check", str(path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip().removeprefix("appliance: error: ").splitlines() == errors


@pytest.mark.parametrize("kind", ["not logged in", "no csrf", "bad csrf", "unknown camera", "not json",
                                  "unknown key", "a list", "too large"])
def test_refused_requests_leave_the_file_alone(site, kind):
    path, app, pipeline, _ = site
    before = path.read_bytes()
    c, token = _logged_in(app)
    if kind == "not logged in":
        anon = app.test_client()
        r = _put(anon, _csrf(anon), "demo", NEW_LINES)
        assert r.status_code == 401 and r.get_json() == {"error": "login required"}
    elif kind == "no csrf":
        r = _put(c, None, "demo", NEW_LINES)
        assert r.status_code == 400 and "CSRF" in r.get_json()["error"]
    elif kind == "bad csrf":
        r = _put(c, "forged", "demo", NEW_LINES)
        assert r.status_code == 400 and "CSRF" in r.get_json()["error"]
    elif kind == "unknown camera":
        r = _put(c, token, "backyard", NEW_LINES)
        assert r.status_code == 404 and r.get_json()["error"] == "camera 'backyard': unknown (cameras: demo, gate)"
    elif kind == "not json":
        r = c.put("/api/analytics/demo", data="lines: []", content_type="text/yaml", headers={"X-CSRFToken": token})
        assert r.status_code == 400 and r.get_json()["error"].startswith("body: expected a JSON object")
    elif kind == "unknown key":
        r = _put(c, token, "demo", {**NEW_LINES, "calibration": None})
        assert r.status_code == 400 and r.get_json()["error"] == \
            "body.calibration: unknown key (valid keys: lines, zones)"
    elif kind == "a list":
        r = _put(c, token, "demo", [NEW_LINES])
        assert r.status_code == 400
    else:
        zones = [{"name": f"z{i}", "points": [[0.1, 0.1], [0.2, 0.1], [0.2, 0.2]] * 20} for i in range(300)]
        r = _put(c, token, "demo", {"zones": zones})
        assert r.status_code == 413 and r.get_json() == {"error": "body: larger than 256 kB"}
    assert path.read_bytes() == before and pipeline.applied == []


def test_without_a_config_file_saving_is_refused_with_what_to_do(tmp_path, assets_dir):
    cfg = config.load(None)
    app = create_app(cfg, _Status(), tmp_path / "appliance.db", LiveView(LABELS))
    c = app.test_client()  # no password: local only, no login
    token = _api_token(c)
    listed = c.get("/api/analytics").get_json()
    assert listed["editable"] is False and "--config FILE" in listed["reason"]
    r = _put(c, token, "demo", NEW_LINES)
    assert r.status_code == 409 and "start it with 'appliance run --config FILE'" in r.get_json()["error"]


def test_a_file_without_cameras_gets_the_default_camera_written_out(tmp_path, assets_dir, monkeypatch):
    monkeypatch.setenv("APPLIANCE_ASSETS_DIR", str(assets_dir))
    path = tmp_path / "config.yaml"
    path.write_text("# only the id\ndevice: {id: gate-3}\n")
    cfg = config.load(path, assets_dir)
    app = create_app(cfg, _Status(), tmp_path / "appliance.db", config_path=path)
    c = app.test_client()
    token = _api_token(c)
    r = _put(c, token, "demo", {"lines": [{"name": "door", "points": [[0.1, 0.5], [0.9, 0.5]]}]})
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["applied"] is False and "next start" in r.get_json()["note"]  # no pipeline here
    saved = config.load(path)
    assert saved.cameras[0].id == "demo" and saved.cameras[0].source == "asset:vtest.avi"
    assert [ln.name for ln in saved.cameras[0].lines] == ["door"]
    assert path.read_text().startswith("# only the id\ndevice: {id: gate-3}\ncameras:\n")


def test_a_flow_style_camera_becomes_a_block_and_a_missing_one_is_a_409(tmp_path, assets_dir, monkeypatch):
    monkeypatch.setenv("APPLIANCE_ASSETS_DIR", str(assets_dir))
    path = tmp_path / "config.yaml"
    path.write_text("cameras:\n  - {id: demo, source: 'asset:vtest.avi', loop: true}  # looped\n")
    cfg = config.load(path, assets_dir)
    app = create_app(cfg, _Status(), tmp_path / "appliance.db", config_path=path)
    c = app.test_client()
    token = _api_token(c)
    r = _put(c, token, "demo", {"lines": [{"name": "door", "points": [[0.1, 0.5], [0.9, 0.5]]}]})
    assert r.status_code == 200, r.get_json()
    text = path.read_text()
    assert "  - id: demo  # looped\n    source: 'asset:vtest.avi'\n    loop: true\n" in text
    assert "    lines:\n      - name: door\n        points: [[0.1, 0.5], [0.9, 0.5]]\n" in text
    assert config.load(path).cameras[0].loop is True

    path.write_text("cameras:\n  - {id: other, source: 'asset:vtest.avi'}\n")  # edited by hand since
    before = path.read_bytes()
    r = _put(c, token, "demo", {"lines": []})
    assert r.status_code == 409 and "no camera 'demo' in the file" in r.get_json()["error"]
    assert path.read_bytes() == before


# -- the counts chart -----------------------------------------------------------------------


def _line_event(seq, ts, direction, label="person", line="walkway", camera="demo", type_=None):
    c = {"label": type_, "score": 0.8, "votes": 3, "attempts": 4, "model": "m", "version": "1"} if type_ else None
    return LineEvent(id=f"gate-3:{seq}", seq=seq, type="line", device="gate-3", camera=camera, ts=ts,
                     frame_seq=seq, track_id=seq, label=label, score=0.8, line=line, direction=direction,
                     point=(300.0, 250.0), classification=c)


def _zone_event(seq, ts, action, label="person"):
    return ZoneEvent(id=f"gate-3:{seq}", seq=seq, type="zone", device="gate-3", camera="demo", ts=ts,
                     frame_seq=seq, track_id=seq, label=label, score=0.8, zone="plaza", action=action,
                     occupancy=1, point=(300.0, 400.0), dwell_s=None if action == "enter" else 4.0)


T0 = 1_700_000_040.0  # a whole minute


@pytest.fixture
def chart_client(tmp_path):
    db = tmp_path / "appliance.db"
    w = EventWriter(db).start()
    w.put([_line_event(1, T0 + 5, "in"), _line_event(2, T0 + 20, "in", "bicycle"), _line_event(3, T0 + 70, "out"),
           _line_event(4, T0 + 130, "in", line="door"), _line_event(5, T0 + 10, "in", camera="gate"),
           _zone_event(6, T0 + 15, "enter"), _zone_event(7, T0 + 50, "exit"), _zone_event(8, T0 + 75, "enter", "car"),
           _line_event(9, T0 + 100, "out", "car", type_="van")])
    assert w.close() == 0
    cfg = config.load(None)
    app = create_app(cfg, _Status(), db)
    return app.test_client()


def test_rollups_per_line_direction_and_label_in_minute_buckets(chart_client):
    q = f"since={T0}&until={T0 + 180}&bucket=60"
    body = chart_client.get(f"/api/rollups?{q}&camera=demo&kind=line").get_json()
    assert body["bucket_s"] == 60 and body["buckets"] == [T0, T0 + 60, T0 + 120]
    assert body["series"] == {"door in": [0, 0, 1], "walkway in": [2, 0, 0], "walkway out": [0, 2, 0]}
    body = chart_client.get(f"/api/rollups?{q}&camera=demo&kind=line&by=label").get_json()
    assert body["series"] == {"door in · person": [0, 0, 1], "walkway in · bicycle": [1, 0, 0],
                              "walkway in · person": [1, 0, 0], "walkway out · car": [0, 1, 0],
                              "walkway out · person": [0, 1, 0]}
    # By the classifier's type: only what has one.
    body = chart_client.get(f"/api/rollups?{q}&camera=demo&kind=line&by=type").get_json()
    assert body["series"] == {"walkway out · van": [0, 1, 0]}
    # Both cameras: names carry the camera.
    body = chart_client.get(f"/api/rollups?{q}&kind=line&direction=in&name=walkway").get_json()
    assert body["series"] == {"demo/walkway in": [2, 0, 0], "gate/walkway in": [1, 0, 0]}
    # Zones: entries only, by label; a 30 s bucket is a minute (the rollups' resolution).
    body = chart_client.get(f"/api/rollups?since={T0}&until={T0 + 120}&bucket=30&kind=zone&direction=enter"
                            "&by=label").get_json()
    assert body["bucket_s"] == 60 and body["series"] == {"plaza enter · car": [0, 1], "plaza enter · person": [1, 0]}


@pytest.mark.parametrize("query, message", [
    ("kind=lines", "kind: must be one of line, zone, got 'lines'"),
    ("by=colour", "by: must be one of direction, label, type, got 'colour'"),
    ("direction=up", "direction: must be one of in, out, enter, exit, loiter, speeding, got 'up'"),
    ("bucket=0", "bucket: must be between 1 and 86400, got 0"),
    ("since=yesterday", "since: expected unix seconds or an ISO 8601 time, got 'yesterday'"),
    ("since=200&until=100", "since: must be before until (since=200, until=100)"),
    ("since=0&until=1000000&bucket=60", "bucket: 60 s makes more than 2000 buckets"),
    ("line=walkway", "line: unknown parameter (valid: since, until, bucket, camera, kind, by, direction, name)"),
])
def test_a_bad_rollups_parameter_is_a_400_naming_it(chart_client, query, message):
    r = chart_client.get(f"/api/rollups?{query}")
    assert r.status_code == 400 and r.get_json()["error"].startswith(message), r.get_json()


def test_the_dashboard_page_has_the_overlay_the_editor_and_the_chart_choices(site):
    _, app, _, _ = site
    c, _ = _logged_in(app)
    html = c.get("/").get_data(as_text=True)
    assert 'svg class="overlay" data-overlay="demo"' in html and 'data-edit="demo"' in html
    for value in ("line", "line-label", "zone", "zone-label"):
        assert f'<option value="{value}">' in html
    for name in ("analytics.js", "editor.js", "analytics.css"):
        assert Path(app.static_folder, name).is_file() and f"/static/{name}" in html
