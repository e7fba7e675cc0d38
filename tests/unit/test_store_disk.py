"""The low-disk guard and the writer when the disk fills: pruning order, counting and
notices, the disk state, one log line per state change, a bounded close() with the
unwritten count, capture-to-commit latency.

A real ENOSPC comes from a small file system mounted by the test (tests/unit/small_fs.py:
tmpfs, else an ext4 loop image; skipped with the reason when neither can be mounted).
The pruning-order tests use a real SQLite file with an injected free-space reading.
"""
from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from pathlib import Path
from types import SimpleNamespace

from prometheus_client import REGISTRY

from appliance.events.lifecycle import Event
from appliance.store import db as store
from appliance.store.disk import FULL, LOW, OK, DiskGuard, is_disk_full
from appliance.store.writer import EventWriter
from tests.unit.small_fs import fill, small_fs
from tests.uplink_util import seed_events

HANG_GUARD_S = 60.0  # only to fail instead of hanging; nothing here is timed


def _event(seq: int, ts: float | None = None) -> Event:
    return Event(id=f"d:{seq}", seq=seq, type="new", device="d", camera="c", track_id=seq,
                 label="person", score=0.5, box=[0, 0, 1, 1], ts=ts or float(seq), first_seen=0.0,
                 frame_seq=seq)


def _sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels or None) or 0.0


def _until(cond, what: str, limit_s: float = HANG_GUARD_S) -> None:
    end = time.monotonic() + limit_s
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.01)


def _seqs(conn: sqlite3.Connection, where: str = "1") -> list[int]:
    return [r[0] for r in conn.execute(f"SELECT seq FROM events WHERE {where} ORDER BY seq")]


class RowsDisk:
    """A free-space reading that follows the table: `unit` bytes per stored event, read
    through a connection of its own like the file system would tell. SQLite's free pages
    are taken off, so that what the guard sees (file system + free pages) is exactly
    capacity - rows * unit, whatever the page layout."""

    def __init__(self, path: Path, capacity_rows: int):
        self.conn = sqlite3.connect(path, check_same_thread=False)
        # About one payload a row: what the guard expects a deleted row to give back.
        self.unit = int(self.conn.execute("SELECT AVG(length(payload)) FROM events").fetchone()[0]) + 1
        self.capacity = capacity_rows * self.unit

    def __call__(self, _path: str):
        rows = self.conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        page = self.conn.execute("PRAGMA page_size").fetchone()[0]
        free_pages = self.conn.execute("PRAGMA freelist_count").fetchone()[0]
        return SimpleNamespace(total=10**12, free=self.capacity - rows * self.unit - page * free_pages)


def _guard_db(tmp_path: Path, n: int, sent: range = range(0)) -> tuple[Path, sqlite3.Connection]:
    data = tmp_path / "data"
    seed_events(data, "d", n)
    path = data / "appliance.db"
    conn = store.open_db(path).conn
    with conn:
        conn.executemany("UPDATE events SET sent_at = 1.0 WHERE seq = ?", [(s,) for s in sent])
    return path, conn


# -- the guard: what it deletes, how it counts and announces --------------------------------

def test_guard_prunes_sent_rows_first_then_the_oldest_unsent_counts_and_announces(tmp_path):
    # 1000 events; 401..700 sent (newer than the oldest unsent ones: sent still go first).
    path, conn = _guard_db(tmp_path, 1000, sent=range(401, 701))
    disk = RowsDisk(path, capacity_rows=1000)  # full: 0 free
    before = {"drop": _sample("appliance_uplink_events_dropped_total", reason="disk"),
              "sent": _sample("appliance_store_events_pruned_total", sent="true"),
              "unsent": _sample("appliance_store_events_pruned_total", sent="false")}
    guard = DiskGuard(path, reserve_bytes=400 * disk.unit, check_interval_s=60, device_id="d",
                      uplink_enabled=True, disk_usage=disk)
    drops = guard.check(conn, force=True)

    left = _seqs(conn)
    assert not set(range(401, 701)) & set(left)  # every sent row went
    dropped = sorted(set(range(1, 401)) - set(left))
    assert dropped and dropped == list(range(1, len(dropped) + 1))  # then unsent, oldest first
    assert left == list(range(len(dropped) + 1, 401)) + list(range(701, 1001))
    assert guard.status()["free_bytes"] >= 400 * disk.unit  # back over the reserve
    assert sum(d.count for d in drops) == len(dropped) and drops[0].first_seq == 1
    assert all(d.reason == "disk" for d in drops)
    notices = [json.loads(p) for (p,) in conn.execute("SELECT payload FROM uplink_notices ORDER BY n")]
    assert [n["reason"] for n in notices] == ["disk"] * len(drops)
    assert sum(n["count"] for n in notices) == len(dropped) and notices[0]["first_seq"] == 1
    assert notices[0]["id"] == "d:dropped:1" and notices[0]["type"] == "dropped"
    assert _sample("appliance_uplink_events_dropped_total", reason="disk") - before["drop"] == len(dropped)
    assert _sample("appliance_store_events_pruned_total", sent="true") - before["sent"] == 300
    assert _sample("appliance_store_events_pruned_total", sent="false") - before["unsent"] == len(dropped)
    s = guard.status()
    assert s["state"] == LOW and s["pruned_events"] == 300 + len(dropped) and s["pruned_unsent"] == len(dropped)


def test_guard_only_prunes_sent_rows_when_that_is_enough(tmp_path):
    path, conn = _guard_db(tmp_path, 1000, sent=range(1, 601))
    disk = RowsDisk(path, capacity_rows=1000)
    guard = DiskGuard(path, reserve_bytes=200 * disk.unit, device_id="d", uplink_enabled=True,
                      disk_usage=disk)
    assert guard.check(conn, force=True) == []
    left = _seqs(conn)
    assert left[0] > 1 and left == list(range(left[0], 1001)) and left[0] <= 601  # only sent ones went
    assert conn.execute("SELECT COUNT(*) FROM uplink_notices").fetchone()[0] == 0


def test_with_the_uplink_off_the_oldest_events_go_counted_and_logged_without_notices(tmp_path, caplog):
    path, conn = _guard_db(tmp_path, 1000)
    now = [0.0]
    before = _sample("appliance_store_events_pruned_total", sent="false")
    disk = RowsDisk(path, capacity_rows=1000)
    guard = DiskGuard(path, reserve_bytes=300 * disk.unit, check_interval_s=5, uplink_enabled=False,
                      disk_usage=disk, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="appliance.store"):
        guard.check(conn, force=True)
        now[0] += 61.0  # the summed-up line comes once a minute at most
        guard.check(conn, force=True)
    left = _seqs(conn)
    gone = 1000 - len(left)
    assert gone > 0 and left == list(range(gone + 1, 1001))
    assert _sample("appliance_store_events_pruned_total", sent="false") - before == gone
    assert conn.execute("SELECT COUNT(*) FROM uplink_notices").fetchone()[0] == 0
    assert "disk low" in caplog.text and f"deleted the {gone} oldest events (seq 1 to {gone})" in caplog.text


def test_a_reserve_of_zero_only_watches(tmp_path):
    path, conn = _guard_db(tmp_path, 100)
    guard = DiskGuard(path, reserve_bytes=0, disk_usage=lambda _p: SimpleNamespace(total=10**9, free=10))
    guard.check(conn, force=True)
    assert len(_seqs(conn)) == 100 and guard.status()["state"] == OK


def test_the_reserve_is_at_most_a_quarter_of_the_file_system(tmp_path):
    path, conn = _guard_db(tmp_path, 10)
    guard = DiskGuard(path, reserve_bytes=64 * 2**20,
                      disk_usage=lambda _p: SimpleNamespace(total=1_000_000, free=900_000))
    guard.check(conn, force=True)
    assert guard.status()["reserve_bytes"] == 250_000 and guard.status()["state"] == OK
    assert len(_seqs(conn)) == 10


# -- the disk state ------------------------------------------------------------------------

def test_disk_state_goes_ok_low_full_ok_with_one_log_line_each(tmp_path, caplog):
    path = tmp_path / "a.db"
    conn = store.open_db(path).conn  # no events: nothing to prune, the state shows it all
    free = [10_000_000]
    now = [0.0]
    guard = DiskGuard(path, reserve_bytes=1_000_000, check_interval_s=5,
                      disk_usage=lambda _p: SimpleNamespace(total=100_000_000, free=free[0]),
                      clock=lambda: now[0])

    def gauge() -> dict[str, float]:
        return {s: _sample("appliance_store_disk_state", state=s) for s in (OK, LOW, FULL)}

    with caplog.at_level(logging.INFO, logger="appliance.store.disk"):
        guard.check(conn)
        assert guard.status()["state"] == OK and gauge() == {OK: 1, LOW: 0, FULL: 0}
        free[0] = 500_000
        now[0] += 5
        guard.check(conn)
        s = guard.status()
        assert s["state"] == LOW and s["free_bytes"] >= 500_000 and s["reserve_bytes"] == 1_000_000
        assert gauge() == {OK: 0, LOW: 1, FULL: 0}
        guard.check(conn, force=True)  # still low: no new line
        guard.note_write_failed(sqlite3.OperationalError("database or disk is full"))
        assert guard.status()["state"] == FULL and gauge() == {OK: 0, LOW: 0, FULL: 1}
        assert guard.status()["error"] == "database or disk is full"
        guard.note_write_failed(sqlite3.OperationalError("database or disk is full"))  # no new line
        free[0] = 5_000_000  # space came back (someone deleted files)
        guard.check(conn, force=True)
        assert guard.status()["state"] == FULL  # until a write works
        guard.note_write_ok()
        assert guard.status()["state"] == OK and gauge() == {OK: 1, LOW: 0, FULL: 0}
    lines = [r.getMessage() for r in caplog.records if r.name == "appliance.store.disk"]
    assert len(lines) == 3, lines
    assert "disk low" in lines[0] and "disk full" in lines[1] and "disk ok" in lines[2]


def test_low_stays_low_while_pruning_recurs_and_clears_when_calm(tmp_path):
    path = tmp_path / "a.db"
    conn = store.open_db(path).conn
    free, now = [100_000], [0.0]
    guard = DiskGuard(path, reserve_bytes=200_000, check_interval_s=1, calm_s=600,
                      disk_usage=lambda _p: SimpleNamespace(total=10**9, free=free[0]), clock=lambda: now[0])
    guard.check(conn)
    assert guard.state == LOW
    free[0] = 300_000  # over the reserve, under twice it: pruned a moment ago, still low
    now[0] += 10
    guard.check(conn)
    assert guard.state == LOW
    now[0] += 600
    guard.check(conn)
    assert guard.state == OK


def test_is_disk_full():
    assert is_disk_full(sqlite3.OperationalError("database or disk is full"))
    assert is_disk_full(OSError(28, "No space left on device"))
    assert not is_disk_full(sqlite3.OperationalError("database is locked"))


# -- the writer: one line per state change, capped backoff -----------------------------------

def test_writer_logs_once_when_writes_start_failing_and_once_when_they_work_again(tmp_path, caplog):
    path = tmp_path / "a.db"
    store.open_db(path).conn.close()
    admin = sqlite3.connect(path, check_same_thread=False)
    admin.execute("CREATE TRIGGER fail BEFORE INSERT ON events BEGIN SELECT RAISE(ABORT, 'no space'); END")
    admin.commit()
    before = _sample("appliance_store_write_failures_total")
    with caplog.at_level(logging.INFO, logger="appliance.store"):
        w = EventWriter(path, flush_interval_s=0.01, retry_min_s=0.001, retry_max_s=0.01).start()
        w.put([_event(1), _event(2)])
        _until(lambda: w.failures >= 8, "eight failed attempts")
        assert w.state == "failing" and w.status()["last_error"] == "no space"
        assert w.pending == 2 and w.stored == 0
        admin.execute("DROP TRIGGER fail")
        admin.commit()
        _until(lambda: w.stored == 2, "the retried batch")
        assert w.close() == 0
    assert w.state == "ok" and w.unwritten == 0
    assert _sample("appliance_store_write_failures_total") - before >= 8
    lines = [r.getMessage() for r in caplog.records if r.name == "appliance.store.writer"]
    assert len(lines) == 2, lines
    assert "fails (no space)" in lines[0] and "2 events held in memory" in lines[0]
    assert "works again" in lines[1] and "failed attempts" in lines[1]


def test_backoff_doubles_up_to_its_cap(tmp_path, monkeypatch):
    w = EventWriter(tmp_path / "a.db", retry_min_s=0.5, retry_max_s=4.0)
    waits = []
    monkeypatch.setattr(w._wake, "wait", lambda t: waits.append(t) or False)
    for n in range(1, 7):
        w.failures = n
        w._backoff()
    assert waits == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_memory_is_bounded_while_writes_fail_oldest_discarded_and_counted(tmp_path):
    path = tmp_path / "a.db"
    store.open_db(path).conn.close()
    admin = sqlite3.connect(path, check_same_thread=False)
    admin.execute("CREATE TRIGGER fail BEFORE INSERT ON events BEGIN SELECT RAISE(ABORT, 'no space'); END")
    admin.commit()
    w = EventWriter(path, batch_size=10, flush_interval_s=0.01, max_pending=100, retry_min_s=0.01,
                    retry_max_s=0.02).start()
    w.put([_event(1)])
    _until(lambda: w.state == "failing", "the first failure")
    w.put([_event(s) for s in range(2, 301)])
    assert w.pending == 100 and w.discarded == 200
    admin.execute("DROP TRIGGER fail")
    admin.commit()
    assert w.close(timeout_s=HANG_GUARD_S) == 200
    assert w.stored == 100 and w.unwritten == 200
    seqs = _seqs(store.open_db(path).conn)
    assert seqs == [1] + list(range(202, 301))  # the batch in retry, then the newest


# -- close() on a full disk -------------------------------------------------------------------

def _close_in_thread(w: EventWriter, timeout_s: float) -> list:
    out: list = []
    t = threading.Thread(target=lambda: out.append(w.close(timeout_s)), daemon=True)
    t.start()
    t.join(HANG_GUARD_S)
    assert not t.is_alive(), "close() hung"
    return out


def test_close_returns_on_a_full_disk_with_the_unwritten_count(tmp_path, caplog):
    with small_fs(tmp_path, 300 * 1024) as root:
        path = root / "appliance.db"
        # Kept open, like the dashboard's reader: the WAL and its index stay in place.
        reader = store.open_db(path).conn
        fill(root)
        # More than a batch: the old writer retried a full batch forever and never saw close().
        w = EventWriter(path, batch_size=50, flush_interval_s=0.01, retry_min_s=0.01, retry_max_s=0.05).start()
        w.put([_event(s) for s in range(1, 501)], captured_at=time.monotonic())
        _until(lambda: w.state == "failing", "a failed write")
        assert is_disk_full(sqlite3.OperationalError(w.last_error)), w.last_error
        assert w.guard.status()["state"] == FULL
        with caplog.at_level(logging.ERROR, logger="appliance.store.writer"):
            (unwritten,) = _close_in_thread(w, timeout_s=1.0)
        assert unwritten == 500 - w.stored == w.unwritten > 0
        assert w.pending == 0
        assert f"store: {unwritten} events could not be written to {path}" in caplog.text
        assert "disk is full" in caplog.text
        assert reader.execute("SELECT COUNT(*) FROM events").fetchone()[0] == w.stored
        reader.close()


def test_close_returns_while_a_write_waits_on_a_lock_and_counts_it_unwritten(tmp_path, caplog):
    path = tmp_path / "a.db"
    store.open_db(path).conn.close()
    holder = sqlite3.connect(path, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # the writer's insert waits on the busy timeout
    w = EventWriter(path, flush_interval_s=0.01).start()
    w.put([_event(1), _event(2), _event(3)])
    _until(lambda: w._in_batch == 3, "the writer to take the batch")
    time.sleep(0.2)  # let it block inside the insert
    with caplog.at_level(logging.ERROR, logger="appliance.store.writer"):
        (unwritten,) = _close_in_thread(w, timeout_s=0.2)
    assert unwritten == 3 and w.stored == 0
    assert "3 events could not be written" in caplog.text
    holder.rollback()
    time.sleep(0.1)
    # Whatever the thread does once the lock is free, it commits nothing after giving up.
    _until(lambda: not w._thread.is_alive(), "the writer thread to end", limit_s=HANG_GUARD_S)
    assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0
    assert w.stored == 0


def test_put_after_close_is_counted_not_lost_silently(tmp_path, caplog):
    w = EventWriter(tmp_path / "a.db").start()
    w.close()
    with caplog.at_level(logging.ERROR, logger="appliance.store.writer"):
        w.put([_event(1)])
    assert w.unwritten == 1 and "after the writer closed" in caplog.text


def test_close_without_start_counts_what_was_queued(tmp_path):
    w = EventWriter(tmp_path / "a.db")
    w.put([_event(1), _event(2)])
    assert w.close() == 2


# -- the guard inside the writer on a real small disk ----------------------------------------

def test_the_guard_keeps_a_small_disk_writable_by_deleting_the_oldest(tmp_path, caplog):
    with small_fs(tmp_path, 1024 * 1024) as root:
        path = root / "appliance.db"
        guard = DiskGuard(path, reserve_bytes=200_000, check_interval_s=0.05, uplink_enabled=False)
        w = EventWriter(path, batch_size=50, flush_interval_s=0.01, guard=guard).start()
        total = 8000  # far more than 1 MB of rows and indexes
        with caplog.at_level(logging.INFO, logger="appliance.store"):
            for k in range(0, total, 100):
                w.put([_event(s) for s in range(k + 1, k + 101)])
                _until(lambda: w.pending == 0, "the writer to catch up")
            assert w.close(timeout_s=HANG_GUARD_S) == 0
        assert w.stored == total and w.unwritten == 0
        assert "fails" not in caplog.text  # never full: the guard kept the reserve
        s = guard.status()
        assert s["pruned_events"] > 0 and s["state"] in (OK, LOW)
        conn = sqlite3.connect(path)
        seqs = _seqs(conn)
        assert seqs == list(range(total - len(seqs) + 1, total + 1))  # the newest, without a gap
        conn.close()


# -- capture-to-commit latency -----------------------------------------------------------------

def test_capture_to_commit_is_observed_once_per_put_when_its_last_event_commits(tmp_path):
    now = [1000.0]
    before = _sample("appliance_capture_to_commit_seconds_count")
    w = EventWriter(tmp_path / "a.db", batch_size=3, flush_interval_s=10.0, clock=lambda: now[0])
    assert w.latency_quantiles() is None
    w.put([_event(1), _event(2), _event(3), _event(4), _event(5)], captured_at=999.0)  # split: 3 + 2
    w.put([_event(6)], captured_at=999.5)
    w.put([_event(7)])  # no capture time (a state change): not observed
    w.put([], captured_at=990.0)  # nothing to commit: not observed
    w.start()
    w.close()
    assert w.stored == 7
    assert _sample("appliance_capture_to_commit_seconds_count") - before == 2
    q = w.latency_quantiles()
    assert q == {"p50": 0.5, "p99": 1.0}
    assert w.status()["capture_to_commit_s_p99"] == 1.0


def test_an_event_that_cannot_be_serialised_is_skipped_and_counted_not_fatal(tmp_path, caplog):
    class Broken(Event):
        def to_json(self) -> str:
            raise TypeError("not JSON serialisable")

    bad = Broken(id="d:2", seq=2, type="new", device="d", camera="c", track_id=2, label="person",
                 score=0.5, box=[0, 0, 1, 1], ts=2.0, first_seen=0.0, frame_seq=2)
    w = EventWriter(tmp_path / "a.db", flush_interval_s=0.01).start()
    with caplog.at_level(logging.ERROR, logger="appliance.store.writer"):
        w.put([_event(1), bad, _event(3)])
        assert w.close() == 1
    assert w.stored == 2 and "cannot be stored" in caplog.text
    assert _seqs(store.open_db(tmp_path / "a.db").conn) == [1, 3]


def test_the_uplinks_retention_counts_stay_right_when_the_guard_deletes(tmp_path):
    from appliance.config import UplinkBacklogConfig
    from appliance.uplink.retention import Retention

    path, conn = _guard_db(tmp_path, 1000, sent=range(1, 301))
    box = store.open_db(path).conn  # the uplink's own connection
    ret = Retention(box, UplinkBacklogConfig(max_rows=900), "d")
    assert ret.rows == 1000
    disk = RowsDisk(path, capacity_rows=1000)
    DiskGuard(path, reserve_bytes=200 * disk.unit, uplink_enabled=True, disk_usage=disk).check(conn, force=True)
    left = len(_seqs(conn))
    assert left < 1000
    assert ret.enforce() == []  # under max_rows now: nothing more to delete, nothing dropped
    assert ret.rows == left and ret.bytes == conn.execute(
        "SELECT TOTAL(length(CAST(payload AS BLOB))) FROM events").fetchone()[0]
