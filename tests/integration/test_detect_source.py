"""cameras[].detect_source against two real RTSP streams of one "camera" (GstRtspServer,
tests/rtsp_server.py): a 640x480 main stream and a 320x240 sub-stream.

The real capture (supervisor, FFmpeg), hub, detect stage and adaptive control run; the
controller and the detect stage share an injected clock, on which a frame's detection
costs its pixel count (so the main stream costs 4x the sub-stream) and frames arrive at
25 per second. The "detector" finds the test pattern's white ball by thresholding, on
the frame it is given, so its boxes are in that frame's pixels, as a model's would be.
"""
from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest

from appliance.capture import stage as capture
from appliance.capture.hub import FrameHub
from appliance.config import AdaptiveConfig
from appliance.config.cameras import CameraConfig
from appliance.control.adaptive import AdaptiveControl
from appliance.detect.stage import DetectStage
from appliance.detect.types import Detections
from tests.rtsp_server import start_rtsp_server, stop_rtsp_server

DEADLINE_S = 60.0  # guards against hangs only; nothing is timed
FPS = 25.0
MAIN, SUB = (640, 480), (320, 240)


class BallDetector:
    """Finds the bright ball of videotestsrc's `ball` pattern; advances the shared clock by
    `per_mpixel_s` for every million pixels it looks at."""

    def __init__(self, clock: list[float], per_mpixel_s: float):
        self.clock, self.per_mpixel_s = clock, per_mpixel_s
        self.raw: list[tuple[tuple[int, int], np.ndarray]] = []  # (w, h), box, per frame seen

    def detect(self, images):
        out = []
        for img in images:
            h, w = img.shape[:2]
            self.clock[0] += self.per_mpixel_s * w * h / 1e6
            ys, xs = np.nonzero(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) > 160)
            if len(xs) == 0:
                out.append(Detections.empty())
                self.raw.append(((w, h), np.zeros((0, 4), np.float32)))
                continue
            box = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)
            self.raw.append(((w, h), box))
            out.append(Detections(box, np.ones(1, np.float32), np.zeros(1, np.int32)))
        return out


class Results:
    def __init__(self):
        self.items = []

    def put(self, item):
        self.items.append(item)


class States:
    def __init__(self):
        self.items = []

    def state(self, *args):
        self.items.append(args)


@pytest.fixture
def streams():
    main, main_port = start_rtsp_server(size=f"{MAIN[0]}x{MAIN[1]}", fps=int(FPS))
    try:
        sub, sub_port = start_rtsp_server(size=f"{SUB[0]}x{SUB[1]}", fps=int(FPS))
    except Exception:
        stop_rtsp_server(main)
        raise
    yield f"rtsp://127.0.0.1:{main_port}/test", f"rtsp://127.0.0.1:{sub_port}/test"
    stop_rtsp_server(main)
    stop_rtsp_server(sub)


def test_capture_switches_to_the_sub_stream_and_back_with_boxes_in_main_pixels(streams, assets_dir):
    main_url, sub_url = streams
    cam = CameraConfig(id="gate", source=main_url, detect_source=sub_url, target_fps=FPS,
                       stall_timeout_s=3.0, open_timeout_s=5.0)
    hub, stop, sink = FrameHub(), threading.Event(), States()
    (cap,) = capture.build([cam], assets_dir, hub, sink, stop)
    clock = [0.0]
    events: list[dict] = []
    adaptive = AdaptiveControl(
        AdaptiveConfig(interval_s=0.5, cooldown_s=2.0), {"gate": cam.target_fps},
        on_change=lambda c, new, old, reason, detail: events.append(detail),
        clock=lambda: clock[0], detect_sources={"gate"},
        on_capture=lambda c, low: cap.use_detect_source(low))
    # 640x480 costs 0.06 s a frame (16.7/s < 25 fps), 320x240 0.015 s: the sub-stream keeps up.
    det = BallDetector(clock, per_mpixel_s=0.06 / (MAIN[0] * MAIN[1] / 1e6))
    out = Results()
    stage = DetectStage(det, hub, out, adaptive, {"gate": 1e9}, dropped=lambda c: cap.dropped,
                        clock=lambda: clock[0])

    def run_until(cond) -> None:
        end = time.monotonic() + DEADLINE_S
        while not cond():
            assert time.monotonic() < end, f"timed out; events so far: {events}"
            before, n = clock[0], len(out.items)
            stage.step(timeout=0.1)
            # frames arrive at 25 fps on the model's clock; the detector may take longer
            clock[0] = max(clock[0], before + (len(out.items) - n) / FPS)

    cap.start()
    try:
        run_until(lambda: len(events) >= 1)
        assert (events[0]["capture"], events[0]["previous_capture"]) == ("detect_source", "main")
        assert events[0]["direction"] == "down" and events[0]["stride"] == 1
        # The capture really reconnects: frames of the sub-stream's size reach the detector.
        run_until(lambda: sum(1 for (size, _) in det.raw if size == SUB) >= 20)
        assert cap.health()["capture"] == "detect_source"
        assert len(events) == 1  # it keeps up there: no size or stride step
        det.per_mpixel_s /= 5  # the device got faster: the main stream fits again
        run_until(lambda: len(events) >= 2)
        assert (events[1]["capture"], events[1]["previous_capture"]) == ("main", "detect_source")
        assert events[1]["direction"] == "up"
        seen = len(det.raw)
        run_until(lambda: sum(1 for (size, _) in det.raw[seen:] if size == MAIN) >= 10)
        assert cap.health()["capture"] == "main"
    finally:
        stop.set()
        cap.join(DEADLINE_S)

    # Every result is in the main stream's pixels, whichever stream its frame came from.
    assert len(out.items) == len(det.raw)
    scaled = 0
    for r, ((w, h), raw) in zip(out.items, det.raw):
        assert r.frame.image.shape[:2] == (MAIN[1], MAIN[0])
        factor = np.array([MAIN[0] / w, MAIN[1] / h] * 2, np.float32)
        np.testing.assert_allclose(r.detections.xyxy, raw * factor)
        assert np.all(r.detections.xyxy <= [MAIN[0], MAIN[1]] * 2)
        scaled += (w, h) == SUB and len(raw) > 0
    assert scaled >= 10  # the ball was found on sub-stream frames, and scaled
    print(f"\nframes: {sum(1 for s, _ in det.raw if s == MAIN)} main, {sum(1 for s, _ in det.raw if s == SUB)} "
          f"sub-stream ({scaled} with the ball, scaled); events: {[e['capture'] for e in events]}")
    assert [s[0] for s in sink.items].count("camera") >= 1
    assert all(s[2] == "streaming" for s in sink.items)  # the switches were no stalls


def test_pipeline_wires_the_controller_to_the_capture(streams, data_dir):
    from appliance import config
    from appliance.pipeline import Pipeline

    main_url, sub_url = streams
    cfg = config.from_dict({"cameras": [
        {"id": "gate", "source": main_url, "detect_source": sub_url},
        {"id": "yard", "source": main_url}]})
    p = Pipeline(cfg, data_dir)
    try:
        assert p.adaptive.capture("gate") == "main" and "capture" not in p.adaptive.status("yard")
        p.adaptive.on_capture("gate", True)  # what the controller's first step down does
        assert p.captures["gate"].health()["capture"] == "detect_source"
    finally:
        p.stop()
        p.join()
