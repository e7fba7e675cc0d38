"""Continuing broken tracks on the lines (appliance/analytics/stitch.py): a walker lost on
one side of a line and found again, under a new id, on the other side counts once; and
what must not be taken for a continuation (someone else, an exit at the frame's edge, a
flicker, a track found again) is not."""
from __future__ import annotations

import numpy as np
import pytest

from appliance.analytics import geometry, stitch
from appliance.analytics.lines import LineCounter
from appliance.analytics.processor import CameraAnalytics
from appliance.analytics.stitch import Stitcher
from appliance.capture.frame import Frame
from appliance.config.analytics import LineConfig
from appliance.config.cameras import CameraConfig
from appliance.detect.types import Detections
from appliance.result import FrameResult
from appliance.track.sort import Track

SIZE = (640, 480)
LINE = {"name": "gate", "points": [[0.5, 0.0], [0.5, 1.0]]}  # x = 320, downwards: `in` is right to left
DT = 0.1  # seconds a frame


def _box(x: float, h: float = 100.0, y: float = 300.0, w: float = 20.0) -> list[float]:
    return [x - w / 2, y - h, x + w / 2, y]


def _track(tid: int, x: float, class_id: int = 0) -> Track:
    return Track(id=tid, xyxy=np.array(_box(x), np.float64), score=0.9, class_id=class_id, hits=3,
                 hit_streak=3, age=3, time_since_update=0, confirmed=True)


def _run(a: CameraAnalytics, frames: list[dict[int, float]], ended_at: dict[int, int] | None = None,
         classes: dict[int, int] | None = None) -> list:
    """frames[i]: {track id: x} reported at frame i (t = i * DT); ended_at: id -> the frame
    where the tracker ends it; the last frame ends the rest (the stream's end). classes:
    id -> class id (0, a person, by default)."""
    events = []
    ended_at, classes = dict(ended_at or {}), classes or {}
    last_x: dict[int, float] = {}
    for i, seen in enumerate(frames):
        last_x.update(seen)
        final = i == len(frames) - 1
        gone = [tid for tid in last_x if ended_at.get(tid, i) == i] if final else \
            [tid for tid, f in ended_at.items() if f == i]
        r = FrameResult(Frame(np.zeros((SIZE[1], SIZE[0], 3), np.uint8), "cam", i, i * DT, 1e9 + i * DT),
                        Detections.empty(), tracks=[_track(tid, x, classes.get(tid, 0)) for tid, x in seen.items()],
                        ended=[_track(tid, last_x[tid], classes.get(tid, 0)) for tid in gone], final=final)
        a.process(r)
        events += r.events
    return events


def _analytics(**kw) -> CameraAnalytics:
    return CameraAnalytics("dev", "cam", ["person", "car"], CameraConfig(id="cam", source="x.mp4", lines=[LINE]),
                           **kw)


def _broken_walk(gap_frames: int = 8, new_speed: float = -10.0, lost_at: float = 360.0) -> list[dict[int, float]]:
    """A walker at 100 px/s leftwards, track 1 until x = lost_at (right of the line), then
    unseen for gap_frames, then track 2 where the walk got to, moving new_speed px a frame."""
    frames: list[dict[int, float]] = [{1: x} for x in np.arange(500.0, lost_at - 1, -10.0)]
    frames += [{} for _ in range(gap_frames)]
    x = lost_at - 10.0 * (gap_frames + 1)
    frames += [{2: x + new_speed * k} for k in range(12)]
    return frames + [{}]


def test_a_walker_lost_before_the_line_and_found_after_it_counts_once():
    a = _analytics()
    events = _run(a, _broken_walk(), ended_at={1: 34})  # the tracker gives up on 1 after 2 s
    line = [e for e in events if e.type == "line"]
    assert [(e.track_id, e.direction) for e in line] == [(2, "in")]
    assert a.counts()["lines"]["gate"]["in"] == 1 and a.counts()["lines"]["gate"]["out"] == 0
    # counted when the new track's own velocity is known (0.3 s), and it is past the line
    assert line[0].point[0] < 320 - 10

    plain = _analytics(continue_tracks=False)
    assert not [e for e in _run(plain, _broken_walk(), ended_at={1: 34}) if e.type == "line"]


def test_the_lost_track_can_continue_after_the_tracker_ended_it():
    """A short track.max_age_s ends the lost track before the new one appears: its state on
    the line waits for the window, then goes."""
    a = _analytics()
    _run(a, _broken_walk(), ended_at={1: 17})
    assert a.counts()["lines"]["gate"]["in"] == 1
    assert not a.lines["gate"]._tracks  # nothing kept after the stream's end


@pytest.mark.parametrize("case", ["too late", "walks the other way", "flicker", "other label"])
def test_what_is_not_a_continuation_counts_nothing(case):
    classes = {}
    if case == "too late":  # 3 s unseen: longer than the window
        frames = _broken_walk(gap_frames=30)
    elif case == "walks the other way":  # appears where the walker would be, but comes towards the line
        frames = _broken_walk(new_speed=+3.0)
    elif case == "flicker":  # 2 frames: never a velocity
        frames = _broken_walk()
        frames = frames[:-13] + frames[-13:-11] + [{} for _ in range(11)]
    else:
        frames, classes = _broken_walk(), {2: 1}  # track 2 is a car
    events = _run(_analytics(), frames, classes=classes)
    assert not [e for e in events if e.type == "line"]


# -- the rule on its own ---------------------------------------------------------------------


def _lost_then_new(st: Stitcher, *, scale: float = 1.0, gap: float = 0.8, old_x: float = 360.0,
                   new_x: float = 280.0, v_old=(-100.0, 0.0), v_new=(-100.0, 0.0), new_h: float = 100.0,
                   new_label: str = "person", size=SIZE) -> dict[int, int]:
    """Track 1 last seen at old_x moving v_old (px/s); track 2 first seen gap s later at
    new_x, its velocity v_new known 0.3 s after; all lengths times `scale`."""
    s = scale
    size = (int(size[0] * s), int(size[1] * s))
    box_old = [v * s for v in _box(old_x)]
    st.seen(1, 0.0, box_old, "person", size, (v_old[0] * s, v_old[1] * s), {1})
    box_new = [v * s for v in _box(new_x, h=new_h)]
    st.seen(2, gap, box_new, new_label, size, None, {2})
    assert st.decide(gap + 0.1, {2}) == {}  # no velocity yet: no decision
    st.seen(2, gap + 0.3, box_new, new_label, size, (v_new[0] * s, v_new[1] * s), {2})
    return st.decide(gap + 0.4, {2})


@pytest.mark.parametrize("scale", [0.5, 1.0, 3.0])
def test_the_rule_is_in_box_heights_and_seconds(scale):
    assert _lost_then_new(Stitcher(), scale=scale) == {2: 1}
    # 1.5 box heights beyond the prediction after 0.8 s: outside the gate at any scale
    assert _lost_then_new(Stitcher(), scale=scale, new_x=130.0) == {}


@pytest.mark.parametrize("kw", [
    {"gap": stitch.WINDOW_S + 0.1},  # lost too long ago
    {"old_x": 630.0, "new_x": 560.0, "size": (645, 480)},  # last seen touching the right border: it left
    {"old_x": 40.0, "new_x": 8.0},  # first seen at the left border: it came in (somebody else)
    {"gap": 0.3, "v_old": (-50.0, 0.0), "v_new": (-50.0, 0.0), "new_x": 390.0},  # 30 px behind where it vanished
    {"v_new": (100.0, 0.0), "new_x": 320.0},  # walking back the way it came: someone else
    {"new_h": 160.0},  # much bigger: not the same depth
    {"new_label": "car"},
])
def test_not_a_continuation(kw):
    assert _lost_then_new(Stitcher(), **kw) == {}


def test_a_standing_track_may_continue_in_any_direction_nearby():
    assert _lost_then_new(Stitcher(), v_old=(0.0, 0.0), v_new=(0.0, 0.0), new_x=330.0) == {2: 1}


def test_a_track_found_again_is_not_continued():
    st = Stitcher()
    st.seen(1, 0.0, _box(360.0), "person", SIZE, (-100.0, 0.0), {1})
    st.seen(2, 0.8, _box(280.0), "person", SIZE, None, {2})
    st.seen(1, 0.9, _box(350.0), "person", SIZE, (-100.0, 0.0), {1, 2})  # the tracker re-found it
    st.seen(2, 1.1, _box(280.0), "person", SIZE, (-100.0, 0.0), {1, 2})
    assert st.decide(1.2, {2}) == {}


def test_the_new_track_nearest_the_prediction_continues_the_lost_one():
    st = Stitcher()
    st.seen(1, 0.0, _box(360.0), "person", SIZE, (-100.0, 0.0), {1})
    st.seen(2, 0.8, _box(250.0), "person", SIZE, None, {2, 3})
    st.seen(3, 0.8, _box(285.0), "person", SIZE, None, {2, 3})
    st.seen(2, 1.1, _box(250.0), "person", SIZE, (-100.0, 0.0), {2, 3})
    st.seen(3, 1.1, _box(285.0), "person", SIZE, (-100.0, 0.0), {2, 3})
    assert st.decide(1.2, {2, 3}) == {3: 1}


# -- the line's side of it -------------------------------------------------------------------


def _line() -> LineCounter:
    cfg = LineConfig(name="l", points=[[300, 0], [300, 480]])
    return LineCounter(cfg, geometry.to_pixels(cfg.points, 640, 480))


def test_the_way_from_the_lost_track_to_the_new_one_counts():
    line = _line()
    assert [line.update(1, (float(x), 200.0), 100.0) for x in range(400, 330, -20)] == [None] * 4  # lost at 340
    assert line.update(2, (280.0, 200.0), 100.0) is None  # a new track, left of the line
    assert line.update(2, (270.0, 200.0), 100.0, continues=1) == "in"  # 340 -> 280 crossed the line


def test_the_two_tracks_count_once_per_direction_together():
    line = _line()
    got = [line.update(1, (float(x), 200.0), 100.0) for x in [*range(400, 240, -20), *range(260, 360, 20)]]
    assert [d for d in got if d] == ["in", "out"]  # walked in, turned, walked out: both counted; lost at 340
    assert line.update(2, (280.0, 200.0), 100.0) is None
    assert line.update(2, (270.0, 200.0), 100.0, continues=1) is None  # `in` again: counted for 1 already
