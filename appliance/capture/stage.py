"""Capture stages: one per camera, from the camera into the frame hub.

A file camera's stage reads its VideoSource on its own thread; a live camera's stage is
its supervisor (connect, watch, reconnect; capture/supervisor.py), whose reader threads
hand frames through `deliver`. Either way the stage owns its camera's capture counters,
each with one cause:

    frames     read and handed to the hub
    corrupt    could not be decoded (skipped)
    dropped    the hub slot was full, so its oldest frame made way (latest wins)
    discarded  read by a connection the supervisor had given up on (never handed on)

and puts the camera's end-of-stream mark into the hub after its last frame. A live
camera's state changes go into the event stream as `camera` events.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Sequence

from appliance import metrics
from appliance.capture.frame import Frame
from appliance.capture.hub import CLOSED, REPLACED_OLDEST, EndOfStream, FrameHub
from appliance.capture.readers import FFMPEG, backends_summary, check_backend
from appliance.capture.source import SourceSpec, VideoSource, parse_uri
from appliance.capture.supervisor import STATES, supervise
from appliance.config import CameraConfig
from appliance.events.sink import EventSink
from appliance.stage import Stage

log = logging.getLogger(__name__)


class CaptureStage(Stage):
    """What both kinds share: the hand-off to the hub and the counters."""

    def __init__(self, camera_id: str, hub: FrameHub):
        super().__init__(f"capture-{camera_id}")
        self.camera_id = camera_id
        self.hub = hub
        self.frames = 0
        self.corrupt = 0
        self.dropped = 0
        self.ended = False
        self._decode_s = metrics.DECODE_SECONDS.labels(camera_id)
        self._dropped_total = metrics.FRAMES_DROPPED.labels(camera_id)  # exist at 0 from the start
        self._corrupt_total = metrics.FRAMES_CORRUPT.labels(camera_id)

    @property
    def discarded(self) -> int:
        return 0

    def deliver(self, frame: Frame, read_s: float) -> bool:
        """Hand one frame to the hub; False once the hub takes no more."""
        self._decode_s.observe(read_s)
        outcome = self.hub.put(frame)
        if outcome == CLOSED:
            return False
        self.frames += 1
        self.stats.items += 1
        if outcome == REPLACED_OLDEST:
            self.dropped += 1
            self._dropped_total.inc()
        return True

    def count_corrupt(self, total: int) -> None:
        """The source's own running total of undecodable frames."""
        if total > self.corrupt:
            self._corrupt_total.inc(total - self.corrupt)
            self.corrupt = total

    def finish(self) -> None:
        self.ended = True
        self.hub.put(EndOfStream(self.camera_id))

    def health(self) -> dict:
        return {"state": "ended" if self.ended else "streaming"}


class FileCapture(CaptureStage):
    """A video file (or any source OpenCV reads without supervision), on its own thread."""

    def __init__(self, source: VideoSource, hub: FrameHub, stop: threading.Event,
                 max_frames: int | None = None):
        super().__init__(source.camera_id, hub)
        self.source = source
        self._stop = stop
        self._max_frames = max_frames

    def run(self) -> None:
        try:
            for frame in self.source.frames(self._stop, self._max_frames):
                if not self.deliver(frame, self.source.last_read_s):
                    break
                self.count_corrupt(self.source.corrupt)
        finally:
            self.count_corrupt(self.source.corrupt)  # a file's undecoded frames are known at its end
            self.source.close()


class LiveCapture(CaptureStage):
    """A live camera (RTSP, V4L2, CSI, GStreamer, jetson-utils) under its supervisor."""

    def __init__(self, camera: CameraConfig, spec: SourceSpec, hub: FrameHub, sink: EventSink,
                 stop: threading.Event, max_frames: int | None = None):
        super().__init__(camera.id, hub)
        self.sink = sink
        self._stop = stop
        for s in STATES:
            metrics.CAMERA_STATE.labels(camera.id, s).set(1 if s == "connecting" else 0)
        self.supervisor = supervise(camera, spec, self.deliver, self.on_state, max_frames)

    def deliver(self, frame: Frame, read_s: float) -> bool:
        self.count_corrupt(self.supervisor.corrupt)
        return super().deliver(frame, read_s)

    def on_state(self, state: str, previous: str, reason: str) -> None:
        for s in STATES:
            metrics.CAMERA_STATE.labels(self.camera_id, s).set(1 if s == state else 0)
        if state == "streaming" and previous in ("stalled", "failed"):
            metrics.CAMERA_RECONNECTS.labels(self.camera_id).inc()
        self.sink.state("camera", self.camera_id, state, previous, reason)

    @property
    def discarded(self) -> int:
        return self.supervisor.discarded

    def use_detect_source(self, low: bool) -> bool:
        """Capture from cameras[].detect_source (low) or the main source; False: none is set."""
        return self.supervisor.use_detect_source(low)

    def run(self) -> None:
        try:
            self.supervisor.run(self._stop)
        finally:
            self.count_corrupt(self.supervisor.corrupt)
            FFMPEG.unregister(self.camera_id)

    def health(self) -> dict:
        return self.supervisor.health()


def build(cameras: Sequence[CameraConfig], assets_dir: Path, hub: FrameHub, sink: EventSink,
          stop: threading.Event, fast: bool = False, max_frames: int | None = None) -> list[CaptureStage]:
    """One capture stage per camera, each with its slot in the hub.

    Files are opened now: one that cannot be read stops the start, naming the camera.
    Live cameras only check that their backend exists here; their supervisors connect in
    the background and keep reconnecting, never stopping the appliance.
    """
    stages: list[CaptureStage] = []
    for c in cameras:
        spec = parse_uri(c.source, assets_dir)
        if spec.live:
            check_backend(c.id, spec)
            hub.add_camera(c.id, latest_wins=True)
            stages.append(LiveCapture(c, spec, hub, sink, stop, max_frames))
            continue
        realtime = c.realtime and not fast
        src = VideoSource(c.id, c.source, assets_dir, realtime=realtime, loop=c.loop)
        src.open()
        hub.add_camera(c.id, latest_wins=realtime)  # a file played fast waits: every frame counts
        stages.append(FileCapture(src, hub, stop, max_frames))
    if any(isinstance(s, LiveCapture) for s in stages):
        log.info("capture backends: %s", backends_summary())
    return stages
