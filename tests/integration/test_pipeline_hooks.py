"""What the pipeline exposes to the services beside it: status, live view, metrics."""
from __future__ import annotations

import cv2
import numpy as np
from prometheus_client import REGISTRY

from appliance.config import Config
from appliance.pipeline import Pipeline


def _metric(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class _Recorder:
    name = "recorder"

    def __init__(self, pipeline: Pipeline):
        self.pipeline, self.calls = pipeline, []

    def status(self):
        return {"calls": len(self.calls)}

    def start(self):
        self.calls.append(("start", self.pipeline.running))

    def stop(self):
        self.calls.append(("stop", self.pipeline.writer.stored))


def test_status_live_view_metrics_and_services(data_dir):
    frames_before = _metric("appliance_frames_total", camera="demo")
    stored_before = _metric("appliance_events_stored_total")
    p = Pipeline(Config(), data_dir, fast=True, max_frames=80)
    assert p.live.jpeg("demo") is None  # nothing to show before the first frame
    svc = _Recorder(p)
    p.services.append(svc)
    p.run(stats_interval_s=60)

    status = p.status()
    cam = status["cameras"]["demo"]
    assert cam["frames"] == 80 and cam["dropped"] == 0 and cam["corrupt"] == 0
    assert 0 < cam["inference_ms_p50"] <= cam["inference_ms_p95"]
    assert status["model"]["name"] == "ssd-mobilenet-v2-coco" and status["model"]["backend"] == "litert"
    assert status["events_stored"] == p.writer.stored > 0
    assert status["running"] is False

    # Services start with the pipeline running and stop after every event is stored.
    assert svc.calls == [("start", True), ("stop", p.writer.stored)]

    jpeg = p.live.jpeg("demo")
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (576, 768, 3)
    assert p.live.jpeg("demo") is jpeg  # cached: a second viewer costs no encoding
    assert p.live.frame_seq("demo") == 79

    assert _metric("appliance_frames_total", camera="demo") - frames_before == 80
    assert _metric("appliance_events_stored_total") - stored_before == p.writer.stored
    assert _metric("appliance_inference_seconds_count", camera="demo") >= 80
    assert _metric("appliance_decode_seconds_count", camera="demo") >= 80


def test_live_view_draws_the_tracks(data_dir):
    p = Pipeline(Config(), data_dir, fast=True, max_frames=40)
    p.run(stats_interval_s=60)
    latest = p.live._latest["demo"]
    assert len(latest.tracks) > 0
    drawn = cv2.imdecode(np.frombuffer(p.live.jpeg("demo"), np.uint8), cv2.IMREAD_COLOR)
    plain = cv2.imdecode(cv2.imencode(".jpg", latest.frame.image)[1], cv2.IMREAD_COLOR)
    x1, y1, x2, y2 = (int(v) for v in latest.tracks[0].xyxy)
    # The box outline differs from the plain frame; far from any box the two agree.
    edge = np.abs(drawn[y1:y2, x1:x1 + 2].astype(int) - plain[y1:y2, x1:x1 + 2].astype(int)).mean()
    assert edge > 20


class HeadCount:
    """The processor of docs/architecture.md's example: one module's worth of code."""

    def __init__(self, camera_id: str):
        self.camera_id, self.people, self.frames = camera_id, 0, 0

    def process(self, r):
        self.frames += 1
        self.people = sum(1 for t in r.tracks if t.class_id == 0)
        for t in r.tracks:
            r.attributes.setdefault(t.id, {})["headcount"] = self.people


def test_a_new_track_processor_is_one_line_of_wiring(data_dir, monkeypatch):
    from appliance import pipeline

    made = []

    def build(ctx, camera):
        made.append(HeadCount(camera.id))
        return made[-1]

    monkeypatch.setattr(pipeline, "TRACK_PROCESSORS", (*pipeline.TRACK_PROCESSORS, build))
    p = Pipeline(Config(), data_dir, fast=True, max_frames=40)
    p.run(stats_interval_s=60)
    (hc,) = made
    assert hc.camera_id == "demo" and hc.frames == 40 + 1  # every frame, and the final one
    latest = p.live._latest["demo"]
    people = sum(1 for t in latest.tracks if t.class_id == 0)
    assert people > 0 and all(latest.attributes[t.id]["headcount"] == people for t in latest.tracks)
    assert p.status()["events_stored"] > 0  # the lifecycle processor still ran before it
