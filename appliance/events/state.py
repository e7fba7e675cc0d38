"""State-change events: a camera's connection, a camera's detection stride, the power mode,
the running detector model version (`model`), a camera's detections drifting (`drift`).

They travel with the track events (same table, same id scheme, same JSON-once rule), so
whoever reads the event stream also sees why a camera went quiet or the device slowed
down. docs/events.md describes them.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from appliance.events.types import STATE_TYPES

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class StateEvent:
    id: str  # "<device>:<seq>", from the same sequence as track events
    seq: int
    type: str  # one of STATE_TYPES
    device: str
    camera: str  # the camera concerned; "" for the whole device (power)
    state: str  # the new state: a camera state, "stride N", a power mode
    previous: str
    reason: str
    ts: float  # wall-clock time of the change
    detail: dict[str, Any] = field(default_factory=dict)
    schema: int = SCHEMA_VERSION

    # Columns of the events table that only track events fill.
    track_id = None
    label = None
    score = None

    def __post_init__(self) -> None:
        if self.type not in STATE_TYPES:
            raise ValueError(f"state event type {self.type!r} is not one of {STATE_TYPES}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))
