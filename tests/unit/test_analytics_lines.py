"""Counting lines and zones on synthetic tracks: directions, hysteresis against jitter,
once per direction, polylines, zone enter/exit/dwell/loiter without flicker."""
from __future__ import annotations

import math

import numpy as np
import pytest

from appliance.analytics import geometry
from appliance.analytics.lines import LineCounter, margin_px
from appliance.analytics.zones import ZoneWatcher
from appliance.config.analytics import LineConfig, ZoneConfig

BOX_H = 100.0  # margin: 10 px


def _line(points, **kw) -> LineCounter:
    cfg = LineConfig(name="l", points=points, **kw)
    return LineCounter(cfg, geometry.to_pixels(cfg.points, 640, 480))


def _walk(line: LineCounter, xs, y=200.0, track_id=1) -> list[str]:
    out = []
    for x in xs:
        d = line.update(track_id, (float(x), y), BOX_H)
        if d is not None:
            line.count(d, "person", None)
            out.append(d)
    return out


def test_side_matches_the_contract_formula():
    a, b = (100.0, 0.0), (100.0, 400.0)  # downwards: s > 0 on the left in image coordinates
    assert geometry.side(a, b, (50.0, 200.0)) > 0
    assert geometry.side(a, b, (150.0, 200.0)) < 0
    assert geometry.cross_segments(a, b, (150.0, 200.0), (50.0, 200.0)) == 1  # s<0 -> s>0: in
    assert geometry.cross_segments(a, b, (50.0, 200.0), (150.0, 200.0)) == -1
    assert geometry.cross_segments(a, b, (150.0, 500.0), (50.0, 500.0)) == 0  # past the segment's end


def test_a_walk_across_counts_once_in_its_direction():
    line = _line([[300, 0], [300, 480]])  # s < 0 right of x=300
    assert _walk(line, range(400, 200, -5)) == ["in"]  # right to left: s<0 -> s>0
    assert _walk(line, range(200, 400, 5), track_id=2) == ["out"]
    assert line.snapshot()["in"] == 1 and line.snapshot()["out"] == 1
    assert line.snapshot()["by_label"] == {"person": {"in": 1, "out": 1}}


def test_the_count_waits_until_the_point_is_the_margin_past_the_line():
    line = _line([[300, 0], [300, 480]])
    assert margin_px(BOX_H) == 10.0
    assert _walk(line, [310, 305, 299, 295, 291]) == []  # 9 px past: not yet
    assert _walk(line, [289]) == ["in"]


@pytest.mark.parametrize("amplitude", [2.0, 5.0, 9.0])
def test_jitter_around_the_line_never_counts(amplitude):
    line = _line([[300, 0], [300, 480]])
    rng = np.random.default_rng(1)
    xs = 300 + rng.uniform(-amplitude, amplitude, 2000)
    assert _walk(line, xs) == []
    # Standing still near the line, then jitter, then back to the side it came from.
    assert _walk(line, [*range(340, 300, -4), *xs[:50], *range(300, 350, 5)], track_id=2) == []
    assert line.snapshot()["in"] == line.snapshot()["out"] == 0


def test_a_track_counts_at_most_once_per_direction():
    line = _line([[300, 0], [300, 480]])
    back_and_forth = [*range(400, 200, -10), *range(200, 400, 10)] * 3
    assert _walk(line, back_and_forth) == ["in", "out"]


def test_going_round_the_end_of_the_line_is_no_crossing():
    line = _line([[300, 100], [300, 300]])
    path = [(350, 200), (350, 350), (250, 350), (250, 200)]  # below the line's end
    out = [line.update(1, (float(x), float(y)), BOX_H) for x, y in path]
    assert out == [None] * 4


def test_a_polyline_counts_one_crossing_through_its_joint():
    line = _line([[200, 100], [300, 200], [200, 300]])  # a "<" shape pointing right
    out = [line.update(1, (float(x), 200.0), BOX_H) for x in range(360, 150, -10)]
    assert [d for d in out if d] == ["in"]  # through the joint at (300, 200): one crossing


def test_fractions_scale_to_the_frame():
    assert geometry.to_pixels([[0.5, 0.25], [1, 1]], 640, 480).tolist() == [[320, 120], [640, 480]]
    assert geometry.to_pixels([[320, 120], [1, 1]], 640, 480).tolist() == [[320, 120], [1, 1]]


def test_anchor_points():
    box = [10, 20, 30, 60]
    assert geometry.anchor_point(box) == (20, 60)
    assert geometry.anchor_point(box, "center") == (20, 40)
    assert geometry.anchor_point(box, "top_center") == (20, 20)


def _zone(**kw) -> ZoneWatcher:
    cfg = ZoneConfig(name="z", points=[[100, 100], [300, 100], [300, 300], [100, 300]], **kw)
    return ZoneWatcher(cfg, geometry.to_pixels(cfg.points, 640, 480))


def _visit(zone: ZoneWatcher, xs, y=200.0, t0=0.0, dt=0.1, track_id=1) -> list[tuple[str, float | None]]:
    out = []
    for i, x in enumerate(xs):
        t = t0 + i * dt
        for action, v in zone.update(track_id, t, 1000 + t, i, (float(x), y), BOX_H, "person", None, None):
            out.append((action, None if action == "enter" else round(v.dwell(), 3)))
    return out


def test_zone_enter_exit_and_dwell():
    zone = _zone()
    xs = list(range(50, 360, 10))  # 5 px a step, inside from x=105 to 295
    events = _visit(zone, xs)
    assert [a for a, _ in events] == ["enter", "exit"]
    enter_i, exit_i = xs.index(110), xs.index(310)  # half the margin (5 px) past the edge
    assert events[1][1] == pytest.approx((exit_i - enter_i) * 0.1)
    s = zone.snapshot()
    assert (s["entered"], s["exited"], s["occupancy"], s["max_occupancy"]) == (1, 1, 0, 1)
    assert s["mean_dwell_s"] == pytest.approx((exit_i - enter_i) * 0.1)


def test_a_box_on_the_zone_edge_does_not_flicker():
    zone = _zone()
    rng = np.random.default_rng(2)
    xs = 100 + rng.uniform(-4.9, 4.9, 500)  # within half the margin of the edge, either side
    assert [a for a, _ in _visit(zone, [150, *xs])] == ["enter"]  # enters once, stays
    assert [a for a, _ in _visit(zone, [50, *xs], track_id=2)] == []  # outside: never enters


def test_loiter_once_per_visit_and_a_track_that_ends_inside_exits():
    zone = _zone(loiter_s=2.0)
    events = _visit(zone, [200] * 50)  # 4.9 s inside
    assert events == [("enter", None), ("loiter", 2.0)]
    v = zone.end(1)
    assert v is not None and v.dwell() == pytest.approx(4.9)
    assert zone.snapshot()["loiter"] == 1 and zone.snapshot()["occupancy"] == 0
    assert zone.end(1) is None


def test_self_crossing_and_convexity():
    assert geometry.self_crossing([[0, 0], [1, 1], [1, 0], [0, 1]]) == (0, 2)
    assert geometry.self_crossing([[0, 0], [1, 0], [1, 1], [0, 1]]) is None
    assert geometry.self_crossing([[0, 0], [2, 0], [1, 0], [1, 1]]) is not None  # folds back on itself
    assert geometry.is_convex([[0, 0], [1, 0], [1, 1], [0, 1]])
    assert not geometry.is_convex([[0, 0], [1, 0], [0.2, 0.2], [0, 1]])
    assert geometry.collinear_triple([[0, 0], [1, 1], [2, 2.00001], [0, 1]]) == (0, 1, 2)
    assert geometry.heading_deg(1, 0) == 0 and geometry.heading_deg(0, 1) == 90
    assert math.isclose(geometry.heading_deg(-1, -1), 225)
