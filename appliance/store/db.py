"""The SQLite store: schema, migrations and queries.

The schema version lives in PRAGMA user_version; MIGRATIONS[i] takes a database from
version i to i + 1, each in its own transaction, so an old database is brought up to
date on open and nothing stored is lost. WAL lets readers (CLI, dashboard, uplink) run
beside the one writer; synchronous=FULL because an acknowledged event must survive a
power cut.
"""
from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable

import sqlite_utils

from appliance.errors import ApplianceError


def _v1(db: sqlite_utils.Database) -> None:
    db["events"].create(
        {"seq": int, "id": str, "type": str, "camera": str, "track_id": int, "label": str,
         "score": float, "ts": float, "payload": str},
        pk="seq", not_null={"id", "type", "camera", "ts", "payload"},
    )
    db["events"].create_index(["id"], unique=True)
    db["events"].create_index(["ts"])
    db["events"].create_index(["camera", "ts"])


def _v2(db: sqlite_utils.Database) -> None:
    """The uplink's outbox (docs/mqtt.md): a row is unsent until the broker acknowledged it.

    priority 0 (alert: every type but `update`) is sent before 1 (routine `update`). A
    trigger sets it, so the writer stays unaware of the uplink. Rows stored before this
    version were never sent, so they stay unsent and go out too.
    """
    db.execute("ALTER TABLE events ADD COLUMN sent_at REAL")
    db.execute("ALTER TABLE events ADD COLUMN priority INTEGER NOT NULL DEFAULT 1")
    db.execute("UPDATE events SET priority = 0 WHERE type <> 'update'")
    db.execute("CREATE TRIGGER events_priority AFTER INSERT ON events WHEN NEW.type <> 'update' "
               "BEGIN UPDATE events SET priority = 0 WHERE seq = NEW.seq; END")
    # Unsent rows in send order; sent rows drop out of this index.
    db.execute("CREATE INDEX events_unsent ON events(priority, seq) WHERE sent_at IS NULL")
    # `dropped` announcements from retention, sent like events (appliance/uplink/retention.py).
    db.execute("CREATE TABLE uplink_notices (n INTEGER PRIMARY KEY, ts REAL NOT NULL, "
               "payload TEXT NOT NULL, sent_at REAL)")


def _v3(db: sqlite_utils.Database) -> None:
    """The classifier's decided type of a track (docs/events.md, `classification.label`), as a
    column so the dashboard can filter and count by it. NULL when nothing was decided, and
    for state events.

    Rows stored before this version get it from their payload where it is there (only the
    rows that mention it are parsed); the rest stay NULL. The partial index holds the
    classified rows only: per track, newest first, with the type, so counting tracks by
    type finds each track's latest type in the index alone, and unclassified rows (state
    events, people, tracks not yet decided) cost the writer nothing.
    """
    db.execute("ALTER TABLE events ADD COLUMN classification TEXT")
    db.execute("UPDATE events SET classification = json_extract(payload, '$.classification.label') "
               "WHERE payload LIKE '%\"classification\"%' AND json_valid(payload) "
               "AND json_type(payload, '$.classification.label') = 'text'")
    db.execute("CREATE INDEX events_classified ON events(camera, track_id, seq, classification) "
               "WHERE classification IS NOT NULL")


def _v4(db: sqlite_utils.Database) -> None:
    """The uplink's queue of snapshots (appliance/uplink/, docs/mqtt.md "Snapshots"): a row per
    `end` event that names a snapshot, added once the broker acknowledged the event, so a
    snapshot always goes after its event. `done_at` is NULL until the broker acknowledged
    the JPEG (`outcome` sent) or its file was found gone (`outcome` missing), across restarts.
    """
    db.execute("CREATE TABLE snapshot_outbox (seq INTEGER PRIMARY KEY, event_id TEXT NOT NULL, "
               "file TEXT NOT NULL, ts REAL NOT NULL, done_at REAL, outcome TEXT)")
    db.execute("CREATE INDEX snapshot_outbox_pending ON snapshot_outbox(seq) WHERE done_at IS NULL")


def _v5(db: sqlite_utils.Database) -> None:
    """Per-minute counts of line and zone events (appliance/store/rollups.py), written in the
    writer's transaction with their events; `rev` / `sent_rev` are the uplink's per-row
    cursor for the counts topic (appliance/uplink/counts.py), and the partial index holds
    the rows it still has to send. `uplink_retained`: the retained topics the uplink
    published (Home Assistant discovery), so it can clear those no longer wanted, across
    restarts."""
    db.execute("CREATE TABLE counts (id INTEGER PRIMARY KEY, minute REAL NOT NULL, camera TEXT NOT NULL, "
               "kind TEXT NOT NULL, name TEXT NOT NULL, direction TEXT NOT NULL, label TEXT NOT NULL, "
               "type TEXT NOT NULL DEFAULT '', count INTEGER NOT NULL, dwell_sum_s REAL NOT NULL DEFAULT 0, "
               "rev INTEGER NOT NULL DEFAULT 1, sent_rev INTEGER, "
               "UNIQUE (minute, camera, kind, name, direction, label, type))")
    db.execute("CREATE INDEX counts_unsent ON counts(minute, id) WHERE sent_rev IS NULL OR sent_rev < rev")
    db.execute("CREATE TABLE uplink_retained (topic TEXT PRIMARY KEY, ts REAL NOT NULL)")


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_v1, _v2, _v3, _v4, _v5]
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(db: sqlite_utils.Database) -> int:
    return db.execute("PRAGMA user_version").fetchone()[0]


def migrate(db: sqlite_utils.Database) -> None:
    current = schema_version(db)
    if current > SCHEMA_VERSION:
        raise ApplianceError(
            f"database {db.conn.execute('PRAGMA database_list').fetchone()[2]}: schema version "
            f"{current} is newer than this software ({SCHEMA_VERSION}); refusing to touch it")
    while current < SCHEMA_VERSION:
        # One transaction per step, its ALTER and CREATE statements included (Python's
        # sqlite3 would run those outside one): a crash or a failing statement leaves the
        # file at the previous version, never half-migrated. IMMEDIATE takes the write lock
        # first, and the version is read again under it: another process (the dashboard,
        # the CLI) opening the file at the same time may have done this step already.
        with db.conn:
            db.conn.execute("BEGIN IMMEDIATE")
            current = schema_version(db)
            if current >= SCHEMA_VERSION:
                break
            MIGRATIONS[current](db)
            current += 1
            db.execute(f"PRAGMA user_version = {current}")


def _wal(db: sqlite_utils.Database, tries: int = 100) -> None:
    """Put the file in WAL mode. Switching a file from the rollback journal needs it to
    itself, and SQLite answers "locked" at once rather than waiting (the busy timeout does
    not apply), so when several connections open an old file together, try again."""
    for attempt in range(tries):
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or attempt == tries - 1:
                raise
            time.sleep(0.05)


def open_db(path: Path, migrate_schema: bool = True) -> sqlite_utils.Database:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(str(path), timeout=10.0, check_same_thread=False)
        db = sqlite_utils.Database(conn)
        _wal(db)
        db.execute("PRAGMA synchronous=FULL")
        if migrate_schema:
            migrate(db)
    except sqlite3.DatabaseError as e:
        raise ApplianceError(f"database {path}: {e}") from None
    return db


def next_event_seq(db: sqlite_utils.Database) -> int:
    return (db.execute("SELECT MAX(seq) FROM events").fetchone()[0] or 0) + 1


def max_track_id(db: sqlite_utils.Database) -> int:
    return db.execute("SELECT MAX(track_id) FROM events").fetchone()[0] or 0


def query_events(db: sqlite_utils.Database, since: float | None = None,
                 limit: int = 50) -> list[dict[str, Any]]:
    """Events as dicts, oldest first: from `since` on if given, else the latest `limit`."""
    if since is not None:
        rows = db.execute(
            "SELECT payload FROM events WHERE ts >= ? ORDER BY seq LIMIT ?", [since, limit])
    else:
        rows = db.execute(
            "SELECT payload FROM (SELECT seq, payload FROM events ORDER BY seq DESC LIMIT ?) "
            "ORDER BY seq", [limit])
    return [json.loads(r[0]) for r in rows.fetchall()]


def count_events(db: sqlite_utils.Database) -> int:
    return db["events"].count
