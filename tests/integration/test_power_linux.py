"""The power manager on a (fake) Raspberry Pi, and on this machine, which has no controls."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from appliance.config import PowerConfig
from appliance.control.power import PowerService, read_status
from tests.fakes.sysfs import rpi_tree, set_temperature, set_throttled, use_fake_tools


@pytest.fixture
def pi(tmp_path, monkeypatch):
    root = rpi_tree(tmp_path / "pi", celsius=52.1, governor="ondemand", cpus=2)
    use_fake_tools(monkeypatch, root)
    return root


def governors(root) -> list[str]:
    return [(root / f"sys/devices/system/cpu/cpufreq/policy{n}/scaling_governor").read_text().strip()
            for n in range(2)]


def test_status_on_a_raspberry_pi(pi):
    s = read_status(PowerConfig(root=str(pi)))
    assert (s["platform"], s["backend"], s["dry_run"]) == ("raspberry-pi", "linux", False)
    assert s["model"] == "Raspberry Pi 4 Model B Rev 1.5"
    assert s["mode"] == "ondemand"
    assert s["modes"] == ["performance", "schedutil", "ondemand", "conservative", "powersave"]
    assert s["temperatures_c"] == {"cpu-thermal": 52.1}
    assert s["throttled"] is False and s["throttle_flags"] == []
    set_throttled(pi, 0x50005)  # under-voltage and throttled now, and both since boot
    s = read_status(PowerConfig(root=str(pi)))
    assert s["throttled"] is True
    assert s["throttle_flags"] == ["under-voltage", "throttled", "under-voltage-occurred", "throttled-occurred"]
    set_throttled(pi, 0x50000)  # only in the past: not throttled now
    assert read_status(PowerConfig(root=str(pi)))["throttled"] is False


def test_throttling_steps_the_governor_down(pi, tmp_path):
    t = [0.0]
    cfg = PowerConfig(policy="thermal", root=str(pi), interval_s=1.0, cooldown_s=10.0)
    svc = PowerService(cfg, tmp_path, clock=lambda: t[0])
    svc.tick()
    assert governors(pi) == ["performance", "performance"]
    set_throttled(pi, 0x4)
    t[0] = 1.0
    svc.tick()
    assert governors(pi) == ["schedutil", "schedutil"]
    assert svc.last_change["reason"] == "thermal: throttled (throttled)"
    set_throttled(pi, 0x40000)  # over now; it happened since boot, which does not count
    for t[0] in (2.0, 12.0):
        svc.tick()
    assert governors(pi) == ["performance", "performance"]
    set_temperature(pi, "cpu-thermal", 83.0)
    t[0] = 20.0
    svc.tick()
    assert governors(pi) == ["schedutil", "schedutil"]
    assert svc.status()["max_temperature_c"] == 83.0


def test_this_machine_has_no_controls_and_says_so(tmp_path):
    r = subprocess.run([sys.executable, "-m", "appliance", "power", "status", "--json"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    # A container or a desktop without cpufreq: a dry run, with the reason, and no crash.
    if s["dry_run"]:
        assert s["dry_run_reason"]
    assert set(s) >= {"platform", "mode", "modes", "temperatures_c", "throttled", "dry_run"}
    svc = PowerService(PowerConfig(policy="thermal"), tmp_path)
    svc.tick()
    assert svc.status()["platform"] in ("linux", "raspberry-pi", "jetson")
    if svc.backend.dry_run:
        assert svc.status()["changes"] == 0 and "dry_run_reason" in svc.status()


def test_service_thread_starts_and_stops_quickly(pi, tmp_path):
    # An hour between readings: stop() must cut the wait short, not sit it out.
    svc = PowerService(PowerConfig(policy="monitor", root=str(pi), interval_s=3600.0), tmp_path)
    svc.start()
    deadline = time.monotonic() + 30  # guards against a hang only
    while svc.status()["mode"] is None:  # until the first reading is in
        assert time.monotonic() < deadline, "no reading from the power thread"
        time.sleep(0.01)
    stopper = threading.Thread(target=svc.stop, daemon=True)
    stopper.start()
    stopper.join(60)  # far less than the interval; a stop that waited it out would still be going
    assert not stopper.is_alive() and not svc._thread.is_alive()
    assert svc.status()["mode"] == "ondemand" and svc.status()["throttled"] is False
    assert governors(pi) == ["ondemand", "ondemand"]  # monitor changes nothing
