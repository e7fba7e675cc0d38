"""TLS and passwords against a real mosquitto: a CA, a server and a client certificate
made at test time (openssl), a password file made by mosquitto_passwd. The broker
requires client certificates, so every connection here presents one."""
from __future__ import annotations

import json
import re
import time

import pytest

from tests.mqtt_broker import Mosquitto, Subscriber, make_tls
from tests.uplink_util import Appliance, check_delivery, cli, stored, write_config


@pytest.fixture
def tls_broker(tmp_path):
    tls = make_tls(tmp_path / "tls")
    b = Mosquitto(tmp_path / "broker", tls=tls, users={"dev1": "right-password", "reader": "reader-pw"},
                  require_certificate=True).start()
    yield b, tls
    b.close()


def _tls_config(path, port, tls, **uplink):
    return write_config(path, port, uplink={
        "username": "dev1", **uplink,
        "tls": {"ca_file": str(tls.ca), "cert_file": str(tls.client_cert), "key_file": str(tls.client_key)}})


def test_wrong_password_is_rejected_and_reported(data_dir, tls_broker, tmp_path, monkeypatch):
    broker, tls = tls_broker
    monkeypatch.setenv("APPLIANCE_MQTT_PASSWORD", "wrong-password")  # config has no password
    app = Appliance(_tls_config(tmp_path / "c.yaml", broker.port, tls), data_dir, log=tmp_path / "app.log")
    try:
        deadline = time.monotonic() + 60
        out = ""
        while "last error: broker refused the connection" not in out:
            assert time.monotonic() < deadline and app.proc.poll() is None, out + app.text()[-3000:]
            time.sleep(0.5)
            out = cli("uplink", "status", data_dir=data_dir).stdout if (data_dir / "status.json").exists() else ""
        assert "Not authorized" in out and "link: " in out and "not running" not in out, out
        assert "events unsent" in out
        status = json.loads(cli("status", "--json", data_dir=data_dir).stdout)["services"]["uplink"]
        assert status["state"] in ("waiting", "connecting") and "Not authorized" in status["last_error"]
    finally:
        assert app.terminate() == 0
    log = app.text()
    assert "uplink: 127.0.0.1:%d: broker refused the connection: Not authorized" % broker.port in log
    assert log.count("broker refused the connection") == 1  # the same error is not logged on every retry
    assert "wrong-password" not in log


def test_tls_with_the_right_password_delivers(data_dir, tls_broker, tmp_path, monkeypatch):
    broker, tls = tls_broker
    monkeypatch.setenv("APPLIANCE_MQTT_PASSWORD", "not this one: the file's password wins")
    sub = Subscriber(broker.port, ["test/#"], tls=tls, username="reader", password="reader-pw").start()
    cfg = _tls_config(tmp_path / "c.yaml", broker.port, tls, password="right-password")
    app = Appliance(cfg, data_dir, "--fast", "--max-frames", "120", log=tmp_path / "app.log")
    assert app.wait(120) == 0, app.text()[-3000:]
    rows = stored(data_dir)
    sub.wait_for(lambda: {e["id"] for e in sub.events()} >= {r["id"] for r in rows}, 10, "every event")
    sub.close()
    check_delivery(sub.events(), rows)
    assert json.loads(sub.on("/status")[0].payload)["state"] == "online"


def test_unknown_ca_is_a_tls_error(data_dir, tls_broker, tmp_path):
    broker, _ = tls_broker
    other = make_tls(tmp_path / "other")  # a CA that did not sign the broker's certificate
    cfg = _tls_config(tmp_path / "c.yaml", broker.port, other, password="right-password")
    app = Appliance(cfg, data_dir, log=tmp_path / "app.log")
    try:
        deadline = time.monotonic() + 60
        while "cannot connect: TLS:" not in app.text():
            assert time.monotonic() < deadline and app.proc.poll() is None, app.text()[-3000:]
            time.sleep(0.2)
    finally:
        assert app.terminate() == 0
    # OpenSSL's words for it (they vary a little between versions).
    assert re.search(r"cannot connect: TLS: (self.signed certificate|unable to get local issuer|"
                     r"certificate verify failed)", app.text()), app.text()[-2000:]


def test_unreadable_ca_file_is_a_one_line_config_error(data_dir, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", 1883, uplink={"tls": {"ca_file": str(tmp_path / "nope.pem")}})
    r = cli("run", "--config", str(cfg), data_dir=data_dir)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        f"appliance: error: {cfg}: uplink.tls.ca_file: cannot read {tmp_path / 'nope.pem'}: No such file or directory")
