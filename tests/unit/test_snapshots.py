"""Snapshots of the tracks worth a look: which crop is best (on real frames), which tracks
keep one (the policy), the writer's quota on a real folder, and the processor's hand-over
to the lifecycle (`attributes[track_id]["snapshot"]`)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from prometheus_client import REGISTRY

from appliance import paths
from appliance.capture.frame import Frame
from appliance.config import Config, from_dict
from appliance.config.snapshots import SnapshotsConfig
from appliance.detect.types import Detections
from appliance.events import snapshots as snap
from appliance.events.snapshots import (
    Snapshots,
    SnapshotWriter,
    crop_score,
    cut_fraction,
    decide,
    file_name,
    is_snapshot_name,
    sharpness,
)
from appliance.result import FrameResult
from appliance.stage import END
from appliance.track.sort import Track
from appliance.track.stage import BuildContext

LABELS = ["person", "car"]
PERSON, CAR = 0, 1


@pytest.fixture(scope="module")
def frames(assets_dir) -> list[np.ndarray]:
    """Three real frames of the demo video (a street with pedestrians), 576x768."""
    cap = cv2.VideoCapture(str(paths.assets_dir() / "vtest.avi"))
    out = []
    for i in range(61):
        ok, f = cap.read()
        assert ok, f"vtest.avi: frame {i}"
        if i in (0, 30, 60):
            out.append(f)
    cap.release()
    return out


def _metric(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels or None) or 0.0


def _score(image: np.ndarray, box) -> float:
    """crop_score of a box on an image, as the processor computes it."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = box
    vx1, vy1, vx2, vy2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
    return crop_score((vx2 - vx1) * (vy2 - vy1), sharpness(image[vy1:vy2, vx1:vx2]), cut_fraction(box, w, h))


# -- the best crop ---------------------------------------------------------------------

def test_a_bigger_crop_of_the_same_scene_wins(frames):
    for f in frames:
        half = cv2.resize(f, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
        big, small = _score(f, (300, 100, 380, 260)), _score(half, (150, 50, 190, 130))
        assert big > small > 0


def test_a_sharper_crop_wins(frames):
    for f in frames:
        blurred = cv2.GaussianBlur(f, (0, 0), 2.0)
        motion = cv2.filter2D(f, -1, np.full((1, 9), 1 / 9, np.float32))  # horizontal motion blur
        box = (300, 100, 380, 260)
        assert sharpness(f[100:260, 300:380]) > sharpness(motion[100:260, 300:380]) > 0
        assert _score(f, box) > _score(motion, box) and _score(f, box) > _score(blurred, box)


def test_a_crop_less_cut_by_the_frame_edge_wins(frames):
    w = frames[0].shape[1]
    for f in frames:
        whole = _score(f, (20, 100, 100, 260))
        cut_left = _score(f, (-30, 100, 50, 260))  # 30 of 80 columns outside the frame
        cut_more = _score(f, (-60, 100, 20, 260))
        cut_right = _score(f, (w - 50, 100, w + 30, 260))
        assert whole > cut_left > cut_more and whole > cut_right
    assert cut_fraction((-30, 0, 50, 10), w, 576) == pytest.approx(30 / 80)
    assert cut_fraction((10, 10, 50, 50), w, 576) == 0.0


def test_each_term_alone_decides():
    assert crop_score(400, 300, 0) > crop_score(100, 300, 0)
    assert crop_score(400, 300, 0) > crop_score(400, 30, 0)
    assert crop_score(400, 300, 0) > crop_score(400, 300, 0.2)
    assert crop_score(0, 300, 0) == crop_score(400, 0, 0) == crop_score(400, 300, 1.0) == 0.0


# -- the policy ------------------------------------------------------------------------

CLASSIFIED = frozenset({"car", "truck"})


@pytest.mark.parametrize("policy, best, label, classification, expected", [
    ("low_confidence", 0.45, "person", None, "low_detection"),
    ("low_confidence", 0.59, "car", {"label": "suv", "score": 0.9}, "low_detection"),
    ("low_confidence", 0.60, "person", None, None),  # at the threshold: not low
    ("low_confidence", 0.90, "person", None, None),  # not a classified class: undecided is normal
    ("low_confidence", 0.90, "car", {"label": "suv", "score": 0.42}, "low_classification"),
    ("low_confidence", 0.90, "car", {"label": "suv", "score": 0.80}, None),
    ("low_confidence", 0.90, "car", None, "undecided"),
    ("all", 0.90, "person", None, "all"),
    ("all", 0.90, "car", None, "undecided"),  # the specific reason when there is one
    ("all", 0.30, "person", None, "low_detection"),
    ("none", 0.30, "car", None, None),
])
def test_policy_decisions(policy, best, label, classification, expected):
    assert decide(policy, best, label, classification, CLASSIFIED, 0.6, 0.5) == expected


def test_without_a_running_classifier_nothing_counts_as_undecided():
    assert decide("low_confidence", 0.9, "car", None, frozenset(), 0.6, 0.5) is None


def test_defaults_and_limits():
    c = Config().snapshots
    assert (c.policy, c.detection_below, c.classification_below, c.max_mb, c.quality) == \
        ("low_confidence", 0.6, 0.5, 100.0, 85)
    cfg = from_dict({"snapshots": {"policy": "all", "max_mb": 5, "quality": 70}})
    assert cfg.snapshots.policy == "all" and cfg.snapshots.max_mb == 5
    with pytest.raises(Exception, match="snapshots.policy"):
        from_dict({"snapshots": {"policy": "some"}})


def test_file_names_are_plain():
    assert file_name("north gate/2", 311) == "north_gate_2-311.jpg"
    assert is_snapshot_name("north-311.jpg")
    for bad in ("../x.jpg", "a/b.jpg", ".hidden.jpg", "x.png", "", None, 3):
        assert not is_snapshot_name(bad)


# -- the writer and its quota ----------------------------------------------------------

def _jpeg_crop(seed: int, size=(120, 80)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)


def _drain(w: SnapshotWriter) -> None:
    w.put(END)
    assert w.join(10)


def test_quota_removes_the_oldest_first_and_counts_each(tmp_path):
    folder = tmp_path / "snapshots"
    folder.mkdir()
    # What an earlier run left: three files, oldest first by time; and a broken write.
    t = time.time() - 100
    for i, name in enumerate(("old-1.jpg", "old-2.jpg", "old-3.jpg")):
        (folder / name).write_bytes(b"x" * 10_000)
        os.utime(folder / name, (t + i, t + i))
    (folder / ".cam-9.jpg.tmp").write_bytes(b"half")

    removed0 = _metric("appliance_snapshots_removed_total")
    saved0 = _metric("appliance_snapshots_saved_total", reason="low_detection")
    w = SnapshotWriter(folder, max_bytes=25_000, quality=90)
    # Over the quota at start (30 kB of 25 kB): the oldest went, the broken write too.
    assert sorted(p.name for p in folder.iterdir()) == ["old-2.jpg", "old-3.jpg"]
    assert w.removed == 1 and w.bytes == 20_000
    w.start()
    for i in range(4):
        assert w.offer(f"cam-{i}.jpg", _jpeg_crop(i), "low_detection")
    _drain(w)
    left = sorted(folder.iterdir(), key=lambda p: (p.stat().st_mtime_ns, p.name))
    assert sum(p.stat().st_size for p in left) <= 25_000 == w.max_bytes
    names = [p.name for p in left]
    # The old ones went first, then the new ones in the order they were written.
    assert 1 <= len(names) < 4 and names == [f"cam-{i}.jpg" for i in range(4 - len(names), 4)]
    gone = 3 + 4 - len(names)
    assert w.removed == gone
    assert _metric("appliance_snapshots_removed_total") - removed0 == gone
    assert _metric("appliance_snapshots_saved_total", reason="low_detection") - saved0 == 4
    assert w.bytes == sum(p.stat().st_size for p in left)
    assert cv2.imread(str(left[-1])).shape == (120, 80, 3)  # a real JPEG


def test_a_full_queue_is_counted_and_never_blocks(tmp_path):
    w = SnapshotWriter(tmp_path / "s", max_bytes=10**6, maxsize=2)  # not started: nothing drains
    before = _metric("appliance_snapshots_failed_total", reason="queue")
    assert w.offer("a-1.jpg", _jpeg_crop(1), "all") and w.offer("a-2.jpg", _jpeg_crop(2), "all")
    assert not w.offer("a-3.jpg", _jpeg_crop(3), "all")
    assert w.failed["queue"] == 1
    assert _metric("appliance_snapshots_failed_total", reason="queue") - before == 1


# -- the processor ---------------------------------------------------------------------

def _track(tid: int, box, score: float, cls: int = PERSON) -> Track:
    return Track(id=tid, xyxy=np.array(box, float), score=score, class_id=cls, hits=5, hit_streak=5, age=5,
                 time_since_update=0, confirmed=True)


def _result(image: np.ndarray, seq: int, tracks=(), ended=(), attributes=None, final=False) -> FrameResult:
    frame = Frame(image, "north", seq, time.monotonic(), time.time())
    return FrameResult(frame, Detections.empty(), tracks=list(tracks), ended=list(ended), final=final,
                       attributes=attributes or {})


@pytest.fixture
def writer(tmp_path):
    w = SnapshotWriter(tmp_path / "snapshots", max_bytes=10**7)
    w.start()
    yield w
    if w.alive:
        _drain(w)


def test_the_processor_keeps_the_best_crop_and_names_it_at_the_end(frames, writer):
    f = frames[0]
    p = Snapshots("north", LABELS, writer, SnapshotsConfig(policy="low_confidence"))
    small, big, cut = (300, 100, 340, 180), (300, 100, 380, 260), (-40, 100, 40, 260)
    p.process(_result(f, 1, [_track(7, small, 0.55)]))
    p.process(_result(f, 2, [_track(7, big, 0.58)]))
    p.process(_result(cv2.GaussianBlur(f, (0, 0), 3.0), 3, [_track(7, big, 0.52)]))  # same size, blurred
    p.process(_result(f, 4, [_track(7, cut, 0.57)]))  # as large, but half outside
    r = _result(f, 5, ended=[_track(7, cut, 0.57)])
    p.process(r)
    assert r.attributes[7]["snapshot"] == "north-7.jpg"
    assert p.live == 0
    _drain(writer)
    saved = cv2.imread(str(writer.folder / "north-7.jpg"))
    # The big, sharp, whole crop (80x160) with its 10 % margin each side: 96x192.
    assert saved.shape == (192, 96, 3)
    want = f[84:276, 292:388]
    assert np.abs(saved.astype(int) - want.astype(int)).mean() < 8  # JPEG, not a blurred one


def test_the_processor_follows_the_policy(frames, writer):
    f = frames[1]
    cfg = SnapshotsConfig(policy="low_confidence", detection_below=0.6, classification_below=0.5)
    p = Snapshots("north", LABELS, writer, cfg, classified={"car"})
    box = (200, 150, 300, 250)
    tracks = {1: (0.9, PERSON), 2: (0.5, PERSON), 3: (0.9, CAR), 4: (0.9, CAR), 5: (0.9, CAR)}
    # Read before processing: the writer's thread may save as soon as a crop is offered.
    before = {k: _metric("appliance_snapshots_saved_total", reason=k) for k in snap.REASONS}
    p.process(_result(f, 1, [_track(t, box, s, c) for t, (s, c) in tracks.items()]))
    # The classifier decided 4 (sure) and 5 (unsure); 3 stays undecided.
    attrs = {4: {"classification": {"label": "suv", "score": 0.93}},
             5: {"classification": {"label": "van", "score": 0.31}}}
    p.process(_result(f, 2, [_track(t, box, s, c) for t, (s, c) in tracks.items()], attributes=attrs))
    assert p._live[1].crop is None and p._live[4].crop is None  # can no longer qualify: no copy kept
    r = _result(f, 3, ended=[_track(t, box, s, c) for t, (s, c) in tracks.items()], final=True)
    p.process(r)
    got = {t: a.get("snapshot") for t, a in r.attributes.items() if "snapshot" in a}
    assert got == {2: "north-2.jpg", 3: "north-3.jpg", 5: "north-5.jpg"}
    _drain(writer)
    assert sorted(x.name for x in writer.folder.iterdir()) == ["north-2.jpg", "north-3.jpg", "north-5.jpg"]
    assert writer.saved == {"low_detection": 1, "undecided": 1, "low_classification": 1}
    for k in ("low_detection", "undecided", "low_classification"):
        assert _metric("appliance_snapshots_saved_total", reason=k) - before[k] == 1


def test_policy_all_keeps_every_track_and_none_builds_nothing(frames, tmp_path, writer):
    p = Snapshots("north", LABELS, writer, SnapshotsConfig(policy="all"))
    p.process(_result(frames[2], 1, [_track(3, (10, 10, 90, 200), 0.97)]))
    r = _result(frames[2], 2, ended=[_track(3, (10, 10, 90, 200), 0.97)])
    p.process(r)
    assert r.attributes[3]["snapshot"] == "north-3.jpg"

    ctx = BuildContext(from_dict({"snapshots": {"policy": "none"}}), LABELS, tmp_path / "d", tmp_path)
    assert snap.build(ctx, ctx.cfg.cameras[0]) is None and "snapshots" not in ctx.stages


def test_build_shares_one_writer_and_sees_whether_a_classifier_runs(tmp_path):
    cfg = from_dict({"cameras": [{"id": "a", "source": "x.mp4"}, {"id": "b", "source": "y.mp4"}]})
    ctx = BuildContext(cfg, LABELS, tmp_path / "data", tmp_path)
    a, b = (snap.build(ctx, c) for c in cfg.cameras)
    assert a.writer is b.writer is ctx.stages["snapshots"]
    assert a.writer.folder == Path(tmp_path / "data" / "snapshots") and a.writer.max_bytes == 100 * 2**20
    assert a.classified == frozenset()  # classify's build did not run: no stage, nothing undecided
    ctx.stages["classify"] = object()  # the classifier's stage, loaded
    assert snap.build(ctx, cfg.cameras[0]).classified == frozenset(cfg.classify.classes)
    ctx.stages["classify"] = None  # enabled, but could not be loaded
    assert snap.build(ctx, cfg.cameras[0]).classified == frozenset()


def test_a_folder_that_cannot_be_used_leaves_the_appliance_running_without_snapshots(tmp_path):
    blocked = tmp_path / "data"
    blocked.mkdir()
    (blocked / "snapshots").write_text("a file where the folder should be")
    ctx = BuildContext(Config(), LABELS, blocked, tmp_path)
    assert snap.build(ctx, ctx.cfg.cameras[0]) is None
    assert ctx.notes["snapshots"]["state"] == "unavailable" and ctx.stages["snapshots"] is None
