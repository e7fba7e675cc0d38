"""The self-test report (terminal summary, JSON against its schema, the kept file) and the
checks that need no camera, model or broker: safe mode, the config, storage, the clock and
temperatures (on a fake Raspberry Pi sysfs tree: there is no thermal zone here)."""
from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from appliance.config import Config, PowerConfig
from appliance.selftest import checks, report, system
from appliance.selftest.report import Check, Report
from appliance.store.db import open_db
from tests.fakes.sysfs import rpi_tree, set_temperature, set_throttled, use_fake_tools
from tests.unit.small_fs import fill, small_fs
from tests.uplink_util import schema


def _report() -> Report:
    return Report("gate-3", "0.1.0", "/etc/appliance/config.yaml", ts=1795340000.0, duration_s=3.25, checks=[
        Check("mode", "pass", "normal"),
        Check("camera:north", "fail", "rtsp://viewer:***@10.0.0.20/s1: no frame within 10 s", "check the address",
              {"source": "rtsp://viewer:***@10.0.0.20/s1"}),
        Check("clock", "warn", "synchronisation unknown", "run an NTP client"),
    ])


def test_summary_marks_each_check_and_shows_hints_of_those_that_did_not_pass():
    r = _report()
    lines = r.summary().splitlines()
    assert lines[0].startswith("self-test of gate-3 (appliance 0.1.0, config /etc/appliance/config.yaml)")
    assert lines[1] == "✓ mode          normal"
    assert lines[2] == "✗ camera:north  rtsp://viewer:***@10.0.0.20/s1: no frame within 10 s"
    assert lines[3].strip() == "→ check the address"
    assert lines[4].startswith("! clock")
    assert lines[-1] == "FAILED: 1 passed, 1 warnings, 1 failed (3.2 s)"
    assert not r.ok
    r.checks = [c for c in r.checks if c.status != "fail"]
    assert r.ok and r.summary().splitlines()[-1].startswith("PASSED: 1 passed, 1 warnings, 0 failed")


def test_json_fits_the_schema_and_reads_back(tmp_path):
    r = _report()
    body = json.loads(r.to_json(published=False))
    schema("mqtt-selftest").validate(body)
    assert body["counts"] == {"pass": 1, "warn": 1, "fail": 1} and body["ok"] is False
    assert "published" not in body
    r.published = "t/gate-3/selftest"
    path = report.save(r, tmp_path)
    assert path == tmp_path / "selftest.json" and not list(tmp_path.glob(".*tmp"))
    back = report.load(tmp_path)
    assert back.to_dict() == r.to_dict()
    schema("mqtt-selftest").validate(back.to_dict())  # the kept file too, with `published`
    (tmp_path / "selftest.json").write_text("{not json")
    assert report.load(tmp_path) is None


def test_a_check_with_an_unknown_status_is_refused():
    with pytest.raises(ValueError, match="status must be one of"):
        Check("mode", "ok", "normal")


def test_safe_mode_is_a_failure_with_its_errors(tmp_path):
    assert checks.check_mode(tmp_path).status == "pass"
    (tmp_path / "safe-mode.json").write_text(json.dumps({
        "since": 1795340000.0, "config": "/etc/appliance/config.yaml",
        "errors": ["/etc/appliance/config.yaml: cameras[0].source: expected ...", "/etc/appliance/config.yaml: x"]}))
    c = checks.check_mode(tmp_path)
    assert c.status == "fail"
    assert c.value == "SAFE MODE: /etc/appliance/config.yaml: cameras[0].source: expected ... (and 1 more)"
    assert "safe mode" in c.hint and c.detail["errors"][1].endswith(": x")


def test_config_check_lists_every_error_of_the_file(tmp_path, assets_dir):
    bad = tmp_path / "c.yaml"
    bad.write_text("device: {id: gate-3}\ncameras: [{id: a, source: x.mp4, loop: maybe}]\ndetect: {threshold: 2}\n")
    c, cfg = checks.check_config(bad, assets_dir)
    assert c.status == "fail" and cfg is None
    assert c.detail["errors"] == [f"{bad}: cameras[0].loop: expected true or false, got str 'maybe'",
                                  f"{bad}: detect.threshold: must be between 0.0 and 1.0, got 2"]
    assert c.value.endswith("(and 1 more)")
    good = tmp_path / "g.yaml"
    good.write_text("device: {id: gate-3}\n")
    c, cfg = checks.check_config(good, assets_dir)
    assert (c.status, c.value, cfg.device.id) == ("pass", f"{good}: valid", "gate-3")
    c, cfg = checks.check_config(None, assets_dir)
    assert c.status == "warn" and "--config" in c.hint


def test_data_dir_writable_with_its_write_speed(tmp_path):
    c = system.check_data_dir(tmp_path / "data")
    assert c.status in ("pass", "warn")  # warn only on a very slow disk
    assert c.detail["write_mb_s"] > 0 and (tmp_path / "data").is_dir()
    assert list((tmp_path / "data").iterdir()) == []  # the probe is removed


def test_read_only_data_dir_fails_with_a_hint(tmp_path):
    data = tmp_path / "ro"
    data.mkdir()
    if os.geteuid() == 0:  # root writes through any mode bits: a read-only mount is the real thing
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(data)], capture_output=True,
                           text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a read-only tmpfs: {r.stderr.strip()}")
    else:
        data.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        c = system.check_data_dir(data)
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(data)], check=True)
        else:
            data.chmod(0o700)
    assert c.status == "fail"
    assert c.value in (f"{data}: cannot write: Read-only file system", f"{data}: cannot write: Permission denied")
    assert "writable by the appliance user" in c.hint


def test_full_disk_fails_and_low_disk_warns(tmp_path):
    with small_fs(tmp_path, size=8 * 1024 * 1024) as root:
        c = system.check_disk(root, reserve_mb=1)
        assert c.status == "pass", c.value
        fill(root, leave=3 * 1024 * 1024)
        c = system.check_disk(root, reserve_mb=1)
        assert c.status == "warn" and c.value.endswith(": low")
        fill(root, leave=512 * 1024)
        c = system.check_disk(root, reserve_mb=1)
        assert c.status == "fail" and c.value.endswith(": full") and "free space" in c.hint
        assert c.detail["reserve_bytes"] == 1024 * 1024


def test_database_integrity(tmp_path):
    assert "not created yet" in system.check_database(tmp_path).value
    db = open_db(tmp_path / "appliance.db")
    with db.conn:
        db.conn.execute("CREATE TABLE filler (x TEXT)")
        db.conn.executemany("INSERT INTO filler VALUES (?)", [("x" * 500,)] * 2000)
        db.conn.execute("CREATE INDEX filler_x ON filler (x)")
    db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.conn.close()
    c = system.check_database(tmp_path)
    assert c.status == "pass" and "integrity_check ok" in c.value
    with open(tmp_path / "appliance.db", "r+b") as f:  # damage pages in the middle of the file
        f.seek(40 * 4096)
        f.write(os.urandom(8 * 4096))
    c = system.check_database(tmp_path)
    assert c.status == "fail", c.value
    assert "move" in c.hint and "aside" in c.hint


def _tool(folder: Path, name: str, stdout: str, rc: int = 0) -> None:
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(f"#!/bin/sh\nprintf '%s\\n' '{stdout}'\nexit {rc}\n")  # builtins only: PATH is bare
    (folder / name).chmod(0o755)


def test_clock_from_timedatectl_then_chronyc(tmp_path, monkeypatch):
    if Path("/run/systemd/timesync").exists():
        pytest.skip("this machine runs systemd-timesyncd, which answers before the stubs")
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    monkeypatch.setenv("PATH", str(bin_))
    c = system.check_clock()
    assert c.status == "warn" and "synchronisation unknown" in c.value
    _tool(bin_, "chronyc", "Reference ID    : 00000000 ()\nLeap status     : Not synchronised")
    c = system.check_clock()
    assert c.status == "fail" and "not synchronised (chronyc)" in c.value and "NTP" in c.hint
    _tool(bin_, "chronyc", "Leap status     : Normal\nSystem time     : 0.000012 seconds fast of NTP time")
    assert system.check_clock().value.endswith("synchronised (chronyc (0.000012 seconds fast of NTP time))")
    _tool(bin_, "timedatectl", "no")  # timedatectl comes first when it can answer
    assert system.check_clock().status == "fail"
    _tool(bin_, "timedatectl", "yes")
    c = system.check_clock()
    assert (c.status, c.detail["source"]) == ("pass", "timedatectl")
    _tool(bin_, "timedatectl", "System has not been booted with systemd", rc=1)  # a container: next tool
    assert system.check_clock().detail["source"].startswith("chronyc")
    c = system.check_clock(now=86400.0 * 365)  # 1971: never set
    assert c.status == "fail" and "never set" in c.value


def test_temperatures_and_throttling(tmp_path, monkeypatch):
    root = rpi_tree(tmp_path / "pi", celsius=52.1)
    use_fake_tools(monkeypatch, root)
    cfg = Config(power=PowerConfig(root=str(root)))
    c = system.check_thermal(cfg)
    assert (c.status, c.value) == ("pass", "cpu-thermal 52.1 C; throttling: no")
    set_temperature(root, "cpu-thermal", cfg.power.step_down_c + 1)
    c = system.check_thermal(cfg)
    assert c.status == "warn" and "power.step_down_c" in c.hint
    set_temperature(root, "cpu-thermal", 50.0)
    set_throttled(root, 0x50000)  # under-voltage and throttling since boot, not now
    assert system.check_thermal(cfg).status == "warn"
    set_throttled(root, 0x50005)  # under-voltage now
    c = system.check_thermal(cfg)
    assert c.status == "fail" and "power supply" in c.hint and "under-voltage" in c.value


def test_no_dashboard_check_when_the_appliance_is_not_running():
    c = system.check_dashboard(Config(), None, 1.0)
    assert (c.status, c.value) == ("warn", "the appliance is not running: not checked")


def test_expected_detector_speed_by_platform_and_model():
    assert checks.expected_ms("ssd-mobilenet-v2-coco", "raspberry-pi-5", "cpu") == 45.0
    assert checks.expected_ms("ssd-mobilenet-v2-coco", "linux-x86_64", "edgetpu") == 15.0  # a Coral anywhere
    assert checks.expected_ms("ssd-mobilenet-v2-coco-onnx", "jetson", "cuda") == 15.0  # TensorRT on a Jetson
    assert checks.expected_ms("ssd-mobilenet-v2-coco-onnx", "linux-x86_64", "cpu") is None  # float: no figure
    assert checks.expected_ms("yolov8-fall-test", "jetson", "cuda") is None  # a model with no figures
