"""The answers model of `appliance provision`: every problem at once, unknown keys named
with the valid ones, secrets never echoed."""
from __future__ import annotations

import pytest

from appliance.errors import ApplianceError
from appliance.provision import answers

GOOD = {"device_id": "gate-3", "cameras": [{"id": "north", "source": "rtsp://cam/1"}]}


def _errors(data, origin="a.yaml") -> list[str]:
    with pytest.raises(ApplianceError) as e:
        answers.from_data(data, origin)
    return str(e.value).splitlines()


def test_a_minimal_answer_takes_the_defaults():
    a = answers.from_data(GOOD)
    assert a.detector == "auto" and a.mqtt is None and a.power.policy == "monitor"
    assert a.cameras[0].test is True


def test_unknown_keys_at_every_level_are_named_with_the_valid_ones():
    data = {**GOOD, "colour": 1, "cameras": [{"id": "a", "source": "b", "sorce": "c"}],
            "mqtt": {"host": "h", "hots": "x"}, "power": {"policy": "monitor", "mdoe": "x"}}
    assert _errors(data) == [
        "a.yaml: cameras[0].sorce: unknown key (valid keys: id, source, test)",
        "a.yaml: mqtt.hots: unknown key (valid keys: host, port, topic_prefix, username, password, ca_file, "
        "cert_file, key_file, generate_key, test)",
        "a.yaml: power.mdoe: unknown key (valid keys: policy, mode)",
        "a.yaml: colour: unknown key (valid keys: device_id, cameras, detector, mqtt, dashboard_password, "
        "dashboard_password_hash, power)",
    ]


def test_wrong_values_say_what_is_wanted():
    data = {"cameras": [], "detector": "gpu", "dashboard_password": "short-1", "mqtt": {"host": "h", "port": 0}}
    lines = _errors(data)
    assert "a.yaml: device_id: required key is missing" in lines
    assert "a.yaml: cameras: at least one is needed" in lines
    assert "a.yaml: detector: must be one of auto, litert, edgetpu or tensorrt, got 'gpu'" in lines
    assert "a.yaml: dashboard_password: needs at least 8 characters" in lines
    assert any(line.startswith("a.yaml: mqtt.port: ") for line in lines)
    assert not any("short-1" in line for line in lines)  # a secret is never echoed


def test_rules_between_keys():
    twice = {**GOOD, "cameras": [{"id": "a", "source": "x"}, {"id": "a", "source": "y"}]}
    assert _errors(twice) == ["a.yaml: camera ids must be unique: a given twice"]
    both = {**GOOD, "dashboard_password": "long enough", "dashboard_password_hash": "scrypt:x$y$z"}
    assert _errors(both) == ["a.yaml: give dashboard_password or dashboard_password_hash, not both"]


def test_files_yaml_json_and_broken(tmp_path):
    j = tmp_path / "a.json"
    j.write_text('{"device_id": "gate-3", "cameras": [{"id": "n", "source": "/dev/video0"}]}')
    assert answers.load(j).cameras[0].source == "/dev/video0"
    bad = tmp_path / "bad.yaml"
    bad.write_text("device_id: a\ndevice_id: b\n")
    with pytest.raises(ApplianceError, match=r"bad.yaml: device_id: duplicate key \(line 1 and again line 2\)"):
        answers.load(bad)
    top = tmp_path / "list.yaml"
    top.write_text("- a\n")
    with pytest.raises(ApplianceError, match="expected a mapping at the top, got list"):
        answers.load(top)
    with pytest.raises(ApplianceError, match="cannot read: No such file or directory"):
        answers.load(tmp_path / "missing.yaml")
