"""`appliance selftest` end to end: the demo video as the camera, the real model, a real
mosquitto (the report published retained, checked against its schema), and bad input: a
camera URL that does not answer, an unreachable broker, an invalid config, safe mode; the
dashboard of a running appliance; a real RTSP camera."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from appliance import paths
from appliance.config import from_dict
from appliance.selftest import checks
from tests.mqtt_broker import Subscriber, free_port
from tests.uplink_util import Appliance, schema


def _config(path: Path, port: int | None, cameras: list[dict] | None = None, **sections) -> Path:
    cfg = {"device": {"id": "dev1"}, "cameras": cameras or [{"id": "demo", "source": "asset:vtest.avi"}],
           **sections}
    if port is not None:
        cfg["uplink"] = {"enabled": True, "host": "127.0.0.1", "port": port, "topic_prefix": "t"}
    path.write_text(yaml.safe_dump(cfg))
    return path


def _synced_clock(tmp_path: Path, monkeypatch) -> None:
    """There is no NTP here (a container): a timedatectl that says the clock is synchronised."""
    bin_ = tmp_path / "bin"
    bin_.mkdir(exist_ok=True)
    (bin_ / "timedatectl").write_text("#!/bin/sh\necho yes\n")
    (bin_ / "timedatectl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_}:{os.environ['PATH']}")


def selftest(*args: str, data_dir: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appliance", "selftest", *args, "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=timeout)


def test_demo_camera_real_model_and_broker_pass_and_the_report_is_published(data_dir, mqtt_broker, tmp_path,
                                                                           monkeypatch):
    _synced_clock(tmp_path, monkeypatch)
    sub = Subscriber(mqtt_broker.port, ["t/#"]).start()
    try:
        r = selftest("--config", str(_config(tmp_path / "c.yaml", mqtt_broker.port)), "--json", data_dir=data_dir)
        body = json.loads(r.stdout)
        by = {c["name"]: c for c in body["checks"]}
        assert [c["name"] for c in body["checks"]] == [
            "mode", "config", "camera:demo", "detector", "classifier", "data_dir", "database", "disk", "uplink",
            "clock", "thermal", "dashboard"]
        failures = [c for c in body["checks"] if c["status"] == "fail"]
        assert not failures, failures
        assert r.returncode == 0 and body["ok"] is True, r.stderr[-2000:]
        assert by["camera:demo"]["value"] == "768x576 at 10.0 fps (the file's rate, 30 frames)"
        assert by["detector"]["detail"]["model"] == "ssd-mobilenet-v2-coco"
        assert by["detector"]["detail"]["input"] == "a camera frame" and by["detector"]["detail"]["ms_per_frame"] > 0
        assert by["classifier"]["detail"]["model"] == "efficientnet-lite0-vehicle"
        assert by["uplink"]["status"] == "pass" and by["uplink"]["detail"]["round_trip_ms"] > 0
        assert by["clock"]["value"].endswith("synchronised (timedatectl)")
        assert by["dashboard"]["value"] == "the appliance is not running: not checked"
        sub.wait_for(lambda: sub.exact("t/dev1/selftest"), 10, "the report")
        msg = sub.exact("t/dev1/selftest")[0]
        published = json.loads(msg.payload)
        schema("mqtt-selftest").validate(published)
        assert published["checks"] == body["checks"] and "published" not in published
    finally:
        sub.close()
    kept = json.loads((data_dir / "selftest.json").read_text())
    assert kept == body and kept["published"] == "t/dev1/selftest"


def test_bad_camera_and_unreachable_broker_fail_with_hints(data_dir, tmp_path):
    dead = free_port()  # nothing listens on either port
    cfg = _config(tmp_path / "c.yaml", free_port(),
                  cameras=[{"id": "gate", "source": f"rtsp://viewer:secret@127.0.0.1:{dead}/stream"}])
    r = selftest("--config", str(cfg), "--only", "camera,uplink,mode", "--timeout", "3", data_dir=data_dir)
    assert r.returncode == 1, r.stdout + r.stderr[-2000:]
    lines = r.stdout.splitlines()
    cam = next(i for i, line in enumerate(lines) if line.startswith("✗ camera:gate"))
    assert f"rtsp://viewer:***@127.0.0.1:{dead}/stream" in lines[cam] and "secret" not in r.stdout
    assert lines[cam + 1].strip().startswith("→ check the camera's address")
    up = next(i for i, line in enumerate(lines) if line.startswith("✗ uplink"))
    assert "unreachable" in lines[up] and "uplink.host and uplink.port" in lines[up + 1]
    assert lines[-1].startswith("FAILED: 1 passed, 0 warnings, 2 failed")


def test_invalid_config_fails_and_the_device_is_still_checked(data_dir, tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("device: {id: dev1}\nuplink: {enabled: yes please}\n")
    r = selftest("--config", str(bad), "--json", data_dir=data_dir)
    assert r.returncode == 1
    body = json.loads(r.stdout)
    names = [c["name"] for c in body["checks"]]
    assert names == ["mode", "config", "data_dir", "database", "disk", "clock", "thermal", "dashboard"]
    config = body["checks"][1]
    assert config["status"] == "fail"
    assert config["detail"]["errors"] == [f"{bad}: uplink.enabled: expected true or false, got str 'yes please'"]


def test_safe_mode_fails_the_selftest(data_dir, tmp_path):
    data_dir.mkdir()
    (data_dir / "safe-mode.json").write_text(json.dumps({"since": time.time(), "config": "/x.yaml",
                                                         "errors": ["/x.yaml: device.id: required key is missing"]}))
    r = selftest("--only", "mode", data_dir=data_dir)
    assert r.returncode == 1
    assert r.stdout.splitlines()[1] == "✗ mode  SAFE MODE: /x.yaml: device.id: required key is missing"


def test_on_a_device_a_bare_selftest_checks_the_installed_config(tmp_path, monkeypatch, capsys):
    """Where provisioning/install put /etc/appliance/config.yaml, `appliance selftest` with
    no --config checks that config, with the service's data directory, not the built-in
    demo in ./data; given flags win. (The device paths point into tmp_path here.)"""
    from appliance.cli import main

    etc, var = tmp_path / "etc" / "config.yaml", tmp_path / "var"
    monkeypatch.setattr(paths, "DEVICE_CONFIG", etc)
    monkeypatch.setattr(paths, "DEVICE_DATA_DIR", var)
    monkeypatch.delenv("APPLIANCE_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    main(["selftest", "--only", "config,data_dir"])  # no installed config: the demo, in ./data
    assert json.loads((tmp_path / "data" / "selftest.json").read_text())["checks"][0]["status"] == "warn"
    assert not var.exists()

    etc.parent.mkdir()
    etc.write_text("device: {id: roof-7}\ncameras: [{id: gate, source: 'rtsp://10.0.0.9/s'}]\n")
    capsys.readouterr()
    assert main(["selftest", "--only", "config,data_dir", "--json"]) == 0
    report = json.loads((var / "selftest.json").read_text())
    assert (report["device"], report["config"]) == ("roof-7", str(etc))
    assert json.loads(capsys.readouterr().out)["checks"][1]["detail"]["path"] == str(var)

    other = tmp_path / "other"
    assert main(["selftest", "--only", "config,data_dir", "--data-dir", str(other)]) == 0
    assert json.loads((other / "selftest.json").read_text())["device"] == "roof-7"


def test_unknown_check_name_is_a_one_line_error(data_dir):
    r = selftest("--only", "camera,frobnicate", data_dir=data_dir)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("appliance: error: selftest: unknown check(s) frobnicate; valid: mode, config, camera")


def test_camera_that_accepts_and_never_answers_times_out(data_dir, assets_dir):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        port = silent.getsockname()[1]
        cfg = from_dict({"cameras": [{"id": "gate", "source": f"rtsp://127.0.0.1:{port}/s"}]})
        ctx = checks.Context(cfg, data_dir, assets_dir, None, timeout_s=2.0)
        c = checks.check_camera(ctx, cfg.cameras[0])
    assert c.status == "fail"
    # FFmpeg's open timeout (the check's 2 s) or the check's own deadline, whichever comes first
    assert c.value in (f"rtsp://127.0.0.1:{port}/s: no frame within 2 s",
                       f"rtsp://127.0.0.1:{port}/s: cannot open rtsp://127.0.0.1:{port}/s over TCP"), c.value
    assert "camera's address" in c.hint


def test_real_rtsp_camera_is_measured(data_dir, assets_dir):
    from tests.rtsp_server import start_rtsp_server, stop_rtsp_server

    try:
        proc, port = start_rtsp_server(fps=15, size="320x240")
    except (RuntimeError, OSError) as e:
        pytest.skip(f"no RTSP server here: {e}")
    try:
        cfg = from_dict({"cameras": [{"id": "gate", "source": f"rtsp://127.0.0.1:{port}/test", "fps": 15,
                                      "width": 640}]})
        c = checks.check_camera(checks.Context(cfg, data_dir, assets_dir, None, timeout_s=10.0), cfg.cameras[0])
    finally:
        stop_rtsp_server(proc)
    # 320x240 is what the server gives; asking for 640 wide is a warning naming both
    assert c.status == "warn", c.value
    assert c.value.startswith("320x240 at ") and "asked for 640x240" in c.value
    assert c.detail["width"] == 320 and c.detail["frames"] >= 2 and c.detail["fps"] > 0


def test_dashboard_and_camera_of_a_running_appliance(data_dir, tmp_path):
    cfg = _config(tmp_path / "c.yaml", None)
    app = Appliance(cfg, data_dir, "--loop", log=tmp_path / "app.log")
    try:
        deadline = time.monotonic() + 120
        while True:
            assert time.monotonic() < deadline and app.proc.poll() is None, app.text()[-3000:]
            try:
                status, _ = paths.read_status(data_dir)
            except Exception:
                status = {}
            if status.get("services", {}).get("web", {}).get("listen") and status.get("heartbeat_age_s", 99) < 5:
                break
            time.sleep(0.3)
        r = selftest("--config", str(cfg), "--only", "dashboard,camera,database", "--json", data_dir=data_dir)
    finally:
        assert app.terminate() == 0
    by = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    port = int(status["services"]["web"]["listen"].rsplit(":", 1)[1])
    assert by["dashboard"]["value"] == f"answers on port {port} (/healthz: ok); no password set"
    assert by["dashboard"]["status"] == "warn" and "appliance passwd" in by["dashboard"]["hint"]
    assert by["camera:demo"]["status"] == "pass"
    assert by["database"]["status"] == "pass" and "integrity_check ok" in by["database"]["value"]
