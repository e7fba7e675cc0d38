"""Snapshots in the real pipeline (real model, the demo video) with the uplink to a real
mosquitto: every `end` event the policy keeps names a JPEG that is on disk once the
pipeline has stopped, and that went over MQTT after its event."""
from __future__ import annotations

import json
import sqlite3

import cv2

from appliance import paths
from appliance.config import from_dict
from appliance.events import lifecycle
from appliance.events import snapshots as snap
from appliance.pipeline import Pipeline
from appliance.uplink.service import Uplink
from tests.mqtt_broker import Subscriber


def test_end_events_name_snapshots_on_disk_and_sent_after_their_events(data_dir, mqtt_broker, monkeypatch):
    from appliance import pipeline

    procs = tuple(pipeline.TRACK_PROCESSORS)
    if snap.build not in procs:  # until pipeline.py lists it: just before the lifecycle events
        i = procs.index(lifecycle.build)
        monkeypatch.setattr(pipeline, "TRACK_PROCESSORS", (*procs[:i], snap.build, *procs[i:]))
    cfg = from_dict({"device": {"id": "dev1"}, "snapshots": {"policy": "all", "quality": 80},
                     "classify": {"enabled": False},
                     "uplink": {"enabled": True, "host": "127.0.0.1", "port": mqtt_broker.port,
                                "topic_prefix": "t", "drain_timeout_s": 20}})
    sub = Subscriber(mqtt_broker.port, ["t/#"]).start()
    p = Pipeline(cfg, data_dir, fast=True, max_frames=60)
    p.services.append(Uplink(cfg, data_dir, pipeline=p))
    p.run(stats_interval_s=60)  # stops the uplink once it has sent everything (or 20 s)

    conn = sqlite3.connect(paths.db_path(data_dir))
    events = [json.loads(r[0]) for r in conn.execute("SELECT payload FROM events ORDER BY seq")]
    conn.close()
    ends = [e for e in events if e["type"] == "end"]
    assert ends, "the demo video's first 60 frames end some tracks"
    assert all("snapshot" not in e for e in events if e["type"] != "end")
    folder = snap.snapshots_dir(data_dir)
    for e in ends:  # policy all: every track, the stream's end included
        assert e["snapshot"] == f"demo-{e['track_id']}.jpg"
        img = cv2.imread(str(folder / e["snapshot"]))
        assert img is not None and min(img.shape[:2]) >= 8
    assert sorted(x.name for x in folder.iterdir()) == sorted(e["snapshot"] for e in ends)
    writer = next(s for s in p.stages if s.name == "snapshots")
    assert sum(writer.saved.values()) == len(ends) and not writer.failed and not writer.alive

    # Over MQTT: each snapshot, byte for byte, after the message that carried its event.
    sub.wait_for(lambda: len([m for m in sub.messages if "/snapshots/" in m.topic]) >= len(ends), 20,
                 "every snapshot")
    sub.close()
    arrived = {}
    for i, m in enumerate(sub.messages):
        if m.topic == "t/dev1/events":
            for e in json.loads(m.payload)["events"]:
                arrived.setdefault(e["id"], i)
    for e in ends:
        (i, m), = [(i, m) for i, m in enumerate(sub.messages) if m.topic == f"t/dev1/snapshots/{e['id']}"]
        assert arrived[e["id"]] < i and m.payload == (folder / e["snapshot"]).read_bytes()
