"""Backlog limits: rows, payload bytes and age of the events kept in SQLite.

When the table is over a limit, sent rows go first, oldest first. Unsent rows are
deleted only when the unsent rows alone are over a limit (the hard cap), again oldest
first (lowest seq, whatever the priority). Each such deletion is counted in
`appliance_uplink_events_dropped_total{reason}` and announced by a `dropped` notice,
stored in `uplink_notices` and sent on the events topic like an event (docs/mqtt.md).
Choosing, deleting and announcing rows is shared with the low-disk guard
(appliance/store/pruning.py, appliance/store/disk.py).

Rows and bytes are counted once at start and then kept up to date from the rows added
since (a primary-key range) and the rows deleted since, here or by the disk guard
(pruning.tally), so a check costs little however large the table is.
"""
from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable

from appliance.config import UplinkBacklogConfig
from appliance.store import pruning
from appliance.store.pruning import Drop

__all__ = ["Drop", "Retention"]

log = logging.getLogger(__name__)


class Retention:
    def __init__(self, conn: sqlite3.Connection, limits: UplinkBacklogConfig, device_id: str,
                 clock: Callable[[], float] = time.time):
        self.conn, self.limits, self.device_id, self.clock = conn, limits, device_id, clock
        self._key = pruning.db_key(conn)
        self.rows = self.bytes = 0
        self._counted_upto = 0  # rows with seq <= this are in rows/bytes
        self._mark = 0  # pruning.tally entries before this are taken into rows/bytes
        self._count(full=True)

    def _count(self, full: bool = False) -> None:
        if full or not self._take_deletions():
            # The mark is taken before counting: a deletion in between is then subtracted
            # once too often (a count a little low, kept too long) rather than never (a
            # count too high, which could drop unsent rows early).
            self.rows = self.bytes = self._counted_upto = 0
            self._mark = pruning.tally.mark(self._key)
        n, size, top = self.conn.execute(
            "SELECT COUNT(*), TOTAL(length(CAST(payload AS BLOB))), MAX(seq) FROM events WHERE seq > ?",
            [self._counted_upto]).fetchone()
        self.rows += n
        self.bytes += int(size)
        self._counted_upto = max(self._counted_upto, top or 0)

    def _take_deletions(self) -> bool:
        """Subtract the counted rows deleted since the last look, here or by another pruner
        (the disk guard); False when that cannot be told and a full count is needed."""
        entries, self._mark = pruning.tally.since(self._key, self._mark)
        if entries is None:
            return False
        for first, last, rows, nbytes in entries:
            if last <= self._counted_upto:
                self.rows -= rows
                self.bytes -= nbytes
            elif first <= self._counted_upto:  # some of them counted, some not: recount
                return False
        return True

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
        return pruning.select_oldest(self.conn, where, args, rows, nbytes)

    def _delete(self, rows: list[tuple[int, int]]) -> None:
        pruning.delete_rows(self.conn, rows, self._key)
        self._deleted()

    def _drop(self, reason: str, rows: list[tuple[int, int]]) -> Drop:
        drop = pruning.drop_unsent(self.conn, self.device_id, reason, rows, self.clock, self._key,
                                   what="uplink: backlog over %s", logger=log)
        self._deleted()
        return drop

    def _deleted(self) -> None:
        if not self._take_deletions():
            self._count(full=True)

    def _prune_notices(self, cutoff: float) -> None:
        with self.conn:
            self.conn.execute("DELETE FROM uplink_notices WHERE sent_at IS NOT NULL AND ts < ?", [cutoff])
