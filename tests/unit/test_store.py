from __future__ import annotations

import json
import sqlite3
import threading

import pytest

from appliance.errors import ApplianceError
from appliance.events.lifecycle import Event
from appliance.store import db as store
from appliance.store.writer import EventWriter


def _event(seq: int, ts: float = 0.0) -> Event:
    return Event(id=f"d:{seq}", seq=seq, type="new", device="d", camera="c", track_id=seq,
                 label="person", score=0.5, box=[0, 0, 1, 1], ts=ts or float(seq), first_seen=0.0,
                 frame_seq=seq)


def test_new_database_is_migrated_to_the_current_version_in_wal_mode(tmp_path):
    db = store.open_db(tmp_path / "a.db")
    assert store.schema_version(db) == store.SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert {"seq", "id", "type", "camera", "track_id", "label", "score", "ts", "payload"} <= set(
        db["events"].columns_dict)
    assert store.next_event_seq(db) == 1


def test_reopening_keeps_data_and_does_not_migrate_again(tmp_path):
    path = tmp_path / "a.db"
    w = EventWriter(path).start()
    w.put([_event(1), _event(2)])
    w.close()
    db = store.open_db(path)
    assert store.count_events(db) == 2
    assert store.next_event_seq(db) == 3


def test_migrations_run_in_order_from_an_old_version(tmp_path, monkeypatch):
    path = tmp_path / "a.db"
    store.open_db(path).conn.close()
    applied = []
    nxt = store.SCHEMA_VERSION + 1

    def add_zone(db):
        db["events"].add_column("zone", str)
        applied.append(nxt)

    monkeypatch.setattr(store, "MIGRATIONS", store.MIGRATIONS + [add_zone])
    monkeypatch.setattr(store, "SCHEMA_VERSION", nxt)
    db = store.open_db(path)
    assert applied == [nxt] and store.schema_version(db) == nxt
    assert "zone" in db["events"].columns_dict


def test_a_newer_database_is_refused_not_touched(tmp_path):
    path = tmp_path / "a.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(ApplianceError, match="schema version 99 is newer"):
        store.open_db(path)


def test_not_a_database_is_a_clear_error(tmp_path):
    path = tmp_path / "a.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ApplianceError, match=f"database {path}"):
        store.open_db(path)


def test_writer_batches_and_close_flushes_everything(tmp_path):
    path = tmp_path / "a.db"
    w = EventWriter(path, batch_size=50, flush_interval_s=5.0).start()
    producers = [threading.Thread(target=w.put, args=([_event(s) for s in range(k, 1000, 4)],))
                 for k in range(1, 5)]
    for t in producers:
        t.start()
    for t in producers:
        t.join()
    w.close()  # well before the 5 s flush interval: close must write it all
    assert w.stored == 999
    db = store.open_db(path)
    assert store.count_events(db) == 999
    payload = json.loads(db.execute("SELECT payload FROM events WHERE seq = 17").fetchone()[0])
    assert payload["id"] == "d:17" and payload["box"] == [0, 0, 1, 1]


def test_a_failed_write_is_retried_not_lost(tmp_path, caplog):
    path = tmp_path / "a.db"
    store.open_db(path).conn.close()
    admin = sqlite3.connect(path, check_same_thread=False)
    # A real SQLite error on every insert, like a full disk, until the trigger is dropped.
    admin.execute("CREATE TRIGGER fail BEFORE INSERT ON events BEGIN SELECT RAISE(ABORT, 'no space'); END")
    admin.commit()
    w = EventWriter(path, flush_interval_s=0.05).start()
    w.put([_event(1), _event(2)])
    threading.Timer(1.5, lambda: (admin.execute("DROP TRIGGER fail"), admin.commit())).start()
    w.close()
    assert store.count_events(store.open_db(path)) == 2
    assert "no space" in caplog.text and "retrying" in caplog.text


def test_query_since_and_limit(tmp_path):
    path = tmp_path / "a.db"
    w = EventWriter(path).start()
    w.put([_event(s, ts=100.0 + s) for s in range(1, 11)])
    w.close()
    db = store.open_db(path)
    assert [e["seq"] for e in store.query_events(db, limit=3)] == [8, 9, 10]
    assert [e["seq"] for e in store.query_events(db, since=105.0, limit=3)] == [5, 6, 7]
