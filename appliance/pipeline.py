"""Wires the stages and owns their threads: capture → detect → track → events → store.

    capture-<cam> ──► FrameHub ──► detect ──► queue ──► track (+events) ──► EventWriter
    (one per camera)  (latest-wins                      (SORT per camera,   (SQLite thread)
                       for live sources)                 lifecycle events)

Decoding (OpenCV) and inference (LiteRT / ONNX Runtime) release the GIL, so on a 2-core
device decode of the next frame overlaps inference of this one. Shutdown flows down the
chain: capture stops and sends an end-of-stream mark, every stage passes it on after
finishing what it holds, live tracks get their end events, and the writer flushes.
"""
from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from appliance import paths
from appliance.capture.frame import Frame
from appliance.capture.hub import EndOfStream, FrameHub
from appliance.capture.source import VideoSource
from appliance.config import Config
from appliance.detect import load_detector
from appliance.detect.types import Detections
from appliance.events.lifecycle import Lifecycle
from appliance.store.db import max_track_id, next_event_seq, open_db
from appliance.store.writer import EventWriter
from appliance.track.sort import Sort

log = logging.getLogger(__name__)

_DONE = object()


@dataclass
class CameraStats:
    frames: int = 0  # frames through the tracker
    corrupt: int = 0
    dropped: int = 0
    live_tracks: int = 0
    infer_s: deque = field(default_factory=lambda: deque(maxlen=256))  # recent inference times
    done_t: deque = field(default_factory=lambda: deque(maxlen=256))  # recent monotonic finish times

    def fps(self, now: float, window_s: float = 5.0) -> float:
        recent = [t for t in self.done_t if now - t <= window_s]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)

    def infer_ms(self) -> float:
        return 1000.0 * float(np.mean(self.infer_s)) if self.infer_s else 0.0


class Pipeline:
    def __init__(self, cfg: Config, data_dir: Path, fast: bool = False,
                 max_frames: int | None = None):
        self.cfg = cfg
        self.data_dir = data_dir
        self.max_frames = max_frames
        self.stop_event = threading.Event()
        self.assets_dir = paths.assets_dir(data_dir)
        self.db_path = paths.db_path(data_dir)
        self.started_monotonic = time.monotonic()
        self.heartbeat = time.monotonic()  # last time a frame left the tracker

        self.detector = load_detector(
            cfg.detect.model, self.assets_dir, backend=cfg.detect.backend,
            threshold=cfg.detect.threshold, classes=cfg.detect.classes or None,
            threads=cfg.detect.threads)
        self.sources = [
            VideoSource(c.id, c.source, self.assets_dir, realtime=c.realtime and not fast, loop=c.loop)
            for c in cfg.cameras
        ]
        for src in self.sources:  # fail fast, with the camera named, before any thread starts
            src.open()

        db = open_db(self.db_path)
        seq = itertools.count(next_event_seq(db))
        track_base = max_track_id(db)
        db.conn.close()
        self.stats = {c.id: CameraStats() for c in cfg.cameras}
        self.hub = FrameHub()
        self.writer = EventWriter(self.db_path, cfg.store.batch_size, cfg.store.flush_interval_s)
        self._trackers: dict[str, tuple[Sort, Lifecycle]] = {}
        for src in self.sources:
            self.hub.add_camera(src.camera_id, latest_wins=not (src.is_file and not src.realtime))
            tracker = Sort(cfg.track.max_age, cfg.track.min_hits, cfg.track.iou_threshold)
            lifecycle = Lifecycle(cfg.device.id, src.camera_id, self.detector.labels,
                                  cfg.events.update_interval_s, seq.__next__, track_base)
            self._trackers[src.camera_id] = (tracker, lifecycle)
        self._tracked: queue.Queue = queue.Queue(maxsize=8)
        self._threads: list[threading.Thread] = []

    # -- stages ----------------------------------------------------------------------

    def _capture(self, src: VideoSource) -> None:
        try:
            for frame in src.frames(self.stop_event, self.max_frames):
                if not self.hub.put(frame):
                    break
                self.stats[src.camera_id].corrupt = src.corrupt
        except Exception:
            log.exception("camera %s: capture failed", src.camera_id)
        finally:
            self.stats[src.camera_id].corrupt = src.corrupt
            src.close()
            self.hub.put(EndOfStream(src.camera_id))

    def _detect(self) -> None:
        remaining = {s.camera_id for s in self.sources}
        while remaining:
            item = self.hub.get(timeout=0.5)
            if item is None:
                continue
            if isinstance(item, EndOfStream):
                remaining.discard(item.camera_id)
                self._tracked.put((item, None))
                continue
            t0 = time.perf_counter()
            try:
                dets = self.detector.detect([item.image])[0]
            except Exception as e:  # one bad frame must not stop the appliance
                log.warning("camera %s: frame %d skipped, detector failed: %s", item.camera_id, item.seq, e)
                self.stats[item.camera_id].corrupt += 1
                continue
            self.stats[item.camera_id].infer_s.append(time.perf_counter() - t0)
            self._tracked.put((item, dets))
        self._tracked.put((_DONE, None))

    def _track(self) -> None:
        while True:
            item, dets = self._tracked.get()
            if item is _DONE:
                return
            tracker, lifecycle = self._trackers[item.camera_id]
            st = self.stats[item.camera_id]
            if isinstance(item, EndOfStream):
                self.writer.put(lifecycle.finish(tracker.flush()))
                st.live_tracks = 0
                continue
            try:
                self.writer.put(self._step(item, dets, tracker, lifecycle))
            except Exception:  # a tracker fault on one frame must not stop the appliance
                log.exception("camera %s: frame %d: tracking failed; skipped", item.camera_id, item.seq)
                continue
            st.frames += 1
            st.live_tracks = lifecycle.live
            st.dropped = self.hub.dropped[item.camera_id]
            self.heartbeat = time.monotonic()
            st.done_t.append(self.heartbeat)

    @staticmethod
    def _step(frame: Frame, dets: Detections, tracker: Sort, lifecycle: Lifecycle) -> list:
        out = tracker.update(dets.xyxy, dets.score, dets.class_id)
        return lifecycle.on_frame(frame, out)

    # -- control ---------------------------------------------------------------------

    def start(self) -> None:
        self.writer.start()
        self._threads = [
            threading.Thread(target=self._capture, args=(s,), name=f"capture-{s.camera_id}", daemon=True)
            for s in self.sources
        ] + [
            threading.Thread(target=self._detect, name="detect", daemon=True),
            threading.Thread(target=self._track, name="track", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self.stop_event.set()

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def join(self) -> None:
        """Wait until every stage has drained, then flush the store."""
        for t in self._threads:
            t.join()
        self.writer.close()

    def status_line(self) -> str:
        now = time.monotonic()
        parts = []
        for cam, st in self.stats.items():
            parts.append(
                f"camera={cam} fps={st.fps(now):.1f} infer_ms={st.infer_ms():.1f} "
                f"live_tracks={st.live_tracks} frames={st.frames} dropped={st.dropped} corrupt={st.corrupt}")
        return " | ".join(parts) + f" | events_stored={self.writer.stored}"

    def run(self, stats_interval_s: float | None = None) -> None:
        """Start, report every stats interval, and return once everything is flushed."""
        interval = stats_interval_s or self.cfg.log.stats_interval_s
        self.start()
        next_report = time.monotonic() + interval
        while self.running:
            time.sleep(0.1)
            if time.monotonic() >= next_report:
                log.info("%s", self.status_line())
                next_report += interval
        self.join()
        log.info("finished: %s", self.status_line())
