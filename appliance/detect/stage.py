"""The detect stage: frames from the hub, detections out, one thread for every camera.

It takes the oldest frame of every camera that has one, lets the adaptive stride skip
what it says to skip, and runs the rest as one batch (the detector loops where its
backend is batch-1). A batch that fails is retried one frame at a time, so one bad frame
costs only itself. Each camera's detection counters live here, one cause each:

    detected   frames the detector ran on
    skipped    taken from the hub but not detected, on purpose (adaptive stride)
    late       older than cameras[].late_after_s when taken (still detected)
    failed     the detector raised on the frame (skipped)

Results go on to the track stage as FrameResults, in each camera's order; a camera's
end-of-stream mark follows its last frame, and END follows the last camera's.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from appliance import metrics
from appliance.capture.frame import Frame
from appliance.capture.hub import EndOfStream, FrameHub
from appliance.control.adaptive import AdaptiveControl
from appliance.detect.types import Detections
from appliance.result import FrameResult
from appliance.stage import END, QueueStage, Stage

log = logging.getLogger(__name__)


@dataclass
class CameraDetection:
    late_after_s: float
    detected: int = 0
    skipped: int = 0
    late: int = 0
    failed: int = 0
    infer_s: deque = field(default_factory=lambda: deque(maxlen=256))  # recent inference times

    def infer_ms(self, q: float | None = None) -> float:
        """Mean inference time over recent frames, or its q-th percentile."""
        data = np.fromiter(list(self.infer_s), float)
        if not len(data):
            return 0.0
        return 1000.0 * float(np.mean(data) if q is None else np.percentile(data, q))


class DetectStage(Stage):
    def __init__(self, detector, hub: FrameHub, out: QueueStage, adaptive: AdaptiveControl,
                 late_after_s: Mapping[str, float], dropped: Callable[[str], int],
                 clock: Callable[[], float] = time.monotonic):
        super().__init__("detect")
        self.detector = detector
        self.hub = hub
        self.out = out
        self.adaptive = adaptive
        self.cameras = {cam: CameraDetection(s) for cam, s in late_after_s.items()}
        self._dropped = dropped  # a camera's drops so far (its capture stage counts them)
        self._clock = clock  # frames' capture times are on this clock too; injectable in tests
        for cam in self.cameras:
            metrics.FRAMES_DETECT_FAILED.labels(cam)

    def run(self) -> None:
        remaining = set(self.cameras)
        while remaining:
            remaining -= self.step(timeout=0.5)

    def step(self, timeout: float) -> set[str]:
        """One round: take a batch from the hub (waiting up to `timeout`), detect it, let
        the adaptive control measure. Returns the cameras whose stream ended."""
        ended, batch = set(), []
        for item in self.hub.get_batch(timeout=timeout):
            if isinstance(item, EndOfStream):
                ended.add(item.camera_id)
                self.out.put(item)
            elif self.adaptive.take(item.camera_id):
                batch.append(item)
            else:
                self.cameras[item.camera_id].skipped += 1
        if batch:
            self._detect(batch)
        self.adaptive.update({cam: self._dropped(cam) for cam in self.cameras})
        return ended

    def finish(self) -> None:
        self.out.put(END)

    def _detect(self, frames: list[Frame]) -> None:
        now = self._clock()
        for f in frames:
            cam = self.cameras[f.camera_id]
            if now - f.t_capture_monotonic > cam.late_after_s:
                cam.late += 1
                metrics.FRAMES_LATE.labels(f.camera_id).inc()
        t0 = self._clock()
        try:
            results = self.detector.detect([f.image for f in frames])
            each = (self._clock() - t0) / len(frames)
            done = [(f, d, each) for f, d in zip(frames, results)]
        except Exception:  # one bad frame must not cost the others: one at a time
            done = [r for r in map(self._detect_one, frames) if r is not None]
        self.stats.items += len(frames)
        self.stats.busy_s += self._clock() - t0
        for f, dets, secs in done:
            cam = self.cameras[f.camera_id]
            cam.detected += 1
            cam.infer_s.append(secs)
            metrics.INFERENCE_SECONDS.labels(f.camera_id).observe(secs)
            self.adaptive.record_inference(f.camera_id, secs)
            self.out.put(FrameResult(f, dets, secs))

    def _detect_one(self, f: Frame) -> tuple[Frame, Detections, float] | None:
        t0 = self._clock()
        try:
            dets = self.detector.detect([f.image])[0]
        except Exception as e:
            log.warning("camera %s: frame %d skipped, detector failed: %s", f.camera_id, f.seq, e)
            self.stats.errors += 1
            self.cameras[f.camera_id].failed += 1
            metrics.FRAMES_DETECT_FAILED.labels(f.camera_id).inc()
            return None
        return f, dets, self._clock() - t0
