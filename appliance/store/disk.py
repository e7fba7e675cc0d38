"""The low-disk guard: keeps a reserve free on the data directory's file system.

It runs on the writer's thread (appliance/store/writer.py), on the writer's connection:
every `check_interval_s`, before every write while the free space is under twice the
reserve, and at once when a write fails for lack of space. When the free space is under
the reserve it deletes events until it is back over the reserve plus a margin
(HYSTERESIS), so that deletions come in few, larger steps:

- with the uplink enabled, sent rows first (sent_at set), oldest first; then, if that is
  not enough, the oldest unsent rows, counted in
  `appliance_uplink_events_dropped_total{reason="disk"}` and announced by a `dropped`
  notice, exactly as the uplink's hard cap does (appliance/store/pruning.py);
- with the uplink disabled nothing is ever marked sent, and events have nowhere else to
  go: the oldest rows are deleted, counted and logged.

Every deleted row is also counted in `appliance_store_events_pruned_total{sent}`.

Free space is what the file system reports plus SQLite's free pages (deleted rows leave
free pages in the file, which later inserts reuse; the file does not shrink). The
reserve is at most a quarter of the file system (MAX_RESERVE_SHARE), so that a default
reserve on a small card does not delete every event.

The state (`status()["state"]`): `ok`; `low` (free space went under the reserve and
the guard is pruning: it stays low until the free space has been back over the reserve
for `calm_s` without pruning, or is over twice the reserve); `full` (a write failed for
lack of space, until one succeeds). It is in the gauge `appliance_store_disk_state`.
"""
from __future__ import annotations

import logging
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance import metrics
from appliance.store import pruning
from appliance.store.pruning import Drop

log = logging.getLogger(__name__)

OK, LOW, FULL = "ok", "low", "full"
STATES = (OK, LOW, FULL)
DEFAULT_RESERVE_BYTES = 64 * 1024 * 1024
HYSTERESIS = 0.25  # prune up to reserve * (1 + HYSTERESIS)
MAX_RESERVE_SHARE = 0.25  # the reserve is at most this share of the file system
MIN_PRUNE_BYTES = 16 * 1024  # payload bytes deleted per step at least
MAX_ROUNDS = 8  # delete-and-measure steps per check
# Rows per deleting transaction, each followed by a checkpoint: the WAL, which a deletion
# first grows, is then reused instead of growing on. Small where the reserve is small.
PRUNE_CHUNK_MIN, PRUNE_CHUNK_MAX = 100, 2000
PRUNE_LOG_EVERY_S = 60.0  # routine pruning is logged at most this often, summed up


@dataclass(frozen=True)
class Reading:
    total_bytes: int
    fs_free_bytes: int  # what the file system reports free
    db_free_bytes: int  # SQLite's free pages
    reserve_bytes: int  # the reserve in force (at most MAX_RESERVE_SHARE of total)

    @property
    def free_bytes(self) -> int:
        return self.fs_free_bytes + self.db_free_bytes


def is_disk_full(error: BaseException) -> bool:
    """Whether an error from SQLite (or the OS) means there is no space left."""
    if getattr(error, "sqlite_errorcode", None) == 13:  # SQLITE_FULL (Python 3.11+)
        return True
    if getattr(error, "errno", None) in (28, 122):  # ENOSPC, EDQUOT
        return True
    text = str(error).lower()
    return "disk is full" in text or "no space left" in text or "quota exceeded" in text


class DiskGuard:
    def __init__(self, db_path: Path, reserve_bytes: int = DEFAULT_RESERVE_BYTES,
                 check_interval_s: float = 5.0, *, device_id: str = "", uplink_enabled: bool = False,
                 calm_s: float = 600.0, disk_usage: Callable[[str], Any] = shutil.disk_usage,
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time):
        """db_path: the database (its directory's file system is watched); reserve_bytes: 0
        watches and reports only, never deletes; disk_usage: shutil.disk_usage or a stand-in
        returning an object with .total and .free; clock: monotonic seconds, for the
        check interval and calm_s; wall_clock: for the notices' ts."""
        self.db_path = Path(db_path)
        self.reserve_bytes = max(0, int(reserve_bytes))
        self.check_interval_s = check_interval_s
        self.device_id = device_id
        self.uplink_enabled = uplink_enabled
        self.calm_s = calm_s
        self._disk_usage, self._clock, self._wall_clock = disk_usage, clock, wall_clock
        self._lock = threading.Lock()  # status() is read from other threads
        self.state = OK
        self.reading: Reading | None = None
        self.full_error: str | None = None  # the write error while full
        self.last_error: str | None = None  # the last error of the guard itself
        self.pruned_sent = self.pruned_unsent = 0
        self.drops: list[Drop] = []  # the latest few unsent drops (uplink enabled)
        self._next_check = 0.0
        self._last_prune: float | None = None
        self._clamp_logged = False
        self._low_reading: Reading | None = None  # the reading under the reserve, before pruning
        self._key: str | None = None
        self._unlogged = [0, 0, 0]  # pruned rows not yet logged, first seq, last seq
        self._logged_at = clock()
        self._set_gauge()

    # -- what the writer calls ------------------------------------------------------------

    def configure(self, conn: sqlite3.Connection) -> None:
        """On the writer's connection: checkpoint often enough that the WAL stays small
        beside the reserve, and truncate it after a checkpoint."""
        if not self.reserve_bytes:
            return
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = int(min(1000, max(16, self.reserve_bytes // page // 8)))  # SQLite's default is 1000
        conn.execute(f"PRAGMA wal_autocheckpoint = {pages}")
        conn.execute(f"PRAGMA journal_size_limit = {pages * page * 2}")

    def due(self) -> bool:
        """Time for a check: check_interval_s has passed, or the free space is near the
        reserve (under twice it), where every write is preceded by a reading (a statvfs
        and two PRAGMAs: cheap)."""
        r = self.reading
        near = r is not None and self.reserve_bytes > 0 and r.free_bytes < 2 * r.reserve_bytes
        return near or self._clock() >= self._next_check

    def check(self, conn: sqlite3.Connection, force: bool = False) -> list[Drop]:
        """Measure, and prune if under the reserve; return the unsent drops announced.
        Does nothing before check_interval_s has passed since the last check, unless forced."""
        now = self._clock()
        if not force and not self.due():
            return []
        self._next_check = now + self.check_interval_s
        drops: list[Drop] = []
        try:
            reading = self._measure(conn)
        except (sqlite3.Error, OSError) as e:
            self._error(e)
            return drops
        was_low = reading.free_bytes < reading.reserve_bytes
        if was_low:
            self._low_reading = reading
            self._last_prune = now
            try:
                drops = self._prune(conn, reading)
                reading = self._measure(conn)
            except (sqlite3.Error, OSError) as e:  # e.g. the deletion itself found no room
                self._error(e)
            else:
                self.last_error = None
        else:
            self.last_error = None
        self._flush_prune_log(now)
        self._decide(reading, was_low, now)
        return drops

    def _error(self, e: BaseException) -> None:
        if self.last_error != str(e):
            log.warning("store: disk guard for %s: %s", self.db_path, e)
        self.last_error = str(e)

    def note_write_failed(self, error: BaseException) -> None:
        """The writer's transaction failed; full when for lack of space."""
        if is_disk_full(error):
            with self._lock:
                self.full_error = str(error)
            self._next_check = 0.0  # prune at once
            self._set_state(FULL)

    def note_write_ok(self) -> None:
        if self.full_error is not None:
            with self._lock:
                self.full_error = None
            r = self.reading
            self._decide(r, r is not None and r.free_bytes < r.reserve_bytes, self._clock())

    def status(self) -> dict[str, Any]:
        with self._lock:
            r = self.reading
            return {
                "state": self.state,
                "free_bytes": None if r is None else r.free_bytes,
                "reserve_bytes": self.reserve_bytes if r is None else r.reserve_bytes,
                "total_bytes": None if r is None else r.total_bytes,
                "fs_free_bytes": None if r is None else r.fs_free_bytes,
                "pruned_events": self.pruned_sent + self.pruned_unsent,
                "pruned_unsent": self.pruned_unsent,
                "error": self.full_error or self.last_error,
            }

    # -- inside --------------------------------------------------------------------------

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        """Move the WAL into the database without waiting for anyone, so its space is
        reused. Best effort: it cannot finish while the disk is full."""
        if not self.reserve_bytes:
            return
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error:
            pass

    def _measure(self, conn: sqlite3.Connection) -> Reading:
        du = self._disk_usage(str(self.db_path.parent))
        page, free_pages = (conn.execute("PRAGMA page_size").fetchone()[0],
                            conn.execute("PRAGMA freelist_count").fetchone()[0])
        reserve = self.reserve_bytes
        cap = int(du.total * MAX_RESERVE_SHARE)
        if reserve > cap:
            if not self._clamp_logged:
                log.warning("store: the disk reserve (%s) is more than %d %% of the file system of %s "
                            "(%s); keeping %s free instead", _size(reserve), 100 * MAX_RESERVE_SHARE,
                            self.db_path.parent, _size(du.total), _size(cap))
                self._clamp_logged = True
            reserve = cap
        reading = Reading(int(du.total), max(0, int(du.free)), page * free_pages, reserve)
        with self._lock:
            self.reading = reading
        metrics.DISK_FREE_BYTES.set(reading.fs_free_bytes)
        return reading

    def _prune(self, conn: sqlite3.Connection, reading: Reading) -> list[Drop]:
        if self._key is None:
            self._key = pruning.db_key(conn)
        target = int(reading.reserve_bytes * (1 + HYSTERESIS))
        chunk = max(PRUNE_CHUNK_MIN, min(PRUNE_CHUNK_MAX, reading.reserve_bytes // 8192))
        drops: list[Drop] = []

        def step() -> None:
            self._checkpoint(conn)

        step()  # what the WAL holds goes into the database first, so the WAL can be reused

        for _ in range(MAX_ROUNDS):
            deficit = target - reading.free_bytes
            if deficit <= 0:
                break
            want = max(deficit, MIN_PRUNE_BYTES)
            if self.uplink_enabled:
                rows = pruning.select_oldest(conn, "sent_at IS NOT NULL", [], 0, want)
                if rows:
                    n = pruning.delete_rows(conn, rows, self._key, chunk, step)[0]
                    self._deleted(n, rows, sent=True)
                else:
                    rows = pruning.select_oldest(conn, "sent_at IS NULL", [], 0, want)
                    if not rows:
                        break
                    drop = pruning.drop_unsent(conn, self.device_id, "disk", rows, self._wall_clock,
                                               self._key, what="store: %s space low", logger=log,
                                               chunk=chunk, between=step)
                    self.pruned_unsent += drop.count
                    metrics.STORE_EVENTS_PRUNED.labels("false").inc(drop.count)
                    if drop.count:
                        drops.append(drop)
            else:  # nothing is ever sent: the oldest go, whatever they are
                rows = pruning.select_oldest(conn, "1", [], 0, want)
                if not rows:
                    break
                n = pruning.delete_rows(conn, rows, self._key, chunk, step)[0]
                self._deleted(n, rows, sent=False)
                self._unlogged = [self._unlogged[0] + n, self._unlogged[1] or rows[0][0], rows[-1][0]]
            reading = self._measure(conn)
        self.drops = (self.drops + drops)[-16:]
        return drops

    def _deleted(self, n: int, rows: list[tuple[int, int]], sent: bool) -> None:
        if sent:
            self.pruned_sent += n
        else:
            self.pruned_unsent += n
        metrics.STORE_EVENTS_PRUNED.labels("true" if sent else "false").inc(n)

    def _flush_prune_log(self, now: float, force: bool = False) -> None:
        """Routine pruning with the uplink off: one line a minute at most, summed up."""
        n, first, last = self._unlogged
        if n and (force or now - self._logged_at >= PRUNE_LOG_EVERY_S):
            log.warning("store: disk space low: deleted the %d oldest events (seq %d to %d); "
                        "the uplink is off, so they were never sent anywhere", n, first, last)
            self._unlogged = [0, 0, 0]
            self._logged_at = now

    def _decide(self, r: Reading | None, was_low: bool, now: float) -> None:
        if self.full_error is not None or (r is not None and r.free_bytes <= 0):
            state = FULL
        elif r is None:
            state = self.state if self.state != FULL else OK
        elif was_low or r.free_bytes < r.reserve_bytes:
            state = LOW
        elif self.state == OK or r.free_bytes >= 2 * r.reserve_bytes:
            state = OK
        elif self._last_prune is not None and now - self._last_prune < self.calm_s:
            state = LOW  # pruned a short while ago: the reserve is still being defended
        else:
            state = OK
        self._set_state(state)

    def _set_state(self, state: str) -> None:
        old = self.state
        if state == old:
            return
        with self._lock:
            self.state = state
        self._set_gauge()
        r = self.reading
        free = "unknown" if r is None else _size(r.free_bytes)
        reserve = _size(self.reserve_bytes if r is None else r.reserve_bytes)
        if state == FULL:
            log.error("store: disk full for %s: %s free (reserve %s)%s", self.db_path, free, reserve,
                      f"; writes fail: {self.full_error}" if self.full_error else "")
        elif state == LOW:
            what = ("sent events first, then the oldest unsent" if self.uplink_enabled
                    else "the oldest events")
            low = self._low_reading or r
            log.warning("store: disk low for %s: %s free, under the reserve of %s; deleting %s "
                        "(%s free now)", self.db_path, "unknown" if low is None else _size(low.free_bytes),
                        reserve, what, free)
        else:
            self._flush_prune_log(self._clock(), force=True)
            log.info("store: disk ok for %s: %s free (reserve %s); %d events deleted so far",
                     self.db_path, free, reserve, self.pruned_sent + self.pruned_unsent)

    def _set_gauge(self) -> None:
        for s in STATES:
            metrics.STORE_DISK_STATE.labels(s).set(1 if s == self.state else 0)


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"
