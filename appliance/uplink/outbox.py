"""The outbox: the events table seen from the uplink, through the uplink's own connection.

A row is unsent while `sent_at` is NULL and is marked when the broker's PUBACK for the
message that carried it arrives. The partial index `events_unsent (priority, seq)`
holds exactly the unsent rows, so reading the next ones in order, counting the backlog
and finding its oldest row cost no more than the backlog itself.

WAL lets this connection read and write beside the pipeline's writer. Its commits use
synchronous=NORMAL: a power cut may lose the last few sent-marks, and the rows they
covered are then sent again. That is a duplicate, which the delivery contract allows
(docs/mqtt.md); the events themselves are written by the pipeline with synchronous=FULL.
"""
from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from appliance.store.db import open_db

ALERT, ROUTINE = 0, 1  # events.priority: every type but `update` is an alert
PRIORITIES = (ALERT, ROUTINE)
_CHUNK = 500  # rows per statement or transaction, so the writer never waits long


@dataclass(frozen=True)
class Backlog:
    rows: int  # unsent events
    notices: int  # unsent `dropped` notices
    oldest_ts: float | None  # ts of the oldest unsent event (by seq, per priority)

    def oldest_age_s(self, now: float | None = None) -> float | None:
        if self.oldest_ts is None:
            return None
        return max(0.0, (now or time.time()) - self.oldest_ts)


def snapshot_of(payload: str) -> tuple[int, str, str, float] | None:
    """(seq, event id, file name, ts) of an `end` event that names a snapshot, else None.
    Only payloads that mention one are parsed."""
    if '"snapshot"' not in payload:
        return None
    try:
        e = json.loads(payload)
        if e.get("type") != "end" or not isinstance(e.get("snapshot"), str):
            return None
        return int(e["seq"]), str(e["id"]), e["snapshot"], float(e["ts"])
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def backlog(conn: sqlite3.Connection) -> Backlog:
    """Unsent events and notices, and the oldest unsent event's time."""
    rows = conn.execute("SELECT COUNT(*) FROM events WHERE sent_at IS NULL").fetchone()[0]
    notices = conn.execute("SELECT COUNT(*) FROM uplink_notices WHERE sent_at IS NULL").fetchone()[0]
    oldest = [r[0] for p in PRIORITIES for r in conn.execute(
        "SELECT ts FROM events WHERE sent_at IS NULL AND priority = ? ORDER BY seq LIMIT 1", [p])]
    return Backlog(rows, notices, min(oldest) if oldest else None)


class Outbox:
    def __init__(self, db_path: Path):
        self.db = open_db(db_path)
        self.conn = self.db.conn
        self.conn.execute("PRAGMA synchronous=NORMAL")

    def close(self) -> None:
        self.conn.close()

    def unsent(self, priority: int, after_seq: int, limit: int) -> list[tuple[int, str]]:
        """(seq, payload) of the next unsent events of one priority, in seq order."""
        return self.conn.execute(
            "SELECT seq, payload FROM events WHERE sent_at IS NULL AND priority = ? AND seq > ? "
            "ORDER BY seq LIMIT ?", [priority, after_seq, limit]).fetchall()

    def unsent_notices(self, after_n: int, limit: int) -> list[tuple[int, str]]:
        return self.conn.execute(
            "SELECT n, payload FROM uplink_notices WHERE sent_at IS NULL AND n > ? ORDER BY n LIMIT ?",
            [after_n, limit]).fetchall()

    def has_unsent(self) -> bool:
        return bool(self.conn.execute("SELECT 1 FROM events WHERE sent_at IS NULL LIMIT 1").fetchone()
                    or self.conn.execute(
                        "SELECT 1 FROM uplink_notices WHERE sent_at IS NULL LIMIT 1").fetchone())

    def mark_sent(self, seqs: Sequence[int], notices: Sequence[int] = (), now: float | None = None) -> None:
        now = now or time.time()
        for table, key, ids in (("events", "seq", seqs), ("uplink_notices", "n", notices)):
            for i in range(0, len(ids), _CHUNK):
                with self.conn:
                    self.conn.executemany(f"UPDATE {table} SET sent_at = ? WHERE {key} = ?",
                                          [(now, k) for k in ids[i:i + _CHUNK]])

    def requeue_since(self, since_ts: float) -> int:
        """`resync`: mark sent events (and notices) from `since_ts` on unsent again."""
        total = 0
        for table, key in (("events", "seq"), ("uplink_notices", "n")):
            lo, hi = self.conn.execute(
                f"SELECT MIN({key}), MAX({key}) FROM {table} WHERE ts >= ?", [since_ts]).fetchone()
            if lo is None:
                continue
            for start in range(lo, hi + 1, _CHUNK):  # key ranges: each chunk is one short transaction
                with self.conn:
                    cur = self.conn.execute(
                        f"UPDATE {table} SET sent_at = NULL WHERE {key} BETWEEN ? AND ? AND ts >= ? "
                        "AND sent_at IS NOT NULL", [start, start + _CHUNK - 1, since_ts])
                total += cur.rowcount if table == "events" else 0
        return total

    def backlog(self) -> Backlog:
        return backlog(self.conn)

    # -- snapshots (table snapshot_outbox; docs/mqtt.md "Snapshots") ---------------------

    def queue_snapshots(self, items: Sequence[tuple[int, str, str, float]]) -> None:
        """(seq, event id, file, ts) of acknowledged `end` events: their snapshots are to be
        sent. One already queued (sent, or found missing) stays as it is."""
        for batch in chunks(items):
            with self.conn:
                self.conn.executemany("INSERT OR IGNORE INTO snapshot_outbox (seq, event_id, file, ts) "
                                      "VALUES (?, ?, ?, ?)", batch)

    def pending_snapshots(self, after_seq: int, limit: int) -> list[tuple[int, str, str]]:
        """(seq, event id, file) of the next snapshots to send, in event order."""
        return self.conn.execute(
            "SELECT seq, event_id, file FROM snapshot_outbox WHERE done_at IS NULL AND seq > ? "
            "ORDER BY seq LIMIT ?", [after_seq, limit]).fetchall()

    def has_pending_snapshots(self) -> bool:
        return self.conn.execute("SELECT 1 FROM snapshot_outbox WHERE done_at IS NULL LIMIT 1").fetchone() is not None

    def snapshots_done(self, seqs: Sequence[int], outcome: str, now: float | None = None) -> None:
        """outcome: `sent` (acknowledged) or `missing` (the file was gone)."""
        now = now or time.time()
        for batch in chunks(seqs):
            with self.conn:
                self.conn.executemany("UPDATE snapshot_outbox SET done_at = ?, outcome = ? WHERE seq = ?",
                                      [(now, outcome, s) for s in batch])

    def requeue_snapshots_since(self, since_ts: float) -> int:
        """`resync`: snapshots of events from `since_ts` on go again (while their files last)."""
        with self.conn:
            return self.conn.execute("UPDATE snapshot_outbox SET done_at = NULL, outcome = NULL "
                                     "WHERE ts >= ? AND done_at IS NOT NULL", [since_ts]).rowcount

    def prune_snapshots(self) -> int:
        """Forget finished snapshots older than every stored event (their events are gone)."""
        with self.conn:
            return self.conn.execute(
                "DELETE FROM snapshot_outbox WHERE done_at IS NOT NULL "
                "AND seq < (SELECT MIN(seq) FROM events)").rowcount


def chunks(items: Iterable, size: int = _CHUNK) -> Iterable[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
