"""The track stage: SORT per camera, then the chain of track processors, in one thread.

For each FrameResult: the camera's tracker matches the detections and fills in the
tracks (ids offset so they stay unique on this device across restarts), each track
processor in order reads the result and adds what it makes (lifecycle events today),
the live view gets the result, and the event sink numbers and stores the events. When a
camera's stream ends, a final result ends every track still live, so each processor
closes what it has open (every `new` gets its `end`).

A processor is anything with `process(result)`, made per camera by a `build(ctx, camera)`
function listed in pipeline.TRACK_PROCESSORS. One that needs heavy work (the classifier)
hands it to a stage of its own, shared by every camera (`BuildContext.shared`), and never
blocks this one; this stage passes the end-of-stream mark on to those stages.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from appliance import metrics
from appliance.capture.hub import EndOfStream
from appliance.detect.types import Detections
from appliance.events.sink import EventSink
from appliance.result import FrameResult
from appliance.stage import END, QueueStage
from appliance.track.sort import Sort, Track


def make_tracker(cfg: Any) -> Sort:
    """A camera's tracker for config `cfg`: the detector runs at the lower of detect.threshold
    and track.low_threshold (pipeline.py), and detect.threshold is the score that starts tracks."""
    t, high = cfg.track, cfg.detect.threshold
    return Sort(t.max_age_s, t.min_hits, t.iou_threshold, high_threshold=high,
                low_threshold=min(t.low_threshold, high))


class TrackProcessor(Protocol):
    def process(self, result: FrameResult) -> None: ...


@dataclass
class BuildContext:
    """What a processor's build(ctx, camera) may use."""

    cfg: Any  # appliance.config.Config
    labels: Sequence[str]  # the detector's labels, by class id
    data_dir: Path
    assets_dir: Path
    stages: dict[str, QueueStage | None] = field(default_factory=dict)  # shared; run by the pipeline
    notes: dict[str, dict] = field(default_factory=dict)  # for the status, e.g. a missing classifier

    def shared(self, name: str, make: Callable[[], QueueStage | None]) -> QueueStage | None:
        """The stage `name`, made once for every camera (None: it could not be made)."""
        if name not in self.stages:
            self.stages[name] = make()
        return self.stages[name]


@dataclass
class CameraTracking:
    tracker: Sort
    processors: Sequence[TrackProcessor]
    id_base: int
    frames: int = 0  # frames through the tracker
    reported: set = field(default_factory=set)  # ids of tracks reported and not yet ended
    last: FrameResult | None = None
    done_t: deque = field(default_factory=lambda: deque(maxlen=256))  # monotonic finish times

    def fps(self, now: float, window_s: float = 5.0) -> float:
        # list() copies in one step under the GIL: status() reads from other threads.
        recent = [t for t in list(self.done_t) if now - t <= window_s]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)


class TrackStage(QueueStage):
    def __init__(self, cameras: dict[str, CameraTracking], sink: EventSink,
                 on_result: Callable[[FrameResult], Any] | None = None,
                 downstream: Sequence[QueueStage] = ()):
        super().__init__("track")
        self.cameras = cameras
        self.sink = sink
        self.on_result = on_result  # the live view
        self.downstream = downstream  # the processors' own stages: they end after this one
        self.heartbeat = time.monotonic()  # last time a frame left this stage

    def describe(self, item: Any) -> str:
        if isinstance(item, FrameResult):
            return f"camera {item.camera_id}: frame {item.frame.seq}"
        return f"camera {item.camera_id}: end of stream"

    def handle(self, item: FrameResult | EndOfStream) -> None:
        if isinstance(item, EndOfStream):
            self._end(item.camera_id)
            return
        t0 = time.perf_counter()
        cam = self.cameras[item.camera_id]
        d = item.detections
        out = cam.tracker.update(d.xyxy, d.score, d.class_id, t=item.frame.t)
        item.tracks = self._unique(cam, out.tracks)
        item.tentative = self._unique(cam, out.tentative)
        item.ended = self._unique(cam, out.ended)
        self._process(cam, item)
        cam.frames += 1
        cam.reported.update(t.id for t in item.tracks)
        cam.reported.difference_update(t.id for t in item.ended)
        cam.last = item
        self.heartbeat = time.monotonic()
        cam.done_t.append(self.heartbeat)
        metrics.FRAMES.labels(item.camera_id).inc()
        metrics.TRACKING_SECONDS.labels(item.camera_id).observe(time.perf_counter() - t0)
        metrics.LIVE_TRACKS.labels(item.camera_id).set(len(cam.reported))
        metrics.HEARTBEAT.set(time.time())

    def finish(self) -> None:
        for s in self.downstream:
            s.put(END)

    def _unique(self, cam: CameraTracking, tracks: list[Track]) -> list[Track]:
        return [replace(t, id=cam.id_base + t.id) for t in tracks]

    def _process(self, cam: CameraTracking, r: FrameResult) -> None:
        for p in cam.processors:
            p.process(r)
        if self.on_result is not None and not r.final:  # the live view keeps the last real frame
            self.on_result(r)
        self.sink.emit(r.events, captured_at=None if r.final else r.frame.t_capture_monotonic)

    def _end(self, camera: str) -> None:
        cam = self.cameras[camera]
        ended = self._unique(cam, cam.tracker.flush())
        if cam.last is not None and ended:
            last = cam.last.frame
            self._process(cam, FrameResult(last, Detections.empty(), ended=ended, final=True))
        cam.reported.clear()
        metrics.LIVE_TRACKS.labels(camera).set(0)
