"""Tracker behaviour: ids, confirmation, ending in seconds, low-score association, re-finding
lost tracks, guards, snapshots."""
from __future__ import annotations

import numpy as np
import pytest

from appliance.track.sort import Sort, Track, iou_matrix

FRAME = 1 / 25  # Sort's default frame_s: updates without t are 1/25 s apart


def box(cx: float, cy: float, w: float = 40.0, h: float = 80.0) -> list[float]:
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def dets(*boxes: list[float]) -> np.ndarray:
    return np.array(boxes, dtype=np.float64).reshape(-1, 4)


def ids(tracks: list[Track]) -> list[int]:
    return sorted(t.id for t in tracks)


def confirmed_tracker(max_age: int = 1, min_hits: int = 3, **kwargs) -> tuple[Sort, int]:
    """A tracker with one confirmed track at (100, 100); returns it and the id."""
    tracker = Sort(max_age_s=max_age * FRAME, min_hits=min_hits, **kwargs)
    for _ in range(min_hits):
        out = tracker.update(dets(box(100, 100)))
    assert len(out.tracks) == 1
    return tracker, out.tracks[0].id


def test_two_linear_movers_keep_their_ids():
    tracker = Sort(max_age_s=1 * FRAME, min_hits=3)
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
    tracker = Sort(max_age_s=1 * FRAME, min_hits=3)
    tracker.update(dets(box(100, 100)))
    tracker.update(dets(box(100, 100)))
    for _ in range(3):
        out = tracker.update(dets())
        assert out.ended == [] and out.tracks == []
    assert tracker.live == []


def test_min_hits_gating():
    tracker = Sort(max_age_s=1 * FRAME, min_hits=3)
    reported = [ids(tracker.update(dets(box(100, 100))).tracks) for _ in range(4)]
    assert reported == [[], [], [1], [1]]
    assert tracker.live[0].hits == 4


def test_min_hits_needs_consecutive_hits():
    tracker = Sort(max_age_s=2 * FRAME, min_hits=3)
    tracker.update(dets(box(100, 100)))
    tracker.update(dets(box(100, 100)))
    tracker.update(dets())  # the streak breaks
    assert tracker.update(dets(box(100, 100))).tracks == []
    assert tracker.update(dets(box(100, 100))).tracks == []
    assert ids(tracker.update(dets(box(100, 100))).tracks) == [2]  # a miss on probation ends it: a new id starts over


def test_report_warmup_reports_the_first_frames():
    tracker = Sort(max_age_s=1 * FRAME, min_hits=3, report_warmup=True)
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
    tracker._filters.x[0][:] = np.nan  # as if the filter had blown up (row 0: the only target)
    out = tracker.update(dets(box(500, 500)))
    assert ids(out.ended) == [tid]
    assert [t.id for t in tracker.live] == [tid + 1]
    assert np.isfinite(tracker.live[0].xyxy).all()


def test_shrinking_box_never_gets_a_negative_area():
    tracker = Sort(max_age_s=5 * FRAME, min_hits=1)
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
    tracker = Sort(max_age_s=3 * FRAME, min_hits=1)
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
    for kwargs in ({"max_age_s": -1}, {"max_age_s": float("nan")}, {"min_hits": -1}, {"iou_threshold": 1.5}):
        with pytest.raises(ValueError):
            Sort(**kwargs)


def test_iou_matrix():
    a = dets([0, 0, 10, 10], [5, 5, 15, 15], [20, 20, 20, 30])
    iou = iou_matrix(a, a[:2])
    assert iou.shape == (3, 2)
    assert iou[0, 0] == 1.0 and iou[0, 1] == pytest.approx(25 / 175)
    assert (iou[2] == 0).all()  # no area: 0, not nan


def test_bad_times_and_thresholds():
    with pytest.raises(ValueError, match="low_threshold"):
        Sort(high_threshold=0.3, low_threshold=0.5)
    with pytest.raises(ValueError, match="frame_s"):
        Sort(frame_s=0)
    with pytest.raises(ValueError, match="finite"):
        Sort().update(dets(box(1, 1)), t=float("nan"))


# --- lifetimes in seconds --------------------------------------------------------------


def lifetime(fps: float, gap_s: float, max_age_s: float = 0.5) -> tuple[list[int], int]:
    """A walker seen for 1 s, unseen for ``gap_s``, then seen for 1 s, at ``fps`` with
    injected times: (ids reported in the second second, tracks ended in the gap)."""
    tracker = Sort(max_age_s=max_age_s, min_hits=3)
    ended = 0
    reported: set[int] = set()
    n = round(fps * (2 + gap_s))
    for i in range(n):
        t = 100.0 + i / fps  # any origin
        seen = t < 101.0 or t >= 101.0 + gap_s - 1e-9
        out = tracker.update(dets(box(50 + 40 * (t - 100), 100)) if seen else dets(), t=t)
        ended += len(out.ended)
        if t >= 101.0 + gap_s:
            reported.update(t.id for t in out.tracks)
    return sorted(reported), ended


@pytest.mark.parametrize("fps", [10, 30])
def test_lifetimes_are_seconds_whatever_the_frame_rate(fps: float):
    # Gone 0.4 s: within max_age_s, the same id goes on, at 4 frames or 12.
    assert lifetime(fps, 0.4) == ([1], 0)
    # Gone 0.7 s: the track ended (once) and the walker comes back as a new one.
    assert lifetime(fps, 0.7) == ([2], 1)


def test_variable_stride_predicts_over_the_real_interval():
    # Moving 100 px/s, detected at uneven intervals (a varying detection stride): the
    # predicted box must be where the walker is now, not one "frame" further on.
    tracker = Sort(max_age_s=1.0, min_hits=1)
    for t in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5):
        tracker.update(dets(box(100 + 100 * t, 100)), t=t)
    for t in (0.6, 0.9, 1.0, 1.5):
        out = tracker.update(dets(box(100 + 100 * t, 100)), t=t)
        assert ids(out.tracks) == [1]
        assert out.tracks[0].xyxy[0] == pytest.approx(box(100 + 100 * t, 100)[0], abs=2.0)
    out = tracker.update(dets(), t=1.8)  # and lost_s counts seconds
    assert tracker.live[0].lost_s == pytest.approx(0.3)


def test_time_never_runs_backwards():
    tracker, tid = confirmed_tracker(max_age=2)
    out = tracker.update(dets(box(100, 100)), t=-5.0)  # earlier than the last update
    assert ids(out.tracks) == [tid]


# --- low-score detections (ByteTrack) ---------------------------------------------------


def test_low_score_detections_keep_a_track_through_a_dip():
    tracker = Sort(max_age_s=0.0, min_hits=3, high_threshold=0.5, low_threshold=0.1)
    scores = [0.9, 0.9, 0.9, 0.3, 0.2, 0.3, 0.9]  # occluded for three frames
    reported, shown = [], []
    for f, s in enumerate(scores):
        out = tracker.update(dets(box(100 + 3 * f, 100)), score=np.array([s * 1.01]))
        reported.append(ids(out.tracks))
        shown += [t.score for t in out.tracks]
    assert reported == [[], [], [1], [1], [1], [1], [1]]  # max_age_s 0: no miss allowed
    # A low score never shows: the track keeps its last high-score detection's.
    assert shown == pytest.approx([0.909] * 5)
    assert tracker.live[0].hits == 7


def test_low_score_detections_never_start_a_track():
    tracker = Sort(max_age_s=1.0, min_hits=1, high_threshold=0.5, low_threshold=0.1)
    for _ in range(10):
        out = tracker.update(dets(box(100, 100), box(300, 100)), score=np.array([0.4, 0.05]))
        assert out.tracks == [] and tracker.live == []
    # A low-score detection does not keep a track that was lost either.
    tracker, tid = confirmed_tracker(max_age=10, high_threshold=0.5, low_threshold=0.1)
    tracker.update(dets())
    out = tracker.update(dets(box(100, 100)), score=np.array([0.3]))
    assert out.tracks == []
    assert ids(tracker.update(dets(box(100, 100)), score=np.array([0.9])).tracks) == [tid]


def test_below_low_threshold_is_not_seen():
    tracker, tid = confirmed_tracker(max_age=0, high_threshold=0.5, low_threshold=0.2)
    out = tracker.update(dets(box(100, 100)), score=np.array([0.1]))
    assert out.tracks == [] and ids(out.ended) == [tid]


# --- re-association of lost tracks ------------------------------------------------------


def test_lost_track_is_found_again_under_its_old_id():
    # Two walkers; one is hidden for 0.6 s while it keeps walking, and comes back where
    # its motion said it would be: same id, no end, and the velocity it walked.
    tracker = Sort(max_age_s=1.0, min_hits=3)
    first = {}
    for f in range(60):
        t = f / 25
        a, b = box(100 + 60 * t, 100), box(500, 300)
        hidden = 20 <= f < 35
        out = tracker.update(dets(b) if hidden else dets(a, b), t=t)
        assert out.ended == []
        for tr in out.tracks:
            side = "a" if tr.xyxy[1] < 200 else "b"
            first.setdefault(side, tr.id)
            assert tr.id == first[side]
        if f == 35:
            (found,) = [tr for tr in out.tracks if tr.id == first["a"]]
            assert found.hit_streak == 1 and found.hits == 21
    row = next(i for i, t in enumerate(tracker._targets) if t.id == first["a"])
    x = tracker._filters.x[row]
    assert x[4, 0] == pytest.approx(60.0, abs=5.0)  # px/s


def test_crossing_walkers_keep_their_ids():
    # Two walkers cross head on, their boxes overlapping for about half a second: the
    # predicted boxes carry each id through the crossing to the walker it started on.
    tracker = Sort(max_age_s=1.0, min_hits=3)
    first: dict[str, int] = {}
    for f in range(75):
        t = f / 25
        right, left = box(100 + 120 * t, 200), box(460 - 120 * t, 210)
        out = tracker.update(dets(right, left), t=t)
        assert out.ended == []
        for tr in out.tracks:
            cx = 0.5 * (tr.xyxy[0] + tr.xyxy[2])
            side = "right" if abs(cx - (100 + 120 * t)) < abs(cx - (460 - 120 * t)) else "left"
            first.setdefault(side, tr.id)
            assert tr.id == first[side], f"frame {f}"
    assert len(first) == 2 and first["right"] != first["left"]


def test_walker_passing_a_bystander_keeps_to_the_walker():
    # A walker passes close by a person standing still, both detected throughout: the
    # walker's track follows the walker on, it does not stop at the bystander.
    tracker = Sort(max_age_s=1.0, min_hits=3)
    walker_id = None
    for f in range(50):
        t = f / 25
        walker, bystander = box(200 + 100 * t, 200), box(260, 190, w=30, h=70)
        out = tracker.update(dets(walker, bystander), t=t)
        for tr in out.tracks:
            is_walker = np.allclose(tr.xyxy, walker, atol=5.0)
            assert is_walker or np.allclose(tr.xyxy, bystander, atol=5.0), f"frame {f}"
            if is_walker:
                walker_id = walker_id or tr.id
            assert (tr.id == walker_id) == is_walker, f"frame {f}"
    (last,) = [tr for tr in tracker.live if tr.id == walker_id]
    assert 0.5 * (last.xyxy[0] + last.xyxy[2]) == pytest.approx(200 + 100 * 49 / 25, abs=5.0)


# --- degenerate input --------------------------------------------------------------------


def test_degenerate_scores_and_times():
    tracker = Sort(min_hits=1, high_threshold=0.5, low_threshold=0.1)
    out = tracker.update(dets(box(100, 100), box(300, 100)), score=np.array([np.nan, 0.9]))
    assert len(out.tracks) == 1  # a nan score is dropped with its box
    for _ in range(3):
        out = tracker.update(dets(box(300, 100)), score=np.array([0.9]), t=0.0)  # dt 0
        assert ids(out.tracks) == [1] and np.isfinite(out.tracks[0].xyxy).all()
