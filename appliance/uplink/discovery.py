"""Home Assistant MQTT discovery (opt-in: `uplink.homeassistant.enabled`; docs/mqtt.md).

Home Assistant's MQTT integration reads retained config messages under its discovery
prefix and makes entities of them. This module publishes, per camera:

- a `sensor` per line and direction: the crossings counted since the appliance started
  (or since the line was last changed), `total_increasing`;
- a `sensor` per zone: its live occupancy, `measurement`;
- a `binary_sensor` per camera: on while the camera is streaming (`connectivity`).

Their states all come from one retained JSON message, `<prefix>/<id>/analytics`
(docs/schemas/mqtt-analytics.v1.json): the camera states from the pipeline's status and
the live totals from `pipeline.analytics[camera].counts()`, published when they change
(looked at every `interval_s`). Their availability is the device's retained status
topic (the Last Will says `offline`).

The lines and zones are those the analytics report, so a line added or removed from the
dashboard's editor gets or loses its entity without a restart. The retained topics
published are recorded in SQLite (`uplink_retained`), so ones no longer wanted (a line
removed, a camera gone, or discovery turned off) are cleared with an empty retained
message, also after a restart.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from appliance.config import Config

log = logging.getLogger(__name__)

SCHEMA = 1
MODEL = "edge video-analytics appliance"
UNITS = {"line": "crossings", "zone": "objects"}

# (topic, payload, retain) -> mid, or None when the link is gone
Send = Callable[[str, bytes, bool], "int | None"]


def slug(text: str) -> str:
    """What Home Assistant accepts in ids and discovery topics: [A-Za-z0-9_-]."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def _lit(text: str) -> str:
    """A Jinja string literal for any text (JSON's escapes are Jinja's)."""
    return json.dumps(text)


# -- the state message ------------------------------------------------------------------


def _fallback(camera_cfg: Any) -> dict[str, Any]:
    """A camera without live analytics (none configured, or the pipeline has none yet): its
    configured lines and zones, with unknown values (Home Assistant shows `unknown`)."""
    return {"lines": {ln.name: {"in": None, "out": None} for ln in getattr(camera_cfg, "lines", None) or []},
            "zones": {z.name: {"occupancy": None} for z in getattr(camera_cfg, "zones", None) or []}}


def analytics_state(device: str, cfg: Config, pipeline: Any, ts: float) -> dict[str, Any]:
    """The `<prefix>/<id>/analytics` message: per camera its state and live totals."""
    status = None
    if pipeline is not None and hasattr(pipeline, "status"):
        try:
            status = pipeline.status()
        except Exception:  # the status is best effort here; the counts still go
            log.exception("uplink: pipeline status failed")
    cams_status = (status or {}).get("cameras", {}) if isinstance(status, dict) else {}
    analytics = getattr(pipeline, "analytics", None) or {}
    cameras: dict[str, Any] = {}
    for c in cfg.cameras:
        entry: dict[str, Any] = {"state": str((cams_status.get(c.id) or {}).get("state") or "unknown")}
        counts = None
        proc = analytics.get(c.id) if isinstance(analytics, dict) else None
        if proc is not None:
            try:
                counts = proc.counts()
            except Exception:
                log.exception("uplink: analytics counts of camera %s failed", c.id)
        if not isinstance(counts, dict):
            counts = _fallback(c)
        entry["lines"] = counts.get("lines") or {}
        entry["zones"] = counts.get("zones") or {}
        cameras[c.id] = entry
    return {"schema": SCHEMA, "device": device, "ts": ts, "cameras": cameras}


# -- the discovery configs ----------------------------------------------------------------


def discovery_configs(device: str, discovery_prefix: str, state_topic: str, status_topic: str,
                      state: dict[str, Any], version: str) -> dict[str, bytes]:
    """topic -> retained config payload, for every entity the state message can fill."""
    node = slug(device)
    common = {
        "state_topic": state_topic, "availability_topic": status_topic,
        "availability_template": "{{ value_json.state }}", "payload_available": "online",
        "payload_not_available": "offline", "qos": 1,
        "device": {"identifiers": [f"appliance_{node}"], "name": device, "model": MODEL,
                   "manufacturer": "appliance", "sw_version": version},
        "origin": {"name": "appliance", "sw_version": version},
    }
    out: dict[str, bytes] = {}

    def entity(component: str, parts: list[str], name: str, template: str, **extra: Any) -> None:
        # unique_id: stable and unique for any names (a hash of them); object ids readable.
        digest = hashlib.sha1(json.dumps([device, *parts]).encode()).hexdigest()[:10]
        uid = f"appliance_{node}_{digest}"
        object_id = slug("_".join([device, *parts])).lower()
        out[f"{discovery_prefix}/{component}/{node}/{uid}/config"] = _dumps({
            **common, "name": name, "unique_id": uid, "object_id": object_id,
            # object_id is what Home Assistant before 2025.10 reads; default_entity_id replaces it
            "default_entity_id": f"{component}.{object_id}", "value_template": template, **extra})

    for cam, c in state["cameras"].items():
        at = f"value_json.cameras[{_lit(cam)}]"
        entity("binary_sensor", [cam, "camera"], f"{cam} camera",
               "{{ 'ON' if %s.state == 'streaming' else 'OFF' }}" % at,
               payload_on="ON", payload_off="OFF", device_class="connectivity")
        for line in c.get("lines", {}):
            for direction in ("in", "out"):
                entity("sensor", [cam, "line", line, direction], f"{cam} {line} {direction}",
                       "{{ %s.lines[%s][%s] }}" % (at, _lit(line), _lit(direction)),
                       unit_of_measurement=UNITS["line"], state_class="total_increasing", icon="mdi:counter")
        for zone in c.get("zones", {}):
            entity("sensor", [cam, "zone", zone, "occupancy"], f"{cam} {zone} occupancy",
                   "{{ %s.zones[%s].occupancy }}" % (at, _lit(zone)),
                   unit_of_measurement=UNITS["zone"], state_class="measurement", icon="mdi:account-group")
    return out


# -- the uplink's side ----------------------------------------------------------------------


class HomeAssistant:
    """Keeps the discovery configs and the state message on the broker, once per session
    and on change; clears retained topics no longer wanted (all of them when disabled)."""

    def __init__(self, conn: sqlite3.Connection, cfg: Config, state_topic: str, status_topic: str,
                 pipeline: Any, version: str, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic):
        self.conn, self.cfg, self.pipeline, self.version = conn, cfg, pipeline, version
        self.ha = cfg.uplink.homeassistant
        self.state_topic, self.status_topic = state_topic, status_topic
        self.clock, self.monotonic = clock, monotonic
        self.reset()

    def reset(self) -> None:
        """A new connection: publish everything again (a broker without persistence forgets
        retained messages when it restarts)."""
        self._configs: dict[str, bytes] | None = None  # what this connection published
        self._state: dict[str, Any] | None = None
        self._next = 0.0

    def _recorded(self) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT topic FROM uplink_retained")}

    def _record(self, topics: set[str], cleared: set[str]) -> None:
        now = self.clock()
        with self.conn:
            self.conn.executemany("INSERT OR REPLACE INTO uplink_retained (topic, ts) VALUES (?, ?)",
                                  [(t, now) for t in sorted(topics)])
            self.conn.executemany("DELETE FROM uplink_retained WHERE topic = ?", [(t,) for t in sorted(cleared)])

    def tick(self, send: Send) -> None:
        if self.monotonic() < self._next:
            return
        first = self._configs is None
        if not self.ha.enabled:
            if first:  # once per connection: remove what an earlier, enabled run published
                self._clear(send, self._recorded())
                self._configs = {}
            self._next = self.monotonic() + self.ha.interval_s
            return
        self._next = self.monotonic() + self.ha.interval_s
        state = analytics_state(self.cfg.device.id, self.cfg, self.pipeline, self.clock())
        wanted = discovery_configs(self.cfg.device.id, self.ha.discovery_prefix, self.state_topic,
                                   self.status_topic, state, self.version)
        before = self._configs or {}
        stale = ((self._recorded() if first else set(before)) - set(wanted)) - {self.state_topic}
        self._record(set(wanted) | {self.state_topic}, set())
        for topic, payload in wanted.items():
            if before.get(topic) != payload and send(topic, payload, True) is None:
                return  # the link went: the next connection starts again
        self._configs = dict(wanted)
        self._clear(send, stale)
        body = {k: v for k, v in state.items() if k != "ts"}
        if body != self._state and send(self.state_topic, _dumps(state), True) is not None:
            self._state = body

    def _clear(self, send: Send, topics: set[str]) -> None:
        """Empty retained messages: Home Assistant removes those entities, the broker the
        retained message."""
        done = {t for t in sorted(topics) if send(t, b"", True) is not None}
        if done:
            self._record(set(), done)
            log.info("uplink: cleared %d retained Home Assistant topics no longer wanted", len(done))
