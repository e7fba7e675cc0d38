"""`appliance passwd` and the web service's binding rules, start and stop."""
from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from werkzeug.security import check_password_hash

from appliance import config
from appliance.config import Config
from appliance.errors import ApplianceError
from web.auth import FailedLogins, hash_password
from web.passwd import read_password, write_password_hash
from web.service import WebService

SITE_CONFIG = """\
# Gate 3, installed 2026-05-01
device: {id: gate-3}   # printed on the box
cameras:
  - {id: north, source: "rtsp://10.0.0.5/stream1"}
  - id: south      # the yard
    source: '/videos/a.mp4'
web:
  port: 8081  # the customer's firewall allows this one
"""


def _passwd(cfg: Path, password: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appliance", "passwd", "--config", str(cfg),
                           "--password-stdin"], input=password + "\n", capture_output=True, text=True)


def test_passwd_stores_only_a_salted_hash_and_keeps_the_rest_of_the_file(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(SITE_CONFIG)
    r = _passwd(cfg, "correct horse")
    assert r.returncode == 0, r.stderr
    text = cfg.read_text()
    assert "correct horse" not in text
    # Every original line is still there, comments included, and one line was added.
    assert text.splitlines()[:len(SITE_CONFIG.splitlines())] == SITE_CONFIG.splitlines()
    stored = config.load(cfg).web.password_hash.get_secret_value()
    assert check_password_hash(stored, "correct horse") and not check_password_hash(stored, "wrong")
    assert config.load(cfg).web.port == 8081 and config.load(cfg).cameras[1].id == "south"
    # Again: the hash is replaced, with a new salt.
    assert _passwd(cfg, "correct horse").returncode == 0
    again = config.load(cfg).web.password_hash.get_secret_value()
    assert again != stored and check_password_hash(again, "correct horse")
    assert len(cfg.read_text().splitlines()) == len(SITE_CONFIG.splitlines()) + 1


def test_passwd_creates_a_missing_file(tmp_path):
    cfg = tmp_path / "etc" / "config.yaml"
    write_password_hash(cfg, hash_password("correct horse"))
    assert check_password_hash(config.load(cfg).web.password_hash.get_secret_value(), "correct horse")
    assert cfg.stat().st_mode & 0o007 == 0  # not readable by every local user


@pytest.mark.parametrize("content, message", [
    ("track: {min_hits: soon}\n", "track.min_hits: expected an integer"),
    ("web: 8080\n", "web: expected a mapping"),
    ("- a list\n", "expected a mapping at the top"),
])
def test_passwd_refuses_a_bad_file_and_leaves_it_alone(tmp_path, content, message):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(content)
    with pytest.raises(ApplianceError, match=message):
        write_password_hash(cfg, hash_password("correct horse"))
    assert cfg.read_text() == content


def test_passwd_needs_8_characters_and_a_terminal_or_stdin():
    with pytest.raises(ApplianceError, match="at least 8 characters"):
        read_password(True, io.StringIO("short\n"))
    assert read_password(True, io.StringIO("long enough\n")) == "long enough"
    with pytest.raises(ApplianceError, match="not a terminal; use --password-stdin"):
        read_password(False, io.StringIO(""))


def test_malformed_hash_is_refused_at_start(tmp_path):
    # Checked by the config when it loads (appliance/config/web.py), so at start too.
    with pytest.raises(ApplianceError, match="web.password_hash: not a hash") as e:
        config.from_dict({"web": {"password_hash": "hunter2"}})
    assert "hunter2" not in str(e.value)  # the message does not repeat what may be a password


class _Status:
    def status(self):
        return {"running": True, "heartbeat_age_s": 0.1}


def _get(url: str) -> tuple[int, dict]:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status, json.loads(r.read())


def test_serves_on_a_free_port_and_stops(tmp_path):
    svc = WebService(Config(), _Status(), tmp_path, port=0)
    svc.start()
    try:
        assert svc.status()["state"] == "serving"
        # Every server thread yields to the pipeline's threads (nice +10), this one does not.
        base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        web_threads = [t for t in threading.enumerate() if t.name == "web" or t.name.startswith("waitress-")]
        assert len(web_threads) == 1 + 6
        assert {os.getpriority(os.PRIO_PROCESS, t.native_id) for t in web_threads} == {min(19, base + 10)}
        host, port = svc.status()["listen"].rsplit(":", 1)
        assert host == "127.0.0.1"  # no password: local only, whatever web.host says
        assert _get(f"http://127.0.0.1:{port}/healthz") == (200, {"status": "ok", "reason": "ok"})
    finally:
        svc.stop()
    assert svc.status()["state"] == "stopped"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(port)), timeout=1).close()


def test_it_binds_web_host_only_once_a_password_is_set(tmp_path):
    cfg = Config()
    assert cfg.web.host == "0.0.0.0"
    assert WebService(cfg, _Status(), tmp_path).host == "127.0.0.1"
    cfg.web.password_hash = hash_password("correct horse")
    svc = WebService(cfg, _Status(), tmp_path)
    assert (svc.host, svc.port) == ("0.0.0.0", 8080)  # not started: tests bind loopback only
    assert WebService(cfg, _Status(), tmp_path, port=0).port == 0  # --web-port wins


def test_failed_logins_are_forgotten_after_the_window():
    limiter = FailedLogins(limit=2, window_s=0.3)
    limiter.failed("10.0.0.9")
    assert limiter.retry_after("10.0.0.9") == 0
    limiter.failed("10.0.0.9")
    assert 0 < limiter.retry_after("10.0.0.9") <= 0.3
    assert limiter.retry_after("10.0.0.8") == 0  # per client address
    time.sleep(0.35)
    assert limiter.retry_after("10.0.0.9") == 0


def test_a_taken_port_is_logged_and_the_appliance_goes_on(tmp_path, caplog):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        svc = WebService(Config(), _Status(), tmp_path, port=taken.getsockname()[1])
        svc.start()  # does not raise: the pipeline matters more than its dashboard
        assert svc.status()["state"] == "error" and "cannot listen" in svc.status()["error"]
        assert any("running without the dashboard" in r.getMessage() for r in caplog.records)
        svc.stop()
