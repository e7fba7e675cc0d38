"""Track lifecycle events: new, update (rate-limited per track) and end.

Everything after the tracker speaks in Events. An event is serialised once, to JSON, and
that text is what SQLite keeps and what the uplink sends. Its id is the device id and a
sequence number that only grows on this device, so a consumer can drop duplicates.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Sequence

import numpy as np

from appliance.capture.frame import Frame
from appliance.detect.detector import label_name
from appliance.track.sort import Track, TrackerOutput

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Event:
    id: str  # "<device>:<seq>", unique per device forever
    seq: int
    type: str  # "new" | "update" | "end"
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

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))


@dataclass
class _Known:
    first_seen: float
    last_emitted: float
    last: Track
    last_ts: float
    last_frame: int


@dataclass
class Lifecycle:
    """Turns one camera's tracker output into events."""

    device_id: str
    camera_id: str
    labels: Sequence[str]
    update_interval_s: float
    next_seq: Callable[[], int]
    track_id_base: int = 0  # keeps track ids unique across restarts of the appliance
    _known: dict[int, _Known] = field(default_factory=dict)

    @property
    def live(self) -> int:
        return len(self._known)

    def _event(self, kind: str, t: Track, k: _Known, ts: float, frame_seq: int) -> Event:
        seq = self.next_seq()
        label = label_name(self.labels, int(t.class_id))
        return Event(
            id=f"{self.device_id}:{seq}", seq=seq, type=kind, device=self.device_id,
            camera=self.camera_id, track_id=self.track_id_base + t.id, label=label,
            score=round(float(t.score), 4), box=[round(float(v), 1) for v in t.xyxy],
            ts=ts, first_seen=k.first_seen, frame_seq=frame_seq,
        )

    def on_frame(self, frame: Frame, out: TrackerOutput) -> list[Event]:
        ts, events = frame.t_capture_wall, []
        h, w = frame.image.shape[:2]
        for t in out.tracks:
            # The filter's estimate may run past the edge; events report what is in the picture.
            t = replace(t, xyxy=np.clip(t.xyxy, 0, [w, h, w, h]))
            k = self._known.get(t.id)
            if k is None:
                k = self._known[t.id] = _Known(ts, ts, t, ts, frame.seq)
                events.append(self._event("new", t, k, ts, frame.seq))
                continue
            k.last, k.last_ts, k.last_frame = t, ts, frame.seq
            if ts - k.last_emitted >= self.update_interval_s:
                k.last_emitted = ts
                events.append(self._event("update", t, k, ts, frame.seq))
        events.extend(self._end(out.ended))
        return events

    def _end(self, tracks: Sequence[Track]) -> list[Event]:
        events = []
        for t in tracks:
            k = self._known.pop(t.id, None)
            if k is not None:  # the last reported box, not the tracker's coasting guess
                events.append(self._event("end", k.last, k, k.last_ts, k.last_frame))
        return events

    def finish(self, tracks: Sequence[Track]) -> list[Event]:
        """End events for the tracks still live when the stream ends or the appliance stops."""
        return self._end(tracks)
