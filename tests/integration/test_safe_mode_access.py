"""Where safe mode takes the dashboard's address and login from, and the editor's edges,
on real files (the safe-mode app through Flask's test client)."""
from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from appliance import paths, safemode
from appliance.config import Config, WebConfig
from tests.unit.small_fs import small_fs  # a real read-only mount: root ignores file modes
from web.app import create_app
from web.auth import hash_password
from web.safemode import install


def test_wanted():
    assert safemode.wanted("auto", {"NOTIFY_SOCKET": "/run/systemd/notify"})
    assert not safemode.wanted("auto", {})
    assert safemode.wanted("on", {}) and not safemode.wanted("off", {"NOTIFY_SOCKET": "x"})


def test_access_from_last_good_then_the_broken_files_web_then_local_only(tmp_path):
    data, cfg = tmp_path / "data", tmp_path / "config.yaml"
    good_hash, own_hash = hash_password("last-good-pw"), hash_password("own-file-pw")
    cfg.write_text(yaml.safe_dump({"web": {"host": "0.0.0.0", "port": 9000, "password_hash": own_hash},
                                   "detect": {"threshold": 7}}))
    a = safemode.web_access(str(cfg), data)
    assert (a.host, a.port, a.password_hash) == ("0.0.0.0", 9000, own_hash) and str(cfg) in a.source

    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({"web": {"host": "10.0.0.5", "port": 8081, "password_hash": good_hash}}))
    safemode.remember_good(good, data)
    assert oct(safemode.last_good_path(data).stat().st_mode & 0o777) == "0o600"
    a = safemode.web_access(str(cfg), data)
    assert (a.host, a.port, a.password_hash) == ("10.0.0.5", 8081, good_hash) and "last good" in a.source

    # Neither: local only and no login, never an open editor on the network.
    safemode.last_good_path(data).unlink()
    cfg.write_text("web: {host: 0.0.0.0, colour: red}\n")
    a = safemode.web_access(str(cfg), data)
    assert (a.host, a.port, a.password_hash) == ("127.0.0.1", 8080, None)
    cfg.write_bytes(b"\xff\xfe\0junk")
    assert safemode.web_access(str(cfg), data).host == "127.0.0.1"


def test_marker_written_read_and_removed(tmp_path):
    safemode.write_marker(tmp_path, ["c.yaml: x: unknown key"], "c.yaml", now=1000.0)
    assert safemode.read_marker(tmp_path) == {"since": 1000.0, "errors": ["c.yaml: x: unknown key"],
                                              "config": "c.yaml", "reason": "the config does not validate"}
    safemode.leave(tmp_path)
    assert safemode.read_marker(tmp_path) is None


def _client(tmp_path, config_text: str | None, data=None):
    cfg = tmp_path / "config.yaml"
    if config_text is not None:
        cfg.write_text(config_text)
    data = data or tmp_path
    state = safemode.SafeMode(str(cfg), data, ["boom"])
    app = create_app(Config(web=WebConfig()), state, data / "appliance.db", data_dir=data)
    install(app, state, assets_dir=paths.assets_dir(), source="test")
    return app.test_client(), state, cfg


def _token(client) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get("/safe-mode").get_data(as_text=True)).group(1)


def test_editor_edges(tmp_path, assets_dir):
    client, state, cfg = _client(tmp_path, None)
    body = client.get("/safe-mode").get_data(as_text=True)
    assert "cannot read" in body and "No such file or directory" in body
    token = _token(client)
    r = client.post("/safe-mode", data={"csrf_token": token, "action": "delete", "config": ""})
    assert r.status_code == 400 and "unknown action" in r.get_data(as_text=True)
    r = client.post("/safe-mode", data={"csrf_token": token, "action": "validate", "config": "a: [\n"})
    assert r.status_code == 422 and "invalid YAML" in r.get_data(as_text=True)
    big = "# " + "x" * (300 * 1024)
    assert client.post("/safe-mode", data={"csrf_token": token, "action": "validate", "config": big}).status_code == 413
    # A model file that is not there is caught as `appliance run` would catch it.
    r = client.post("/safe-mode", data={"csrf_token": token, "action": "save",
                                        "config": "detect: {model: /nowhere/model.yaml}\n"})
    assert r.status_code == 422 and "detect.model" in r.get_data(as_text=True) and not cfg.exists()
    r = client.post("/safe-mode", data={"csrf_token": token, "action": "save", "config": "device: {id: x}\r\n"})
    assert r.status_code == 200 and cfg.read_text() == "device: {id: x}\n"
    assert not state.restart_requested
    assert client.post("/safe-mode/restart", data={"csrf_token": token}).status_code == 202
    assert state.restart_requested and state.wake.is_set()


def test_an_unwritable_config_is_said_up_front_and_a_save_fails_cleanly(tmp_path):
    with small_fs(tmp_path / "m", 64 * 1024) as root:
        (root / "config.yaml").write_text("detect: {threshold: 7}\n")
        r = subprocess.run(["mount", "-o", "remount,ro", str(root)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot remount read-only: {r.stderr.strip()}")
        client, _, cfg = _client(root, None, data=tmp_path)
        body = client.get("/safe-mode").get_data(as_text=True)
        assert "Saving will not work here: the appliance may not write" in body
        r = client.post("/safe-mode", data={"csrf_token": _token(client), "action": "save",
                                            "config": "device: {id: y}\n"})
        text = r.get_data(as_text=True)
        assert r.status_code == 500 and "Read-only file system" in text and "previous config is unchanged" in text
        assert cfg.read_text() == "detect: {threshold: 7}\n"
