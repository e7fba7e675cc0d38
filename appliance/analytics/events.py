"""`line` and `zone` events: what the analytics processor adds to the event stream.

They share the id scheme, table, outbox and MQTT topic of track events, and have the
attributes the store's `event_row` reads (id, seq, type, device, camera, ts, track_id,
label, score, classification). Optional fields are left out of the JSON when unknown, so
consumers of schema 1 still validate (docs/events.md).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

SCHEMA_VERSION = 1

LINE_DIRECTIONS = ("in", "out")
ZONE_ACTIONS = ("enter", "exit", "loiter", "speeding")

_OPTIONAL = ("classification", "heading_deg", "speed_px_s", "speed_kmh", "dwell_s", "model")


@dataclass(frozen=True)
class _Common:
    id: str  # "<device>:<seq>"; "" until the sink numbers it
    seq: int
    type: str  # "line" or "zone" (events/types.py ANALYTICS_TYPES)
    device: str
    camera: str
    ts: float  # wall-clock time (unix seconds) of the frame behind the event
    frame_seq: int
    track_id: int
    label: str
    score: float
    classification: dict | None = None
    heading_deg: float | None = None  # motion, when known (motion.py)
    speed_px_s: float | None = None
    speed_kmh: float | None = None  # with a ground-plane calibration only
    schema: int = SCHEMA_VERSION
    model: dict | None = None  # the detector's {"name", "version"} (docs/models.md)

    def to_json(self) -> str:
        d = asdict(self)
        for k in _OPTIONAL:
            if k in d and d[k] is None:
                del d[k]
        d["point"] = list(d["point"])
        return json.dumps(d, separators=(",", ":"))


@dataclass(frozen=True)
class LineEvent(_Common):
    line: str = ""
    direction: str = "in"  # "in": from s < 0 to s > 0 (docs/analytics.md)
    point: tuple = ()  # the reference point after crossing, source pixels

    def __post_init__(self) -> None:
        if self.type != "line" or self.direction not in LINE_DIRECTIONS:
            raise ValueError(f"line event: type {self.type!r}, direction {self.direction!r} "
                             f"(expected type 'line', direction one of {LINE_DIRECTIONS})")


@dataclass(frozen=True)
class ZoneEvent(_Common):
    zone: str = ""
    action: str = "enter"  # enter, exit, loiter, speeding
    occupancy: int = 0  # tracks in the zone after this event
    point: tuple = ()
    dwell_s: float | None = None  # exit, loiter, speeding: time in the zone so far

    def __post_init__(self) -> None:
        if self.type != "zone" or self.action not in ZONE_ACTIONS:
            raise ValueError(f"zone event: type {self.type!r}, action {self.action!r} "
                             f"(expected type 'zone', action one of {ZONE_ACTIONS})")
