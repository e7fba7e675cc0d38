"""The `counts` topic against a real mosquitto: finished minutes of the SQLite rollups, each
row once, validated against docs/schemas/mqtt-counts.v1.json; a late event sends its
minute again with the new total; the per-row cursor survives a restart and a kill -9."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from appliance import paths
from appliance.store import rollups
from appliance.store.db import open_db
from appliance.store.writer import EventWriter
from tests.unit.test_store_rollups import line, zone
from tests.uplink_util import REPO, schema, uplinks


def minute_now() -> float:
    return rollups.minute_of(time.time())


def store(data_dir: Path, events) -> None:
    w = EventWriter(paths.db_path(data_dir), flush_interval_s=0.01).start()
    w.put(events)
    assert w.close(10) == 0


def received_rows(sub) -> list[dict]:
    v = schema("mqtt-counts")
    rows = []
    for m in sub.exact("t/dev1/counts"):
        body = json.loads(m.payload)
        v.validate(body)
        assert body["device"] == "dev1" and not m.retain
        rows.extend(body["counts"])
    return rows


def key(r: dict) -> tuple:
    return tuple(r[k] for k in rollups.KEY)


def stored_rows(data_dir: Path, until: float) -> list[dict]:
    conn = sqlite3.connect(paths.db_path(data_dir))
    try:
        return rollups.query_rollups(conn, 0, until)
    finally:
        conn.close()


def test_finished_minutes_go_once_and_a_late_event_sends_its_minute_again(data_dir, mqtt_broker, sub):
    now_min = minute_now()
    old = now_min - 600
    store(data_dir, [line(1, old + 1), line(2, old + 2, direction="out"), zone(3, old + 61, dwell_s=3.5),
                     line(4, old + 120, label="car", classification={"label": "pickup"}),
                     line(5, now_min + 1, camera="south")])  # this minute: not finished yet
    with uplinks(data_dir, mqtt_broker.port, "dev1", 2.0) as make:
        up = make(counts_interval_s=1.0, counts_delay_s=0.0)
        sub.wait_for(lambda: up.counts.rows_sent == 4, 20, "4 rows acknowledged")
        rows = received_rows(sub)
        finished = [r for r in stored_rows(data_dir, now_min) if r["minute"] < now_min]
        assert sorted(rows, key=key) == sorted(finished, key=key) and len(rows) == 4
        assert all(r["minute"] < now_min for r in rows)  # the current minute waits
        types = {r["label"]: r["type"] for r in rows if r["kind"] == "line"}
        assert types == {"person": "", "car": "pickup"}
        assert [r["dwell_sum_s"] for r in rows if r["kind"] == "zone"] == [3.5]

        # Later rounds send nothing acknowledged again...
        time.sleep(2.5)
        assert len(received_rows(sub)) == 4
        # ...but an event that reached SQLite late sends its minute again, with the new total.
        store(data_dir, [line(6, old + 30)])
        sub.wait_for(lambda: len(received_rows(sub)) == 5, 20, "the corrected minute")
        again = received_rows(sub)[-1]
        assert (again["minute"], again["name"], again["direction"], again["count"]) == (old, "walkway", "in", 2)
    latest = {key(r): r for r in received_rows(sub)}  # what a consumer keeps: the latest per key
    assert sorted(latest.values(), key=key) == sorted(
        [r for r in stored_rows(data_dir, now_min) if r["minute"] < now_min], key=key)


_KILLED_UPLINK = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    from pathlib import Path
    from appliance.config import from_dict
    from appliance.uplink.service import Uplink
    cfg = from_dict({{"device": {{"id": "dev1"}}, "uplink": {{
        "enabled": True, "host": "127.0.0.1", "port": {port}, "topic_prefix": "t",
        "counts_interval_s": 1.0, "counts_delay_s": 0.0}}}})
    up = Uplink(cfg, Path({data!r}))
    up.start()
    while up.counts.rows_sent < {first}:
        time.sleep(0.01)
    print("acked", flush=True)
    time.sleep(3600)
""")


def test_the_cursor_survives_a_kill_9_and_a_restart(data_dir, mqtt_broker, sub):
    now_min = minute_now()
    old = now_min - 3600
    store(data_dir, [line(i, old + 60 * i) for i in range(1, 11)])  # 10 finished minutes, one row each
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_UPLINK.format(
        repo=str(REPO), port=mqtt_broker.port, data=str(data_dir), first=10)],
        stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "acked"
        store(data_dir, [line(i, old + 60 * i) for i in range(11, 16)])  # 5 more, while it runs
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    conn = sqlite3.connect(paths.db_path(data_dir))
    marked = {r[0] for r in conn.execute("SELECT minute FROM counts WHERE sent_rev = rev")}
    conn.close()
    assert {old + 60 * i for i in range(1, 11)} <= marked  # acknowledged before the kill
    before = len(received_rows(sub))
    with uplinks(data_dir, mqtt_broker.port, "dev1", 2.0) as make:
        up = make(counts_interval_s=1.0, counts_delay_s=0.0)
        sub.wait_for(lambda: up.counts.rows_sent == 15 - len(marked), 20, "the rows not acknowledged")
        time.sleep(1.5)  # another round: nothing more
    after = received_rows(sub)[before:]
    assert sorted(r["minute"] for r in after) == sorted({old + 60 * i for i in range(1, 16)} - marked)
    # Together: every finished minute arrived, and each acknowledged one exactly once.
    minutes = [r["minute"] for r in received_rows(sub)]
    assert sorted(set(minutes)) == [old + 60 * i for i in range(1, 16)]
    assert all(minutes.count(m) == 1 for m in marked)
    # A third start has nothing to send.
    with uplinks(data_dir, mqtt_broker.port, "dev1", 2.0) as make:
        up = make(counts_interval_s=1.0, counts_delay_s=0.0)
        sub.wait_for(lambda: up.state == "connected", 20, "connected")
        time.sleep(1.5)
        assert up.counts.rows_sent == 0
    assert len(received_rows(sub)) == len(minutes)


def test_many_rows_go_in_messages_of_at_most_500(data_dir, mqtt_broker, sub):
    old = minute_now() - 86400
    db = open_db(paths.db_path(data_dir))
    with db.conn:  # 1200 finished rows, as the writer would leave them
        db.conn.executemany(
            "INSERT INTO counts (minute, camera, kind, name, direction, label, type, count, dwell_sum_s) "
            "VALUES (?, 'north', 'line', 'walkway', 'in', 'person', '', 1, 0)",
            [(old + 60 * i,) for i in range(1200)])
    db.conn.close()
    with uplinks(data_dir, mqtt_broker.port, "dev1", 2.0) as make:
        up = make(counts_interval_s=1.0, counts_delay_s=0.0)
        sub.wait_for(lambda: up.counts.rows_sent == 1200, 30, "1200 rows")
    sizes = [len(json.loads(m.payload)["counts"]) for m in sub.exact("t/dev1/counts")]
    assert sizes == [500, 500, 200]
    assert [r["minute"] for r in received_rows(sub)] == [old + 60 * i for i in range(1200)]
