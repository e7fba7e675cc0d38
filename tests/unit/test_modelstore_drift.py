"""Drift on real detections: the model's baseline on vtest.avi, then the same scene (no
drift) or another one (bikes.mp4: a different class mix and scores), and the metric."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from prometheus_client import REGISTRY

from appliance.capture.frame import Frame
from appliance.detect import load_detector
from appliance.detect.types import Detections
from appliance.modelstore.drift import DriftMonitor, DriftPolicy, js_distance
from appliance.result import FrameResult

MODEL = {"name": "ssd-mobilenet-v2-coco", "version": "2"}
POLICY = DriftPolicy(baseline_frames=40, window_frames=40, every_frames=10, threshold=0.3, min_detections=20)


def _detections(assets_dir, video: str, n: int, start: int = 0) -> list[Detections]:
    det = load_detector("ssd-mobilenet-v2", assets_dir, threshold=0.3, threads=1)
    cap = cv2.VideoCapture(str(assets_dir / video))
    cap.set(cv2.CAP_PROP_POS_FRAMES, start)
    out = []
    for _ in range(n):
        ok, img = cap.read()
        assert ok
        out.append(det.detect([img])[0])
    return out


@pytest.fixture(scope="module")
def scenes(assets_dir):
    return {"vtest": _detections(assets_dir, "vtest.avi", 120),
            "bikes": _detections(assets_dir, "bikes.mp4", 60)}


def _result(cam: str, seq: int, dets: Detections, model=MODEL) -> FrameResult:
    return FrameResult(Frame(np.zeros((4, 4, 3), np.uint8), cam, seq, 0.0, 0.0), dets, model=model)


def _gauge(cam: str) -> float | None:
    return REGISTRY.get_sample_value("appliance_model_drift", {"camera": cam, "model": "ssd-mobilenet-v2-coco@2"})


def test_same_scene_stays_quiet_another_scene_sends_one_drift_event(scenes):
    events = []
    mon = DriftMonitor(POLICY, state=lambda *a: events.append(a))
    for i, d in enumerate(scenes["vtest"]):
        mon.observe(_result("drift-a", i, d))
    quiet = mon.cameras["drift-a"].score
    assert quiet is not None and quiet < POLICY.threshold and not events
    assert _gauge("drift-a") == pytest.approx(quiet)
    for i, d in enumerate(scenes["bikes"]):
        mon.observe(_result("drift-a", 1000 + i, d))
    score = mon.cameras["drift-a"].score
    print(f"\ndrift: same scene {quiet:.3f}, bikes.mp4 after vtest.avi {score:.3f}")
    assert score >= POLICY.threshold and _gauge("drift-a") == pytest.approx(score)
    assert len(events) == 1  # once while it stays over; re-armed under threshold / 2
    kind, camera, state, previous, reason, detail = events[0]
    assert (kind, camera) == ("drift", "drift-a") and state.startswith("drift ")
    assert detail["model"] == "ssd-mobilenet-v2-coco@2" and detail["threshold"] == 0.3
    assert "baseline taken after ssd-mobilenet-v2-coco@2 started" in reason


def test_a_new_model_starts_a_new_baseline(scenes):
    mon = DriftMonitor(POLICY)
    for i, d in enumerate(scenes["vtest"][:60]):
        mon.observe(_result("drift-b", i, d))
    assert mon.cameras["drift-b"].score is not None
    other = {"name": "ssd-mobilenet-v2-coco", "version": "3"}
    mon.observe(_result("drift-b", 60, scenes["vtest"][60], model=other))
    cam = mon.cameras["drift-b"]
    assert cam.model == "ssd-mobilenet-v2-coco@3" and cam.baseline_n == 1 and cam.score is None
    assert _gauge("drift-b") is None  # the old model's series is gone


def test_js_distance_bounds():
    assert js_distance(np.array([1.0, 0]), np.array([0, 1.0])) == pytest.approx(1.0)
    assert js_distance(np.array([1.0, 2]), np.array([2.0, 4])) == pytest.approx(0.0, abs=1e-7)
    assert js_distance(np.zeros(2), np.array([1.0, 0])) == 0.0
