"""The uplink's side of snapshots on a real SQLite file: which events name one, the queue
table (migration, order, outcomes, resync, pruning), and the bandwidth cap's spare
allowance."""
from __future__ import annotations

import sqlite3

import pytest
import sqlite_utils

from appliance.events.lifecycle import Event
from appliance.store import db as store_db
from appliance.uplink.messages import Topics
from appliance.uplink.outbox import Outbox, snapshot_of
from appliance.uplink.pacing import TokenBucket


def _event(seq: int, kind: str, snapshot: str | None = None) -> Event:
    return Event(id=f"d:{seq}", seq=seq, type=kind, device="d", camera="c", track_id=seq, label="person",
                 score=0.5, box=[1.0, 2.0, 3.0, 4.0], ts=100.0 + seq, first_seen=100.0, frame_seq=seq,
                 snapshot=snapshot)


def test_only_end_events_that_name_a_snapshot_have_one():
    assert snapshot_of(_event(7, "end", "c-7.jpg").to_json()) == (7, "d:7", "c-7.jpg", 107.0)
    assert snapshot_of(_event(7, "end").to_json()) is None
    assert '"snapshot"' not in _event(7, "end").to_json()  # absent, not null
    assert snapshot_of(_event(7, "update", "c-7.jpg").to_json()) is None
    assert snapshot_of('{"snapshot": 3, "type": "end"}') is None
    assert snapshot_of('not json "snapshot"') is None


def test_the_topic_names_the_event():
    assert Topics("acme/site1", "gate-3").snapshot_of("gate-3:1042") == "acme/site1/gate-3/snapshots/gate-3:1042"


def test_a_database_from_before_gets_the_table(tmp_path):
    path = tmp_path / "appliance.db"
    old = sqlite_utils.Database(sqlite3.connect(path))
    for m in store_db.MIGRATIONS[:-1]:
        m(old)
    old.execute(f"PRAGMA user_version = {len(store_db.MIGRATIONS) - 1}")
    old.conn.commit()
    old.conn.close()
    box = Outbox(path)
    assert box.conn.execute("PRAGMA user_version").fetchone()[0] == store_db.SCHEMA_VERSION
    assert box.pending_snapshots(0, 10) == [] and not box.has_pending_snapshots()


def test_queue_order_outcomes_resync_and_pruning(tmp_path):
    path = tmp_path / "appliance.db"
    store_db.open_db(path).conn.close()
    box = Outbox(path)
    box.conn.executemany("INSERT INTO events (seq, id, type, camera, ts, payload) VALUES (?, ?, 'end', 'c', ?, '{}')",
                         [(s, f"d:{s}", 100.0 + s) for s in (3, 5, 9)])
    box.conn.commit()
    box.queue_snapshots([(9, "d:9", "c-9.jpg", 109.0), (3, "d:3", "c-3.jpg", 103.0)])
    box.queue_snapshots([(5, "d:5", "c-5.jpg", 105.0)])
    assert box.pending_snapshots(0, 10) == [(3, "d:3", "c-3.jpg"), (5, "d:5", "c-5.jpg"), (9, "d:9", "c-9.jpg")]
    assert box.pending_snapshots(3, 1) == [(5, "d:5", "c-5.jpg")]  # from a cursor, at most `limit`

    box.snapshots_done([3], "sent")
    box.snapshots_done([5], "missing")
    box.queue_snapshots([(3, "d:3", "c-3.jpg", 103.0)])  # its event acknowledged again: stays sent
    assert box.pending_snapshots(0, 10) == [(9, "d:9", "c-9.jpg")] and box.has_pending_snapshots()

    assert box.requeue_snapshots_since(104.0) == 1  # resync: 5 goes again (9 was never done)
    assert [s for s, *_ in box.pending_snapshots(0, 10)] == [5, 9]
    box.snapshots_done([5, 9], "sent")
    assert not box.has_pending_snapshots()

    box.conn.execute("DELETE FROM events WHERE seq < 9")  # retention removed the old events
    box.conn.commit()
    assert box.prune_snapshots() == 2
    assert [r[0] for r in box.conn.execute("SELECT seq FROM snapshot_outbox")] == [9]


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_snapshots_wait_for_a_spare_allowance_events_only_for_no_debt():
    clock = Clock()
    b = TokenBucket(1000, clock=clock)
    assert b.wait_full_s(800) == 0.0 and b.wait_s() == 0.0
    b.spend(500)  # an event
    assert b.wait_s() == 0.0  # the next event may go: not in debt
    assert b.wait_full_s(800) == pytest.approx(0.3)  # a snapshot waits until it fits without debt
    clock.t += 0.3
    assert b.wait_full_s(800) == 0.0
    assert b.wait_full_s(5000) == pytest.approx(0.2)  # larger than a second's worth: a full bucket
    assert TokenBucket(0).wait_full_s(10**9) == 0.0  # no cap
