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
import json
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from appliance import __version__, metrics, paths
from appliance.capture.frame import Frame
from appliance.capture.hub import EndOfStream, FrameHub
from appliance.capture.source import VideoSource
from appliance.config import Config
from appliance.detect import load_detector
from appliance.detect.types import Detections
from appliance.events.lifecycle import Lifecycle
from appliance.live import LiveView
from appliance.store.db import max_track_id, next_event_seq, open_db
from appliance.store.writer import EventWriter
from appliance.track.sort import Sort

log = logging.getLogger(__name__)

_DONE = object()


class Service(Protocol):
    """Something that runs beside the pipeline (uplink, web server): started after the
    pipeline's threads, stopped after the pipeline has drained and flushed. Its status()
    appears in the pipeline's status under its name."""

    name: str

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def status(self) -> dict[str, Any]: ...


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

    def infer_ms(self, q: float | None = None) -> float:
        """Mean inference time over recent frames, or its q-th percentile."""
        if not self.infer_s:
            return 0.0
        data = np.fromiter(self.infer_s, float)
        return 1000.0 * float(np.mean(data) if q is None else np.percentile(data, q))


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
        self.live = LiveView(self.detector.labels)
        self.services: list[Service] = []
        metrics.BUILD.info({"version": __version__, "model": self.detector.name,
                            "model_version": self.detector.version,
                            "backend": f"{self.detector.backend.name}/{self.detector.backend.device}"})

    # -- stages ----------------------------------------------------------------------

    def _capture(self, src: VideoSource) -> None:
        decode_s = metrics.DECODE_SECONDS.labels(src.camera_id)
        try:
            for frame in src.frames(self.stop_event, self.max_frames):
                decode_s.observe(src.last_read_s)
                if not self.hub.put(frame):
                    break
                self._count_corrupt(src.camera_id, src.corrupt)
        except Exception:
            log.exception("camera %s: capture failed", src.camera_id)
        finally:
            self._count_corrupt(src.camera_id, src.corrupt)
            src.close()
            self.hub.put(EndOfStream(src.camera_id))

    def _count_corrupt(self, camera: str, total: int) -> None:
        st = self.stats[camera]
        if total > st.corrupt:
            metrics.FRAMES_CORRUPT.labels(camera).inc(total - st.corrupt)
            st.corrupt = total

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
                self._count_corrupt(item.camera_id, self.stats[item.camera_id].corrupt + 1)
                continue
            elapsed = time.perf_counter() - t0
            self.stats[item.camera_id].infer_s.append(elapsed)
            metrics.INFERENCE_SECONDS.labels(item.camera_id).observe(elapsed)
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
            t0 = time.perf_counter()
            try:
                events = self._step(item, dets, tracker, lifecycle)
            except Exception:  # a tracker fault on one frame must not stop the appliance
                log.exception("camera %s: frame %d: tracking failed; skipped", item.camera_id, item.seq)
                continue
            self.writer.put(events)
            self._account(item.camera_id, st, lifecycle, events, time.perf_counter() - t0)

    def _step(self, frame: Frame, dets: Detections, tracker: Sort, lifecycle: Lifecycle) -> list:
        out = tracker.update(dets.xyxy, dets.score, dets.class_id)
        self.live.update(frame, out.tracks, lifecycle.track_id_base)
        return lifecycle.on_frame(frame, out)

    def _account(self, cam: str, st: CameraStats, lifecycle: Lifecycle, events: list,
                 tracking_s: float) -> None:
        st.frames += 1
        st.live_tracks = lifecycle.live
        dropped = self.hub.dropped[cam]
        if dropped > st.dropped:
            metrics.FRAMES_DROPPED.labels(cam).inc(dropped - st.dropped)
            st.dropped = dropped
        self.heartbeat = time.monotonic()
        st.done_t.append(self.heartbeat)
        for e in events:
            metrics.EVENTS.labels(e.type).inc()
        metrics.FRAMES.labels(cam).inc()
        metrics.TRACKING_SECONDS.labels(cam).observe(tracking_s)
        metrics.LIVE_TRACKS.labels(cam).set(st.live_tracks)
        metrics.HEARTBEAT.set(time.time())

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

    def status(self) -> dict[str, Any]:
        """A snapshot for the dashboard, the uplink's stats and `appliance status`."""
        now = time.monotonic()
        cams = {}
        for cam, st in self.stats.items():
            cams[cam] = {
                "fps": round(st.fps(now), 2), "inference_ms_p50": round(st.infer_ms(50), 2),
                "inference_ms_p95": round(st.infer_ms(95), 2), "frames": st.frames,
                "dropped": st.dropped, "corrupt": st.corrupt, "live_tracks": st.live_tracks,
                "queue_depth": {"capture": self.hub.depth(cam)},
            }
        be = self.detector.backend
        return {
            "version": __version__, "uptime_s": round(now - self.started_monotonic, 1),
            "heartbeat_age_s": round(now - self.heartbeat, 2), "running": self.running,
            "model": {"name": self.detector.name, "version": self.detector.version,
                      "backend": be.name, "device": be.device},
            "queue_depth": {"detect_to_track": self._tracked.qsize(), "store": self.writer.pending},
            "events_stored": self.writer.stored, "cameras": cams,
            "services": {svc.name: svc.status() for svc in self.services},
            "written_at": time.time(),
        }

    def write_status(self) -> None:
        """status.json in the data directory, for `appliance status` (atomic replace)."""
        path = paths.status_path(self.data_dir)
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(self.status(), indent=1))
            tmp.replace(path)
        except OSError as e:
            log.warning("cannot write %s: %s", path, e)

    def update_gauges(self) -> None:
        now = time.monotonic()
        for cam, st in self.stats.items():
            metrics.FPS.labels(cam).set(st.fps(now))
            metrics.QUEUE_DEPTH.labels(f"capture:{cam}").set(self.hub.depth(cam))
        metrics.QUEUE_DEPTH.labels("detect_to_track").set(self._tracked.qsize())
        metrics.QUEUE_DEPTH.labels("store").set(self.writer.pending)

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
        """Start, report every stats interval, and return once everything is flushed.

        Services in self.services start after the pipeline and stop after it has flushed.
        """
        interval = stats_interval_s or self.cfg.log.stats_interval_s
        self.start()
        for svc in self.services:
            svc.start()
        try:
            next_report = time.monotonic() + interval
            while self.running:
                time.sleep(0.1)
                self.update_gauges()
                if time.monotonic() >= next_report:
                    log.info("%s", self.status_line())
                    self.write_status()
                    next_report += interval
            self.join()
            log.info("finished: %s", self.status_line())
            self.write_status()
        finally:
            for svc in reversed(self.services):
                svc.stop()
