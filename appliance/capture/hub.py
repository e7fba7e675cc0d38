"""The hand-off between capture threads and the detector.

Each camera has a small slot. A live camera never waits for the detector: when its slot
is full the oldest frame is dropped and counted (latest wins), so the detector always
sees the freshest picture. A file played fast instead waits for room, so every frame is
processed (benchmarks, backfill). The detector takes frames from all cameras in turn.
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


class FrameHub:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._slots: dict[str, deque[Item]] = {}
        self._capacity: dict[str, int] = {}
        self._latest_wins: dict[str, bool] = {}
        self._order: list[str] = []
        self._next = 0
        self._closed = False
        self.dropped: dict[str, int] = {}

    def add_camera(self, camera_id: str, latest_wins: bool, capacity: int = 2) -> None:
        with self._cond:
            self._slots[camera_id] = deque()
            self._capacity[camera_id] = capacity
            self._latest_wins[camera_id] = latest_wins
            self._order.append(camera_id)
            self.dropped[camera_id] = 0

    def depth(self, camera_id: str) -> int:
        return len(self._slots[camera_id])

    def put(self, item: Item) -> bool:
        """Hand over a frame or an end-of-stream mark; False once the hub is closed."""
        cam = item.camera_id
        with self._cond:
            slot = self._slots[cam]
            if isinstance(item, Frame) and len(slot) >= self._capacity[cam]:
                if self._latest_wins[cam]:
                    slot.popleft()
                    self.dropped[cam] += 1
                else:
                    self._cond.wait_for(
                        lambda: self._closed or len(slot) < self._capacity[cam])
            if self._closed:
                return False
            slot.append(item)
            self._cond.notify_all()
            return True

    def get(self, timeout: float | None = None) -> Item | None:
        """The next item, taking cameras in turn; None on timeout or when closed and empty."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._closed or any(self._slots.values()), timeout):
                return None
            n = len(self._order)
            for i in range(n):
                cam = self._order[(self._next + i) % n]
                if self._slots[cam]:
                    self._next = (self._next + i + 1) % n
                    item = self._slots[cam].popleft()
                    self._cond.notify_all()
                    return item
            return None

    def close(self) -> None:
        """Wake everybody; puts are refused from now on."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
