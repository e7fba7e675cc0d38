"""Deleting events from SQLite: the part shared by the uplink's backlog limits
(appliance/uplink/retention.py) and the low-disk guard (appliance/store/disk.py).

- `select_oldest` picks the oldest rows (lowest seq) of a kind, enough to cover a number
  of rows and payload bytes;
- `delete_rows` deletes them in short transactions, so the writer never waits long, and
  tells `tally` what went, so every pruner's running counts stay right whoever deleted;
- `drop_unsent` deletes unsent rows and announces them: a `dropped` notice in
  `uplink_notices` (sent on the events topic like an event, docs/mqtt.md), the counter
  `appliance_uplink_events_dropped_total{reason}` and a warning in the log.
"""
from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from appliance import metrics

log = logging.getLogger(__name__)

SCAN = 1000  # rows fetched per step while choosing what to delete
CHUNK = 500  # rows deleted per transaction


@dataclass(frozen=True)
class Drop:
    reason: str  # max_age | max_rows | max_bytes | disk
    count: int
    first_seq: int
    last_seq: int


def db_key(conn: sqlite3.Connection) -> str:
    """The database file a connection is on: what `tally` is kept by."""
    return conn.execute("PRAGMA database_list").fetchone()[2]


class _Tally:
    """What was deleted in this process, per database file, by any pruner: one entry
    (first seq, last seq, rows, payload bytes) per transaction. A pruner that keeps running
    counts (Retention) reads the entries since its last look and subtracts the rows it had
    counted. Only the latest KEEP entries are kept; a reader further behind recounts."""

    KEEP = 10_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._log: dict[str, list[tuple[int, int, int, int]]] = {}
        self._base: dict[str, int] = {}  # mark of the first entry kept

    def add(self, key: str, first_seq: int, last_seq: int, rows: int, nbytes: int) -> None:
        with self._lock:
            entries = self._log.setdefault(key, [])
            entries.append((first_seq, last_seq, rows, nbytes))
            if len(entries) > 2 * self.KEEP:
                gone = len(entries) - self.KEEP
                del entries[:gone]
                self._base[key] = self._base.get(key, 0) + gone

    def mark(self, key: str) -> int:
        with self._lock:
            return self._base.get(key, 0) + len(self._log.get(key, ()))

    def since(self, key: str, mark: int) -> tuple[list[tuple[int, int, int, int]] | None, int]:
        """The entries added after `mark` (None when some are no longer kept), and the new mark."""
        with self._lock:
            base, entries = self._base.get(key, 0), self._log.get(key, [])
            end = base + len(entries)
            if mark < base:
                return None, end
            return entries[mark - base:], end


tally = _Tally()


def select_oldest(conn: sqlite3.Connection, where: str, args: Sequence, rows: int | None,
                  nbytes: int | None) -> list[tuple[int, int]]:
    """(seq, payload bytes) of the oldest rows matching `where`, enough to cover `rows` rows
    and `nbytes` bytes (all of them when both are None)."""
    picked: list[tuple[int, int]] = []
    got_bytes, after = 0, 0
    while True:
        batch = conn.execute(
            f"SELECT seq, length(CAST(payload AS BLOB)) FROM events WHERE {where} AND seq > ? "
            f"ORDER BY seq LIMIT {SCAN}", [*args, after]).fetchall()
        for seq, size in batch:
            if rows is not None and nbytes is not None and len(picked) >= rows and got_bytes >= nbytes:
                return picked
            picked.append((seq, size))
            got_bytes += size
        if len(batch) < SCAN:
            return picked
        after = batch[-1][0]


def delete_rows(conn: sqlite3.Connection, rows: Sequence[tuple[int, int]], key: str | None = None,
                chunk: int = CHUNK, between: Callable[[], None] | None = None) -> tuple[int, int]:
    """Delete these rows, `chunk` per transaction, calling `between` after each; return the
    (rows, payload bytes) actually deleted (a row another pruner deleted meanwhile is not
    counted twice)."""
    key = key or db_key(conn)
    done_rows = done_bytes = 0
    seqs = sorted(s for s, _ in rows)
    for i in range(0, len(seqs), chunk):
        part = seqs[i:i + chunk]
        marks = ",".join("?" * len(part))
        own = not conn.in_transaction
        if own:
            conn.execute("BEGIN IMMEDIATE")  # nobody deletes between the count and the delete
        try:
            n, size = conn.execute(
                f"SELECT COUNT(*), TOTAL(length(CAST(payload AS BLOB))) FROM events WHERE seq IN ({marks})",
                part).fetchone()
            conn.execute(f"DELETE FROM events WHERE seq IN ({marks})", part)
            if own:
                conn.execute("COMMIT")
        except BaseException:
            if own and conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        tally.add(key, part[0], part[-1], n, int(size))
        done_rows += n
        done_bytes += int(size)
        if between is not None:
            between()
    return done_rows, done_bytes


def add_notice(conn: sqlite3.Connection, device_id: str, drop: Drop, ts: float) -> None:
    """Store the `dropped` notice; durable before anyone is told."""
    with conn:
        n = (conn.execute("SELECT MAX(n) FROM uplink_notices").fetchone()[0] or 0) + 1
        payload = json.dumps({
            "id": f"{device_id}:dropped:{n}", "type": "dropped", "device": device_id,
            "ts": ts, "reason": drop.reason, "count": drop.count, "first_seq": drop.first_seq,
            "last_seq": drop.last_seq, "schema": 1}, separators=(",", ":"))
        conn.execute("INSERT INTO uplink_notices (n, ts, payload) VALUES (?, ?, ?)", [n, ts, payload])


def drop_unsent(conn: sqlite3.Connection, device_id: str, reason: str, rows: Sequence[tuple[int, int]],
                clock: Callable[[], float] = time.time, key: str | None = None,
                what: str = "uplink: backlog over %s", logger: logging.Logger | None = None,
                chunk: int = CHUNK, between: Callable[[], None] | None = None) -> Drop:
    """Delete unsent rows, then count and announce them (notice, metric, log line).
    `what` starts the log line, with %s for the reason."""
    if not rows:
        return Drop(reason, 0, 0, 0)
    count, _ = delete_rows(conn, rows, key, chunk, between)
    drop = Drop(reason, count, rows[0][0], rows[-1][0])
    if not count:
        return drop
    add_notice(conn, device_id, drop, clock())
    metrics.UPLINK_EVENTS_DROPPED.labels(reason).inc(count)
    (logger or log).warning(what + ": dropped %d unsent events (seq %d to %d), oldest first",
                reason, count, drop.first_seq, drop.last_seq)
    return drop
