"""The `counts` topic: per-minute line and zone counts (docs/mqtt.md, "Counts").

Every `uplink.counts_interval_s` the uplink publishes the rows of the `counts` table
(appliance/store/rollups.py) of finished minutes that the broker has not acknowledged
yet, at most MAX_ROWS per message, oldest minute first. A minute is finished
`uplink.counts_delay_s` after it ends.

The cursor is per row and lives in SQLite: `rev` goes up whenever the writer adds to a
row, and the PUBACK of the message that carried it sets `sent_rev` to the rev it carried.
So nothing is lost across lost links, restarts or kill -9 (an unacknowledged row goes
again), nothing acknowledged goes again, and an event that reaches SQLite after its
minute was sent (a write that failed for a while) sends that minute again with its new
total: every row is a total, and consumers keep the latest by its key.
"""
from __future__ import annotations

import json
import logging
import math
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from appliance.store import rollups

log = logging.getLogger(__name__)

SCHEMA = 1
MAX_ROWS = 500  # rows per message (about 100 bytes each)
MAX_MESSAGES = 20  # per round; the rest waits for the next round (or the acks of these)

Send = Callable[[str, bytes], "int | None"]  # (topic, payload) -> mid, None when the link is gone


def counts_message(device: str, rows: list[dict[str, Any]], complete_until: float,
                   interval_s: float, ts: float) -> bytes:
    return json.dumps({"schema": SCHEMA, "device": device, "ts": ts, "complete_until": complete_until,
                       "interval_s": interval_s, "counts": rows}, separators=(",", ":")).encode()


class CountsPublisher:
    def __init__(self, conn: sqlite3.Connection, topic: str, device: str, interval_s: float,
                 delay_s: float, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic):
        self.conn, self.topic, self.device = conn, topic, device
        self.interval_s, self.delay_s = interval_s, delay_s
        self.clock, self.monotonic = clock, monotonic
        self._inflight: dict[int, list[tuple[int, int]]] = {}  # mid -> (row id, rev) it carried
        self._next = 0.0  # monotonic time of the next round
        self.rows_sent = 0  # acknowledged rows, for the tests and the log

    def reset(self) -> None:
        """A new connection: forget what was in flight (it is still unsent in SQLite) and
        publish at once."""
        self._inflight.clear()
        self._next = 0.0

    def complete_until(self, now: float) -> float:
        """The start of the first minute that is not finished at `now`."""
        return math.floor((now - self.delay_s) / 60.0) * 60.0

    def tick(self, send: Send) -> None:
        """A round when one is due and the last one was acknowledged (a row never travels in
        two messages at once)."""
        if self.monotonic() < self._next or self._inflight:
            return
        self._next = self.monotonic() + self.interval_s
        now = self.clock()
        until = self.complete_until(now)
        after: tuple[float, int] = (-1.0, -1)  # before every minute (unix time >= 0)
        for _ in range(MAX_MESSAGES):
            rows = rollups.unsent(self.conn, until, after, MAX_ROWS)
            if not rows:
                return
            mid = send(self.topic, counts_message(self.device, [r for _, _, r in rows], until,
                                                  self.interval_s, now))
            if mid is None:  # the link went; the next connection starts again
                return
            self._inflight[mid] = [(row_id, rev) for row_id, rev, _ in rows]
            after = (rows[-1][2]["minute"], rows[-1][0])
            if len(rows) < MAX_ROWS:
                return

    def acked(self, mid: int) -> bool:
        """A PUBACK: True when it was for a counts message (its rows are now sent)."""
        sent = self._inflight.pop(mid, None)
        if sent is None:
            return False
        rollups.mark_sent(self.conn, sent)
        self.rows_sent += len(sent)
        if not self._inflight and len(sent) == MAX_ROWS:
            self._next = 0.0  # a full message: more may wait, go on at once
        return True
