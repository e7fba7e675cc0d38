"""Per-minute counts of line and zone events (appliance/store/rollups.py), on real SQLite
files: written with their events in one transaction (a failed write or a kill -9 leaves
both or neither), queried for the dashboard, pruned by their own retention."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from appliance.store import db as store
from appliance.store import rollups
from appliance.store.writer import EventWriter

REPO = Path(__file__).resolve().parents[2]
T0 = 1_795_339_980.0  # a minute start (divisible by 60)


@dataclass(frozen=True)
class AnalyticsEvent:
    """A line or zone event as the contract has it (docs: analytics contract): the attributes
    writer.event_row reads, and to_json."""

    seq: int
    type: str
    camera: str
    ts: float
    label: str
    fields: dict = field(default_factory=dict)  # line/direction or zone/action/occupancy/dwell_s
    classification: dict | None = None
    track_id: int = 7
    score: float = 0.9
    device: str = "g"

    @property
    def id(self) -> str:
        return f"{self.device}:{self.seq}"

    def to_json(self) -> str:
        d = {"id": self.id, "seq": self.seq, "schema": 1, "type": self.type, "device": self.device,
             "camera": self.camera, "ts": self.ts, "frame_seq": self.seq, "track_id": self.track_id,
             "label": self.label, "score": self.score, **self.fields}
        if self.classification is not None:
            d["classification"] = self.classification
        return json.dumps(d, separators=(",", ":"))


def line(seq: int, ts: float, name: str = "walkway", direction: str = "in", label: str = "person",
         camera: str = "north", **kw) -> AnalyticsEvent:
    return AnalyticsEvent(seq, "line", camera, ts, label, {"line": name, "direction": direction,
                                                          "point": [1.0, 2.0]}, **kw)


def zone(seq: int, ts: float, name: str = "crossing", action: str = "exit", dwell_s: float | None = 4.0,
         label: str = "person", camera: str = "north", **kw) -> AnalyticsEvent:
    f = {"zone": name, "action": action, "occupancy": 0}
    if dwell_s is not None:
        f["dwell_s"] = dwell_s
    return AnalyticsEvent(seq, "zone", camera, ts, label, f, **kw)


def write(path: Path, events, **kw) -> EventWriter:
    w = EventWriter(path, batch_size=500, flush_interval_s=0.01, **kw).start()
    w.put(events)
    assert w.close(10) == 0
    return w


def counts(path: Path) -> list[dict]:
    conn = sqlite3.connect(path)
    try:
        return rollups.query_rollups(conn, 0, 4e9)
    finally:
        conn.close()


PICKUP = {"label": "pickup", "score": 0.8, "votes": 3, "attempts": 3, "model": "m", "version": "1"}


def test_line_and_zone_events_are_counted_per_minute_key_with_their_dwell(tmp_path):
    db = tmp_path / "a.db"
    write(db, [
        line(1, T0 + 1), line(2, T0 + 59.9), line(3, T0 + 60), line(4, T0 + 2, direction="out"),
        line(5, T0 + 3, label="car", classification=PICKUP), line(6, T0 + 4, label="car"),
        zone(7, T0 + 5, dwell_s=4.0), zone(8, T0 + 6, dwell_s=6.5), zone(9, T0 + 7, action="enter", dwell_s=None),
        zone(10, T0 + 8, action="loiter", dwell_s=31.0), line(11, T0 + 9, camera="south"),
    ])
    rows = counts(db)
    got = {(r["minute"] - T0, r["camera"], r["kind"], r["name"], r["direction"], r["label"], r["type"]):
           (r["count"], r["dwell_sum_s"]) for r in rows}
    assert got == {
        (0, "north", "line", "walkway", "in", "person", ""): (2, 0.0),
        (60, "north", "line", "walkway", "in", "person", ""): (1, 0.0),
        (0, "north", "line", "walkway", "out", "person", ""): (1, 0.0),
        (0, "north", "line", "walkway", "in", "car", "pickup"): (1, 0.0),
        (0, "north", "line", "walkway", "in", "car", ""): (1, 0.0),
        (0, "north", "zone", "crossing", "exit", "person", ""): (2, 10.5),
        (0, "north", "zone", "crossing", "enter", "person", ""): (1, 0.0),
        (0, "north", "zone", "crossing", "loiter", "person", ""): (1, 31.0),
        (0, "south", "line", "walkway", "in", "person", ""): (1, 0.0),
    }
    assert [r["minute"] for r in rows] == sorted(r["minute"] for r in rows)
    assert set(rows[0]) == {"minute", "camera", "kind", "name", "direction", "label", "type", "count",
                            "dwell_sum_s"}
    # Every event is stored as well, and a later batch adds to the same minute.
    write(db, [line(12, T0 + 30)])
    again = {tuple(r[k] for k in rollups.KEY): r["count"] for r in counts(db)}
    assert again[(T0, "north", "line", "walkway", "in", "person", "")] == 3
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 12
    conn.close()


def test_query_filters_by_overlapping_minutes_camera_and_kind(tmp_path):
    db = tmp_path / "a.db"
    write(db, [line(1, T0 + 10), zone(2, T0 + 70), line(3, T0 + 130, camera="south")])
    conn = sqlite3.connect(db)
    q = rollups.query_rollups
    assert [r["minute"] for r in q(conn, T0 + 30, T0 + 90)] == [T0, T0 + 60]  # overlapping minutes
    assert [r["minute"] for r in q(conn, T0 + 60, T0 + 120)] == [T0 + 60]
    assert [r["kind"] for r in q(conn, T0, T0 + 300, kind="zone")] == ["zone"]
    assert [r["camera"] for r in q(conn, T0, T0 + 300, camera="south")] == ["south"]
    assert q(conn, T0, T0 + 300, camera="nowhere") == []
    assert len(q(store.open_db(db), T0, T0 + 300)) == 3  # a sqlite_utils Database works too
    for args, kw, message in [
        (("yesterday", T0), {}, "since: expected unix seconds (a finite number), got 'yesterday'"),
        ((T0, float("nan")), {}, "until: expected unix seconds (a finite number), got nan"),
        ((T0 + 10, T0), {}, f"until ({T0}) is before since ({T0 + 10})"),
        ((T0, T0 + 1), {"kind": "track"}, "kind: expected one of line, zone, got 'track'"),
        ((T0, T0 + 1), {"camera": 3}, "camera: expected a camera id, got 3"),
    ]:
        with pytest.raises(ValueError) as e:
            q(conn, *args, **kw)
        assert str(e.value) == message
    conn.close()


def test_an_event_that_breaks_the_contract_is_stored_but_not_counted(tmp_path, caplog):
    db = tmp_path / "a.db"
    bad = AnalyticsEvent(2, "line", "north", T0 + 1, "person", {"direction": "in"})  # no line name
    write(db, [line(1, T0), bad, line(3, T0 + 2)])
    assert [r["count"] for r in counts(db)] == [2]
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 3
    conn.close()
    assert "line event g:2 has no valid line/zone fields" in caplog.text


def test_a_failed_write_stores_neither_the_events_nor_their_counts_then_both_once(tmp_path):
    db = tmp_path / "a.db"
    store.open_db(db).conn.close()
    # The counts insert fails after the events' insert, in the same transaction.
    conn = sqlite3.connect(db)
    conn.execute("CREATE TRIGGER no_counts BEFORE INSERT ON counts BEGIN SELECT RAISE(ABORT, 'no room'); END")
    conn.commit()
    w = EventWriter(db, batch_size=500, flush_interval_s=0.01, retry_min_s=0.05, retry_max_s=0.05).start()
    w.put([line(1, T0), zone(2, T0 + 1), line(3, T0 + 2)])
    deadline = time.monotonic() + 10
    while w.failures < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert w.state == "failing" and "no room" in (w.last_error or "")
    assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0  # rolled back with the counts
    assert conn.execute("SELECT COUNT(*) FROM counts").fetchone()[0] == 0
    conn.execute("DROP TRIGGER no_counts")
    conn.commit()
    assert w.close(10) == 0 and w.stored == 3
    assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 3
    assert conn.execute("SELECT SUM(count) FROM counts").fetchone()[0] == 3  # retried: counted once
    conn.close()


_KILLED_WRITER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    from tests.unit.test_store_rollups import line, zone, T0
    from appliance.store.writer import EventWriter
    w = EventWriter({db!r}, batch_size=50, flush_interval_s=0.001).start()
    seq = 0
    while True:
        batch = []
        for _ in range(50):
            seq += 1
            make = line if seq % 3 else zone
            batch.append(make(seq, T0 + seq * 0.5, label=("person", "car")[seq % 2]))
        w.put(batch)
        if seq == 500:
            print("ready", flush=True)
        time.sleep(0.001)
""")


def test_kill_9_mid_writing_never_leaves_an_event_without_its_count(tmp_path):
    db = tmp_path / "a.db"
    store.open_db(db).conn.close()
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER.format(repo=str(REPO), db=str(db))],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        conn = sqlite3.connect(db, timeout=10)
        deadline = time.monotonic() + 30
        while conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] < 2000 and time.monotonic() < deadline:
            time.sleep(0.01)
        conn.close()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    conn = sqlite3.connect(db)
    stored = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    assert stored >= 2000
    # Recount the stored events and compare with the counts table, key by key.
    expected: dict[tuple, int] = {}
    for kind, cam, label, ts, payload in conn.execute("SELECT type, camera, label, ts, payload FROM events"):
        e = json.loads(payload)
        key = (rollups.minute_of(ts), cam, kind, e.get("line") or e.get("zone"),
               e.get("direction") or e.get("action"), label, "")
        expected[key] = expected.get(key, 0) + 1
    got = {tuple(r[k] for k in rollups.KEY): r["count"] for r in rollups.query_rollups(conn, 0, 4e9)}
    assert got == expected and sum(got.values()) == stored
    conn.close()


def test_counts_older_than_their_retention_are_pruned_and_events_kept(tmp_path):
    db = tmp_path / "a.db"
    now = T0 + 10 * 86400
    write(db, [line(1, T0), line(2, T0 + 5 * 86400), line(3, now - 60)], wall_clock=lambda: T0)
    assert len(counts(db)) == 3
    # A writer's start prunes: 6 days of counts kept, the 10-day-old minute goes.
    write(db, [line(4, now)], counts_retention_s=6 * 86400, wall_clock=lambda: now)
    assert [r["minute"] for r in counts(db)] == [T0 + 5 * 86400, now - 60, now]
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 4  # the events have their own limits
    assert rollups.prune(conn, now + 60, chunk=1) == 3  # chunked deletes take everything
    conn.close()


def test_version_4_files_get_the_counts_table_and_keep_their_events(tmp_path):
    db = tmp_path / "old.db"
    d = sqlite3.connect(db)
    sdb = store.sqlite_utils.Database(d)
    for migration in store.MIGRATIONS[:4]:
        migration(sdb)
    d.execute("PRAGMA user_version = 4")
    d.execute("INSERT INTO events (seq, id, type, camera, ts, payload) VALUES (1, 'g:1', 'new', 'c', 1.0, '{}')")
    d.commit()
    d.close()
    opened = store.open_db(db)
    assert store.schema_version(opened) == store.SCHEMA_VERSION == 5
    assert store.count_events(opened) == 1
    assert {"counts", "uplink_retained"} <= set(opened.table_names())
    opened.conn.close()


def test_the_analytics_event_classes_are_counted_too(tmp_path):
    events = pytest.importorskip("appliance.analytics.events")
    common = {"device": "g", "camera": "north", "frame_seq": 1, "track_id": 3, "label": "car", "score": 0.9}
    db = tmp_path / "a.db"
    write(db, [events.LineEvent(id="g:1", seq=1, type="line", ts=T0 + 1, line="walkway", direction="out",
                                point=(1.0, 2.0), classification=PICKUP, **common),
               events.ZoneEvent(id="g:2", seq=2, type="zone", ts=T0 + 2, zone="crossing", action="exit",
                                occupancy=0, dwell_s=2.5, **common)])
    assert [(r["kind"], r["name"], r["direction"], r["type"], r["count"], r["dwell_sum_s"]) for r in counts(db)] == [
        ("line", "walkway", "out", "pickup", 1, 0.0), ("zone", "crossing", "exit", "", 1, 2.5)]
