"""Track lifecycle events: new, update (rate-limited per track) and end.

The first track processor. Everything after the tracker speaks in Events. An event is
serialised once, to JSON, and that text is what SQLite keeps and what the uplink sends.
Its id is the device id and a sequence number that only grows on this device (handed out
by the event sink), so a consumer can drop duplicates.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Sequence

import numpy as np

from appliance.detect.detector import label_name
from appliance.events.types import TRACK_TYPES
from appliance.result import FrameResult
from appliance.track.sort import Track

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Event:
    id: str  # "<device>:<seq>", unique per device forever; "" until the sink numbers it
    seq: int
    type: str  # one of TRACK_TYPES
    device: str
    camera: str
    track_id: int
    label: str
    score: float
    box: list[float]  # x1, y1, x2, y2 in source pixels
    ts: float  # wall-clock time (unix seconds) of the frame that caused the event
    first_seen: float  # wall-clock time the track was first reported
    frame_seq: int
    schema: int = SCHEMA_VERSION
    # Optional, absent from the JSON when None (schema 1 consumers still validate):
    classification: dict | None = None  # the track's decided type (appliance/classify/)
    snapshot: str | None = None  # end: file name of the track's best crop (snapshots policy)
    model: dict | None = None  # the detector that saw the track last: {"name", "version"}

    def __post_init__(self) -> None:
        if self.type not in TRACK_TYPES:
            raise ValueError(f"track event type {self.type!r} is not one of {TRACK_TYPES}")

    def to_json(self) -> str:
        d = asdict(self)
        for optional in ("classification", "snapshot", "model"):
            if d[optional] is None:
                del d[optional]
        return json.dumps(d, separators=(",", ":"))


@dataclass
class _Known:
    first_seen: float
    last_emitted: float
    last: Track
    last_ts: float
    last_frame: int
    classification: dict | None = None  # once the classifier decided
    model: dict | None = None  # the detector of the track's last frame


@dataclass
class Lifecycle:
    """Turns one camera's tracks into new/update/end events (a track processor)."""

    device_id: str
    camera_id: str
    labels: Sequence[str]
    update_interval_s: float
    _known: dict[int, _Known] = field(default_factory=dict)

    @property
    def live(self) -> int:
        return len(self._known)

    def _event(self, kind: str, t: Track, k: _Known, ts: float, frame_seq: int,
               snapshot: str | None = None) -> Event:
        return Event(
            id="", seq=0, type=kind, device=self.device_id, camera=self.camera_id, track_id=t.id,
            label=label_name(self.labels, int(t.class_id)), score=round(float(t.score), 4),
            box=[round(float(v), 1) for v in t.xyxy], ts=ts, first_seen=k.first_seen,
            frame_seq=frame_seq, classification=k.classification, snapshot=snapshot, model=k.model,
        )

    def process(self, r: FrameResult) -> None:
        ts, seq = r.frame.t_capture_wall, r.frame.seq
        h, w = r.frame.image.shape[:2]
        for t in r.tracks:
            # The filter's estimate may run past the edge; events report what is in the picture.
            t = replace(t, xyxy=np.clip(t.xyxy, 0, [w, h, w, h]))
            attrs = r.attributes.get(t.id, {})
            k = self._known.get(t.id)
            if k is None:
                k = self._known[t.id] = _Known(ts, ts, t, ts, seq, attrs.get("classification"), r.model)
                r.events.append(self._event("new", t, k, ts, seq))
                continue
            k.last, k.last_ts, k.last_frame = t, ts, seq
            k.model = r.model or k.model
            k.classification = attrs.get("classification", k.classification)
            if ts - k.last_emitted >= self.update_interval_s:
                k.last_emitted = ts
                r.events.append(self._event("update", t, k, ts, seq))
        for t in r.ended:
            k = self._known.pop(t.id, None)
            if k is not None:  # the last reported box, not the tracker's coasting guess
                attrs = r.attributes.get(t.id, {})
                k.classification = attrs.get("classification", k.classification)
                r.events.append(self._event("end", k.last, k, k.last_ts, k.last_frame, attrs.get("snapshot")))


def build(ctx, camera) -> Lifecycle:
    """The pipeline's factory for this processor (see TRACK_PROCESSORS in pipeline.py)."""
    return Lifecycle(ctx.cfg.device.id, camera.id, ctx.labels, ctx.cfg.events.update_interval_s)
