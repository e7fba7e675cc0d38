"""The hand-off between capture threads and the detector.

Each camera has a small slot. A live camera never waits for the detector: when its slot
is full the oldest frame is dropped and counted (latest wins), so the detector always
sees the freshest picture. A file played fast instead waits for room, so every frame is
processed (benchmarks, backfill). The detector takes frames from all cameras in turn,
one at a time (`get`) or the oldest of every camera at once (`get_batch`). `put` tells
the camera what happened to its frame, so the capture stage counts its own drops.
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Union

from appliance.capture.frame import Frame


@dataclass(frozen=True)
class EndOfStream:
    camera_id: str


Item = Union[Frame, EndOfStream]

# What put() did with the item.
ACCEPTED = "accepted"
REPLACED_OLDEST = "replaced-oldest"  # the slot was full: its oldest frame was dropped
CLOSED = "closed"  # the hub is closed: nothing more is taken


class FrameHub:
    def __init__(self) -> None:
        # One lock; the detector waits on `_items`, a blocked camera on its own `_room`,
        # so a hand-over wakes only the thread it concerns, not every camera's.
        self._lock = threading.Lock()
        self._items = threading.Condition(self._lock)
        self._room: dict[str, threading.Condition] = {}
        self._slots: dict[str, deque[Item]] = {}
        self._capacity: dict[str, int] = {}
        self._latest_wins: dict[str, bool] = {}
        self._order: list[str] = []
        self._next = 0
        self._closed = False

    def add_camera(self, camera_id: str, latest_wins: bool, capacity: int = 2) -> None:
        with self._lock:
            self._slots[camera_id] = deque()
            self._room[camera_id] = threading.Condition(self._lock)
            self._capacity[camera_id] = capacity
            self._latest_wins[camera_id] = latest_wins
            self._order.append(camera_id)

    def depth(self, camera_id: str) -> int:
        return len(self._slots[camera_id])

    def put(self, item: Item) -> str:
        """Hand over a frame or an end-of-stream mark: ACCEPTED, REPLACED_OLDEST or CLOSED."""
        cam = item.camera_id
        outcome = ACCEPTED
        with self._lock:
            slot = self._slots[cam]
            if isinstance(item, Frame) and len(slot) >= self._capacity[cam]:
                if self._latest_wins[cam]:
                    slot.popleft()
                    outcome = REPLACED_OLDEST
                else:
                    self._room[cam].wait_for(
                        lambda: self._closed or len(slot) < self._capacity[cam])
            if self._closed:
                return CLOSED
            slot.append(item)
            self._items.notify_all()
            return outcome

    def _ready(self) -> bool:
        return self._closed or any(self._slots.values())

    def get(self, timeout: float | None = None) -> Item | None:
        """The next item, taking cameras in turn; None on timeout or when closed and empty."""
        with self._lock:
            if not self._items.wait_for(self._ready, timeout):
                return None
            n = len(self._order)
            for i in range(n):
                cam = self._order[(self._next + i) % n]
                if self._slots[cam]:
                    self._next = (self._next + i + 1) % n
                    item = self._slots[cam].popleft()
                    self._room[cam].notify()
                    return item
            return None

    def get_batch(self, timeout: float | None = None) -> list[Item]:
        """The oldest item of every camera that has one, for one batched inference.

        Waits up to `timeout` for the first; [] on timeout. At most one item per camera,
        so a camera's items stay in order; the camera that leads rotates.
        """
        with self._lock:
            if not self._items.wait_for(self._ready, timeout):
                return []
            n = len(self._order)
            batch = []
            for i in range(n):
                cam = self._order[(self._next + i) % n]
                if self._slots[cam]:
                    batch.append(self._slots[cam].popleft())
                    self._room[cam].notify()
            self._next = (self._next + 1) % max(n, 1)
            return batch

    def close(self) -> None:
        """Wake everybody; puts are refused from now on."""
        with self._lock:
            self._closed = True
            self._items.notify_all()
            for room in self._room.values():
                room.notify_all()
