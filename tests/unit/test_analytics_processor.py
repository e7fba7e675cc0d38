"""The analytics processor on synthetic tracks: line and zone events with their fields,
class filters, classification types, the store (real SQLite) and the MQTT schema, and
reconfiguration while running."""
from __future__ import annotations

import json
import threading

import numpy as np

from appliance.analytics.processor import CameraAnalytics
from appliance.capture.frame import Frame
from appliance.config.cameras import CameraConfig
from appliance.detect.types import Detections
from appliance.events.sink import EventSink
from appliance.result import FrameResult
from appliance.store import db as store
from appliance.store.writer import EventWriter
from appliance.track.sort import Track
from tests.uplink_util import schema

LABELS = ["person", "bicycle", "car"]
PICKUP = {"label": "pickup", "score": 0.8, "votes": 2, "attempts": 3, "model": "m", "version": "v"}


def _cam(**kw) -> CameraConfig:
    return CameraConfig(id="cam", source="x.mp4", **kw)


LINE = {"name": "gate", "points": [[0.5, 0.0], [0.5, 1.0]]}  # x = 320, downwards: `in` is right to left
ZONE = {"name": "left", "points": [[0, 0], [0.5, 0], [0.5, 1], [0, 1]], "classes": ["person"], "loiter_s": 2}


def _track(tid: int, x: float, class_id: int = 0, h: float = 100.0) -> Track:
    return Track(id=tid, xyxy=np.array([x - 10, 300 - h, x + 10, 300], np.float64), score=0.9,
                 class_id=class_id, hits=3, hit_streak=3, age=3, time_since_update=0, confirmed=True)


def _frame(seq: int, t: float) -> Frame:
    return Frame(np.zeros((480, 640, 3), np.uint8), "cam", seq, 100.0 + t, 1_700_000_000.0 + t)


def _run(a: CameraAnalytics, paths: dict[int, tuple[list[float], int]], n: int, end_at: int | None = None,
         attributes: dict | None = None) -> list:
    """Tracks id -> (x per frame, class); every 0.1 s. All end after frame end_at."""
    events = []
    for i in range(n):
        tracks = [_track(tid, xs[i], c) for tid, (xs, c) in paths.items() if i < len(xs)]
        r = FrameResult(_frame(i, i / 10), Detections.empty(), tracks=tracks,
                        attributes={k: dict(v) for k, v in (attributes or {}).items()})
        a.process(r)
        events += r.events
    if end_at is not None:
        ended = [_track(tid, xs[-1], c) for tid, (xs, c) in paths.items()]
        r = FrameResult(_frame(end_at, end_at / 10), Detections.empty(), ended=ended, final=True)
        a.process(r)
        events += r.events
    return events


def test_line_and_zone_events_carry_direction_action_motion_and_type():
    a = CameraAnalytics("dev", "cam", LABELS, _cam(lines=[LINE], zones=[ZONE]))
    walk = [500 - 10 * i for i in range(40)]  # 100 px/s leftwards, crosses x=320 at frame 18
    events = _run(a, {1: (walk, 0), 2: (walk, 2)}, 40, end_at=40, attributes={2: {"classification": PICKUP}})
    line = [e for e in events if e.type == "line"]
    assert [(e.track_id, e.direction, e.label) for e in line] == [(1, "in", "person"), (2, "in", "car")]
    first = json.loads(line[0].to_json())
    assert first["line"] == "gate" and first["frame_seq"] == 19  # 10 px past the line (10 % of 100 px)
    assert first["heading_deg"] == 180.0 and first["speed_px_s"] == 100.0 and "speed_kmh" not in first
    assert first["point"] == [310.0, 300.0] and "classification" not in first
    assert json.loads(line[1].to_json())["classification"] == PICKUP
    zone = [e for e in events if e.type == "zone"]  # the car is not a person: not in the zone
    assert [(e.track_id, e.action, e.occupancy) for e in zone] == [(1, "enter", 1), (1, "loiter", 1), (1, "exit", 0)]
    exit_ = json.loads(zone[-1].to_json())
    assert exit_["ts"] == 1_700_000_003.9 and exit_["frame_seq"] == 39  # ended inside: when last seen
    assert exit_["dwell_s"] == zone[-1].dwell_s and 2.0 <= exit_["dwell_s"] <= 2.2
    counts = a.counts()
    assert counts["lines"]["gate"]["in"] == 2 and counts["lines"]["gate"]["out"] == 0
    assert counts["lines"]["gate"]["by_label"] == {"car": {"in": 1, "out": 0}, "person": {"in": 1, "out": 0}}
    assert counts["lines"]["gate"]["by_type"] == {"pickup": {"in": 1, "out": 0}}
    z = counts["zones"]["left"]
    assert (z["entered"], z["exited"], z["loiter"], z["occupancy"], z["by_label"]) == (1, 1, 1, 0, {"person": 1})
    assert json.dumps(counts)  # JSON-ready


def test_events_are_stored_and_valid_mqtt_payloads(tmp_path):
    a = CameraAnalytics("dev", "cam", LABELS, _cam(lines=[LINE], zones=[ZONE]))
    walk = [500 - 10 * i for i in range(40)]
    events = _run(a, {7: (walk, 2)}, 40, end_at=40, attributes={7: {"classification": PICKUP}})
    events += _run(CameraAnalytics("dev", "cam", LABELS, _cam(lines=[LINE], zones=[ZONE])), {8: (walk, 0)}, 40, 40)
    writer = EventWriter(tmp_path / "a.db").start()
    sink = EventSink("dev", writer, first_seq=1)
    numbered = sink.emit(events)
    writer.close()
    db = store.open_db(tmp_path / "a.db")
    rows = list(db.query("SELECT type, track_id, label, classification, payload FROM events ORDER BY seq"))
    assert [r["type"] for r in rows] == [e.type for e in numbered]
    assert rows[0]["classification"] == "pickup" and rows[0]["label"] == "car" and rows[0]["track_id"] == 7
    payloads = [json.loads(r["payload"]) for r in rows]
    assert payloads[0]["id"] == "dev:1" and payloads[0]["seq"] == 1
    schema("mqtt-events").validate({"schema": 1, "device": "dev", "events": payloads})


def test_reconfigure_keeps_the_counts_of_unchanged_lines_from_the_next_frame():
    a = CameraAnalytics("dev", "cam", LABELS, _cam(lines=[LINE, {"name": "old", "points": [[0.2, 0], [0.2, 1]]}]))
    _run(a, {1: ([500 - 10 * i for i in range(40)], 0)}, 40)
    assert a.counts()["lines"]["gate"]["in"] == 1 and a.counts()["lines"]["old"]["in"] == 1
    moved = {"name": "old", "points": [[0.1, 0], [0.1, 1]]}
    t = threading.Thread(target=a.reconfigure, args=(_cam(lines=[LINE, moved], zones=[ZONE]),))
    t.start(), t.join()
    c = a.counts()  # before the next frame: the new shapes, unchanged ones with their counts
    assert c["lines"]["gate"]["in"] == 1 and c["lines"]["old"]["in"] == 0 and c["zones"]["left"]["entered"] == 0
    _run(a, {2: ([500 - 10 * i for i in range(49)], 0)}, 49)
    c = a.counts()
    assert c["lines"]["gate"]["in"] == 2 and c["lines"]["old"]["in"] == 1 and c["zones"]["left"]["entered"] == 1
    a.reconfigure(_cam())
    _run(a, {3: ([300], 0)}, 1)
    assert a.counts() == {"lines": {}, "zones": {}}


def test_calibrated_camera_reports_km_h_and_speeding_once_per_visit():
    cal = {"image": [[0, 0], [640, 0], [640, 480], [0, 480]], "world": [[0, 0], [64, 0], [64, 48], [0, 48]]}
    zone = {"name": "road", "points": [[0, 0], [640, 0], [640, 480], [0, 480]], "max_speed_kmh": 30}
    a = CameraAnalytics("dev", "cam", LABELS, _cam(zones=[zone], calibration=cal, lines=[LINE]))
    # 10 px a frame at 10 fps = 100 px/s = 10 m/s = 36 km/h (a flat map: 0.1 m per pixel)
    events = _run(a, {1: ([600 - 10 * i for i in range(50)], 2)}, 50)
    zone_events = [json.loads(e.to_json()) for e in events if e.type == "zone"]
    assert [e["action"] for e in zone_events] == ["enter", "speeding"]
    assert abs(zone_events[1]["speed_kmh"] - 36.0) < 0.5
    line = [json.loads(e.to_json()) for e in events if e.type == "line"]
    assert abs(line[0]["speed_kmh"] - 36.0) < 0.5 and line[0]["heading_deg"] == 180.0
