"""The real `appliance run` (real model, real video, real SQLite) with the uplink on, against
a real mosquitto: what arrives, and the commands."""
from __future__ import annotations

import json
import sqlite3

import cv2
import numpy as np

from appliance import paths
from appliance.uplink.messages import events_message
from tests.mqtt_broker import Subscriber
from tests.uplink_util import Appliance, check_delivery, cli, schema, stored, write_config


def test_events_arrive_with_the_right_content(data_dir, mqtt_broker, tmp_path):
    sub = Subscriber(mqtt_broker.port, ["test/#"]).start()
    cfg = write_config(tmp_path / "c.yaml", mqtt_broker.port, uplink={"batch_size": 7})
    app = Appliance(cfg, data_dir, "--fast", "--max-frames", "200", log=tmp_path / "app.log")
    assert app.wait(120) == 0, app.text()[-3000:]
    rows = stored(data_dir)
    assert len(rows) > 20
    sub.wait_for(lambda: {e["id"] for e in sub.events()} >= {r["id"] for r in rows}, 10, "every event")
    sub.close()

    result = check_delivery(sub.events(), rows)
    assert result["duplicates"] == 0 and all(r["_sent"] for r in rows)
    # Each message is the stored JSON texts, unchanged, joined into one batch.
    conn = sqlite3.connect(paths.db_path(data_dir))
    text = dict(conn.execute("SELECT id, payload FROM events"))
    events_schema = schema("mqtt-events")
    for m in sub.on("/events"):
        body = json.loads(m.payload)
        events_schema.validate(body)
        assert m.topic == "test/dev1/events" and 1 <= len(body["events"]) <= 7
        assert m.payload == events_message("dev1", [text[e["id"]] for e in body["events"]])
    assert {e["label"] for e in sub.events()} >= {"person"} and {e["camera"] for e in sub.events()} == {"demo"}

    status = [json.loads(m.payload) for m in sub.on("/status")]
    for s in status:
        schema("mqtt-status").validate(s)
    online, offline = status[0], status[-1]
    assert online["state"] == "online" and online["software"]["version"]
    assert online["model"]["name"] == "ssd-mobilenet-v2-coco" and online["model"]["backend"] == "litert"
    assert offline == {"schema": 1, "device": "dev1", "state": "offline"}  # a clean stop says so
    stats = [json.loads(m.payload) for m in sub.on("/stats")]
    assert stats
    for s in stats:
        schema("mqtt-stats").validate(s)
    assert "demo" in stats[-1]["cameras"] and stats[-1]["disk"]["db_bytes"] > 0

    # The status is retained: a consumer arriving later learns the device is offline.
    late = Subscriber(mqtt_broker.port, ["test/+/status"]).start()
    late.wait_for(lambda: late.on("/status"), 5, "the retained status")
    late.close()
    assert late.on("/status")[0].retain and json.loads(late.on("/status")[0].payload)["state"] == "offline"

    out = cli("uplink", "status", data_dir=data_dir)
    assert out.returncode == 0, out.stderr
    assert "link: not running" in out.stdout and "backlog: 0 events unsent" in out.stdout


def test_commands_and_malformed_commands(data_dir, mqtt_broker, tmp_path):
    sub = Subscriber(mqtt_broker.port, ["test/#"]).start()
    cfg = write_config(tmp_path / "c.yaml", mqtt_broker.port,
                       uplink={"username": "appliance", "password": "s3cret-pw"})
    app = Appliance(cfg, data_dir, log=tmp_path / "app.log")  # native rate: runs until stopped
    try:
        sub.wait_for(lambda: sub.events(), 60, "the first event")
        cmd = "test/dev1/cmd/"
        for topic, payload in [
            ("ping", '{"correlation_id": "p1"}'),
            ("ping", "this is {not json"),
            ("ping", "[1, 2, 3]"),
            ("ping", '{"correlation_id": {"nested": true}}'),
            ("reboot", '{"correlation_id": "u1"}'),
            ("resync", '{"correlation_id": "r1"}'),
            ("resync", '{"correlation_id": "r2", "since": "yesterday"}'),
            ("snapshot", '{"correlation_id": "s0", "camera": "nope"}'),
            ("snapshot", '{"correlation_id": "s1"}'),
            ("config/get", '{"correlation_id": 7}'),
            ("ping", ""),
        ]:
            if payload.startswith("{") and "nested" not in payload:  # the well-formed requests
                schema("mqtt-command").validate(json.loads(payload))
            sub.client.publish(cmd + topic, payload, qos=1)
        sub.wait_for(lambda: len(sub.on("/cmd/result")) >= 11, 20, "11 results")
        events_before = len(sub.events())
        sub.wait_for(lambda: len(sub.events()) > events_before, 30, "events after the bad commands")
        assert app.proc.poll() is None  # still running
    finally:
        rc = app.terminate()
    sub.close()
    assert rc == 0, app.text()[-3000:]

    results = [json.loads(m.payload) for m in sub.on("/cmd/result")]
    validator = schema("mqtt-command-result")
    for r in results:
        validator.validate(r)
    ok = {r["correlation_id"]: r for r in results if r["ok"]}
    errors = [r for r in results if not r["ok"]]
    assert set(ok) == {"p1", "s1", 7, None}  # None: the empty ping
    assert ok["p1"]["result"]["pong"] is True
    by_id = {r["correlation_id"]: r["error"] for r in errors}
    assert "unknown command 'reboot'" in by_id["u1"]
    assert "'since' is required" in by_id["r1"] and "yesterday" in by_id["r2"]
    assert "unknown camera 'nope'" in by_id["s0"]
    anonymous = [r["error"] for r in errors if r["correlation_id"] is None]
    assert any("not valid JSON" in e for e in anonymous)
    assert any("must be a JSON object" in e for e in anonymous)
    assert any("correlation_id must be" in e for e in anonymous)

    # snapshot: the latest annotated frame, as JPEG, on its own topic.
    jpeg = sub.exact("test/dev1/snapshot")[0].payload
    assert ok["s1"]["result"] == {"camera": "demo", "bytes": len(jpeg), "content_type": "image/jpeg"}
    assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (576, 768, 3)

    # config/get: the effective config, secrets masked.
    config = ok[7]["result"]["config"]
    assert config["uplink"]["password"] == "***" and config["uplink"]["username"] == "appliance"
    assert config["device"]["id"] == "dev1" and "s3cret-pw" not in sub.on("/cmd/result")[-1].payload.decode()
    assert all("s3cret-pw" not in m.payload.decode(errors="replace") for m in sub.messages)
    assert "command reboot: error: unknown command" in app.text()
    check_delivery(sub.events(), stored(data_dir))
