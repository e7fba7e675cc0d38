"""What the health panel, /api/status and /healthz show, built from the pipeline's status.

The pipeline's status() already holds the per-camera figures, the model and the services
beside it (uplink, power, web). This adds what only the host can tell (disk use, system
uptime) and decides liveness.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Protocol

from appliance import metrics


class StatusProvider(Protocol):
    """Anything with the pipeline's status() (the Pipeline itself, or a stand-in in tests)."""

    def status(self) -> dict[str, Any]: ...


def disk(path: Path) -> dict[str, Any]:
    """Use of the file system holding the data directory (the database grows there)."""
    try:
        du = shutil.disk_usage(path)
    except OSError:
        return {"path": str(path), "error": "unavailable"}
    metrics.DISK_FREE_BYTES.set(du.free)
    return {"path": str(path), "total_bytes": du.total, "used_bytes": du.used, "free_bytes": du.free,
            "used_percent": round(100.0 * du.used / du.total, 1) if du.total else 0.0}


def system_uptime_s() -> float | None:
    try:
        return round(float(Path("/proc/uptime").read_text().split()[0]), 1)
    except (OSError, ValueError, IndexError):
        return None


def snapshot(status: dict[str, Any], data_dir: Path, db_path: Path) -> dict[str, Any]:
    """The pipeline's status plus disk, database size and system uptime.

    `disk` joins the store's disk guard (status["disk"]: state ok | low | full, free_bytes
    counting SQLite's free pages, reserve_bytes) with what the host says now (path, total,
    used, free on the file system); the host's fresh figures win where both have one."""
    try:
        db_bytes = db_path.stat().st_size
    except OSError:
        db_bytes = None
    guard = status.get("disk") if isinstance(status.get("disk"), dict) else {}
    return {**status, "disk": {**guard, **disk(data_dir)}, "database_bytes": db_bytes,
            "system_uptime_s": system_uptime_s(), "now": time.time()}


def disk_trouble(status: dict[str, Any]) -> str | None:
    """Why the disk makes the appliance unhealthy, or None: `full` means writes to the
    database are failing for lack of space (appliance/store/disk.py)."""
    d = status.get("disk")
    if not isinstance(d, dict) or d.get("state") != "full":
        return None
    free, reserve = d.get("free_bytes"), d.get("reserve_bytes")
    parts = [f"{free} bytes free" if free is not None else None,
             f"reserve {reserve} bytes" if reserve else None, d.get("error")]
    detail = "; ".join(p for p in parts if p)
    return "disk full: events cannot be written to the database" + (f" ({detail})" if detail else "")


def liveness(status: dict[str, Any], stale_after_s: float) -> tuple[bool, str]:
    """(alive, reason) for /healthz.

    Alive means the pipeline is running, a frame left the tracker within the last
    `stale_after_s` seconds, and events can be written (the disk is not `full`). A
    pipeline that has stopped (its files ended, or a stop was requested) is not alive: it
    is about to exit and a supervisor should know.
    """
    age = float(status.get("heartbeat_age_s", float("inf")))
    if not status.get("running", False):
        return False, "stopped"
    trouble = disk_trouble(status)
    if trouble:
        return False, trouble
    if age > stale_after_s:
        return False, f"stale: no frame for {age:.1f} s (limit {stale_after_s:g} s)"
    return True, "ok"
