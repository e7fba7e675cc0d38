"""The one thread that writes events to SQLite, in batched transactions.

Events are queued by the pipeline (`put`, which never blocks) and written at most
`batch_size` per transaction, at least every `flush_interval_s`. Line and zone events are
counted per minute (store/rollups.py) in the same transaction, and counts past
`counts_retention_s` are pruned from this thread, hourly. When a write fails
(disk full, I/O error) the batch is kept and retried with a doubling delay, capped at
`retry_max_s`; the log gets one line when writes start failing and one when they work
again, not one per retry. While writes fail, at most `max_pending` events are held in
memory; past that the oldest are discarded and counted, so a disk that stays broken
cannot exhaust the memory.

The low-disk guard (appliance/store/disk.py) runs on this thread, on this connection:
every `guard.check_interval_s`, and at once when a write fails for lack of space. Its
`status()` is the `disk` part of the pipeline's status.

`close(timeout_s)` writes what is still queued and returns within about `timeout_s`
(plus CLOSE_GRACE_S), however broken the disk: what could not be written by then is
counted in `unwritten`, logged ("store: N events could not be written to ...") and
returned.

`put(events, captured_at)`: `captured_at` is the time.monotonic() of the capture of the
frame that caused the events; when the last of them commits, the time since is observed
once into `appliance_capture_to_commit_seconds` and kept for `latency_quantiles()`.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from appliance import metrics
from appliance.errors import ApplianceError
from appliance.events.lifecycle import Event
from appliance.store import rollups
from appliance.store.db import open_db
from appliance.store.disk import DiskGuard

log = logging.getLogger(__name__)

RETRY_MIN_S = 0.25
RETRY_MAX_S = 5.0
CLOSE_TIMEOUT_S = 10.0
CLOSE_GRACE_S = 1.0  # after timeout_s: time for a statement interrupted at the deadline to end
MAX_PENDING = 100_000
COUNTS_RETENTION_S = 90 * 86400.0  # store.counts_retention_days' default
COUNTS_PRUNE_INTERVAL_S = 3600.0  # how often minutes past their retention are deleted
LATENCY_WINDOW = 2048  # recent capture-to-commit latencies kept for latency_quantiles()


class _GaveUp(Exception):
    """Rolls back a transaction that outlived close()."""


def event_row(e: Event) -> dict:
    """The events row of a track or state event. `classification` is the decided type's
    label (Event.classification["label"]); None when nothing was decided, and for state
    events, which have no such field."""
    c = getattr(e, "classification", None)
    label = c.get("label") if isinstance(c, dict) else None
    return {"seq": e.seq, "id": e.id, "type": e.type, "camera": e.camera, "track_id": e.track_id,
            "label": e.label, "score": e.score, "ts": e.ts,
            "classification": label if isinstance(label, str) and label else None,
            "payload": e.to_json()}


class EventWriter:
    def __init__(self, db_path: Path, batch_size: int = 200, flush_interval_s: float = 0.5, *,
                 guard: DiskGuard | None = None, max_pending: int = MAX_PENDING,
                 retry_min_s: float = RETRY_MIN_S, retry_max_s: float = RETRY_MAX_S,
                 clock: Callable[[], float] = time.monotonic,
                 counts_retention_s: float = COUNTS_RETENTION_S, wall_clock: Callable[[], float] = time.time):
        """guard: the low-disk guard; by default one that only watches (reserve 0: it
        reports the disk state and deletes nothing). clock: time.monotonic, or a stand-in
        for the capture-to-commit latencies (captured_at is on the same clock).
        counts_retention_s: per-minute counts (store/rollups.py) older than this are deleted,
        at start and hourly; wall_clock tells their age."""
        self.db_path = Path(db_path)
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.guard = guard if guard is not None else DiskGuard(self.db_path, reserve_bytes=0)
        self.max_pending = max_pending
        self.retry_min_s, self.retry_max_s = retry_min_s, retry_max_s
        self._clock = clock
        self.counts_retention_s, self._wall_clock = counts_retention_s, wall_clock
        self._next_counts_prune = 0.0  # monotonic
        # Counts. accepted = stored + pending + unwritten, always.
        self.accepted = 0  # events handed to put()
        self.stored = 0  # committed
        self.discarded = 0  # dropped from memory past max_pending while writes failed
        self.unwritten = 0  # never written: discarded, given up at close(), or put() after close()
        self.write_seconds = 0.0  # time spent in transactions, for metrics
        # Write state: ok | failing (the current batch is being retried).
        self.state = "ok"
        self.last_error: str | None = None
        self.failures = 0  # failed attempts in the current failing spell
        self.failing_since: float | None = None
        self._items: deque = deque()  # (Event, captured_at or None), oldest first
        self._in_batch = 0  # events taken by the thread and not yet committed or given up
        self._cv = threading.Condition()
        self._wake = threading.Event()  # ends a retry wait early: close() wants a last try
        self._closing = False
        self._closed = False
        self._deadline = float("inf")  # monotonic; set by close()
        self._conn: sqlite3.Connection | None = None
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self._discard_logged = False
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)

    # -- the pipeline's side -----------------------------------------------------------

    def start(self) -> EventWriter:
        self._thread.start()
        return self

    def put(self, events: Sequence[Event], captured_at: float | None = None) -> None:
        """Queue events for writing; never blocks. captured_at: monotonic capture time of
        the frame that caused them (observed once, when the last of them commits)."""
        events = list(events)
        if not events:
            return
        with self._cv:
            self.accepted += len(events)
            was_empty = not self._items
            if self._closed:
                self.unwritten += len(events)
                metrics.STORE_EVENTS_UNWRITTEN.inc(len(events))
                log.error("store: %d events put after the writer closed; not written", len(events))
                return
            for e in events[:-1]:
                self._items.append((e, None))
            self._items.append((events[-1], captured_at))
            over = len(self._items) + self._in_batch - self.max_pending
            if over > 0 and self.state != "ok":
                self._discard(min(over, len(self._items)))
            # Wake the writer for a first event (it starts the flush interval) and a full batch.
            if was_empty or len(self._items) >= self.batch_size or self._closing:
                self._cv.notify()

    @property
    def pending(self) -> int:
        """Events handed over and not yet written (queued, or in a batch being retried)."""
        with self._cv:
            return len(self._items) + self._in_batch

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> int:
        """Write what is queued, then stop; return the number of events that could not be
        written. Returns within about timeout_s + CLOSE_GRACE_S even when the disk is full
        or hangs (a statement still running at the deadline is interrupted)."""
        with self._cv:
            if self._closed:
                return self.unwritten
            self._closing = True
            self._deadline = time.monotonic() + max(0.0, timeout_s)
            self._cv.notify_all()
        self._wake.set()
        if self._thread.ident is not None:  # started
            self._thread.join(max(0.0, timeout_s))
            if self._thread.is_alive():
                conn = self._conn
                if conn is not None:
                    try:
                        conn.interrupt()  # a statement waiting on a lock or a slow disk
                    except sqlite3.Error:
                        pass
                self._thread.join(CLOSE_GRACE_S)
        with self._cv:
            self._closed = True
            left = len(self._items) + self._in_batch
            self._items.clear()
            self._in_batch = 0
            self.unwritten += left
            if self._thread.is_alive():
                log.error("store: the writer did not finish within %.0f s; leaving it", timeout_s)
        if left:
            metrics.STORE_EVENTS_UNWRITTEN.inc(left)
        if self.unwritten:
            log.error("store: %d events could not be written to %s%s", self.unwritten, self.db_path,
                      f" ({self.last_error})" if self.last_error else "")
        return self.unwritten

    def latency_quantiles(self, qs: Sequence[float] = (0.5, 0.99)) -> dict[str, float] | None:
        """Capture-to-commit seconds over the recent commits, e.g. {"p50": .., "p99": ..};
        None before the first."""
        data = sorted(self._latencies)  # a copy in one step: put() may append meanwhile
        if not data:
            return None
        out = {}
        for q in qs:
            k = min(len(data) - 1, max(0, round(q * (len(data) - 1))))
            out[f"p{round(q * 100, 6):g}"] = data[k]
        return out

    def status(self) -> dict[str, Any]:
        """The writer's figures (the disk's are in guard.status())."""
        lat = self.latency_quantiles() or {}
        return {"state": self.state, "stored": self.stored, "pending": self.pending,
                "unwritten": self.unwritten, "discarded": self.discarded, "retries": self.failures,
                "last_error": self.last_error if self.state != "ok" else None,
                "capture_to_commit_s_p50": _round(lat.get("p50")),
                "capture_to_commit_s_p99": _round(lat.get("p99"))}

    # -- the thread ----------------------------------------------------------------------

    def _past_deadline(self) -> bool:
        return self._closing and time.monotonic() >= self._deadline

    def _take(self, batch: list) -> list:
        """Fill the batch from the queue: wait for a first event, then up to
        flush_interval_s for a full batch; no waiting once closing. With the lock held."""
        first_at = None
        while len(batch) < self.batch_size:
            if self._items:
                take = min(self.batch_size - len(batch), len(self._items))
                for _ in range(take):
                    batch.append(self._items.popleft())
                self._in_batch += take
                continue
            if self._closing:
                break
            now = time.monotonic()
            if batch:
                first_at = first_at or now
                wait = first_at + self.flush_interval_s - now
                if wait <= 0:
                    break
            else:  # idle: wake for the guard's checks
                wait = self.guard.check_interval_s if self.guard.check_interval_s > 0 else 1.0
            if not self._cv.wait(wait) and not batch:
                break  # idle timeout: let the guard look at the disk
        return batch

    def _run(self) -> None:
        db = None
        batch: list = []  # (Event, captured_at)
        while True:
            with self._cv:
                if not self._past_deadline() and (self.state == "ok" or not batch):
                    batch = self._take(batch)
                if self._closing and not batch and not self._items:
                    break
                if self._past_deadline():
                    break
            if db is None:
                db = self._open()
            if db is not None:
                self._guard_check(db.conn)
                self._prune_counts(db.conn)
                if batch and self._write(db, batch):
                    batch = []
                    continue
            if batch or db is None:
                self._backoff()
        if db is not None:
            try:
                db.conn.close()
            except sqlite3.Error:
                pass
        self._conn = None

    def _open(self):
        try:
            db = open_db(self.db_path)
            self.guard.configure(db.conn)
        except (ApplianceError, sqlite3.Error, OSError) as e:
            self._failed(e)
            return None
        self._conn = db.conn
        return db

    def _guard_check(self, conn: sqlite3.Connection) -> None:
        if self.guard.due():
            try:
                self.guard.check(conn)
            except sqlite3.Error as e:  # the guard is best effort; writing comes first
                log.warning("store: disk check failed: %s", e)

    def _prune_counts(self, conn: sqlite3.Connection) -> None:
        if time.monotonic() < self._next_counts_prune:
            return
        self._next_counts_prune = time.monotonic() + COUNTS_PRUNE_INTERVAL_S
        try:
            n = rollups.prune(conn, self._wall_clock() - self.counts_retention_s)
        except sqlite3.Error as e:  # best effort, like the guard: try again next time
            log.warning("store: pruning old counts failed: %s", e)
            return
        if n:
            log.info("store: deleted %d per-minute counts older than %.4g days", n,
                     self.counts_retention_s / 86400)

    def _backoff(self) -> None:
        delay = min(self.retry_max_s, self.retry_min_s * 2 ** max(0, self.failures - 1))
        if self._closing:
            delay = min(delay, max(0.0, self._deadline - time.monotonic()))
        if delay > 0 and self._wake.wait(delay):  # close() came: one more try at once
            self._wake.clear()

    def _write(self, db, batch: list) -> bool:
        """Write the batch in one transaction; False when it failed (keep it, retry)."""
        t0 = time.perf_counter()
        rows = self._rows(batch)
        try:
            with db.conn:
                # One transaction for the events and their counts: without this BEGIN,
                # sqlite-utils' insert_all would commit the events on its own.
                db.conn.execute("BEGIN IMMEDIATE")
                db["events"].insert_all(rows, batch_size=len(rows))
                rollups.add(db.conn, rows)  # an event and its count, or neither
                if self._closed:  # close() gave up and counted these unwritten: keep it so
                    raise _GaveUp
        except _GaveUp:
            return False
        except sqlite3.Error as e:
            self._failed(e)
            return False
        now = self._clock()
        elapsed = time.perf_counter() - t0
        self.write_seconds += elapsed
        with self._cv:
            self.stored += len(batch)
            self._in_batch = max(0, self._in_batch - len(batch))  # 0 when close() gave up on it
        metrics.STORE_SECONDS.observe(elapsed)
        metrics.EVENTS_STORED.inc(len(batch))
        for _, captured_at in batch:
            if captured_at is not None:
                lat = max(0.0, now - captured_at)
                self._latencies.append(lat)
                metrics.CAPTURE_TO_COMMIT_SECONDS.observe(lat)
        self._recovered()
        return True

    def _rows(self, batch: list) -> list[dict]:
        """The rows of a batch; an event that cannot be serialised (a bug) is logged and
        counted unwritten, and leaves the batch, rather than stopping the writer."""
        rows, bad = [], []
        for item in batch:
            try:
                rows.append(event_row(item[0]))
            except Exception:
                log.exception("store: event %r cannot be stored; skipped", getattr(item[0], "id", "?"))
                bad.append(item)
        if bad:
            for item in bad:
                batch.remove(item)
            with self._cv:
                self._in_batch = max(0, self._in_batch - len(bad))
                self.unwritten += len(bad)
            metrics.STORE_EVENTS_UNWRITTEN.inc(len(bad))
        return rows

    def _failed(self, e: BaseException) -> None:
        metrics.STORE_WRITE_FAILURES.inc()
        self.failures += 1
        self.last_error = str(e)
        self.guard.note_write_failed(e)
        if self.state == "ok":
            self.state = "failing"
            self.failing_since = time.monotonic()
            log.error("store: writing events to %s fails (%s); %d events held in memory, "
                      "retrying every %.2g to %.2g s", self.db_path, e, self.pending,
                      self.retry_min_s, self.retry_max_s)

    def _recovered(self) -> None:
        self.guard.note_write_ok()
        if self.state == "ok":
            return
        spell = time.monotonic() - (self.failing_since or time.monotonic())
        log.warning("store: writing events to %s works again, after %d failed attempts over %.1f s%s",
                    self.db_path, self.failures, spell,
                    f"; {self.discarded} events were discarded meanwhile" if self.discarded else "")
        self.state = "ok"
        self.failures = 0
        self.failing_since = None
        self._discard_logged = False

    def _discard(self, n: int) -> None:
        """Drop the n oldest queued events (memory bound while writes fail). Lock held."""
        for _ in range(n):
            self._items.popleft()
        self.discarded += n
        self.unwritten += n
        metrics.STORE_EVENTS_UNWRITTEN.inc(n)
        if not self._discard_logged:
            log.error("store: more than %d events waiting while writes to %s fail; discarding "
                      "the oldest (counted in appliance_store_events_unwritten_total)",
                      self.max_pending, self.db_path)
            self._discard_logged = True


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 4)
