from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from appliance.capture.frame import Frame
from appliance.detect.types import Detections
from appliance.events.lifecycle import Event, Lifecycle
from appliance.events.sink import EventSink
from appliance.events.state import StateEvent
from appliance.events.types import ANALYTICS_TYPES, EVENT_TYPES, STATE_TYPES, TRACK_TYPES
from appliance.result import FrameResult
from appliance.track.sort import Track


class Collector:
    """Stands in for the store writer: keeps what it is given, in order."""

    def __init__(self):
        self.events, self.captured = [], []

    def put(self, events, captured_at=None):
        self.events += events
        self.captured.append(captured_at)


def _track(tid: int, x: float, class_id: int = 0, score: float = 0.9) -> Track:
    return Track(id=tid, xyxy=np.array([x, 10, x + 20, 50], np.float32), score=score,
                 class_id=class_id, hits=3, hit_streak=3, age=3, time_since_update=0, confirmed=True)


def _result(seq: int, ts: float, tracks=(), ended=()) -> FrameResult:
    frame = Frame(np.zeros((480, 640, 3), np.uint8), "cam", seq, time.monotonic(), ts)
    return FrameResult(frame, Detections.empty(), tracks=list(tracks), ended=list(ended))


def _lifecycle(interval: float = 1.0) -> Lifecycle:
    return Lifecycle("dev-1", "cam", ["person", "bicycle", "car"], interval)


def _run(lc: Lifecycle, r: FrameResult) -> list[Event]:
    lc.process(r)
    return r.events


def test_new_then_rate_limited_updates_then_end_numbered_by_the_sink():
    lc, out = _lifecycle(interval=1.0), Collector()
    sink = EventSink("dev-1", out, first_seq=41)
    for i in range(25):  # 10 fps for 2.5 s
        sink.emit(_run(lc, _result(i, 1000.0 + i / 10, [_track(7, i)])))
    assert lc.live == 1
    sink.emit(_run(lc, _result(25, 1002.5, ended=[_track(7, 24)])))
    events = out.events
    assert [e.type for e in events] == ["new", "update", "update", "end"]
    assert [e.ts for e in events] == [1000.0, 1001.0, 1002.0, 1002.4]  # end: last time it was seen
    assert [e.seq for e in events] == [41, 42, 43, 44]
    assert [e.id for e in events] == ["dev-1:41", "dev-1:42", "dev-1:43", "dev-1:44"]
    assert all(e.first_seen == 1000.0 and e.track_id == 7 and e.label == "person" for e in events)
    assert events[-1].box == [24.0, 10.0, 44.0, 50.0]
    assert lc.live == 0


def test_end_only_for_known_tracks_and_only_once():
    lc = _lifecycle()
    assert _run(lc, _result(0, 1.0, ended=[_track(3, 0)])) == []
    _run(lc, _result(0, 1.0, [_track(4, 0)]))
    assert [e.type for e in _run(lc, _result(1, 1.1, ended=[_track(4, 0)]))] == ["end"]
    assert _run(lc, _result(2, 1.2, ended=[_track(4, 0)])) == []


def test_labels_including_one_outside_the_list():
    lc = _lifecycle()
    (e,) = _run(lc, _result(0, 1.0, [_track(101, 0, class_id=2)]))
    assert e.track_id == 101 and e.label == "car"
    (e,) = _run(lc, _result(0, 1.0, [_track(102, 0, class_id=57)]))
    assert e.label == "class57"  # a class outside the label list still gets a name


def test_json_is_the_one_serialisation():
    out = Collector()
    EventSink("dev-1", out, 41).emit(_run(_lifecycle(), _result(5, 1234.5, [_track(1, 3.04)])))
    d = json.loads(out.events[0].to_json())
    assert d == {"id": "dev-1:41", "seq": 41, "type": "new", "device": "dev-1", "camera": "cam",
                 "track_id": 1, "label": "person", "score": 0.9, "box": [3.0, 10.0, 23.0, 50.0],
                 "ts": 1234.5, "first_seen": 1234.5, "frame_seq": 5, "schema": 1}


def test_boxes_are_clipped_to_the_frame():
    lc = _lifecycle()
    t = _track(1, 630)  # x2 = 650 on a 640-wide frame
    (e,) = _run(lc, _result(0, 1.0, [t]))
    assert e.box == [630.0, 10.0, 640.0, 50.0]
    (end,) = _run(lc, _result(1, 1.1, ended=[t]))
    assert end.box == [630.0, 10.0, 640.0, 50.0]


def test_event_types_come_from_one_list():
    assert EVENT_TYPES == TRACK_TYPES + STATE_TYPES + ANALYTICS_TYPES
    with pytest.raises(ValueError, match="not one of"):
        Event("", 0, "zone", "d", "c", 1, "person", 0.9, [0, 0, 1, 1], 0.0, 0.0, 0)
    with pytest.raises(ValueError, match="not one of"):
        StateEvent("", 0, "new", "d", "c", "x", "y", "why", 0.0)


def test_sink_numbers_events_from_many_threads_in_the_order_the_writer_gets_them():
    out = Collector()
    sink = EventSink("dev", out, first_seq=1)

    def emit_states(cam: str):
        for i in range(200):
            sink.state("camera", cam, "streaming", "connecting", f"try {i}")

    threads = [threading.Thread(target=emit_states, args=(c,)) for c in "abcd"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [e.seq for e in out.events] == list(range(1, 801))
    assert all(e.id == f"dev:{e.seq}" for e in out.events)


def test_sink_after_close_stores_nothing_and_passes_the_capture_time():
    out = Collector()
    sink = EventSink("dev", out, first_seq=7)
    (e,) = sink.emit([StateEvent("", 0, "power", "dev", "", "MAXN", "5W", "cool", 1.0)], captured_at=12.5)
    assert (e.seq, out.captured) == (7, [12.5])
    sink.close()
    assert sink.emit([StateEvent("", 0, "power", "dev", "", "5W", "MAXN", "hot", 2.0)]) == []
    assert len(out.events) == 1
