"""`power`: power modes and thermal steps (appliance/control/power.py)."""
from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import field_validator, model_validator
from pydantic_core import PydanticCustomError

from appliance.config.base import OptionalText, Problems, Section, Text, key

_HH_MM = re.compile(r"(\d{1,2}):(\d{2})")


def minute_of_day(at: str) -> int:
    """"07:30" -> 450. ValueError unless HH:MM within 00:00-23:59."""
    m = _HH_MM.fullmatch(at.strip())
    if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise ValueError(f"expected HH:MM (00:00-23:59), got {at!r}")
    return int(m.group(1)) * 60 + int(m.group(2))


class PowerScheduleEntry(Section):
    at: str = key(type="string `HH:MM`",
                  doc="local time from which the entry applies, every day. Quote it (`at: \"22:00\"`): YAML "
                      "reads an unquoted `22:00` as the number 1320, which is refused")
    mode: Text = key(doc="the mode from then on")

    def __init__(self, *args: Any, **data: Any) -> None:
        """PowerScheduleEntry("22:00", "7W") as well as PowerScheduleEntry(at=..., mode=...)."""
        if len(args) > 2:
            raise TypeError(f"PowerScheduleEntry takes at and mode, got {len(args)} positional arguments")
        data.update(zip(("at", "mode"), args))
        super().__init__(**data)

    @field_validator("at", mode="before")
    @classmethod
    def _quoted(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            raise PydanticCustomError(
                "time_of_day", "expected HH:MM in quotes, got int {value} (YAML reads an unquoted "
                               "22:00 as the number 1320: write at: \"22:00\")", {"value": value})
        return value

    @field_validator("at")
    @classmethod
    def _time_of_day(cls, value: str) -> str:
        try:
            minute_of_day(value)
        except ValueError as e:
            raise PydanticCustomError("time_of_day", "{reason}", {"reason": str(e)}) from None
        return value


class PowerConfig(Section):
    policy: Literal["monitor", "fixed", "thermal", "schedule"] = key(
        "monitor",
        doc="`monitor`: read and report only. `fixed`: hold `power.mode`. `thermal`: hold `power.mode` (or "
            "the fastest), one mode down when hot or throttled, back up after `cooldown_s` cool. "
            "`schedule`: the mode of the latest `power.schedule` entry, with the thermal steps on top")
    mode: OptionalText = key(
        None, doc="`fixed`: the mode to hold; `thermal`: the mode when cool; none: the fastest. A name from "
                  "`appliance power status` (nvpmodel mode name, or cpufreq governor)")
    modes: list[Text] = key(
        factory=list, shown="the platform's",
        doc="the modes to use, fastest first. Default: nvpmodel modes with MAXN first, then by the watts in "
            "their names; or the governors performance, schedutil, ondemand, conservative, powersave that "
            "the CPU offers. When set, `power.mode` and the schedule's modes must be among them")
    step_down_c: float = key(
        80.0, lo=20.0, hi=150.0,
        doc="step one mode down when the hottest watched zone is at or above this (at most one step every "
            "three readings)")
    step_up_c: float = key(
        70.0, lo=0.0, hi=150.0,
        doc="step back up after `cooldown_s` at or below this, with no throttling; below `step_down_c`")
    cooldown_s: float = key(120.0, lo=0.0, hi=86400.0, doc="time cool before each step up")
    interval_s: float = key(5.0, lo=0.05, hi=3600.0, doc="seconds between readings")
    schedule: list[PowerScheduleEntry] = key(
        factory=list, shown="none",
        doc="for `policy: schedule` (which needs at least one entry): entries of `at` and `mode`; the "
            "latest entry whose time has passed today applies, before the first one yesterday's last")
    zones: list[Text] = key(
        factory=list, shown="all",
        doc="thermal zone types to watch (e.g. `tj-thermal`); default: all, except zones known to report a "
            "constant (`PMIC-Die`)")
    jetson_clocks: bool = key(
        False, doc="Jetson: lock clocks at their maximum (`jetson_clocks`) while in the fastest mode; the "
                   "clocks are stored first (`<data dir>/jetson_clocks.conf`) and restored before any mode "
                   "change")
    backend: Literal["auto", "jetson", "linux", "none"] = key(
        "auto", doc="`auto`: Jetson when `/etc/nv_tegra_release` exists or the device tree says "
                    "`nvidia,tegra`, else Linux (cpufreq, thermal zones, `vcgencmd`)")
    root: Text = key("/", doc="where `/sys`, `/proc` and `/etc` are read from; tests point it at a fake tree")
    nvpmodel_cmd: Text = key("nvpmodel", doc="the nvpmodel executable, a name looked up on PATH or a path")
    jetson_clocks_cmd: Text = key("jetson_clocks", doc="the jetson_clocks executable")
    vcgencmd_cmd: Text = key(
        "vcgencmd", doc="the vcgencmd executable (Raspberry Pi); without it throttling is not read")

    @model_validator(mode="after")
    def _rules(self) -> "PowerConfig":
        p = Problems()
        if self.step_up_c >= self.step_down_c:
            p.add("step_up_c", f"must be below power.step_down_c ({self.step_down_c})")
        if self.policy == "schedule" and not self.schedule:
            p.add("schedule", "the schedule policy needs at least one entry")
        if self.modes:
            if self.mode is not None and self.mode not in self.modes:
                p.add("mode", f"{self.mode!r} is not one of power.modes ({', '.join(self.modes)})")
            for i, entry in enumerate(self.schedule):
                if entry.mode not in self.modes:
                    p.add(f"schedule[{i}].mode",
                          f"{entry.mode!r} is not one of power.modes ({', '.join(self.modes)})")
        p.raise_any()
        return self
