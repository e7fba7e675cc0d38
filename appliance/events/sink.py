"""The one way into the event stream: numbers events and hands them to the store writer.

Whoever makes events (the track processors, camera supervision, the adaptive stride, the
power manager) makes them unnumbered and gives them to `emit`. The sink gives each the
next sequence number and its id "<device>:<seq>", and puts them to the writer under one
lock, so the writer receives events in sequence order whatever thread they come from.
After `close()` nothing more is stored; a late state change is logged instead.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any, Protocol, Sequence

from appliance import metrics
from appliance.events.state import StateEvent

log = logging.getLogger(__name__)


class Writer(Protocol):
    def put(self, events: Sequence[Any], captured_at: float | None = None) -> None: ...


class EventSink:
    def __init__(self, device_id: str, writer: Writer, first_seq: int):
        self.device_id = device_id
        self._writer = writer
        self._next = first_seq
        self._lock = threading.Lock()
        self._closed = False

    def emit(self, events: Sequence[Any], captured_at: float | None = None) -> list:
        """Number and store events (frozen dataclasses with `seq` and `id`); returns them
        numbered. `captured_at`: monotonic capture time of the frame that caused them."""
        if not events:
            return []
        with self._lock:
            if self._closed:
                for e in events:
                    log.info("%s event for camera %r after the store closed; not stored", e.type, e.camera)
                return []
            numbered = []
            for e in events:
                seq, self._next = self._next, self._next + 1
                numbered.append(dataclasses.replace(e, seq=seq, id=f"{self.device_id}:{seq}"))
            self._writer.put(numbered, captured_at=captured_at)
        for e in numbered:
            metrics.EVENTS.labels(e.type).inc()
        return numbered

    def state(self, kind: str, camera: str, state: str, previous: str, reason: str,
              detail: dict | None = None) -> None:
        """A state change (camera, adaptive, power, model, drift) into the stream."""
        self.emit([StateEvent("", 0, kind, self.device_id, camera, state, previous, reason,
                              time.time(), detail or {})])

    def close(self) -> None:
        with self._lock:
            self._closed = True
