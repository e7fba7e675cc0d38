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


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_v1, _v2]
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(db: sqlite_utils.Database) -> int:
    return db.execute("PRAGMA user_version").fetchone()[0]


def migrate(db: sqlite_utils.Database) -> None:
    current = schema_version(db)
    if current > SCHEMA_VERSION:
        raise ApplianceError(
            f"database {db.conn.execute('PRAGMA database_list').fetchone()[2]}: schema version "
            f"{current} is newer than this software ({SCHEMA_VERSION}); refusing to touch it")
    for version in range(current, SCHEMA_VERSION):
        with db.conn:
            MIGRATIONS[version](db)
            db.execute(f"PRAGMA user_version = {version + 1}")


def open_db(path: Path, migrate_schema: bool = True) -> sqlite_utils.Database:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(str(path), timeout=10.0, check_same_thread=False)
        db = sqlite_utils.Database(conn)
        db.execute("PRAGMA journal_mode=WAL")
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
