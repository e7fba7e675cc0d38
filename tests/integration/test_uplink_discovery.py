"""Home Assistant MQTT discovery against a real mosquitto: retained configs with the keys
Home Assistant reads, state topics that carry values (the value templates are rendered with
Jinja2 against the state received, as Home Assistant does), entities added and removed as
lines change, everything cleared when turned off, nothing published when never turned on.

The in-process tests read a stand-in for the two read-only things the uplink takes from
the pipeline (status() and analytics[camera].counts()), so values can be changed at will;
the last test runs the real appliance on vtest.avi."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import jinja2
import pytest

from appliance.config import from_dict
from appliance.uplink.service import Uplink
from tests.mqtt_broker import Subscriber
from tests.uplink_util import Appliance, schema, write_config

REQUIRED = {"name", "unique_id", "object_id", "default_entity_id", "state_topic", "value_template", "device",
            "availability_topic", "availability_template", "payload_available", "payload_not_available"}


class Analytics:
    """counts() as the contract has it, settable by the test."""

    def __init__(self, lines: dict, zones: dict):
        self.lock = threading.Lock()
        self.lines, self.zones = lines, zones

    def counts(self) -> dict:
        with self.lock:
            return json.loads(json.dumps({"lines": self.lines, "zones": self.zones}))


class PipelineReadings:
    def __init__(self, states: dict[str, str], analytics: dict[str, Analytics] | None):
        self.states = states
        if analytics is not None:
            self.analytics = analytics

    def status(self) -> dict:
        return {"cameras": {cam: {"state": s} for cam, s in self.states.items()}}


def line_counts(i: int, o: int) -> dict:
    return {"in": i, "out": o, "by_label": {"person": {"in": i, "out": o}}}


def zone_counts(k: int) -> dict:
    return {"occupancy": k, "entered": k, "exited": 0, "loiter": 0, "mean_dwell_s": None, "by_label": {}}


def uplink(data_dir: Path, port: int, pipeline, ha: dict | None, cameras=("north", "south")) -> Uplink:
    cfg = from_dict({"device": {"id": "dev 1"}, "cameras": [{"id": c, "source": "x.mp4"} for c in cameras],
                     "uplink": {"enabled": True, "host": "127.0.0.1", "port": port, "topic_prefix": "t",
                                "reconnect_min_s": 0.1, "reconnect_max_s": 0.5, "drain_timeout_s": 1.0,
                                **({"homeassistant": ha} if ha is not None else {})}})
    up = Uplink(cfg, data_dir, pipeline)
    up.start()
    return up


def latest(sub: Subscriber, prefix: str) -> dict[str, bytes]:
    """The last payload per topic under a prefix (what the broker retains)."""
    out: dict[str, bytes] = {}
    for m in list(sub.messages):
        if m.topic.startswith(prefix):
            out[m.topic] = m.payload
    return {t: p for t, p in out.items()}


def render(template: str, state: bytes) -> str:
    return jinja2.Environment().from_string(template).render(value_json=json.loads(state))


@pytest.fixture
def ha_sub(mqtt_broker):
    s = Subscriber(mqtt_broker.port, ["homeassistant/#", "t/#"]).start()
    yield s
    s.close()


def configs(sub: Subscriber) -> dict[str, dict]:
    return {t: json.loads(p) for t, p in latest(sub, "homeassistant/").items() if p}


def test_discovery_configs_and_state_carry_the_live_values(data_dir, mqtt_broker, ha_sub):
    north = Analytics({"walkway": line_counts(3, 1), "gate \"B\"": line_counts(0, 0)},
                      {"crossing": zone_counts(2)})
    readings = PipelineReadings({"north": "streaming", "south": "stalled"}, {"north": north})
    up = uplink(data_dir, mqtt_broker.port, readings, {"enabled": True, "interval_s": 0.5})
    try:
        ha_sub.wait_for(lambda: len(configs(ha_sub)) == 7 and latest(ha_sub, "t/dev 1/analytics"), 20,
                        "7 configs and the state")
        # Retained: a subscriber that comes later gets them all from the broker.
        late = Subscriber(mqtt_broker.port, ["homeassistant/#", "t/dev 1/analytics"]).start()
        late.wait_for(lambda: len(configs(late)) == 7 and late.exact("t/dev 1/analytics"), 10, "retained")
        assert all(m.retain for m in late.messages)
        late.close()

        found = configs(ha_sub)
        state = latest(ha_sub, "t/dev 1/analytics")["t/dev 1/analytics"]
        schema("mqtt-analytics").validate(json.loads(state))
        by_name = {}
        for topic, c in found.items():
            component, node, uid, leaf = topic.split("/")[1:]
            assert component in ("sensor", "binary_sensor") and node == "dev_1" and leaf == "config"
            assert REQUIRED <= set(c) and uid == c["unique_id"]
            assert c["state_topic"] == "t/dev 1/analytics" and c["availability_topic"] == "t/dev 1/status"
            assert c["default_entity_id"] == f"{component}.{c['object_id']}"
            assert set(c["object_id"]) <= set("abcdefghijklmnopqrstuvwxyz0123456789_-")
            assert c["device"] == {"identifiers": ["appliance_dev_1"], "name": "dev 1", "model": c["device"]["model"],
                                   "manufacturer": "appliance", "sw_version": c["device"]["sw_version"]}
            by_name[c["name"]] = (component, c, render(c["value_template"], state))
        assert len({c["unique_id"] for _, c, _ in by_name.values()}) == 7
        assert {n: (comp, v) for n, (comp, _, v) in by_name.items()} == {
            "north camera": ("binary_sensor", "ON"), "south camera": ("binary_sensor", "OFF"),
            "north walkway in": ("sensor", "3"), "north walkway out": ("sensor", "1"),
            'north gate "B" in': ("sensor", "0"), 'north gate "B" out': ("sensor", "0"),
            "north crossing occupancy": ("sensor", "2")}
        walk = by_name["north walkway in"][1]
        assert (walk["state_class"], walk["unit_of_measurement"]) == ("total_increasing", "crossings")
        occ = by_name["north crossing occupancy"][1]
        assert (occ["state_class"], occ["unit_of_measurement"]) == ("measurement", "objects")
        cam = by_name["north camera"][1]
        assert (cam["device_class"], cam["payload_on"], cam["payload_off"]) == ("connectivity", "ON", "OFF")
        # Availability: the retained status says online; the template reads it.
        status = latest(ha_sub, "t/dev 1/status")["t/dev 1/status"]
        assert render(walk["availability_template"], status) == walk["payload_available"] == "online"

        # A change is published; nothing is published while nothing changes.
        n_state = len(ha_sub.exact("t/dev 1/analytics"))
        time.sleep(1.5)
        assert len(ha_sub.exact("t/dev 1/analytics")) == n_state
        with north.lock:
            north.lines["walkway"] = line_counts(4, 1)
        readings.states["south"] = "streaming"
        ha_sub.wait_for(lambda: len(ha_sub.exact("t/dev 1/analytics")) > n_state, 10, "the new state")
        state = ha_sub.exact("t/dev 1/analytics")[-1].payload
        assert render(walk["value_template"], state) == "4"
        assert render(by_name["south camera"][1]["value_template"], state) == "ON"

        # A line removed (the editor) loses its entities: empty retained configs.
        with north.lock:
            del north.lines['gate "B"']
        ha_sub.wait_for(lambda: len(configs(ha_sub)) == 5, 10, "2 configs cleared")
    finally:
        up.stop()
    offline = json.loads(latest(ha_sub, "t/dev 1/status")["t/dev 1/status"])
    assert render(walk["availability_template"], json.dumps(offline).encode()) == "offline"

    # Turned off: the next start clears every retained topic it had published.
    up = uplink(data_dir, mqtt_broker.port, readings, {"enabled": False})
    try:
        ha_sub.wait_for(lambda: not configs(ha_sub) and not latest(ha_sub, "t/dev 1/analytics")["t/dev 1/analytics"],
                        10, "everything cleared")
    finally:
        up.stop()
    check = Subscriber(mqtt_broker.port, ["homeassistant/#", "t/dev 1/analytics"]).start()
    time.sleep(0.5)
    assert check.messages == []  # the broker retains nothing of it any more
    check.close()


def test_without_analytics_the_configured_lines_show_unknown(data_dir, mqtt_broker, ha_sub):
    """A pipeline without the `analytics` attribute (or no pipeline): camera sensors from the
    status, line sensors of the config with null values (Home Assistant: unknown)."""
    cfg_cams = [{"id": "north", "source": "x.mp4",
                 "lines": [{"name": "walkway", "points": [[0.1, 0.6], [0.9, 0.6]]}],
                 "zones": [{"name": "crossing", "points": [[0.1, 0.1], [0.5, 0.1], [0.3, 0.5]]}]}]
    try:
        cfg = from_dict({"device": {"id": "dev1"}, "cameras": cfg_cams, "uplink": {
            "enabled": True, "host": "127.0.0.1", "port": mqtt_broker.port, "topic_prefix": "t",
            "homeassistant": {"enabled": True, "discovery_prefix": "homeassistant", "interval_s": 0.5}}})
    except Exception as e:  # lines/zones not in the camera config yet (the analytics config)
        pytest.skip(f"camera lines/zones not configurable here: {e}")
    up = Uplink(cfg, data_dir, PipelineReadings({"north": "connecting"}, None))
    up.start()
    try:
        ha_sub.wait_for(lambda: len(configs(ha_sub)) == 4 and latest(ha_sub, "t/dev1/analytics"), 20, "configs")
    finally:
        up.stop()
    state = latest(ha_sub, "t/dev1/analytics")["t/dev1/analytics"]
    schema("mqtt-analytics").validate(json.loads(state))
    values = {c["name"]: render(c["value_template"], state) for c in configs(ha_sub).values()}
    assert values == {"north camera": "OFF", "north walkway in": "None", "north walkway out": "None",
                      "north crossing occupancy": "None"}


def test_nothing_is_published_for_home_assistant_unless_enabled(data_dir, mqtt_broker, ha_sub):
    readings = PipelineReadings({"north": "streaming"}, {"north": Analytics({"walkway": line_counts(1, 0)}, {})})
    up = uplink(data_dir, mqtt_broker.port, readings, None, cameras=("north",))
    try:
        ha_sub.wait_for(lambda: ha_sub.exact("t/dev 1/status"), 20, "online")
        time.sleep(1.5)
    finally:
        up.stop()
    topics = {m.topic for m in ha_sub.messages}
    assert topics <= {"t/dev 1/status", "t/dev 1/stats"}, topics  # no discovery, no analytics state


@pytest.mark.parametrize("ha, message", [
    ({"discovery_prefix": "home/#"}, "uplink.homeassistant.discovery_prefix: 'home/#' cannot be used in an MQTT topic"),
    ({"interval_s": 0}, "uplink.homeassistant.interval_s: must be between 0.5 and 3600.0, got 0"),
    ({"enable": True}, "uplink.homeassistant.enable: unknown key"),
])
def test_bad_home_assistant_settings_are_config_errors_naming_the_key(tmp_path, ha, message):
    from appliance import config
    from appliance.errors import ApplianceError

    p = tmp_path / "c.yaml"
    p.write_text(json.dumps({"uplink": {"homeassistant": ha, "counts_interval_s": 0.5, "counts_delay_s": -1},
                             "store": {"counts_retention_days": 0}}))
    with pytest.raises(ApplianceError) as e:
        config.load(p)
    lines = str(e.value).splitlines()  # all at once, one line each
    assert lines[:3] == [f"{p}: store.counts_retention_days: must be between 0.01 and 3650.0, got 0",
                         f"{p}: uplink.counts_interval_s: must be between 1.0 and 86400.0, got 0.5",
                         f"{p}: uplink.counts_delay_s: must be between 0.0 and 3600.0, got -1"]
    assert len(lines) == 4 and lines[3].startswith(f"{p}: {message}")


def test_the_real_appliance_publishes_discovery_and_live_state(data_dir, tmp_path, mqtt_broker):
    camera = {"id": "demo", "source": "asset:vtest.avi", "loop": True,
              "lines": [{"name": "walkway", "points": [[0.05, 0.55], [0.95, 0.55]]}]}
    cfg = write_config(tmp_path / "c.yaml", mqtt_broker.port, camera=camera,
                       uplink={"homeassistant": {"enabled": True, "interval_s": 0.5}})
    sub = Subscriber(mqtt_broker.port, ["homeassistant/#", "test/#"]).start()
    app = Appliance(cfg, data_dir, log=tmp_path / "app.log")
    try:
        sub.wait_for(lambda: len(configs(sub)) == 3 and sub.exact("test/dev1/analytics"), 120,
                     "discovery configs and state")
        sub.wait_for(lambda: json.loads(sub.exact("test/dev1/analytics")[-1].payload)["cameras"]["demo"]["state"]
                     == "streaming", 60, "the camera streaming")

        def crossed() -> bool:
            line = json.loads(sub.exact("test/dev1/analytics")[-1].payload)["cameras"]["demo"]["lines"]["walkway"]
            return line["in"] + line["out"] > 0

        sub.wait_for(crossed, 120, "people counted on the walkway")
        state = sub.exact("test/dev1/analytics")[-1].payload
    finally:
        rc = app.terminate()
        sub.close()
    assert rc == 0, app.text()[-3000:]
    schema("mqtt-analytics").validate(json.loads(state))
    values = {c["name"]: render(c["value_template"], state) for c in configs(sub).values()}
    assert values["demo camera"] == "ON"
    # The sensors read the real analytics' totals.
    assert int(values["demo walkway in"]) + int(values["demo walkway out"]) > 0, values
