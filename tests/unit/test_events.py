from __future__ import annotations

import itertools
import json
import time

import numpy as np

from appliance.capture.frame import Frame
from appliance.events.lifecycle import Lifecycle
from appliance.track.sort import Track, TrackerOutput


def _track(tid: int, x: float, class_id: int = 0, score: float = 0.9) -> Track:
    return Track(id=tid, xyxy=np.array([x, 10, x + 20, 50], np.float32), score=score,
                 class_id=class_id, hits=3, hit_streak=3, age=3, time_since_update=0, confirmed=True)


def _frame(seq: int, ts: float) -> Frame:
    return Frame(np.zeros((480, 640, 3), np.uint8), "cam", seq, time.monotonic(), ts)


def _lifecycle(interval: float = 1.0, base: int = 0) -> Lifecycle:
    return Lifecycle("dev-1", "cam", ["person", "bicycle", "car"], interval,
                     itertools.count(41).__next__, track_id_base=base)


def test_new_then_rate_limited_updates_then_end():
    lc = _lifecycle(interval=1.0)
    events = []
    for i in range(25):  # 10 fps for 2.5 s
        events += lc.on_frame(_frame(i, 1000.0 + i / 10), TrackerOutput([_track(7, i)], []))
    assert lc.live == 1
    last = _track(7, 24)
    events += lc.on_frame(_frame(25, 1002.5), TrackerOutput([], [last]))
    assert [e.type for e in events] == ["new", "update", "update", "end"]
    assert [e.ts for e in events] == [1000.0, 1001.0, 1002.0, 1002.4]  # end: last time it was seen
    assert [e.seq for e in events] == [41, 42, 43, 44]
    assert [e.id for e in events] == ["dev-1:41", "dev-1:42", "dev-1:43", "dev-1:44"]
    assert all(e.first_seen == 1000.0 and e.track_id == 7 and e.label == "person" for e in events)
    assert events[-1].box == [24.0, 10.0, 44.0, 50.0]
    assert lc.live == 0


def test_end_only_for_known_tracks_and_only_once():
    lc = _lifecycle()
    assert lc.on_frame(_frame(0, 1.0), TrackerOutput([], [_track(3, 0)])) == []
    lc.on_frame(_frame(0, 1.0), TrackerOutput([_track(4, 0)], []))
    ends = lc.finish([_track(4, 0)])
    assert [e.type for e in ends] == ["end"]
    assert lc.finish([_track(4, 0)]) == []


def test_track_id_base_and_labels():
    lc = _lifecycle(base=100)
    (e,) = lc.on_frame(_frame(0, 1.0), TrackerOutput([_track(1, 0, class_id=2)], []))
    assert e.track_id == 101 and e.label == "car"
    (e,) = lc.on_frame(_frame(0, 1.0), TrackerOutput([_track(2, 0, class_id=57)], []))
    assert e.label == "class57"  # a class outside the label list still gets a name


def test_json_is_the_one_serialisation():
    lc = _lifecycle()
    (e,) = lc.on_frame(_frame(5, 1234.5), TrackerOutput([_track(1, 3.04)], []))
    d = json.loads(e.to_json())
    assert d == {"id": "dev-1:41", "seq": 41, "type": "new", "device": "dev-1", "camera": "cam",
                 "track_id": 1, "label": "person", "score": 0.9, "box": [3.0, 10.0, 23.0, 50.0],
                 "ts": 1234.5, "first_seen": 1234.5, "frame_seq": 5, "schema": 1}


def test_boxes_are_clipped_to_the_frame():
    lc = _lifecycle()
    t = _track(1, 630)  # x2 = 650 on a 640-wide frame
    (e,) = lc.on_frame(_frame(0, 1.0), TrackerOutput([t], []))
    assert e.box == [630.0, 10.0, 640.0, 50.0]
    (end,) = lc.finish([t])
    assert end.box == [630.0, 10.0, 640.0, 50.0]
