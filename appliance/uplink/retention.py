"""Backlog limits: rows, payload bytes and age of the events kept in SQLite.

When the table is over a limit, sent rows go first, oldest first. Unsent rows are
deleted only when the unsent rows alone are over a limit (the hard cap), again oldest
first (lowest seq, whatever the priority). Each such deletion is counted in
`appliance_uplink_events_dropped_total{reason}` and announced by a `dropped` notice,
stored in `uplink_notices` and sent on the events topic like an event (docs/mqtt.md).

Rows and bytes are counted once at start and then kept up to date from the rows added
since (a primary-key range) and the rows deleted here, so a check costs little however
large the table is. It assumes this is the only code that deletes events.
"""
from __future__ import annotations

import json
import logging
import sqlite3
import time
from dataclasses import dataclass
from typing import Callable

from appliance import metrics
from appliance.config import UplinkBacklogConfig
from appliance.uplink.outbox import chunks

log = logging.getLogger(__name__)

_SCAN = 1000  # rows fetched per step while choosing what to delete


@dataclass(frozen=True)
class Drop:
    reason: str  # max_age | max_rows | max_bytes
    count: int
    first_seq: int
    last_seq: int


class Retention:
    def __init__(self, conn: sqlite3.Connection, limits: UplinkBacklogConfig, device_id: str,
                 clock: Callable[[], float] = time.time):
        self.conn, self.limits, self.device_id, self.clock = conn, limits, device_id, clock
        self.rows = self.bytes = 0
        self._counted_upto = 0  # rows with seq <= this are in rows/bytes
        self._count(full=True)

    def _count(self, full: bool = False) -> None:
        if full:
            self.rows = self.bytes = self._counted_upto = 0
        n, size, top = self.conn.execute(
            "SELECT COUNT(*), TOTAL(length(CAST(payload AS BLOB))), MAX(seq) FROM events WHERE seq > ?",
            [self._counted_upto]).fetchone()
        self.rows += n
        self.bytes += int(size)
        self._counted_upto = max(self._counted_upto, top or 0)

    def enforce(self) -> list[Drop]:
        """Bring the table within its limits; return what unsent rows were dropped."""
        self._count()
        drops: list[Drop] = []
        cutoff = self.clock() - self.limits.max_age_days * 86400.0
        oldest = self.conn.execute("SELECT MIN(ts) FROM events").fetchone()[0]  # the ts index: cheap
        if oldest is not None and oldest < cutoff:
            self._delete(self._select("ts < ? AND sent_at IS NOT NULL", [cutoff], None, None))
            drops.append(self._drop("max_age", self._select("ts < ? AND sent_at IS NULL", [cutoff], None, None)))
        for reason, excess in (("max_rows", lambda: (self.rows - self.limits.max_rows, 0)),
                               ("max_bytes", lambda: (0, self.bytes - self.limits.max_bytes))):
            rows_over, bytes_over = excess()
            if rows_over > 0 or bytes_over > 0:
                self._delete(self._select("sent_at IS NOT NULL", [], rows_over, bytes_over))
                rows_over, bytes_over = excess()
                if rows_over > 0 or bytes_over > 0:
                    drops.append(self._drop(reason, self._select("sent_at IS NULL", [], rows_over, bytes_over)))
        self._prune_notices(cutoff)
        return [d for d in drops if d.count]

    def _select(self, where: str, args: list, rows: int | None, nbytes: int | None) -> list[tuple[int, int]]:
        """(seq, bytes) of the oldest rows matching `where`, enough to cover `rows` rows and
        `nbytes` bytes (all of them when both are None)."""
        picked: list[tuple[int, int]] = []
        got_bytes, after = 0, 0
        while True:
            batch = self.conn.execute(
                f"SELECT seq, length(CAST(payload AS BLOB)) FROM events WHERE {where} AND seq > ? "
                f"ORDER BY seq LIMIT {_SCAN}", [*args, after]).fetchall()
            for seq, size in batch:
                if rows is not None and nbytes is not None and len(picked) >= rows and got_bytes >= nbytes:
                    return picked
                picked.append((seq, size))
                got_bytes += size
            if len(batch) < _SCAN:
                return picked
            after = batch[-1][0]

    def _delete(self, rows: list[tuple[int, int]]) -> None:
        for part in chunks(rows):
            with self.conn:
                self.conn.executemany("DELETE FROM events WHERE seq = ?", [(s,) for s, _ in part])
            self.rows -= len(part)
            self.bytes -= sum(b for _, b in part)

    def _drop(self, reason: str, rows: list[tuple[int, int]]) -> Drop:
        if not rows:
            return Drop(reason, 0, 0, 0)
        drop = Drop(reason, len(rows), rows[0][0], rows[-1][0])
        self._delete(rows)
        with self.conn:  # the notice is durable before anyone is told
            n = (self.conn.execute("SELECT MAX(n) FROM uplink_notices").fetchone()[0] or 0) + 1
            ts = self.clock()
            payload = json.dumps({
                "id": f"{self.device_id}:dropped:{n}", "type": "dropped", "device": self.device_id,
                "ts": ts, "reason": reason, "count": drop.count, "first_seq": drop.first_seq,
                "last_seq": drop.last_seq, "schema": 1}, separators=(",", ":"))
            self.conn.execute("INSERT INTO uplink_notices (n, ts, payload) VALUES (?, ?, ?)", [n, ts, payload])
        metrics.UPLINK_EVENTS_DROPPED.labels(reason).inc(drop.count)
        log.warning("uplink: backlog over %s: dropped %d unsent events (seq %d to %d), oldest first",
                    reason, drop.count, drop.first_seq, drop.last_seq)
        return drop

    def _prune_notices(self, cutoff: float) -> None:
        with self.conn:
            self.conn.execute("DELETE FROM uplink_notices WHERE sent_at IS NOT NULL AND ts < ?", [cutoff])
