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
from appliance.capture.cameras import LiveCameras
from appliance.capture.readers import check_backend
from appliance.capture.source import VideoSource, parse_uri
from appliance.config import Config
from appliance.control.adaptive import AdaptiveControl
from appliance.detect import load_detector
from appliance.detect.types import Detections
from appliance.events.lifecycle import Lifecycle
from appliance.events.state import StateEvent
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
    late: int = 0  # older than cameras[].late_after_s when the detector took them
    skipped: int = 0  # taken from the camera but not detected (adaptive stride)
    live_tracks: int = 0
    infer_s: deque = field(default_factory=lambda: deque(maxlen=256))  # recent inference times
    done_t: deque = field(default_factory=lambda: deque(maxlen=256))  # recent monotonic finish times

    def fps(self, now: float, window_s: float = 5.0) -> float:
        # list() copies in one step under the GIL; iterating the deque itself while the
        # track thread appends raises "deque mutated during iteration" (status() is read
        # from the web server's threads).
        recent = [t for t in list(self.done_t) if now - t <= window_s]
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
        self._data_lock = paths.lock_data_dir(data_dir)
        self.started_monotonic = time.monotonic()
        self.heartbeat = time.monotonic()  # last time a frame left the tracker

        self.detector = load_detector(
            cfg.detect.model, self.assets_dir, backend=cfg.detect.backend,
            threshold=cfg.detect.threshold, classes=cfg.detect.classes or None,
            threads=cfg.detect.threads)
        # Files are opened now: one that cannot be read stops the start, naming the camera.
        # Live cameras only check that their backend exists here; their supervisors
        # connect in the background and keep reconnecting, never stopping the appliance.
        specs = {c.id: parse_uri(c.source, self.assets_dir) for c in cfg.cameras}
        self.sources = [
            VideoSource(c.id, c.source, self.assets_dir, realtime=c.realtime and not fast, loop=c.loop)
            for c in cfg.cameras if not specs[c.id].live
        ]
        for c in cfg.cameras:
            if specs[c.id].live:
                check_backend(c.id, specs[c.id])
        for src in self.sources:  # fail fast, with the camera named, before any thread starts
            src.open()

        db = open_db(self.db_path)
        self._seq = itertools.count(next_event_seq(db))
        track_base = max_track_id(db)
        db.conn.close()
        self._emit_lock = threading.Lock()  # events reach the writer in seq order
        self._store_closed = False
        self.stats = {c.id: CameraStats() for c in cfg.cameras}
        for cam in self.stats:  # drop counters exist from the start at 0, so rate() works
            metrics.FRAMES_DROPPED.labels(cam)
            metrics.FRAMES_CORRUPT.labels(cam)
        self._late_after = {c.id: c.late_after_s for c in cfg.cameras}
        self._ended: set[str] = set()
        self.hub = FrameHub()
        self.writer = EventWriter(self.db_path, cfg.store.batch_size, cfg.store.flush_interval_s)
        self._trackers: dict[str, tuple[Sort, Lifecycle]] = {}
        for c in cfg.cameras:
            blocking = not specs[c.id].live and not (c.realtime and not fast)  # a file played fast
            self.hub.add_camera(c.id, latest_wins=not blocking)
            tracker = Sort(cfg.track.max_age, cfg.track.min_hits, cfg.track.iou_threshold)
            lifecycle = Lifecycle(cfg.device.id, c.id, self.detector.labels,
                                  cfg.events.update_interval_s, self._seq.__next__, track_base)
            self._trackers[c.id] = (tracker, lifecycle)
        self.live_cameras = LiveCameras([c for c in cfg.cameras if specs[c.id].live], specs, self.hub,
                                        self.record_state, max_frames)
        self.supervisors = self.live_cameras.supervisors
        self.adaptive = AdaptiveControl(cfg.adaptive, {c.id: c.target_fps for c in cfg.cameras},
                                        on_change=self._stride_changed)
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
            self._ended.add(src.camera_id)
            self.hub.put(EndOfStream(src.camera_id))

    def _stride_changed(self, cam: str, stride: int, old: int, reason: str, detail: dict) -> None:
        self.record_state("adaptive", cam, f"stride {stride}", f"stride {old}", reason, detail)

    def record_state(self, kind: str, camera: str, state: str, previous: str, reason: str,
                     detail: dict | None = None) -> None:
        """Put a state change (camera, adaptive, power) into the event stream."""
        with self._emit_lock:
            if self._store_closed:
                log.info("%s %s: %s -> %s after the store closed; not stored", kind, camera,
                         previous, state)
                return
            seq = next(self._seq)
            dev = self.cfg.device.id
            self.writer.put([StateEvent(f"{dev}:{seq}", seq, kind, dev, camera, state, previous,
                                        reason, time.time(), detail or {})])
        metrics.EVENTS.labels(kind).inc()

    def _dropped(self, cam: str) -> int:
        return self.hub.dropped[cam] + self.live_cameras.discarded(cam)

    def _count_corrupt(self, camera: str, total: int) -> None:
        st = self.stats[camera]
        if total > st.corrupt:
            metrics.FRAMES_CORRUPT.labels(camera).inc(total - st.corrupt)
            st.corrupt = total

    def _detect(self) -> None:
        """Take the oldest frame of every camera that has one, skip what the adaptive
        stride says to skip, and detect the rest in one batch (the detector loops where
        its backend is batch-1)."""
        remaining = set(self.stats)
        while remaining:
            batch: list[Frame] = []
            for item in self.hub.get_batch(timeout=0.5):
                if isinstance(item, EndOfStream):
                    remaining.discard(item.camera_id)
                    self._tracked.put((item, None))
                elif self.adaptive.take(item.camera_id):
                    batch.append(item)
                else:
                    self.stats[item.camera_id].skipped += 1
            if batch:
                self._infer(batch)
            self.adaptive.update({cam: self._dropped(cam) for cam in self.stats})
        self._tracked.put((_DONE, None))

    def _infer(self, frames: list[Frame]) -> None:
        now = time.monotonic()
        for f in frames:
            if now - f.t_capture_monotonic > self._late_after[f.camera_id]:
                self.stats[f.camera_id].late += 1
                metrics.FRAMES_LATE.labels(f.camera_id).inc()
        t0 = time.perf_counter()
        try:
            results = self.detector.detect([f.image for f in frames])
            each = (time.perf_counter() - t0) / len(frames)
            done = [(f, d, each) for f, d in zip(frames, results)]
        except Exception:  # one bad frame must not cost the others: one at a time
            done = [r for r in map(self._detect_one, frames) if r is not None]
        for f, dets, secs in done:
            self.stats[f.camera_id].infer_s.append(secs)
            metrics.INFERENCE_SECONDS.labels(f.camera_id).observe(secs)
            self.adaptive.record_inference(f.camera_id, secs)
            self._tracked.put((f, dets))

    def _detect_one(self, f: Frame) -> tuple[Frame, Detections, float] | None:
        t0 = time.perf_counter()
        try:
            dets = self.detector.detect([f.image])[0]
        except Exception as e:  # one bad frame must not stop the appliance
            log.warning("camera %s: frame %d skipped, detector failed: %s", f.camera_id, f.seq, e)
            self._count_corrupt(f.camera_id, self.stats[f.camera_id].corrupt + 1)
            return None
        return f, dets, time.perf_counter() - t0

    def _track(self) -> None:
        while True:
            item, dets = self._tracked.get()
            if item is _DONE:
                return
            tracker, lifecycle = self._trackers[item.camera_id]
            st = self.stats[item.camera_id]
            if isinstance(item, EndOfStream):
                with self._emit_lock:
                    self.writer.put(lifecycle.finish(tracker.flush()))
                st.live_tracks = 0
                continue
            t0 = time.perf_counter()
            try:
                with self._emit_lock:
                    events = self._step(item, dets, tracker, lifecycle)
                    self.writer.put(events)
            except Exception:  # a tracker fault on one frame must not stop the appliance
                log.exception("camera %s: frame %d: tracking failed; skipped", item.camera_id, item.seq)
                continue
            self._account(item.camera_id, st, lifecycle, events, time.perf_counter() - t0)

    def _step(self, frame: Frame, dets: Detections, tracker: Sort, lifecycle: Lifecycle) -> list:
        out = tracker.update(dets.xyxy, dets.score, dets.class_id)
        self.live.update(frame, out.tracks, lifecycle.track_id_base)
        return lifecycle.on_frame(frame, out)

    def _account(self, cam: str, st: CameraStats, lifecycle: Lifecycle, events: list,
                 tracking_s: float) -> None:
        st.frames += 1
        st.live_tracks = lifecycle.live
        sup = self.supervisors.get(cam)
        if sup is not None:
            self._count_corrupt(cam, sup.corrupt)
        dropped = self._dropped(cam)
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
        ] + self.live_cameras.threads(self.stop_event) + [
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
                "dropped": st.dropped, "corrupt": st.corrupt, "late": st.late,
                "skipped": st.skipped, "live_tracks": st.live_tracks,
                "queue_depth": {"capture": self.hub.depth(cam)},
                **self._camera_health(cam), **self.adaptive.status(cam),
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

    def _camera_health(self, cam: str) -> dict[str, Any]:
        sup = self.supervisors.get(cam)
        if sup is not None:
            return sup.health()
        return {"state": "ended" if cam in self._ended else "streaming"}

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
            metrics.INPUT_FPS.labels(cam).set(self.adaptive.status(cam)["input_fps"])
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
        with self._emit_lock:
            self._store_closed = True
        self.writer.close()
        self._data_lock.close()

    def status_line(self) -> str:
        now = time.monotonic()
        parts = []
        for cam, st in self.stats.items():
            state = f"state={self.supervisors[cam].state} " if cam in self.supervisors else ""
            stride = self.adaptive.stride(cam)
            parts.append(
                f"camera={cam} {state}fps={st.fps(now):.1f} infer_ms={st.infer_ms():.1f} "
                + (f"stride={stride} " if stride > 1 else "") +
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
