"""Model versions on the real pipeline (real model, vtest.avi, SQLite) and through the
real `appliance run` with its uplink on a real mosquitto: activation between frames with
no frame lost, rollback, refusals, and the model named in every event."""
from __future__ import annotations

import json
import sqlite3
import threading
import time

from appliance import config, paths
from appliance.modelstore import ModelRef, ModelStore
from appliance.pipeline import Pipeline
from tests.mqtt_broker import Subscriber
from tests.uplink_util import Appliance, cli, schema, write_config

NAME = "ssd-mobilenet-v2-coco"
SHIPPED = "coco-quant-postprocess-7046f31a"


def _events(data_dir) -> list[dict]:
    conn = sqlite3.connect(paths.db_path(data_dir))
    try:
        return [json.loads(p) for (p,) in conn.execute("SELECT payload FROM events ORDER BY seq")]
    finally:
        conn.close()


def test_activation_on_the_running_pipeline_loses_no_frame(data_dir, assets_dir):
    ModelStore(data_dir).install("ssd-mobilenet-v2", assets_dir, version="2")
    cfg = config.from_dict({"cameras": [{"id": "demo", "source": "asset:vtest.avi"}],
                            "adaptive": {"enabled": False},  # no frame skipped on purpose either
                            "detect": {"threads": 1}})
    p = Pipeline(cfg, data_dir, fast=True, max_frames=240)
    runner = threading.Thread(target=p.run, kwargs={"stats_interval_s": 60})
    runner.start()
    det = p.detect.cameras["demo"]
    while det.detected < 60 and runner.is_alive():
        time.sleep(0.05)
    out = p.models.activate(f"{NAME}@2")  # as the uplink thread does it
    switched_at = det.detected
    runner.join(300)
    assert not runner.is_alive()

    cap = p.captures["demo"]
    lost = cap.frames - (det.detected + det.skipped + det.failed)
    print(f"\nswitch after {switched_at} frames; {cap.frames} read, {det.detected} detected, lost {lost}, "
          f"dropped {cap.dropped}; load+check {out['load_and_check_s']} s, "
          f"first frame {p.models.last['first_frame_s']} s after the command")
    assert cap.frames == 240 and lost == 0 and cap.dropped == 0 and det.failed == 0 and det.skipped == 0
    assert out["active"] == f"{NAME}@2" and out["check"]["ok"] and out["previous"] == "detect.model"
    assert p.status()["model"]["version"] == "2" and ModelStore(data_dir).active() == ModelRef(NAME, "2")

    events = _events(data_dir)
    (switch,) = [e for e in events if e["type"] == "model"]
    assert switch["state"] == f"{NAME}@2" and switch["previous"] == "detect.model"
    track = [e for e in events if e["type"] in ("new", "update", "end")]
    assert all(e["model"]["name"] == NAME for e in track)
    before = {e["model"]["version"] for e in track if e["seq"] < switch["seq"]}
    after = {e["model"]["version"] for e in track if e["seq"] > switch["seq"] and e["type"] == "new"}
    assert before == {SHIPPED} and after == {"2"}
    validator = schema("mqtt-events")
    validator.validate({"schema": 1, "device": events[0]["device"], "events": events})

    # A restart starts with the active version, not detect.model.
    again = Pipeline(cfg, data_dir, fast=True, max_frames=5)
    assert (again.detector.version, again.models.running) == ("2", ModelRef(NAME, "2"))
    again.run(stats_interval_s=60)


def test_model_commands_over_mqtt(data_dir, mqtt_broker, tmp_path, assets_dir):
    for args in (("ssd-mobilenet-v2", "--version", "2"), ("ssd-mobilenet-v2", "--version", "3")):
        r = cli("model", "install", *args, data_dir=data_dir)
        assert r.returncode == 0, r.stderr
    # Version 3's weights are damaged after install: its activation must be refused.
    weights = ModelStore(data_dir).path(ModelRef(NAME, "3")) / "mobilenet_ssd_v2_coco_quant_postprocess.tflite"
    data = bytearray(weights.read_bytes())
    data[5000] ^= 1
    weights.write_bytes(bytes(data))

    sub = Subscriber(mqtt_broker.port, ["test/#"]).start()
    cfg = write_config(tmp_path / "c.yaml", mqtt_broker.port, detect={"threads": 1})
    app = Appliance(cfg, data_dir, "--loop", log=tmp_path / "app.log")
    cmd = "test/dev1/cmd/"

    def ask(topic: str, payload: dict, n: int) -> dict:
        schema("mqtt-command").validate(payload)
        sub.client.publish(cmd + topic, json.dumps(payload), qos=1)
        sub.wait_for(lambda: len(sub.on("/cmd/result")) >= n, 60, f"result {n}")
        result = json.loads(sub.on("/cmd/result")[n - 1].payload)
        schema("mqtt-command-result").validate(result)
        assert result["correlation_id"] == payload["correlation_id"]
        return result

    try:
        sub.wait_for(lambda: sub.events(), 60, "the first event")
        listed = ask("model/list", {"correlation_id": "l1"}, 1)
        assert listed["ok"] and listed["result"]["running"] == "detect.model"
        assert [v["version"] for v in listed["result"]["versions"]] == ["2", "3"]
        unknown = ask("model/activate", {"correlation_id": "a0", "model": f"{NAME}@9"}, 2)
        assert not unknown["ok"] and f"model {NAME}@9 is not installed" in unknown["error"]
        damaged = ask("model/activate", {"correlation_id": "a1", "model": NAME, "version": "3"}, 3)
        assert not damaged["ok"] and "has sha256" in damaged["error"] and "recorded at install" in damaged["error"]
        nothing = ask("model/rollback", {"correlation_id": "r0"}, 4)
        assert not nothing["ok"] and "no previous model version" in nothing["error"]
        bad = ask("model/activate", {"correlation_id": "a2"}, 5)
        assert not bad["ok"] and "'model' is required" in bad["error"]
        good = ask("model/activate", {"correlation_id": "a3", "model": f"{NAME}@2"}, 6)
        assert good["ok"] and good["result"]["active"] == f"{NAME}@2", good
        n_events = len(sub.events())
        sub.wait_for(lambda: any(e.get("model", {}).get("version") == "2" for e in sub.events()[n_events:]),
                     60, "an event from version 2")
        back = ask("model/rollback", {"correlation_id": "r1"}, 7)
        assert back["ok"] and back["result"]["active"] == "detect.model"
        sub.wait_for(lambda: sum(e["type"] == "model" for e in sub.events()) >= 3, 30, "the model events")
        assert app.proc.poll() is None  # never stopped
    finally:
        rc = app.terminate()
    sub.close()
    assert rc == 0, app.text()[-3000:]
    model_events = [(e["state"], e["previous"]) for e in sub.events() if e["type"] == "model"]
    assert model_events == [("rejected", "detect.model"), (f"{NAME}@2", "detect.model"),
                            ("detect.model", f"{NAME}@2")]
    assert ModelStore(data_dir).active() is None


def test_model_cli(data_dir, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("detect: {threads: 1}\n")
    assert cli("model", "install", "ssd-mobilenet-v2", "--version", "2", data_dir=data_dir).returncode == 0
    r = cli("model", "install", "ssd-mobilenet-v2", "--version", "2", data_dir=data_dir)
    assert r.returncode == 1 and f"model {NAME}@2 is already installed" in r.stderr
    r = cli("model", "activate", f"{NAME}@7", "--config", str(cfg), data_dir=data_dir)
    assert r.returncode == 1 and f"appliance: error: model {NAME}@7 is not installed (installed: {NAME}@2)" in r.stderr
    r = cli("model", "rollback", data_dir=data_dir)
    assert r.returncode == 1 and "rollback: no previous model version to roll back to" in r.stderr
    r = cli("model", "activate", f"{NAME}@2", "--config", str(cfg), data_dir=data_dir)
    assert r.returncode == 0, r.stderr
    assert f"activated {NAME}@2 (was detect.model (from the config))" in r.stderr
    listed = json.loads(cli("model", "list", "--json", data_dir=data_dir).stdout)
    assert listed["active"] == f"{NAME}@2" and listed["history"] == [None]
    assert [(v["version"], v["active"]) for v in listed["versions"]] == [("2", True)]
    text = cli("model", "list", data_dir=data_dir).stdout
    assert f"* {NAME}@2  tflite" in text and "rollback goes to: detect.model" in text
    r = cli("model", "rollback", data_dir=data_dir)
    assert r.returncode == 0 and f"rolled back from {NAME}@2 to detect.model" in r.stderr
    assert ModelStore(data_dir).active() is None
