"""What the running pipeline reports: a status snapshot, a status line, gauges, status.json.

Everything is read from the stage that owns it (docs/architecture.md lists the counters
and their owners); nothing here counts anything itself. The dashboard, /healthz, the
uplink's stats, `appliance status` and the log read these.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance import __version__, metrics, paths
from appliance.detect import engine_cache

if TYPE_CHECKING:
    from appliance.pipeline import Pipeline

log = logging.getLogger(__name__)


def camera_status(p: "Pipeline", cam: str, now: float) -> dict[str, Any]:
    cap, det, trk = p.captures[cam], p.detect.cameras[cam], p.track.cameras[cam]
    return {
        "fps": round(trk.fps(now), 2), "inference_ms_p50": round(det.infer_ms(50), 2),
        "inference_ms_p95": round(det.infer_ms(95), 2), "frames": trk.frames,
        "dropped": cap.dropped, "corrupt": cap.corrupt, "discarded": cap.discarded,
        "late": det.late, "skipped": det.skipped, "detect_failed": det.failed,
        "live_tracks": len(trk.reported),
        "queue_depth": {"capture": p.hub.depth(cam)},
        **cap.health(), **p.adaptive.status(cam),
    }


def snapshot(p: "Pipeline") -> dict[str, Any]:
    """A snapshot for the dashboard, the uplink's stats and `appliance status`."""
    now = time.monotonic()
    be = p.detector.backend
    return {
        "version": __version__, "uptime_s": round(now - p.started_monotonic, 1),
        "heartbeat_age_s": round(now - p.track.heartbeat, 2), "running": p.running,
        "model": {"name": p.detector.name, "version": p.detector.version,
                  "backend": be.name, "device": be.device, "threads": be.threads,
                  # "building engine 35 %" while a TensorRT engine builds (a model being activated)
                  "status": engine_cache.BUILDS.text() or "ready"},
        "queue_depth": {"detect_to_track": p.track.depth, "store": p.writer.pending},
        "events_stored": p.writer.stored,
        "cameras": {cam: camera_status(p, cam, now) for cam in p.captures},
        "stages": {s.name: s.stats.as_dict() for s in p.stages},
        "classify": processor_status(p, "classify"),
        "snapshots": processor_status(p, "snapshots"),
        "store": p.writer.status(),
        "disk": p.writer.guard.status(),
        "services": {svc.name: svc.status() for svc in p.services},
        "written_at": time.time(),
    }


def processor_status(p: "Pipeline", name: str) -> dict[str, Any]:
    """A track processor's own stage (classify, snapshots), or why there is none."""
    stage = p.processors.stages.get(name)
    if stage is not None:
        return stage.status()
    return p.processors.notes.get(name, {"state": "disabled"})


def status_line(p: "Pipeline") -> str:
    now = time.monotonic()
    parts = []
    for cam, cap in p.captures.items():
        det, trk = p.detect.cameras[cam], p.track.cameras[cam]
        state = f"state={cap.health()['state']} " if cam in p.live_cameras else ""
        stride = p.adaptive.stride(cam)
        parts.append(
            f"camera={cam} {state}fps={trk.fps(now):.1f} infer_ms={det.infer_ms():.1f} "
            + (f"stride={stride} " if stride > 1 else "")
            + f"live_tracks={len(trk.reported)} frames={trk.frames} dropped={cap.dropped} "
            f"corrupt={cap.corrupt}" + (f" detect_failed={det.failed}" if det.failed else ""))
    unwritten = f" unwritten={p.writer.unwritten}" if p.writer.unwritten else ""
    return " | ".join(parts) + f" | events_stored={p.writer.stored}{unwritten}"


def update_gauges(p: "Pipeline") -> None:
    now = time.monotonic()
    for cam in p.captures:
        metrics.FPS.labels(cam).set(p.track.cameras[cam].fps(now))
        metrics.INPUT_FPS.labels(cam).set(p.adaptive.status(cam)["input_fps"])
        metrics.QUEUE_DEPTH.labels(f"capture:{cam}").set(p.hub.depth(cam))
    metrics.QUEUE_DEPTH.labels("detect_to_track").set(p.track.depth)
    metrics.QUEUE_DEPTH.labels("store").set(p.writer.pending)


def write(data_dir: Path, status: dict[str, Any]) -> None:
    """status.json in the data directory, for `appliance status` (atomic replace)."""
    path = paths.status_path(data_dir)
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps(status, indent=1))
        tmp.replace(path)
    except OSError as e:
        log.warning("cannot write %s: %s", path, e)
