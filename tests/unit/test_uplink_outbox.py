"""The outbox and the backlog limits on real SQLite files."""
from __future__ import annotations

import json
import sqlite3
import time

import sqlite_utils
from prometheus_client import REGISTRY

from appliance.config import UplinkBacklogConfig
from appliance.events.lifecycle import Event
from appliance.store import db as store_db
from appliance.store.writer import EventWriter
from appliance.uplink.outbox import ALERT, ROUTINE, Outbox
from appliance.uplink.retention import Retention
from tests.uplink_util import seed_events


def _event(seq: int, kind: str, ts: float) -> Event:
    return Event(id=f"d:{seq}", seq=seq, type=kind, device="d", camera="c", track_id=seq, label="person",
                 score=0.9, box=[1.0, 2.0, 3.0, 4.0], ts=ts, first_seen=ts, frame_seq=seq)


def test_v1_database_is_migrated_and_its_rows_are_unsent(tmp_path):
    path = tmp_path / "appliance.db"
    old = sqlite_utils.Database(sqlite3.connect(path))
    store_db.MIGRATIONS[0](old)  # a database made by the first release
    old.execute("PRAGMA user_version = 1")
    old["events"].insert_all([{"seq": 1, "id": "d:1", "type": "new", "camera": "c", "track_id": 1, "label": "p",
                               "score": 0.9, "ts": 1.0, "payload": "{}"},
                              {"seq": 2, "id": "d:2", "type": "update", "camera": "c", "track_id": 1,
                               "label": "p", "score": 0.9, "ts": 2.0, "payload": "{}"}])
    old.conn.commit()
    old.conn.close()

    box = Outbox(path)
    assert box.conn.execute("PRAGMA user_version").fetchone()[0] == store_db.SCHEMA_VERSION >= 2
    assert box.unsent(ALERT, 0, 10) == [(1, "{}")] and box.unsent(ROUTINE, 0, 10) == [(2, "{}")]
    assert box.backlog().rows == 2 and box.backlog().oldest_ts == 1.0


def test_writer_rows_get_their_priority_and_are_read_in_order(tmp_path):
    path = tmp_path / "appliance.db"
    store_db.open_db(path).conn.close()
    writer = EventWriter(path, batch_size=3).start()  # the pipeline's own writer
    t = time.time()
    kinds = ["new", "update", "update", "end", "new", "update", "end"]
    writer.put([_event(i + 1, k, t + i) for i, k in enumerate(kinds)])
    writer.close()

    box = Outbox(path)
    assert [s for s, _ in box.unsent(ALERT, 0, 10)] == [1, 4, 5, 7]
    assert [s for s, _ in box.unsent(ROUTINE, 0, 10)] == [2, 3, 6]
    assert [s for s, _ in box.unsent(ALERT, 4, 2)] == [5, 7]  # from a cursor, at most `limit`
    assert json.loads(box.unsent(ALERT, 0, 1)[0][1])["id"] == "d:1"  # the stored JSON, as is

    box.mark_sent([1, 2, 4])
    assert [s for s, _ in box.unsent(ALERT, 0, 10)] == [5, 7]
    b = box.backlog()
    assert b.rows == 4 and b.oldest_ts == t + 2  # seq 3 (routine) is the oldest unsent now
    assert box.has_unsent()

    assert box.requeue_since(t + 1) == 2  # seqs 2 and 4 were sent and are from t + 1 on
    assert [s for s, _ in box.unsent(ALERT, 0, 10)] == [4, 5, 7]
    box.mark_sent(list(range(1, 8)))
    assert not box.has_unsent() and box.backlog().rows == 0 and box.backlog().oldest_ts is None


def _retention(tmp_path, n: int, sent: int = 0, ts: float | None = None, **limits) -> tuple[Outbox, Retention]:
    data = tmp_path / "data"
    seed_events(data, "d", n, ts=ts)
    box = Outbox(data / "appliance.db")
    box.mark_sent(list(range(1, sent + 1)))
    return box, Retention(box.conn, UplinkBacklogConfig(**limits), "d")


def _seqs(box: Outbox) -> list[int]:
    return [r[0] for r in box.conn.execute("SELECT seq FROM events ORDER BY seq")]


def _notices(box: Outbox) -> list[dict]:
    return [json.loads(r[0]) for r in box.conn.execute("SELECT payload FROM uplink_notices ORDER BY n")]


def test_rows_cap_prunes_sent_rows_first(tmp_path):
    box, ret = _retention(tmp_path, 100, sent=50, max_rows=70)
    assert ret.enforce() == []
    assert _seqs(box) == list(range(31, 101))  # the 30 oldest sent rows went; nothing unsent
    assert _notices(box) == []


def test_unsent_rows_are_dropped_only_past_the_cap_oldest_first_and_announced(tmp_path):
    before = REGISTRY.get_sample_value("appliance_uplink_events_dropped_total", {"reason": "max_rows"}) or 0
    box, ret = _retention(tmp_path, 100, sent=10, max_rows=60)
    (drop,) = ret.enforce()
    assert (drop.reason, drop.count, drop.first_seq, drop.last_seq) == ("max_rows", 30, 11, 40)
    assert _seqs(box) == list(range(41, 101))
    (notice,) = _notices(box)
    assert notice == {"id": "d:dropped:1", "type": "dropped", "device": "d", "ts": notice["ts"],
                      "reason": "max_rows", "count": 30, "first_seq": 11, "last_seq": 40, "schema": 1}
    after = REGISTRY.get_sample_value("appliance_uplink_events_dropped_total", {"reason": "max_rows"})
    assert after - before == 30
    assert ret.enforce() == [] and ret.rows == 60  # within the cap now; the count kept up


def test_bytes_cap(tmp_path):
    box, ret = _retention(tmp_path, 100, sent=20, max_bytes=10_000)
    size = box.conn.execute("SELECT length(payload) FROM events WHERE seq = 1").fetchone()[0]
    (drop,) = ret.enforce()
    assert drop.reason == "max_bytes" and drop.first_seq == 21
    total = box.conn.execute("SELECT SUM(length(payload)) FROM events").fetchone()[0]
    assert 10_000 - size < total <= 10_000 and total == ret.bytes


def test_age_cap_prunes_old_sent_rows_and_drops_old_unsent_ones(tmp_path):
    old = time.time() - 3 * 86400
    box, ret = _retention(tmp_path, 40, sent=10, ts=old, max_age_days=1.0)
    seed_events(tmp_path / "data", "d", 5, start_seq=41)  # fresh
    (drop,) = ret.enforce()
    assert (drop.reason, drop.count, drop.first_seq, drop.last_seq) == ("max_age", 30, 11, 40)
    assert _seqs(box) == list(range(41, 46)) and ret.rows == 5


def test_counts_follow_rows_added_later(tmp_path):
    box, ret = _retention(tmp_path, 10, max_rows=15)
    seed_events(tmp_path / "data", "d", 10, start_seq=11)  # the writer adds rows meanwhile
    (drop,) = ret.enforce()
    assert drop.count == 5 and _seqs(box) == list(range(6, 21))
