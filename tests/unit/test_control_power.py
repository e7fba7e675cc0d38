"""Power manager: parsing the tools' documented output, mode ladders, and the policy."""
from __future__ import annotations

from datetime import datetime

import pytest

from appliance.config import PowerConfig, PowerScheduleEntry, from_dict
from appliance.control.power import PowerPolicy, parse_schedule
from appliance.control.power_backends import (
    Reading,
    nvpmodel_ladder,
    parse_jetson_clocks_show,
    parse_nvpmodel_modes,
    parse_nvpmodel_query,
    parse_throttled,
)
from appliance.errors import ApplianceError


def test_nvpmodel_query():
    assert parse_nvpmodel_query("NV Power Mode: MAXN\n0\n") == ("MAXN", 0)
    assert parse_nvpmodel_query("NVPM WARN: x\nNV Power Mode: MODE_15W_6CORE\n2\n") == ("MODE_15W_6CORE", 2)
    assert parse_nvpmodel_query("nothing here") is None


def test_nvpmodel_modes_from_verbose_parse_and_from_the_conf_file():
    verbose = ("NVPM VERB: Config file: /etc/nvpmodel.conf\nNVPM VERB: POWER_MODEL: ID=0 NAME=15W\n"
               "NVPM VERB: POWER_MODEL: ID=1 NAME=7W\nNVPM VERB: PM_CONFIG: DEFAULT=15W(0)\n")
    assert parse_nvpmodel_modes(verbose) == [(0, "15W"), (1, "7W")]
    conf = "< POWER_MODEL ID=0 NAME=MAXN >\nCPU_ONLINE CORE_0 1\n< POWER_MODEL ID=1 NAME=5W >\n"
    assert parse_nvpmodel_modes(conf) == [(0, "MAXN"), (1, "5W")]


@pytest.mark.parametrize("modes, ladder", [
    ([(0, "MAXN"), (1, "5W")], ["MAXN", "5W"]),  # Jetson Nano
    ([(0, "15W"), (1, "7W"), (2, "MAXN_SUPER")], ["MAXN_SUPER", "15W", "7W"]),  # Orin Nano, JetPack 6.2
    ([(0, "MAXN"), (1, "MODE_15W"), (2, "MODE_30W"), (3, "MODE_50W")],
     ["MAXN", "MODE_50W", "MODE_30W", "MODE_15W"]),  # AGX Orin: ids are not in power order
    ([(0, "MODE_15W_2CORE"), (1, "MODE_15W_4CORE"), (2, "MODE_10W_DESKTOP")],
     ["MODE_15W_2CORE", "MODE_15W_4CORE", "MODE_10W_DESKTOP"]),  # ties keep id order
])
def test_nvpmodel_ladder_is_fastest_first(modes, ladder):
    assert nvpmodel_ladder(modes) == ladder


def test_throttled_bits():
    assert parse_throttled("throttled=0x50005\n") == 0x50005
    assert parse_throttled("throttled=0x0") == 0
    with pytest.raises(Exception, match="unexpected output"):
        parse_throttled("error=1")


def test_jetson_clocks_show():
    line = "cpu{n}: Online=1 Governor=schedutil MinFreq={lo} MaxFreq=1428000 CurrentFreq={cur} IdleStates: WFI=1 c7=1"
    locked = "\n".join(line.format(n=n, lo=1428000, cur=1428000) for n in range(4))
    dynamic = "\n".join(line.format(n=n, lo=102000, cur=921600) for n in range(4))
    assert parse_jetson_clocks_show("SOC family:tegra210\n" + locked + "\nNV Power Mode: MAXN") is True
    assert parse_jetson_clocks_show(dynamic) is False
    assert parse_jetson_clocks_show("nothing") is None


def test_schedule_needs_valid_times_and_entries():
    # Checked by the config when it loads (appliance/config/power.py); parse_schedule sorts.
    with pytest.raises(ApplianceError, match=r"power.schedule\[1\].at: expected HH:MM"):
        from_dict({"power": {"schedule": [{"at": "07:00", "mode": "a"}, {"at": "25:00", "mode": "b"}]}})
    with pytest.raises(ApplianceError, match="needs at least one entry"):
        from_dict({"power": {"policy": "schedule"}})
    assert parse_schedule(PowerConfig(schedule=[PowerScheduleEntry("22:30", "b"),
                                                PowerScheduleEntry("7:00", "a")])) == [(420, "a"), (1350, "b")]


LADDER = ["MAXN", "15W", "7W"]


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_thermal_policy_steps_down_when_hot_and_up_after_cooldown():
    clock = Clock()
    cfg = PowerConfig(policy="thermal", interval_s=1.0, cooldown_s=30.0, step_down_c=80, step_up_c=70)
    p = PowerPolicy(cfg, LADDER, clock)
    hot, warm, cool = Reading({"cpu": 85.0}), Reading({"cpu": 75.0}), Reading({"cpu": 60.0})
    assert p.decide(cool) == ("MAXN", "thermal")
    assert p.decide(hot) == ("15W", "thermal: 85.0 C >= 80 C")
    clock.t = 2.0
    assert p.decide(hot)[0] == "15W"  # one step every three readings at most
    clock.t = 3.0
    assert p.decide(hot)[0] == "7W"
    clock.t = 10.0
    assert p.decide(hot)[0] == "7W"  # the bottom rung
    assert p.decide(warm)[0] == "7W"  # between the thresholds: hold
    clock.t = 11.0
    assert p.decide(cool)[0] == "7W"
    clock.t = 40.0
    assert p.decide(cool)[0] == "7W"  # cool for 29 s only
    clock.t = 41.0
    assert p.decide(cool) == ("15W", "cooldown: 30 s at or below 70 C")
    clock.t = 70.0
    assert p.decide(cool)[0] == "15W"  # a new cool-down starts with each step
    clock.t = 71.0
    assert p.decide(cool)[0] == "MAXN"


def test_throttling_counts_as_hot_and_constant_zones_are_ignored():
    p = PowerPolicy(PowerConfig(policy="thermal"), LADDER, Clock())
    assert p.decide(Reading({"PMIC-Die": 100.0, "cpu": 40.0}))[0] == "MAXN"
    mode, why = p.decide(Reading({"cpu": 40.0}, throttled=True, throttle_flags=["under-voltage"]))
    assert mode == "15W" and why == "thermal: throttled (under-voltage)"


def test_watched_zones_from_config():
    p = PowerPolicy(PowerConfig(policy="thermal", zones=["gpu"]), LADDER, Clock())
    assert p.decide(Reading({"cpu": 95.0, "gpu": 50.0}))[0] == "MAXN"


def test_fixed_policy_and_unknown_modes():
    assert PowerPolicy(PowerConfig(policy="fixed", mode="15W"), LADDER, Clock()).decide(
        Reading({"cpu": 99.0})) == ("15W", "fixed")
    p = PowerPolicy(PowerConfig(policy="fixed", mode="30W"), LADDER, Clock())
    assert "unknown mode(s) 30W" in p.error and p.decide(Reading()) is None
    assert PowerPolicy(PowerConfig(policy="thermal"), [], Clock()).error == "no power modes on this platform"
    assert PowerPolicy(PowerConfig(), LADDER, Clock()).decide(Reading({"cpu": 99.0})) is None  # monitor


def test_schedule_policy_follows_the_clock_with_thermal_protection():
    now = [datetime(2026, 1, 1, 6, 0)]
    cfg = PowerConfig(policy="schedule", schedule=[PowerScheduleEntry("07:00", "MAXN"),
                                                   PowerScheduleEntry("22:00", "7W")])
    p = PowerPolicy(cfg, LADDER, Clock(), local_now=lambda: now[0])
    assert p.decide(Reading({"cpu": 50.0}))[0] == "7W"  # before 07:00: yesterday's 22:00 entry
    now[0] = datetime(2026, 1, 1, 7, 0)
    assert p.decide(Reading({"cpu": 50.0}))[0] == "MAXN"
    assert p.decide(Reading({"cpu": 90.0}))[0] == "15W"  # hot: one rung below the schedule
    now[0] = datetime(2026, 1, 1, 23, 15)
    assert p.decide(Reading({"cpu": 90.0}))[0] == "7W"  # cannot go below the bottom


@pytest.mark.parametrize("text, expected", [
    ("power: {policy: cool}\n", "power.policy: must be one of monitor, fixed, thermal, schedule"),
    ("power: {step_up_c: 85}\n", "power.step_up_c: must be below power.step_down_c (80.0)"),
    ("power: {schedule: [{at: '07:00'}]}\n", "power.schedule[0].mode: required key is missing"),
    ("power: {zones: cpu}\n", "power.zones: expected a list"),
    ("adaptive: {min_stride: 3, max_stride: 2}\n", "adaptive.min_stride: must not exceed adaptive.max_stride (2)"),
    ("adaptive: {up_load: 0}\n", "adaptive.up_load: must be between 0.05 and 1.0"),
    ("cameras: [{id: a, source: x, rtsp_transport: http}]\n", "cameras[0].rtsp_transport: must be one of tcp, udp"),
    ("cameras: [{id: a, source: x, stall_timeout_s: 0}]\n", "cameras[0].stall_timeout_s: must be between 0.5"),
])
def test_config_errors_name_the_key(tmp_path, text, expected):
    from appliance import config

    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ApplianceError) as e:
        config.load(p)
    assert expected in str(e.value)
