"""Safe mode with a real `appliance run`: a config that fails validation at boot starts only
the dashboard, which shows the errors behind the last good login; the installer edits the
config there (an invalid text is refused, a valid one saved with a backup), asks for a
restart, the process exits 75, and the next run is normal. Under a real NOTIFY_SOCKET it
says READY=1 with STATUS=safe mode and keeps the watchdog fed."""
from __future__ import annotations

import html
import http.cookiejar
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from appliance import safemode
from appliance.safemode import EXIT_RESTART
from appliance.selftest import checks
from tests.integration.test_systemd_notify import NotifySocket
from tests.mqtt_broker import free_port
from web.auth import hash_password

PASSWORD = "installer-pw-1"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


class Browser:
    """urllib with cookies, no redirects followed, and the CSRF token read from the pages."""

    def __init__(self, port: int):
        self.base = f"http://127.0.0.1:{port}"
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), _NoRedirect())

    def request(self, path: str, form: dict | None = None) -> tuple[int, dict, str]:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        try:
            with self.opener.open(self.base + path, data=data, timeout=10) as r:
                return r.status, dict(r.headers), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read().decode()

    def csrf(self, path: str) -> str:
        status, _, body = self.request(path)
        assert status == 200, (status, body[:500])
        return re.search(r'name="csrf_token" value="([^"]+)"', body).group(1)

    def login(self, password: str) -> int:
        token = self.csrf("/login")
        return self.request("/login", {"csrf_token": token, "password": password})[0]


def _run(config: Path, data_dir: Path, *args: str, env: dict | None = None, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "appliance", "run", "--config", str(config),
                             "--data-dir", str(data_dir), *args],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, env=env or os.environ.copy())


def _wait_http(port: int, proc: subprocess.Popen, log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        assert proc.poll() is None, f"exited {proc.returncode}: {log.read_text()[-3000:]}"
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return
        except urllib.error.HTTPError:
            return  # 503 in safe mode: it answers
        except OSError:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)


def _good_config(path: Path) -> str:
    text = yaml.safe_dump({"device": {"id": "dev1"},
                           "web": {"host": "127.0.0.1", "password_hash": hash_password(PASSWORD)}})
    path.write_text(text)
    return text


def test_bad_config_starts_safe_mode_and_the_dashboard_fixes_it(data_dir, tmp_path):
    cfg = tmp_path / "config.yaml"
    good = _good_config(cfg)
    # A normal start keeps a copy of the config that validated.
    first = _run(cfg, data_dir, "--fast", "--max-frames", "5", log=tmp_path / "first.log")
    assert first.wait(120) == 0, (tmp_path / "first.log").read_text()[-3000:]
    assert (data_dir / "last-good-config.yaml").read_text() == good
    assert oct((data_dir / "last-good-config.yaml").stat().st_mode & 0o777) == "0o600"

    broken = good.replace("device:\n  id: dev1\n", "device:\n  id: dev1\n  colour: blue\n") + \
        "detect:\n  threshold: 7\n"
    cfg.write_text(broken)
    port = free_port()
    log = tmp_path / "safe.log"
    started = time.time()
    proc = _run(cfg, data_dir, "--safe-mode", "on", "--web-port", str(port), log=log)
    try:
        _wait_http(port, proc, log)
        marker = json.loads((data_dir / "safe-mode.json").read_text())
        assert marker["config"] == str(cfg) and started <= marker["since"] <= time.time()  # this start's
        assert marker["errors"] == [
            f"{cfg}: device.colour: unknown key (valid keys: id)",
            f"{cfg}: detect.threshold: must be between 0.0 and 1.0, got 7"]

        b = Browser(port)
        # The last good config's login guards everything but the monitoring endpoints.
        assert b.request("/safe-mode")[0] == 302
        assert b.request("/api/safe-mode")[0] == 401
        status, _, body = b.request("/healthz")
        assert status == 503 and "safe mode" in body
        assert b.login("wrong-password") == 401
        assert b.login(PASSWORD) == 302
        status, headers, _ = b.request("/")
        assert status == 302 and headers["Location"].endswith("/safe-mode")
        assert b.request("/api/events")[0] == 503  # no pipeline behind the API
        status, _, body = b.request("/safe-mode")
        assert status == 200
        page = html.unescape(body)
        assert f"{cfg}: device.colour: unknown key (valid keys: id)" in page
        assert f"{cfg}: detect.threshold: must be between 0.0 and 1.0, got 7" in page
        assert "colour: blue" in page  # the file's text, in the editor
        assert b.request("/api/safe-mode")[0] == 200

        token = b.csrf("/safe-mode")
        # Still wrong: refused, with the remaining error, and nothing written.
        half = broken.replace("  colour: blue\n", "")
        status, _, body = b.request("/safe-mode", {"csrf_token": token, "action": "save", "config": half})
        assert status == 422 and "not saved" in body
        assert f"{cfg}: detect.threshold: must be between 0.0 and 1.0, got 7" in html.unescape(body)
        assert cfg.read_text() == broken and not (tmp_path / "config.yaml.bak").exists()
        # Valid: "validate" checks only, "save" writes it and keeps the previous file.
        fixed = half.replace("  threshold: 7\n", "  threshold: 0.6\n")
        status, _, body = b.request("/safe-mode", {"csrf_token": token, "action": "validate", "config": fixed})
        assert status == 200 and "This config is valid" in body and cfg.read_text() == broken
        status, _, body = b.request("/safe-mode", {"csrf_token": token, "action": "save", "config": fixed})
        assert status == 200 and "Saved" in body, body
        assert cfg.read_text() == fixed
        assert (tmp_path / "config.yaml.bak").read_text() == broken
        # A post without the CSRF token is refused.
        assert b.request("/safe-mode/restart", {})[0] == 400
        status, _, body = b.request("/safe-mode/restart", {"csrf_token": token})
        assert status == 202 and "Restarting" in body
        assert proc.wait(30) == EXIT_RESTART, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "safe mode: the config does not validate" in text and "Traceback" not in text
    assert f"dashboard address and login from the last good config ({data_dir / 'last-good-config.yaml'})" in text

    # The restarted appliance runs normally: out of safe mode, the fixed config remembered.
    again = _run(cfg, data_dir, "--fast", "--max-frames", "5", log=tmp_path / "again.log")
    assert again.wait(120) == 0, (tmp_path / "again.log").read_text()[-3000:]
    assert not (data_dir / "safe-mode.json").exists()
    assert (data_dir / "last-good-config.yaml").read_text() == fixed


def test_under_systemd_safe_mode_is_ready_and_feeds_the_watchdog(data_dir, tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("cameras: []\n")  # no good config before: local only, no login
    notify = NotifySocket(abstract=False)
    port = free_port()
    env = {**os.environ, "NOTIFY_SOCKET": notify.env_value, "WATCHDOG_USEC": "1000000"}
    env.pop("APPLIANCE_SAFE_MODE", None)  # auto: on under systemd
    log = tmp_path / "safe.log"
    proc = _run(cfg, data_dir, "--web-port", str(port), env=env, log=log)
    try:
        notify.wait_for(lambda: notify.times("READY=1"), 60, "READY=1")
        assert notify.has_prefix("STATUS=safe mode: config invalid (1 error)")
        notify.wait_for(lambda: len(notify.times("WATCHDOG=1")) >= 3, 30, "three watchdog pings")
        b = Browser(port)
        status, _, body = b.request("/safe-mode")  # no password anywhere: no login, 127.0.0.1 only
        assert status == 200 and f"{cfg}: cameras: at least one camera is needed" in html.unescape(body)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()[-3000:]
        notify.wait_for(lambda: notify.times("STOPPING=1"), 5, "STOPPING=1")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()
    assert "local only, no login" in log.read_text()
    # Still in safe mode until a normal start, and the self-test says so.
    assert json.loads((data_dir / "safe-mode.json").read_text())["errors"]
    run = pytest.importorskip("appliance.selftest.run")
    (mode,) = run.run_selftest(None, data_dir, config_path=cfg, only={"mode"}).checks
    assert mode.status == "fail" and mode.value == f"SAFE MODE: {cfg}: cameras: at least one camera is needed"


def test_in_a_terminal_a_bad_config_still_exits_with_the_errors(data_dir, tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("detect: {threshold: 7}\n")
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "APPLIANCE_SAFE_MODE")}
    r = subprocess.run([sys.executable, "-m", "appliance", "run", "--config", str(cfg), "--data-dir",
                        str(data_dir)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == \
        f"appliance: error: {cfg}: detect.threshold: must be between 0.0 and 1.0, got 7"
    assert not (data_dir / "safe-mode.json").exists()


def test_a_valid_config_that_cannot_start_comes_up_in_safe_mode(data_dir, tmp_path, assets_dir):
    """The config validates, but its model file is damaged (truncated on the way to the
    device): under systemd that would be a restart loop. Safe mode instead, saying why,
    behind the last good login; the installer points the config back at a good model, and
    the next start is normal."""
    cfg = tmp_path / "config.yaml"
    good = _good_config(cfg)
    first = _run(cfg, data_dir, "--fast", "--max-frames", "3", log=tmp_path / "first.log")
    assert first.wait(120) == 0, (tmp_path / "first.log").read_text()[-3000:]

    real = assets_dir / "mobilenet_ssd_v2_coco_quant_postprocess.tflite"
    bad = tmp_path / "model" / "damaged.tflite"
    bad.parent.mkdir()
    bad.write_bytes(real.read_bytes()[: real.stat().st_size // 3])
    manifest = yaml.safe_load((Path(__file__).parents[2] / "models/ssd-mobilenet-v2/model.yaml").read_text())
    manifest.update(file=str(bad), labels=str(assets_dir / "coco_labels.txt"))
    manifest.pop("edgetpu_file")
    (bad.parent / "model.yaml").write_text(yaml.safe_dump(manifest))
    broken = good + f"detect:\n  model: {bad.parent / 'model.yaml'}\n"
    cfg.write_text(broken)
    check = subprocess.run([sys.executable, "-m", "appliance", "config", "check", str(cfg)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr  # valid: the damage shows only at load

    port = free_port()
    log = tmp_path / "safe.log"
    proc = _run(cfg, data_dir, "--safe-mode", "on", "--web-port", str(port), log=log)
    try:
        _wait_http(port, proc, log)
        marker = json.loads((data_dir / "safe-mode.json").read_text())
        assert marker["reason"] == "the appliance cannot start with this config"
        assert len(marker["errors"]) == 1 and f"{bad}: not a loadable TFLite model" in marker["errors"][0]
        b = Browser(port)
        status, _, body = b.request("/healthz")
        assert status == 503 and json.loads(body)["reason"] == "safe mode: the appliance cannot start with this config"
        assert b.login(PASSWORD) == 302
        status, _, body = b.request("/safe-mode")
        page = html.unescape(body)
        assert status == 200 and "start failed" in page and "because the appliance cannot start" in page
        assert f"{bad}: not a loadable TFLite model" in page
        token = b.csrf("/safe-mode")
        status, _, body = b.request("/safe-mode", {"csrf_token": token, "action": "save", "config": good})
        assert status == 200 and "Saved" in body, body
        assert b.request("/safe-mode/restart", {"csrf_token": token})[0] == 202
        assert proc.wait(30) == EXIT_RESTART, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in log.read_text()
    again = _run(cfg, data_dir, "--fast", "--max-frames", "3", log=tmp_path / "again.log")
    assert again.wait(120) == 0, (tmp_path / "again.log").read_text()[-3000:]
    assert not (data_dir / "safe-mode.json").exists() and checks.check_mode(data_dir).status == "pass"


def test_safe_mode_after_a_failed_start_is_reported_by_the_selftest(tmp_path):
    safemode.write_marker(tmp_path, ["/m/model.yaml: damaged.tflite: not a loadable TFLite model"], "/c.yaml",
                          reason=safemode.START_FAILED)
    c = checks.check_mode(tmp_path)
    assert c.status == "fail" and c.value == "SAFE MODE: /m/model.yaml: damaged.tflite: not a loadable TFLite model"
    assert "because the appliance cannot start with this config (/c.yaml)" in c.hint
