"""The pipeline's live cameras: one supervisor and one thread each.

Frames go into the FrameHub (latest wins: a live camera never waits for the detector).
Each change of a camera's state becomes a metric (appliance_camera_state) and an event
of type "camera" through `record_state`, the pipeline's event sink. When a supervisor
ends (stop, or --max-frames reached) its camera's end-of-stream mark follows its frames.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable, Mapping, Sequence

from appliance import metrics
from appliance.capture.frame import Frame
from appliance.capture.hub import EndOfStream, FrameHub
from appliance.capture.readers import FFMPEG, backends_summary
from appliance.capture.source import SourceSpec
from appliance.capture.supervisor import STATES, CameraSupervisor, supervise
from appliance.config import CameraConfig

log = logging.getLogger(__name__)

RecordState = Callable[[str, str, str, str, str], None]  # kind, camera, state, previous, reason


class LiveCameras:
    def __init__(self, cameras: Sequence[CameraConfig], specs: Mapping[str, SourceSpec], hub: FrameHub,
                 record_state: RecordState, max_frames: int | None = None):
        self.hub = hub
        self._record_state = record_state
        self.supervisors: dict[str, CameraSupervisor] = {
            c.id: supervise(c, specs[c.id], self._deliver,
                            lambda *a, cam=c.id: self._on_state(cam, *a), max_frames)
            for c in cameras
        }
        for cam in self.supervisors:
            metrics.CAMERA_STATE.labels(cam, "connecting").set(1)
        if self.supervisors:
            log.info("capture backends: %s", backends_summary())

    def threads(self, stop: threading.Event) -> list[threading.Thread]:
        return [threading.Thread(target=self._run, args=(sup, stop), name=f"camera-{cam}", daemon=True)
                for cam, sup in self.supervisors.items()]

    def _run(self, sup: CameraSupervisor, stop: threading.Event) -> None:
        try:
            sup.run(stop)
        except Exception:  # a supervisor bug ends this camera, never the appliance
            log.exception("camera %s: supervisor failed", sup.camera_id)
        finally:
            FFMPEG.unregister(sup.camera_id)
            self.hub.put(EndOfStream(sup.camera_id))

    def _deliver(self, frame: Frame, read_s: float) -> bool:
        metrics.DECODE_SECONDS.labels(frame.camera_id).observe(read_s)
        return self.hub.put(frame)

    def _on_state(self, cam: str, state: str, previous: str, reason: str) -> None:
        for s in STATES:
            metrics.CAMERA_STATE.labels(cam, s).set(1 if s == state else 0)
        if state == "streaming" and previous in ("stalled", "failed"):
            metrics.CAMERA_RECONNECTS.labels(cam).inc()
        self._record_state("camera", cam, state, previous, reason)

    def discarded(self, cam: str) -> int:
        sup = self.supervisors.get(cam)
        return sup.discarded if sup else 0
