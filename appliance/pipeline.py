"""Builds the stages from the config, wires them, starts, stops and joins them.

    capture-<cam> ──► FrameHub ──► detect ──► track ──► track processors ──► EventSink ──► store writer
    (one per camera)  (a slot per    (one batch  (SORT per   (lifecycle, ...)     (numbers     (SQLite, its
                       camera)        for all)    camera)                          events)      own thread)

Each stage owns its thread, its counters and its faults (appliance/stage.py); this module
only builds and connects them. After detection one FrameResult travels per frame and
gains fields on the way (appliance/result.py). Decoding (OpenCV) and inference (LiteRT /
ONNX Runtime) release the GIL, so on a 2-core device decode of the next frame overlaps
inference of this one. Shutdown flows down the chain: capture stops and sends an
end-of-stream mark, every stage passes it on after finishing what it holds, live tracks
get their end events, and the writer flushes.

A new track processor is one module with `build(ctx, camera)` and one line in
TRACK_PROCESSORS (docs/architecture.md).
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from appliance import __version__, metrics, paths, status
from appliance.analytics import processor as analytics
from appliance.capture import stage as capture
from appliance.capture.hub import FrameHub
from appliance.capture.stage import LiveCapture
from appliance.classify import stage as classify
from appliance.config import Config
from appliance.control.adaptive import AdaptiveControl
from appliance.control.adaptive import describe as adaptive_value
from appliance.control.adaptive import describe_previous as adaptive_previous
from appliance.detect.stage import DetectStage
from appliance.events import lifecycle, snapshots
from appliance.events.sink import EventSink
from appliance.live import LiveView
from appliance.modelstore import ModelStore
from appliance.modelstore import runtime as models_runtime
from appliance.store.db import max_track_id, next_event_seq, open_db
from appliance.store.disk import DiskGuard
from appliance.store.writer import EventWriter
from appliance.track.stage import BuildContext, CameraTracking, TrackStage, make_tracker

log = logging.getLogger(__name__)

# After the tracker, in this order, per camera: build(ctx, camera) -> processor or None.
TRACK_PROCESSORS = (
    classify.build,
    snapshots.build,
    analytics.build,
    lifecycle.build,
)

SHUTDOWN_TIMEOUT_S = 20.0  # after stop(), a stage still busy this long (a hung detector) is left


class Service(Protocol):
    """Something that runs beside the pipeline (uplink, web server, power): started after
    the stages, stopped after the pipeline has drained and flushed. Its status() appears
    in the pipeline's status under its name."""

    name: str

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def status(self) -> dict[str, Any]: ...


class Pipeline:
    def __init__(self, cfg: Config, data_dir: Path, fast: bool = False,
                 max_frames: int | None = None, stop_event: threading.Event | None = None):
        self.cfg = cfg
        self.data_dir = data_dir
        self.stop_event = stop_event or threading.Event()  # set: stop (a signal, stop())
        self.started_monotonic = time.monotonic()
        self._data_lock = paths.lock_data_dir(data_dir)
        assets = paths.assets_dir()
        # The store's active model version, else detect.model (appliance/modelstore/, docs/models.md).
        self.model_store = ModelStore(data_dir)
        load = models_runtime.loader(cfg, assets, data_dir)
        self.detector, running_model = models_runtime.first_detector(self.model_store, load)

        db = open_db(paths.db_path(data_dir))
        first_seq, id_base = next_event_seq(db), max_track_id(db)
        db.conn.close()
        st = cfg.store
        guard = DiskGuard(paths.db_path(data_dir), reserve_bytes=int(st.disk_reserve_mb * 2**20),
                          check_interval_s=st.disk_check_interval_s, device_id=cfg.device.id,
                          uplink_enabled=cfg.uplink.enabled)
        self.writer = EventWriter(paths.db_path(data_dir), st.batch_size, st.flush_interval_s,
                                  guard=guard, max_pending=st.max_pending,
                                  counts_retention_s=st.counts_retention_days * 86400.0)
        self.sink = EventSink(cfg.device.id, self.writer, first_seq)

        self.hub = FrameHub()
        self.captures = {s.camera_id: s for s in capture.build(
            cfg.cameras, assets, self.hub, self.sink, self.stop_event, fast, max_frames)}
        self.live_cameras = {cam for cam, s in self.captures.items() if isinstance(s, LiveCapture)}
        self.live = LiveView(self.detector.labels)
        self.processors = BuildContext(cfg, self.detector.labels, data_dir, assets)
        tracking = {c.id: CameraTracking(
            make_tracker(cfg),
            [p for p in (build(self.processors, c) for build in TRACK_PROCESSORS) if p is not None], id_base)
            for c in cfg.cameras}
        # Each camera's line and zone analytics, for the counts and the dashboard's editor.
        self.analytics: dict[str, analytics.CameraAnalytics] = {
            cam: p for cam, ct in tracking.items() for p in ct.processors if isinstance(p, analytics.CameraAnalytics)}
        shared = [s for s in self.processors.stages.values() if s is not None]
        self.track = TrackStage(tracking, self.sink, on_result=self.live.update, downstream=shared)
        self.adaptive = AdaptiveControl(
            cfg.adaptive, {c.id: c.target_fps for c in cfg.cameras},
            on_change=lambda cam, new, old, reason, detail: self.sink.state(
                "adaptive", cam, adaptive_value(detail), adaptive_previous(detail), reason, detail),
            sizes=self.detector.sizes,
            # cameras[].detect_source: the controller's first rung reconnects the capture to it.
            detect_sources={c.id for c in cfg.cameras if c.has_detect_source and c.id in self.live_cameras},
            on_capture=lambda cam, low: self.captures[cam].use_detect_source(low))
        self.detect = DetectStage(
            self.detector, self.hub, self.track, self.adaptive,
            {c.id: c.late_after_s for c in cfg.cameras},
            dropped=lambda cam: self.captures[cam].dropped + self.captures[cam].discarded)
        self.stages = [*self.captures.values(), self.detect, self.track, *shared]
        self.services: list[Service] = []
        # Model activation and rollback between frames, the watch after it, and drift.
        self.models, self.drift = models_runtime.attach(self, running_model, load, self.model_store, assets)
        be = self.detector.backend
        metrics.BUILD.info({"version": __version__, "model": self.detector.name,
                            "model_version": self.detector.version, "backend": f"{be.name}/{be.device}"})

    def apply_analytics(self, camera_id: str, camera_cfg: Any) -> None:
        """New lines, zones and calibration for a running camera (a validated CameraConfig,
        same id), from its next frame; KeyError for an unknown camera. Lines and zones that
        keep their name, points and anchor keep their counts."""
        self.analytics[camera_id].reconfigure(camera_cfg)
        for i, cam in enumerate(self.cfg.cameras):
            if cam.id == camera_id:  # the effective config (config/get, the dashboard) follows
                self.cfg.cameras[i] = camera_cfg

    def start(self) -> None:
        self.writer.start()
        for s in self.stages:
            s.start()

    def stop(self) -> None:
        self.stop_event.set()

    @property
    def running(self) -> bool:
        return any(s.alive for s in self.stages)

    def join(self, timeout_s: float | None = None) -> None:
        """Wait until every stage has drained, then flush the store. After stop(), a stage
        still busy after timeout_s (default SHUTDOWN_TIMEOUT_S) is reported and left
        behind, so a hung detector cannot keep the process from exiting."""
        if timeout_s is None and self.stop_event.is_set():
            timeout_s = SHUTDOWN_TIMEOUT_S
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for s in self.stages:
            if not s.join(None if deadline is None else max(0.0, deadline - time.monotonic())):
                log.error("%s did not stop within %.0f s of the stop request; leaving it", s.name, timeout_s)
                self.hub.close()  # release cameras waiting for room
        self.sink.close()
        self.writer.close(self.cfg.store.shutdown_timeout_s)
        self._data_lock.close()

    def status(self) -> dict[str, Any]:
        return status.snapshot(self)

    def run(self, stats_interval_s: float | None = None) -> None:
        """Start, report every stats interval, and return once everything is flushed.

        Services in self.services start after the stages and stop after the store flushed.
        """
        interval = stats_interval_s or self.cfg.log.stats_interval_s
        self.start()
        for svc in self.services:
            svc.start()
        # At once, not after the first interval: `appliance status` and the self-test see
        # a running appliance (and where its dashboard listens) from the start.
        status.write(self.data_dir, self.status())
        try:
            next_report = time.monotonic() + interval
            while self.running and not self.stop_event.is_set():
                self.stop_event.wait(0.1)
                status.update_gauges(self)
                if time.monotonic() >= next_report:
                    log.info("%s", status.status_line(self))
                    status.write(self.data_dir, self.status())
                    next_report += interval
            self.join()
            log.info("finished: %s", status.status_line(self))
            status.write(self.data_dir, self.status())
        finally:
            for svc in reversed(self.services):
                svc.stop()
