"""The one thread that writes events to SQLite, in batched transactions.

Events are queued by the pipeline and written at most `batch_size` per transaction, at
least every `flush_interval_s`. When a write fails (disk full, I/O error) the batch is
kept and retried: nothing handed to the writer is dropped while the process lives.
`close()` writes everything still queued before it returns.
"""
from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from pathlib import Path
from typing import Sequence

from appliance import metrics
from appliance.events.lifecycle import Event
from appliance.store.db import open_db

log = logging.getLogger(__name__)

_STOP = object()
RETRY_DELAY_S = 1.0
RETRIES_AT_SHUTDOWN = 10  # a broken disk must not hang shutdown forever


def event_row(e: Event) -> dict:
    return {"seq": e.seq, "id": e.id, "type": e.type, "camera": e.camera, "track_id": e.track_id,
            "label": e.label, "score": e.score, "ts": e.ts, "payload": e.to_json()}


class EventWriter:
    def __init__(self, db_path: Path, batch_size: int = 200, flush_interval_s: float = 0.5):
        self.db_path = db_path
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.stored = 0
        self.write_seconds = 0.0  # time spent in transactions, for metrics
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)

    def start(self) -> "EventWriter":
        self._thread.start()
        return self

    def put(self, events: Sequence[Event]) -> None:
        for e in events:
            self._q.put(e)

    @property
    def pending(self) -> int:
        return self._q.qsize()

    def close(self) -> None:
        self._q.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        db = open_db(self.db_path)
        batch: list[dict] = []
        stopping, shutdown_failures = False, 0
        while not (stopping and not batch):
            deadline = time.monotonic() + self.flush_interval_s
            while not stopping and len(batch) < self.batch_size:
                try:
                    item = self._q.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                else:
                    batch.append(event_row(item))
            if stopping:  # drain whatever is queued behind the stop mark too
                while True:
                    try:
                        item = self._q.get_nowait()
                    except queue.Empty:
                        break
                    if item is not _STOP:
                        batch.append(event_row(item))
            if batch:
                batch = self._write(db, batch)
                shutdown_failures += bool(batch and stopping)
                if shutdown_failures >= RETRIES_AT_SHUTDOWN:
                    log.error("store: giving up at shutdown; %d events could not be written to %s",
                              len(batch) + self._q.qsize(), self.db_path)
                    break
        db.conn.close()

    def _write(self, db, batch: list[dict]) -> list[dict]:
        """Write the batch; return what is left to retry (empty on success)."""
        t0 = time.perf_counter()
        try:
            with db.conn:
                db["events"].insert_all(batch, batch_size=len(batch))
        except sqlite3.Error as e:
            log.error("store: writing %d events to %s failed (%s); retrying in %.0f s",
                      len(batch), self.db_path, e, RETRY_DELAY_S)
            time.sleep(RETRY_DELAY_S)
            return batch
        elapsed = time.perf_counter() - t0
        self.write_seconds += elapsed
        self.stored += len(batch)
        metrics.STORE_SECONDS.observe(elapsed)
        metrics.EVENTS_STORED.inc(len(batch))
        return []
