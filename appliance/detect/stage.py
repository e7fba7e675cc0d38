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

A frame from a camera's lower-resolution detect source (cameras[].detect_source) is
detected as it is, then its boxes are scaled to the main stream's pixels and its image
is enlarged to the main stream's size (`to_main_stream`), so that everything after this
stage (tracks, events, lines and zones, snapshots, the live view) sees one coordinate
system and one frame size whichever stream the camera runs on.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping

import cv2
import numpy as np

from appliance import metrics
from appliance.capture.frame import MAIN, Frame
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
        # swap(): a detector waiting to take over at the next batch (appliance/modelstore/swap.py).
        self._next_detector = None
        self._swap_lock = threading.Lock()
        # Called on the detect thread with every FrameResult before it goes on (model watch,
        # drift): must be quick; a fault there is logged, never costs the frame.
        self.observers: list[Callable[[FrameResult], None]] = []
        for cam in self.cameras:
            metrics.FRAMES_DETECT_FAILED.labels(cam)

    def swap(self, detector) -> None:
        """Run `detector` from the next batch on (between frames; thread-safe). The frame
        being detected now finishes on the old one, and no frame is left out."""
        with self._swap_lock:
            self._next_detector = detector

    def _current(self):
        with self._swap_lock:
            if self._next_detector is not None:
                self.detector, self._next_detector = self._next_detector, None
            return self.detector

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
        groups: dict[int | None, list[Frame]] = {}  # by the input size each camera is detected at
        for f in batch:
            groups.setdefault(self.adaptive.size(f.camera_id), []).append(f)
        for size, frames in groups.items():
            self._detect(frames, size)
        self.adaptive.update({cam: self._dropped(cam) for cam in self.cameras})
        return ended

    def finish(self) -> None:
        self.out.put(END)

    def _detect(self, frames: list[Frame], size: int | None = None) -> None:
        now = self._clock()
        for f in frames:
            cam = self.cameras[f.camera_id]
            if now - f.t_capture_monotonic > cam.late_after_s:
                cam.late += 1
                metrics.FRAMES_LATE.labels(f.camera_id).inc()
        det = self._current()
        sizes = getattr(det, "sizes", None)  # None: a test's stand-in detector
        if sizes is not None:
            self.adaptive.set_sizes(sizes)  # a no-op unless a swap brought other sizes
        if size is not None and sizes is not None and size in sizes and len(sizes) > 1:
            try:
                det.prepare(size)  # a size's first use makes its session: not timed as inference
                det = _AtSize(det, size)
            except Exception as e:
                log.warning("detect: input size %d unavailable, frames run at full size: %s", size, e)
        name = getattr(det, "name", None)  # None: a test's stand-in detector
        model = None if name is None else {"name": name, "version": det.version}
        t0 = self._clock()
        try:
            results = det.detect([f.image for f in frames])
            each = (self._clock() - t0) / len(frames)
            done = [(f, d, each) for f, d in zip(frames, results)]
        except Exception:  # one bad frame must not cost the others: one at a time
            done = [r for r in (self._detect_one(f, det) for f in frames) if r is not None]
        self.stats.items += len(frames)
        self.stats.busy_s += self._clock() - t0
        for f, dets, secs in done:
            f, dets = to_main_stream(f, dets)
            cam = self.cameras[f.camera_id]
            cam.detected += 1
            cam.infer_s.append(secs)
            metrics.INFERENCE_SECONDS.labels(f.camera_id).observe(secs)
            self.adaptive.record_inference(f.camera_id, secs)
            result = FrameResult(f, dets, secs, model=model)
            for observe in self.observers:
                try:
                    observe(result)
                except Exception:
                    log.exception("detect: observer %r failed", observe)
            self.out.put(result)

    def _detect_one(self, f: Frame, det) -> tuple[Frame, Detections, float] | None:
        t0 = self._clock()
        try:
            dets = det.detect([f.image])[0]
        except Exception as e:
            log.warning("camera %s: frame %d skipped, detector failed: %s", f.camera_id, f.seq, e)
            self.stats.errors += 1
            self.cameras[f.camera_id].failed += 1
            metrics.FRAMES_DETECT_FAILED.labels(f.camera_id).inc()
            return None
        return f, dets, self._clock() - t0


def to_main_stream(frame: Frame, dets: Detections) -> tuple[Frame, Detections]:
    """A detect-source frame and its detections in the main stream's pixels: the boxes
    scaled by frame.scale, the image enlarged to match (the processors after detection
    crop and measure in the image's own pixels). A main-stream frame is returned as is."""
    if frame.scale == MAIN:
        return frame, dets
    sx, sy = frame.scale
    h, w = frame.image.shape[:2]
    image = cv2.resize(frame.image, (round(w * sx), round(h * sy)), interpolation=cv2.INTER_LINEAR)
    xyxy = (dets.xyxy * np.array([sx, sy, sx, sy], np.float32)).astype(np.float32)
    return replace(frame, image=image, scale=MAIN), replace(dets, xyxy=xyxy)


class _AtSize:
    """A detector bound to one input size, for the code that calls detect(images)."""

    def __init__(self, det, size: int):
        self._det, self._size = det, size
        self.name, self.version = det.name, det.version

    def detect(self, images):
        return self._det.detect(images, size=self._size)
