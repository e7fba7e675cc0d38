"""Commands and the uplink's config keys."""
from __future__ import annotations

import json

import pytest

from appliance import config
from appliance.config import mask_secrets
from appliance.errors import ApplianceError
from appliance.uplink.commands import Commands
from appliance.uplink.messages import Topics
from appliance.uplink.settings import PASSWORD_ENV, link_settings


def _commands(cfg=None, resynced=None, frames=None) -> Commands:
    cfg = cfg or config.from_dict({"cameras": [{"id": "gate", "source": "x.mp4"}]})
    frames = frames or {}
    return Commands(cfg, frames.get, lambda: sorted(frames),
                    lambda since: (resynced.append(since) if resynced is not None else None) or 3)


@pytest.mark.parametrize("name, payload, error", [
    ("ping", b"{oops", "request is not valid JSON"),
    ("ping", b"\xff\xfe", "request is not valid JSON"),
    ("ping", b"42", "request must be a JSON object, got int"),
    ("ping", b'{"correlation_id": [1]}', "correlation_id must be a string or an integer"),
    ("reboot", b"{}", "unknown command 'reboot'; known: ping, snapshot, config/get, resync"),
    ("", b"{}", "unknown command ''"),
    ("resync", b"{}", "resync: 'since' is required"),
    ("resync", b'{"since": true}', "resync: 'since' is required"),
    ("resync", b'{"since": "soon"}', "must be unix seconds or an ISO 8601 time, got 'soon'"),
    ("snapshot", b"{}", "snapshot: no camera has produced a frame yet"),
    ("snapshot", b'{"camera": 5}', "snapshot: 'camera' must be a string, got int"),
    ("ping", b"{" + b" " * 70_000 + b"}", "request is 70002 bytes; at most 65536"),
])
def test_bad_requests_get_an_error_and_nothing_else(name, payload, error):
    resynced: list = []
    reply = _commands(resynced=resynced).run(name, payload)
    assert not reply.ok and error in reply.error and reply.snapshot is None
    assert resynced == []


def test_correlation_id_comes_back():
    c = _commands()
    assert c.run("ping", b'{"correlation_id": "abc"}').correlation_id == "abc"
    assert c.run("ping", b'{"correlation_id": 12}').correlation_id == 12
    assert c.run("nope", b'{"correlation_id": "x"}').correlation_id == "x"  # errors too
    reply = c.run("ping", b"")
    assert reply.ok and reply.correlation_id is None and reply.result["pong"] is True


def test_resync_parses_since():
    resynced: list = []
    c = _commands(resynced=resynced)
    assert c.run("resync", b'{"since": 1700000000}').result == {"since": 1700000000.0, "requeued": 3}
    assert c.run("resync", b'{"since": "2023-11-14T22:13:20Z"}').ok
    assert resynced == [1700000000.0, 1700000000.0]


def test_snapshot_of_a_named_or_the_first_camera():
    cfg = config.from_dict({"cameras": [{"id": "a", "source": "x"}, {"id": "b", "source": "y"}]})
    c = _commands(cfg, frames={"a": b"jpeg-a", "b": b"jpeg-b"})
    assert c.run("snapshot", b"{}").snapshot == b"jpeg-a"
    reply = c.run("snapshot", b'{"camera": "b"}')
    assert reply.snapshot == b"jpeg-b" and reply.result == {"camera": "b", "bytes": 6, "content_type": "image/jpeg"}
    assert "unknown camera 'z'; cameras: a, b" in c.run("snapshot", b'{"camera": "z"}').error


def test_config_get_masks_secrets():
    cfg = config.from_dict({
        "cameras": [{"id": "gate", "source": "rtsp://admin:hunter2@10.0.0.5/stream1"}],
        "uplink": {"username": "dev", "password": "p4ss"}})
    text = json.dumps(_commands(cfg).run("config/get", b"{}").result)
    assert "hunter2" not in text and "p4ss" not in text
    got = json.loads(text)["config"]
    assert got["cameras"][0]["source"] == "rtsp://admin:***@10.0.0.5/stream1"
    assert got["uplink"]["password"] == "***" and got["uplink"]["username"] == "dev"
    assert mask_secrets({"password": ""}) == {"password": ""}  # unset stays visibly unset
    assert mask_secrets({"web": {"password_hash": "pbkdf2:abc"}}) == {"web": {"password_hash": "***"}}


def test_the_issue_config_keys(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("""
device: {id: gate-3}
uplink:
  enabled: true
  host: broker.example
  port: 8883
  topic_prefix: acme/site1
  username: gate-3
  password: pw
  tls: {ca_file: /etc/ca.pem, cert_file: /etc/c.pem, key_file: /etc/k.pem}
  batch_size: 20
  max_inflight: 5
  backlog: {max_rows: 5000, max_age_days: 7}
  bandwidth_bytes_per_s: 20000
""")
    u = config.load(p).uplink
    assert (u.enabled, u.host, u.port, u.topic_prefix, u.username, u.password.get_secret_value()) == \
        (True, "broker.example", 8883, "acme/site1", "gate-3", "pw")
    assert (u.tls.ca_file, u.tls.cert_file, u.tls.key_file) == ("/etc/ca.pem", "/etc/c.pem", "/etc/k.pem")
    assert (u.batch_size, u.max_inflight, u.backlog.max_rows, u.backlog.max_age_days,
            u.bandwidth_bytes_per_s) == (20, 5, 5000, 7.0, 20000)
    assert config.Config().uplink.enabled is False  # off unless configured


def test_password_comes_from_the_environment_unless_in_the_file(monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, "from-env")
    topics = Topics("p", "d")
    cfg = config.from_dict({"uplink": {"username": "u"}})
    assert link_settings(cfg, topics).password == "from-env"
    cfg = config.from_dict({"uplink": {"username": "u", "password": "from-file"}})
    assert link_settings(cfg, topics).password == "from-file"


@pytest.mark.parametrize("data, error", [
    ({"uplink": {"password": "x"}}, "uplink.password: set uplink.username too"),
    ({"uplink": {"topic_prefix": "a/+/b"}}, "uplink.topic_prefix: 'a/+/b' cannot be used in an MQTT topic"),
    ({"uplink": {"topic_prefix": "/a"}}, "uplink.topic_prefix"),
    ({"device": {"id": "a/b"}}, "device.id"),
    ({"uplink": {"tls": {"key_file": "k.pem"}}}, "uplink.tls"),
    ({"uplink": {"reconnect_min_s": 10, "reconnect_max_s": 1}}, "uplink.reconnect_max_s"),
    ({"uplink": {"tls": {"ca_file": "/nonexistent/ca.pem"}}},
     "uplink.tls.ca_file: cannot read /nonexistent/ca.pem: No such file or directory"),
])
def test_bad_uplink_config_names_the_key(data, error):
    with pytest.raises(ApplianceError, match=None) as e:
        link_settings(config.from_dict(data), Topics("p", "d"))
    assert error in str(e.value)


def test_range_errors_come_from_the_loader():
    with pytest.raises(ApplianceError, match=r"uplink.max_inflight: must be between 1 and 1000, got 0"):
        config.from_dict({"uplink": {"max_inflight": 0}})
    with pytest.raises(ApplianceError, match=r"uplink.backlog.max_rows: expected an integer"):
        config.from_dict({"uplink": {"backlog": {"max_rows": "many"}}})
