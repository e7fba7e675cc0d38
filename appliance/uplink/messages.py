"""Topics and payloads of the MQTT contract (docs/mqtt.md, docs/schemas/).

Every JSON payload carries `"schema": 1`; a change that breaks consumers bumps it.
Events are not re-encoded: a message joins the JSON texts stored in SQLite as they are.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Sequence

SCHEMA = 1


@dataclass(frozen=True)
class Topics:
    prefix: str
    device: str

    def _t(self, leaf: str) -> str:
        return f"{self.prefix}/{self.device}/{leaf}"

    @property
    def events(self) -> str:
        return self._t("events")

    @property
    def status(self) -> str:
        return self._t("status")

    @property
    def stats(self) -> str:
        return self._t("stats")

    @property
    def snapshot(self) -> str:
        return self._t("snapshot")

    def snapshot_of(self, event_id: str) -> str:
        """An `end` event's snapshot (docs/mqtt.md, "Snapshots"); event ids hold no `/`."""
        return self._t(f"snapshots/{event_id}")

    @property
    def commands(self) -> str:  # subscription filter
        return self._t("cmd/#")

    @property
    def command_prefix(self) -> str:
        return self._t("cmd/")

    @property
    def result(self) -> str:
        return self._t("cmd/result")


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def events_message(device: str, payloads: Sequence[str]) -> bytes:
    head = '{"schema":%d,"device":%s,' % (SCHEMA, json.dumps(device))
    return (head + '"events":[' + ",".join(payloads) + "]}").encode()


def offline_status(device: str) -> bytes:
    """The Last Will, and what a clean shutdown publishes; retained."""
    return _dumps({"schema": SCHEMA, "device": device, "state": "offline"})


def online_status(device: str, version: str, model: dict[str, Any] | None) -> bytes:
    return _dumps({"schema": SCHEMA, "device": device, "state": "online", "ts": time.time(),
                   "software": {"version": version}, "model": model})


def stats_message(device: str, pipeline_status: dict[str, Any] | None, uplink: dict[str, Any],
                  disk: dict[str, Any]) -> bytes:
    """`disk` (db_bytes, free_bytes, total_bytes, from the host) gets the store's disk
    state and reserve (`state`: ok | low | full, `reserve_bytes`) when the pipeline's
    status has them (status["disk"], appliance/store/disk.py)."""
    guard = (pipeline_status or {}).get("disk")
    if isinstance(guard, dict) and guard.get("state"):
        disk = {**disk, "state": guard["state"]}
        if guard.get("reserve_bytes") is not None:
            disk["reserve_bytes"] = int(guard["reserve_bytes"])
    cams = {}
    if pipeline_status:
        for cam, c in pipeline_status.get("cameras", {}).items():
            cams[cam] = {"fps": c.get("fps", 0.0), "frames": c.get("frames", 0),
                         "dropped": c.get("dropped", 0), "live_tracks": c.get("live_tracks", 0)}
    return _dumps({
        "schema": SCHEMA, "device": device, "ts": time.time(),
        "uptime_s": pipeline_status.get("uptime_s") if pipeline_status else None,
        "cameras": cams, "backlog_rows": uplink["backlog_rows"],
        "oldest_unsent_age_s": uplink["oldest_unsent_age_s"],
        "events_sent": uplink["events_sent"], "events_dropped": uplink["events_dropped"],
        "disk": disk,
    })


def command_result(device: str, command: str | None, correlation_id: Any, ok: bool,
                   result: dict[str, Any] | None = None, error: str | None = None) -> bytes:
    msg: dict[str, Any] = {"schema": SCHEMA, "device": device, "command": command,
                           "correlation_id": correlation_id, "ok": ok, "ts": time.time()}
    if ok:
        msg["result"] = result or {}
    else:
        msg["error"] = error
    return _dumps(msg)
