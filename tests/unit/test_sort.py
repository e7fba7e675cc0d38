"""SORT tracker behaviour: ids, confirmation, ending, guards, snapshots."""
from __future__ import annotations

import numpy as np
import pytest

from appliance.track.sort import Sort, Track, iou_matrix


def box(cx: float, cy: float, w: float = 40.0, h: float = 80.0) -> list[float]:
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def dets(*boxes: list[float]) -> np.ndarray:
    return np.array(boxes, dtype=np.float64).reshape(-1, 4)


def ids(tracks: list[Track]) -> list[int]:
    return sorted(t.id for t in tracks)


def confirmed_tracker(max_age: int = 1, min_hits: int = 3) -> tuple[Sort, int]:
    """A tracker with one confirmed track at (100, 100); returns it and the id."""
    tracker = Sort(max_age=max_age, min_hits=min_hits)
    for _ in range(min_hits):
        out = tracker.update(dets(box(100, 100)))
    assert len(out.tracks) == 1
    return tracker, out.tracks[0].id


def test_two_linear_movers_keep_their_ids():
    tracker = Sort(max_age=1, min_hits=3)
    seen: dict[str, set[int]] = {"right": set(), "left": set()}
    for f in range(30):
        # One walks right along y=100, the other left along y=300: no overlap.
        a, b = box(50 + 5 * f, 100), box(400 - 7 * f, 300)
        out = tracker.update(dets(a, b), score=np.array([0.9, 0.8]))
        if f < 2:
            assert out.tracks == []  # still on probation
            continue
        assert len(out.tracks) == 2
        for t in out.tracks:
            side = "right" if t.xyxy[1] < 200 else "left"
            seen[side].add(t.id)
            truth = a if side == "right" else b
            assert np.allclose(t.xyxy, truth, atol=1.0)
            assert t.time_since_update == 0 and t.confirmed
    assert seen == {"right": {1}, "left": {2}}
    assert [t.hits for t in tracker.live] == [30, 30]


def test_missed_track_ends_once_after_max_age():
    tracker, tid = confirmed_tracker(max_age=2)
    ended_at = []
    for f in range(6):
        out = tracker.update(dets())
        assert out.tracks == []
        if out.ended:
            assert ids(out.ended) == [tid]
            ended_at.append(f)
    assert ended_at == [2]  # missed 3 frames > max_age=2; ended exactly once
    assert tracker.live == []
    assert tracker.flush() == []


def test_track_within_max_age_is_kept_and_reported_again():
    tracker, tid = confirmed_tracker(max_age=2)
    tracker.update(dets())
    tracker.update(dets())
    out = tracker.update(dets(box(100, 100)))
    assert ids(out.tracks) == [tid]  # confirmed is sticky: reported on re-match
    assert out.tracks[0].hit_streak == 1
    assert out.ended == []


def test_unconfirmed_death_is_not_reported():
    tracker = Sort(max_age=1, min_hits=3)
    tracker.update(dets(box(100, 100)))
    tracker.update(dets(box(100, 100)))
    for _ in range(3):
        out = tracker.update(dets())
        assert out.ended == [] and out.tracks == []
    assert tracker.live == []


def test_min_hits_gating():
    tracker = Sort(max_age=1, min_hits=3)
    reported = [ids(tracker.update(dets(box(100, 100))).tracks) for _ in range(4)]
    assert reported == [[], [], [1], [1]]
    assert tracker.live[0].hits == 4


def test_min_hits_needs_consecutive_hits():
    tracker = Sort(max_age=2, min_hits=3)
    tracker.update(dets(box(100, 100)))
    tracker.update(dets(box(100, 100)))
    tracker.update(dets())  # the streak breaks
    assert tracker.update(dets(box(100, 100))).tracks == []
    assert tracker.update(dets(box(100, 100))).tracks == []
    assert ids(tracker.update(dets(box(100, 100))).tracks) == [1]


def test_report_warmup_reports_the_first_frames():
    tracker = Sort(max_age=1, min_hits=3, report_warmup=True)
    assert ids(tracker.update(dets(box(100, 100))).tracks) == [1]
    for _ in range(3):
        tracker.update(dets(box(100, 100)))
    # A track born after the warm-up waits for its min_hits as usual.
    out = tracker.update(dets(box(100, 100), box(400, 100)))
    assert ids(out.tracks) == [1]


def test_flush_ends_live_confirmed_tracks_and_resets():
    tracker, tid = confirmed_tracker()
    tracker.update(dets(box(100, 100), box(400, 100)))  # a second, unconfirmed track
    assert len(tracker.live) == 2
    ended = tracker.flush()
    assert ids(ended) == [tid] and all(t.confirmed for t in ended)
    assert tracker.live == [] and tracker.flush() == []
    out = tracker.update(dets(box(100, 100)))
    assert out.tracks == [] and out.ended == []
    assert tracker.live[0].id == 3  # ids stay unique for the instance's lifetime


def test_ids_count_per_instance():
    a, b = Sort(min_hits=1), Sort(min_hits=1)
    assert ids(a.update(dets(box(100, 100), box(300, 100))).tracks) == [1, 2]
    assert ids(b.update(dets(box(100, 100))).tracks) == [1]


@pytest.mark.parametrize(
    "empty", [np.zeros((0, 4)), np.zeros((0,)), [], np.zeros((0, 4), np.float32)]
)
def test_empty_detections(empty):
    tracker = Sort()
    assert tracker.update(empty).tracks == []
    tracker, tid = confirmed_tracker()
    out = tracker.update(empty, score=np.zeros(0), class_id=np.zeros(0, np.int32))
    assert out.tracks == [] and len(tracker.live) == 1


def test_degenerate_detections_are_ignored():
    tracker = Sort(min_hits=1)
    bad = dets([10, 10, 10, 50], [10, 10, 50, 10], [50, 50, 10, 10],
               [np.nan, 0, 10, 10], [0, 0, np.inf, 10], [-np.inf, 0, 10, 10])
    for _ in range(3):
        out = tracker.update(bad)
        assert out.tracks == [] and tracker.live == []
    out = tracker.update(np.vstack([bad, dets(box(100, 100))]),
                         score=np.arange(7) / 10, class_id=np.arange(7))
    assert len(out.tracks) == 1
    assert out.tracks[0].score == pytest.approx(0.6) and out.tracks[0].class_id == 6


def test_diverged_filter_is_dropped_and_ended():
    tracker, tid = confirmed_tracker()
    tracker._targets[0].kf.x[:] = np.nan  # as if the filter had blown up
    out = tracker.update(dets(box(500, 500)))
    assert ids(out.ended) == [tid]
    assert [t.id for t in tracker.live] == [tid + 1]
    assert np.isfinite(tracker.live[0].xyxy).all()


def test_shrinking_box_never_gets_a_negative_area():
    tracker = Sort(max_age=5, min_hits=1)
    for size in (200.0, 120.0, 60.0, 20.0, 4.0):
        # From the second frame on, the area's rate (about -25,000 px^2 a frame)
        # would predict a negative area.
        tracker.update(dets(box(100, 100, size, size)))
    for _ in range(5):
        tracker.update(dets())
        for t in tracker.live:
            assert np.isfinite(t.xyxy).all()
            assert t.xyxy[2] > t.xyxy[0] and t.xyxy[3] > t.xyxy[1]


def test_class_is_majority_vote():
    tracker = Sort(min_hits=1)
    for c in [1, 2, 2, 1, 2, 3]:
        out = tracker.update(dets(box(100, 100)), class_id=np.array([c]))
    assert out.tracks[0].class_id == 2
    tracker = Sort(min_hits=1)
    for c in [1, 2, 2, 1]:  # a tie keeps the current label
        out = tracker.update(dets(box(100, 100)), class_id=np.array([c]))
    assert out.tracks[0].class_id == 2


def test_score_is_last_matched_detection():
    tracker = Sort(min_hits=1)
    for s in (0.9, 0.5, 0.7):
        out = tracker.update(dets(box(100, 100)), score=np.array([s]))
    assert out.tracks[0].score == pytest.approx(0.7)
    assert tracker.update(dets(box(100, 100))).tracks[0].score == 1.0  # no scores: 1


def test_returned_tracks_are_snapshots():
    tracker = Sort(max_age=3, min_hits=1)
    first = tracker.update(dets(box(100, 100))).tracks[0]
    before = (first.xyxy.copy(), first.hits, first.age, first.time_since_update)
    live = tracker.live[0]
    for f in range(1, 5):
        tracker.update(dets(box(100 + 10 * f, 100)))
    tracker.update(dets())
    for t in (first, live):
        assert np.array_equal(t.xyxy, before[0])
        assert (t.hits, t.age, t.time_since_update) == before[1:]
    first.xyxy[:] = 0.0  # and a consumer writing into one does not reach the tracker
    assert tracker.live[0].xyxy[0] > 100


def test_bad_arguments():
    with pytest.raises(ValueError, match="shape"):
        Sort().update(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="scores"):
        Sort().update(dets(box(1, 1)), score=np.ones(2))
    for kwargs in ({"max_age": -1}, {"min_hits": -1}, {"iou_threshold": 1.5}):
        with pytest.raises(ValueError):
            Sort(**kwargs)


def test_iou_matrix():
    a = dets([0, 0, 10, 10], [5, 5, 15, 15], [20, 20, 20, 30])
    iou = iou_matrix(a, a[:2])
    assert iou.shape == (3, 2)
    assert iou[0, 0] == 1.0 and iou[0, 1] == pytest.approx(25 / 175)
    assert (iou[2] == 0).all()  # no area: 0, not nan
