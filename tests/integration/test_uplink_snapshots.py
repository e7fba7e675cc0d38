"""Snapshots over MQTT: the Uplink in-process against a real mosquitto, over `end` events
that name snapshots in a real SQLite file and JPEG files in a real snapshots folder.

The contract (docs/mqtt.md, "Snapshots"): a snapshot goes to
`<prefix>/<device>/snapshots/<event id>` after its event was acknowledged, only when no
event waits and only from bandwidth to spare, once (across restarts); a file that is gone
is skipped and counted and never stops anything."""
from __future__ import annotations

import json
import sqlite3
import time

import cv2
import numpy as np
import pytest
from prometheus_client import REGISTRY

from appliance import paths
from appliance.events.lifecycle import Event
from appliance.events.snapshots import snapshots_dir
from appliance.store.db import open_db
from appliance.store.writer import event_row
from tests.uplink_util import check_delivery, schema, stored, uplinks

DEVICE = "snap-1"
PREFIX = f"t/{DEVICE}/snapshots/"


class Clock:
    """The bandwidth cap's clock: it moves only when the test moves it."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def make_uplink(data_dir, mqtt_broker):
    with uplinks(data_dir, mqtt_broker.port, DEVICE, drain_timeout_s=5) as make:
        yield make


def seed(data_dir, seqs_types: list[tuple[int, str, str | None]]) -> None:
    """Events as the pipeline stores them; (seq, type, snapshot file name or None)."""
    db = open_db(paths.db_path(data_dir))
    t0 = time.time()
    rows = [event_row(Event(id=f"{DEVICE}:{seq}", seq=seq, type=kind, device=DEVICE, camera="north",
                            track_id=100 + seq, label="person", score=0.51, box=[1.0, 2.0, 30.0, 60.0],
                            ts=t0 + seq * 0.001, first_seen=t0, frame_seq=seq, snapshot=name))
            for seq, kind, name in seqs_types]
    with db.conn:
        db["events"].insert_all(rows)
    db.conn.close()


def jpeg(data_dir, name: str, seed_: int) -> bytes:
    """A real JPEG of about 9 kB, written where the snapshot writer puts them."""
    crop = np.random.default_rng(seed_).integers(0, 255, (120, 80, 3), dtype=np.uint8)
    data = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    folder = snapshots_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    return data


def outcomes(data_dir) -> dict[int, str | None]:
    conn = sqlite3.connect(paths.db_path(data_dir))
    rows = dict(conn.execute("SELECT seq, outcome FROM snapshot_outbox ORDER BY seq").fetchall())
    conn.close()
    return rows


def _metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def test_snapshots_follow_events_from_spare_bandwidth_skip_missing_files_and_go_once(
        data_dir, mqtt_broker, sub, make_uplink):
    # Three end events name snapshots; the file of the third is gone (the quota removed it).
    seed(data_dir, [(1, "new", None), (2, "update", None), (3, "end", "north-101.jpg"),
                    (4, "new", None), (5, "end", "north-104.jpg"), (6, "end", "north-105.jpg"),
                    (7, "end", None)])
    files = {3: jpeg(data_dir, "north-101.jpg", 1), 5: jpeg(data_dir, "north-104.jpg", 2)}
    missing0, sent0 = _metric("appliance_uplink_snapshots_missing_total"), _metric(
        "appliance_uplink_snapshots_sent_total")
    rate = 5000  # each 9 kB snapshot needs a full bucket: one per time the test moves the clock
    clock = Clock()
    up = make_uplink(pacing_clock=clock, bandwidth_bytes_per_s=rate, drain_timeout_s=1)

    def snapshots():
        return [m for m in sub.messages if m.topic.startswith(PREFIX)]

    sub.wait_for(lambda: len({e["id"] for e in sub.events()}) == 7, 20, "the 7 events")
    sub.wait_for(lambda: set(outcomes(data_dir)) == {3, 5, 6}, 10, "the acknowledged end events' snapshots queued")
    # The clock stands still: the events took part of the allowance, and a snapshot only
    # goes from a full one. New events are not held up by the snapshots waiting.
    seed(data_dir, [(8, "update", None), (9, "end", None)])
    sub.wait_for(lambda: len({e["id"] for e in sub.events()}) == 9, 20, "the 2 new events")
    time.sleep(0.6)  # two polls
    assert snapshots() == []
    assert set(outcomes(data_dir).values()) == {None}  # all still to send

    while len(snapshots()) < 2:
        n = len(snapshots())
        clock.t += 10  # a full bucket again
        sub.wait_for(lambda n=n: len(snapshots()) > n, 20, "the next snapshot once the clock moved")
    sub.wait_for(lambda: up.status()["snapshots_missing"] == 1, 20, "the missing file counted")
    sub.wait_for(lambda: outcomes(data_dir) == {3: "sent", 5: "sent", 6: "missing"}, 20, "the outcomes")

    got = snapshots()
    assert [m.topic for m in got] == [f"{PREFIX}{DEVICE}:3", f"{PREFIX}{DEVICE}:5"]  # in event order
    assert [m.payload for m in got] == [files[3], files[5]]  # the JPEG bytes, as stored
    assert not any(m.retain for m in got)
    # After the events: every event message arrived before the first snapshot.
    last_event = max(i for i, m in enumerate(sub.messages) if m.topic == f"t/{DEVICE}/events")
    first_snapshot = min(i for i, m in enumerate(sub.messages) if m.topic.startswith(PREFIX))
    assert last_event < first_snapshot
    check_delivery(sub.events(), stored(data_dir))
    validator = schema("mqtt-events")
    for m in sub.on("/events"):
        validator.validate(json.loads(m.payload))
    assert _metric("appliance_uplink_snapshots_missing_total") - missing0 == 1
    assert _metric("appliance_uplink_snapshots_sent_total") - sent0 == 2
    # A missing file is not an error: the uplink kept going. (The last snapshot overdrew
    # the allowance, as any message larger than a second's worth does: the clock moves on.)
    assert up.status()["state"] == "connected" and up.status()["last_error"] is None
    clock.t += 10
    seed(data_dir, [(10, "new", None)])
    sub.wait_for(lambda: len({e["id"] for e in sub.events()}) == 10, 20, "an event after the missing file")
    up.stop()

    # A restart sends none again: what was sent (or found missing) is recorded in SQLite.
    n = len(snapshots())
    up2 = make_uplink(stats_interval_s=1)
    stats0 = len(sub.on("/stats"))
    sub.wait_for(lambda: len(sub.on("/stats")) >= stats0 + 2, 20, "two stats messages of the new run")
    assert len(snapshots()) == n
    assert up2.status()["snapshots_sent"] == up2.status()["snapshots_missing"] == 0


def test_snapshots_left_at_a_stop_go_after_the_restart(data_dir, mqtt_broker, sub, make_uplink):
    seed(data_dir, [(1, "new", None), (2, "end", "north-101.jpg")])
    data = jpeg(data_dir, "north-101.jpg", 3)
    clock = Clock()
    up = make_uplink(pacing_clock=clock, bandwidth_bytes_per_s=5000, drain_timeout_s=0.5)
    sub.wait_for(lambda: outcomes(data_dir) == {2: None}, 20, "the snapshot queued")
    up.stop()  # no allowance for it: it stays queued
    assert not [m for m in sub.messages if m.topic.startswith(PREFIX)]

    make_uplink()  # no cap
    sub.wait_for(lambda: any(m.topic.startswith(PREFIX) for m in sub.messages), 20, "the snapshot")
    (m,) = [m for m in sub.messages if m.topic.startswith(PREFIX)]
    assert m.topic == f"{PREFIX}{DEVICE}:2" and m.payload == data
    sub.wait_for(lambda: outcomes(data_dir) == {2: "sent"}, 20, "marked sent")
