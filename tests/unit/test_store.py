from __future__ import annotations

import json
import sqlite3
import threading

import pytest
import sqlite_utils

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


# -- classification (schema version 3) -------------------------------------------------

PICKUP = {"label": "pickup", "score": 0.82, "votes": 3, "attempts": 4, "model": "efficientnet-lite0",
          "version": "1"}


def _old_database(path, version: int) -> None:
    """A database file as software of schema `version` left it, with a few rows: a track
    event whose payload already has a classification, one without, and a state event."""
    db = sqlite_utils.Database(sqlite3.connect(path))
    for migration in store.MIGRATIONS[:version]:
        migration(db)
    db.execute(f"PRAGMA user_version = {version}")
    rows = [
        (1, "new", 1, "car", json.dumps({"id": "d:1", "type": "new", "label": "car"})),
        (2, "update", 1, "car", json.dumps({"id": "d:2", "type": "update", "label": "car",
                                            "classification": PICKUP})),
        (3, "camera", None, None, json.dumps({"id": "d:3", "type": "camera", "state": "stalled"})),
    ]
    for seq, type_, track, label, payload in rows:
        db.execute("INSERT INTO events (seq, id, type, camera, track_id, label, score, ts, payload) "
                   "VALUES (?, ?, ?, 'c', ?, ?, 0.5, ?, ?)",
                   [seq, f"d:{seq}", type_, track, label, float(seq), payload])
    db.conn.commit()
    db.conn.close()


@pytest.mark.parametrize("version", [1, 2])
def test_an_old_database_gains_the_classification_column_and_keeps_its_rows(tmp_path, version):
    path = tmp_path / "old.db"
    _old_database(path, version)
    db = store.open_db(path)
    assert store.schema_version(db) == store.SCHEMA_VERSION >= 3
    assert db["events"].columns_dict["classification"] is str
    rows = db.execute("SELECT seq, type, label, classification, payload FROM events ORDER BY seq").fetchall()
    assert [r[:4] for r in rows] == [(1, "new", "car", None), (2, "update", "car", "pickup"),
                                     (3, "camera", None, None)]  # backfilled from the payload
    assert json.loads(rows[1][4])["classification"] == PICKUP  # payloads untouched
    assert "events_classified" in {i.name for i in db["events"].indexes}
    if version == 1:  # the v2 outbox columns came too
        assert {"sent_at", "priority"} <= set(db["events"].columns_dict)
    # The writer goes on where the old software stopped.
    w = EventWriter(path).start()
    w.put([_event(4)])
    w.close()
    assert store.count_events(store.open_db(path)) == 4


def test_counting_tracks_by_type_reads_the_partial_index(tmp_path):
    """The per-track lookup of the latest type is a search of events_classified."""
    from appliance.store import queries
    db = store.open_db(tmp_path / "a.db")
    plan = " ".join(r[-1] for r in db.execute("EXPLAIN QUERY PLAN " + queries._COUNTS_BY_CLASSIFICATION,
                                              {"start": 0, "until": 1, "bucket": 1, "camera": None}))
    assert "USING COVERING INDEX events_classified" in plan, plan


def test_the_writer_stores_the_decided_type_and_null_otherwise(tmp_path):
    from appliance.events.state import StateEvent
    path = tmp_path / "a.db"
    plain = _event(1)
    typed = Event(id="d:2", seq=2, type="update", device="d", camera="c", track_id=1, label="car", score=0.7,
                  box=[0, 0, 1, 1], ts=2.0, first_seen=1.0, frame_seq=2, classification=PICKUP)
    state = StateEvent("d:3", 3, "camera", "d", "c", "stalled", "streaming", "no frame for 5 s", 3.0)
    w = EventWriter(path).start()
    w.put([plain, typed, state])
    w.close()
    db = store.open_db(path)
    rows = db.execute("SELECT seq, classification, payload FROM events ORDER BY seq").fetchall()
    assert [r[1] for r in rows] == [None, "pickup", None]
    assert "classification" not in json.loads(rows[0][2])  # absent when nothing was decided
    assert json.loads(rows[1][2])["classification"] == PICKUP
    assert w.unwritten == 0


def test_a_failing_migration_step_leaves_the_file_at_the_previous_version(tmp_path, monkeypatch):
    path = tmp_path / "a.db"
    store.open_db(path).conn.close()
    nxt = store.SCHEMA_VERSION + 1

    def half_done(db):
        db.execute("ALTER TABLE events ADD COLUMN zone TEXT")
        db.execute("CREATE INDEX events_zone ON events(zone)")
        db.execute("UPDATE events SET zone = no_such_function(payload)")  # fails after the DDL

    monkeypatch.setattr(store, "MIGRATIONS", store.MIGRATIONS + [half_done])
    monkeypatch.setattr(store, "SCHEMA_VERSION", nxt)
    with pytest.raises(ApplianceError, match="no such function"):
        store.open_db(path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == nxt - 1
    assert "zone" not in {r[1] for r in conn.execute("PRAGMA table_info(events)")}
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'events_zone'").fetchone() is None


def test_processes_opening_an_old_file_at_once_migrate_it_once(tmp_path):
    path = tmp_path / "old.db"
    _old_database(path, 1)
    start, errors = threading.Barrier(4), []

    def open_it():
        start.wait()
        try:
            store.open_db(path).conn.close()
        except Exception as e:  # noqa: BLE001  reported below
            errors.append(e)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    db = store.open_db(path)
    assert store.schema_version(db) == store.SCHEMA_VERSION and store.count_events(db) == 3
