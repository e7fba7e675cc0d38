"""The power manager on a (fake) Jetson: nvpmodel, jetson_clocks and sysfs stand-ins.

tests/fakes/bin/nvpmodel and jetson_clocks reproduce the real tools' documented output;
tests/fakes/sysfs.py builds an Orin Nano's thermal zones, INA3221 rails and device tree.
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from appliance.config import PowerConfig, PowerScheduleEntry
from appliance.control.power import PowerService
from tests.fakes.sysfs import jetson_tree, set_temperature, use_fake_tools


@pytest.fixture
def jetson(tmp_path, monkeypatch) -> Path:
    root = jetson_tree(tmp_path / "jetson", default=0)  # starts in 15W
    use_fake_tools(monkeypatch, root)
    return root


def nvpmodel_q() -> str:
    return subprocess.run(["nvpmodel", "-q"], capture_output=True, text=True, check=True).stdout


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_power_status_command_reports_the_jetson(jetson, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"power: {{root: '{jetson}'}}\n")
    r = subprocess.run([sys.executable, "-m", "appliance", "power", "status", "--json", "--config", str(cfg)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["platform"] == "jetson" and s["backend"] == "jetson" and s["dry_run"] is False
    assert s["model"].startswith("NVIDIA Jetson Orin Nano")
    assert s["mode"] == "15W" and s["modes"] == ["MAXN_SUPER", "15W", "7W"]
    assert s["temperatures_c"]["cpu-thermal"] == 48.5 and s["temperatures_c"]["PMIC-Die"] == 100.0
    assert "PMIC-Die" not in s["watched_zones"] and "tj-thermal" in s["watched_zones"]
    assert s["rails_w"]["VDD_IN"] == pytest.approx(5.072 * 1.380, abs=0.01)
    assert s["throttled"] is None and s["jetson_clocks_locked"] is False
    text = subprocess.run([sys.executable, "-m", "appliance", "power", "status", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=60).stdout
    assert "platform jetson" in text and "mode 15W; available: MAXN_SUPER, 15W, 7W" in text
    assert "VDD_IN 7.00 W" in text and "jetson_clocks: dynamic" in text


def test_thermal_policy_steps_nvpmodel_down_and_back_up(jetson, tmp_path):
    clock, changes = Clock(), []
    cfg = PowerConfig(policy="thermal", root=str(jetson), interval_s=1.0, cooldown_s=30.0)
    svc = PowerService(cfg, tmp_path, on_change=lambda *a: changes.append(a), clock=clock)
    before = REGISTRY.get_sample_value("appliance_power_mode_changes_total", {"reason": "thermal"}) or 0
    svc.tick()
    assert "NV Power Mode: MAXN_SUPER\n2" in nvpmodel_q()  # cool: the fastest mode
    set_temperature(jetson, "tj-thermal", 86.0)
    for t in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0):
        clock.t = t
        svc.tick()
    assert "NV Power Mode: 7W\n1" in nvpmodel_q()  # two steps, three readings apart
    set_temperature(jetson, "tj-thermal", 60.0)
    clock.t = 8.0
    svc.tick()
    clock.t = 38.0
    svc.tick()
    assert "NV Power Mode: 15W" in nvpmodel_q()
    assert [(c[2], c[3]) for c in changes] == [("MAXN_SUPER", "15W"), ("15W", "MAXN_SUPER"),
                                               ("7W", "15W"), ("15W", "7W")]
    kind, camera, mode, previous, reason, detail = changes[1]
    assert (kind, camera, reason) == ("power", "", "thermal: 86.0 C >= 80 C")
    assert detail["temperatures_c"]["tj-thermal"] == 86.0
    assert changes[3][4].startswith("cooldown")
    after = REGISTRY.get_sample_value("appliance_power_mode_changes_total", {"reason": "thermal"})
    assert after - before == 3
    assert REGISTRY.get_sample_value("appliance_temperature_celsius", {"zone": "tj-thermal"}) == 60.0
    assert REGISTRY.get_sample_value("appliance_power_mode", {"mode": "15W"}) == 1
    st = svc.status()
    assert st["mode"] == "15W" and st["changes"] == 4 and st["dry_run"] is False
    assert st["max_temperature_c"] == 60.0  # PMIC-Die's constant 100 C is not watched


def test_fixed_mode_with_jetson_clocks(jetson, tmp_path):
    cfg = PowerConfig(policy="fixed", mode="MAXN_SUPER", jetson_clocks=True, root=str(jetson))
    svc = PowerService(cfg, tmp_path)
    svc.tick()
    assert "NV Power Mode: MAXN_SUPER" in nvpmodel_q()
    show = subprocess.run(["jetson_clocks", "--show"], capture_output=True, text=True).stdout
    assert "MinFreq=1510400 MaxFreq=1510400 CurrentFreq=1510400" in show  # locked at maximum
    assert (tmp_path / "jetson_clocks.conf").exists()  # stored first, to restore later
    svc.tick()
    assert svc.changes == 1  # holds, does not redo


def test_failures_are_reported_never_raised(jetson, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("FAKE_NVPMODEL_REBOOT_IDS", "2")
    svc = PowerService(PowerConfig(policy="fixed", mode="MAXN_SUPER", root=str(jetson)), tmp_path)
    svc.tick()
    svc.tick()
    assert "did not take effect" in svc.status()["error"] and "reboot" in svc.status()["error"]
    assert svc.status()["mode"] == "15W"
    assert sum("did not take effect" in r.message for r in caplog.records) == 1  # logged once
    monkeypatch.setenv("FAKE_NVPMODEL_FAIL", "1")
    svc = PowerService(PowerConfig(policy="fixed", mode="7W", root=str(jetson)), tmp_path)
    svc.tick()
    assert "NVPM ERROR" in svc.status()["error"]
    # Unknown mode names: monitoring only, said clearly, nothing raised.
    svc = PowerService(PowerConfig(policy="fixed", mode="30W", root=str(jetson)), tmp_path)
    svc.tick()
    assert "unknown mode(s) 30W" in svc.status()["error"]


def test_schedule_policy(jetson, tmp_path):
    from datetime import datetime

    now = [datetime(2026, 3, 1, 21, 59)]
    cfg = PowerConfig(policy="schedule", root=str(jetson),
                      schedule=[PowerScheduleEntry("06:30", "MAXN_SUPER"), PowerScheduleEntry("22:00", "7W")])
    svc = PowerService(cfg, tmp_path, local_now=lambda: now[0])
    svc.tick()
    assert "NV Power Mode: MAXN_SUPER" in nvpmodel_q()
    now[0] = datetime(2026, 3, 1, 22, 0)
    svc.tick()
    assert "NV Power Mode: 7W" in nvpmodel_q()
    assert svc.last_change["reason"] == "schedule"


def test_jetson_without_nvpmodel_is_a_dry_run(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="appliance.control.power")
    root = jetson_tree(tmp_path / "jetson")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no fake tools
    svc = PowerService(PowerConfig(policy="thermal", root=str(root), interval_s=0.05), tmp_path)
    set_temperature(root, "cpu-thermal", 90.0)
    svc.tick()
    st = svc.status()
    assert st["dry_run"] is True and "nvpmodel not found" in st["dry_run_reason"]
    assert st["would_be_mode"] == "15W" and st["mode"] is None  # modes read from /etc/nvpmodel.conf
    assert any("dry run: would set mode 15W" in r.message for r in caplog.records)


def test_appliance_run_with_the_thermal_policy_stores_power_events(jetson, data_dir, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"web: {{enabled: false}}\nlog: {{stats_interval_s: 0.5}}\n"
                   f"power: {{policy: thermal, root: '{jetson}', interval_s: 0.1, cooldown_s: 1000}}\n")
    set_temperature(jetson, "cpu-thermal", 95.0)
    r = subprocess.run([sys.executable, "-m", "appliance", "run", "--config", str(cfg), "--max-frames", "25",
                        "--data-dir", str(data_dir)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in subprocess.run(
        [sys.executable, "-m", "appliance", "events", "--json", "--limit", "1000", "--data-dir", str(data_dir)],
        capture_output=True, text=True, check=True).stdout.splitlines()]
    power = [e for e in events if e["type"] == "power"]
    # Hot from the start: it never goes up to MAXN_SUPER; one rung down from 15W.
    assert [(e["previous"], e["state"]) for e in power] == [("15W", "7W")]
    assert power[0]["reason"] == "thermal: 95.0 C >= 80 C" and power[0]["camera"] == ""
    assert power[0]["id"] == f"{power[0]['device']}:{power[0]['seq']}"
    assert "NV Power Mode: 7W" in nvpmodel_q()
    status = json.loads((data_dir / "status.json").read_text())
    assert status["services"]["power"]["platform"] == "jetson"
    assert status["services"]["power"]["mode"] == "7W"
