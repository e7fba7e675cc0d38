"""The power and thermal manager: a policy over the platform's power modes.

Modes form a ladder from fastest to most frugal (power.modes, or the platform's own
order: nvpmodel modes with MAXN first and then by watts; cpufreq governors from
performance to powersave). The policy (power.policy) picks the rung:

- monitor: read temperatures, throttling and power; change nothing (the default).
- fixed: hold power.mode.
- thermal: hold power.mode (or the fastest), step one rung down when the hottest watched
  zone reaches step_down_c or the platform reports throttling (at most one step every
  three readings, so a step has time to show), and one rung back up after
  cooldown_s below step_up_c with no throttling.
- schedule: the mode of the latest power.schedule entry (HH:MM, local time, daily), with
  the same thermal protection on top.

It runs beside the pipeline as a service (`power`) and never stops it: a reading or a
change that fails is logged and reported in status, and where the hardware or its tools
are missing it is a dry run that says why and only logs what it would do.
"""
from __future__ import annotations

import logging
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from appliance import metrics
from appliance.config import PowerConfig
from appliance.config.power import minute_of_day
from appliance.control.power_backends import CONSTANT_ZONES, Backend, JetsonBackend, PowerError, Reading, detect

log = logging.getLogger(__name__)

DOWN_EVERY_READINGS = 3


def parse_schedule(cfg: PowerConfig) -> list[tuple[int, str]]:
    """(minute of the day, mode), sorted. The config checked the times (HH:MM) and that
    the schedule policy has entries when it loaded."""
    return sorted((minute_of_day(entry.at), entry.mode) for entry in cfg.schedule)


class PowerPolicy:
    """Decides the mode; knows nothing about how modes are set."""

    def __init__(self, cfg: PowerConfig, ladder: list[str], clock: Callable[[], float] = time.monotonic,
                 local_now: Callable[[], datetime] = datetime.now):
        self.cfg = cfg
        self.ladder = ladder
        self.schedule = parse_schedule(cfg)
        self._clock = clock
        self._local_now = local_now
        self.offset = 0  # rungs below the base, for heat
        self._last_step = float("-inf")
        self._cool_since: float | None = None
        self.error = self._check()

    def _check(self) -> str:
        names = [self.cfg.mode] if self.cfg.mode else []
        names += [m for _, m in self.schedule]
        unknown = [n for n in names if n not in self.ladder]
        if self.cfg.policy != "monitor" and not self.ladder:
            return "no power modes on this platform"
        if self.cfg.policy != "monitor" and unknown:
            return f"unknown mode(s) {', '.join(unknown)} (modes: {', '.join(self.ladder)})"
        return ""

    def watched(self, temps: dict[str, float]) -> dict[str, float]:
        if self.cfg.zones:
            return {z: t for z, t in temps.items() if z in self.cfg.zones}
        return {z: t for z, t in temps.items() if z not in CONSTANT_ZONES}

    def base(self) -> int:
        if self.cfg.policy == "schedule":
            now = self._local_now()
            minute = now.hour * 60 + now.minute
            due = [mode for at, mode in self.schedule if at <= minute] or [self.schedule[-1][1]]
            return self.ladder.index(due[-1])
        return self.ladder.index(self.cfg.mode) if self.cfg.mode else 0

    def decide(self, reading: Reading) -> tuple[str, str] | None:
        """The mode to be in now and why, or None to leave things as they are."""
        if self.cfg.policy == "monitor" or self.error:
            return None
        base, why = self.base(), self.cfg.policy
        if self.cfg.policy in ("thermal", "schedule"):
            why = self._thermal(reading, base) or why
        return self.ladder[min(base + self.offset, len(self.ladder) - 1)], why

    def _thermal(self, r: Reading, base: int) -> str:
        now, cfg = self._clock(), self.cfg
        temps = self.watched(r.temperatures)
        hottest = max(temps.values(), default=None)
        hot = (hottest is not None and hottest >= cfg.step_down_c) or bool(r.throttled)
        if hot:
            self._cool_since = None
            if base + self.offset < len(self.ladder) - 1 and \
                    now - self._last_step >= DOWN_EVERY_READINGS * cfg.interval_s:
                self.offset += 1
                self._last_step = now
                return "thermal: " + (f"{hottest:.1f} C >= {cfg.step_down_c:g} C"
                                      if hottest is not None and hottest >= cfg.step_down_c
                                      else f"throttled ({', '.join(r.throttle_flags)})")
            return ""
        if (hottest is None or hottest <= cfg.step_up_c) and not r.throttled:
            self._cool_since = now if self._cool_since is None else self._cool_since
            if self.offset and now - self._cool_since >= cfg.cooldown_s:
                self.offset -= 1
                self._last_step, self._cool_since = now, now
                return f"cooldown: {cfg.cooldown_s:g} s at or below {cfg.step_up_c:g} C"
        else:
            self._cool_since = None
        return ""


class PowerService:
    """The policy on its own thread, every power.interval_s; a pipeline service."""

    name = "power"

    def __init__(self, cfg: PowerConfig, data_dir: Path | None = None,
                 on_change: Callable[..., None] | None = None, backend: Backend | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 local_now: Callable[[], datetime] = datetime.now):
        self.cfg = cfg
        self.backend = backend or detect(cfg)
        self.policy = PowerPolicy(cfg, self.backend.modes(), clock, local_now)
        self.on_change = on_change
        self.clocks_store = (data_dir or Path(".")) / "jetson_clocks.conf"
        self.mode: str | None = None
        self.would_be: str | None = None  # dry run: the mode we would be in
        self.reading = Reading()
        self.changes = 0
        self.last_change: dict[str, Any] | None = None
        self.error = self.policy.error
        self._errors_logged: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="power", daemon=True)
        if self.backend.dry_run:
            log.info("power: %s platform, dry run: %s", self.backend.platform, self.backend.dry_run_reason)
        else:
            log.info("power: %s platform, backend %s, modes %s, policy %s", self.backend.platform,
                     self.backend.name, ", ".join(self.backend.modes()) or "none", cfg.policy)
        if self.policy.error:
            log.error("power: policy %s not applied: %s; monitoring only", cfg.policy, self.policy.error)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.cfg.interval_s + 5)

    def _run(self) -> None:
        while True:
            try:
                self.tick()
            except Exception:  # never let a reading stop the loop, let alone the pipeline
                log.exception("power: tick failed")
            if self._stop.wait(self.cfg.interval_s):
                return

    def _report(self, err: str) -> None:
        self.error = err
        if err not in self._errors_logged:  # once per distinct error, not every interval
            self._errors_logged.add(err)
            log.warning("power: %s", err)

    def tick(self) -> None:
        try:
            self.reading = self.backend.read()
            self.mode = self.backend.current_mode()
        except PowerError as e:
            self._report(str(e))
        for zone, celsius in self.reading.temperatures.items():
            metrics.TEMPERATURE.labels(zone).set(celsius)
        for rail, watts in self.reading.rails_w.items():
            metrics.POWER_RAIL_WATTS.labels(rail).set(watts)
        metrics.POWER_THROTTLED.set(1 if self.reading.throttled else 0)
        decision = self.policy.decide(self.reading)
        current = self.would_be if self.backend.dry_run else self.mode
        if decision is not None and decision[0] != current:
            self._apply(decision[0], current, decision[1])
        for m in self.backend.modes():
            metrics.POWER_MODE.labels(m).set(1 if m == (self.mode or self.would_be) else 0)

    def _apply(self, mode: str, previous: str | None, reason: str) -> None:
        kind = reason.split(":")[0]
        if self.backend.dry_run:
            log.info("power: dry run: would set mode %s (was %s): %s", mode, previous or "unknown", reason)
            self.would_be = mode
            metrics.POWER_MODE_CHANGES.labels(kind).inc()
            return
        try:
            if isinstance(self.backend, JetsonBackend) and self.cfg.jetson_clocks:
                self.backend.unlock_clocks(self.clocks_store)
            self.backend.set_mode(mode)
            if isinstance(self.backend, JetsonBackend) and self.cfg.jetson_clocks \
                    and mode == self.policy.ladder[0]:
                self.backend.lock_clocks(self.clocks_store)
        except PowerError as e:
            self._report(f"cannot set mode {mode}: {e}")
            return
        self.error = ""
        self.mode = mode
        self.changes += 1
        self.last_change = {"mode": mode, "previous": previous, "reason": reason, "at": time.time()}
        log.warning("power: mode %s -> %s: %s", previous or "unknown", mode, reason)
        metrics.POWER_MODE_CHANGES.labels(kind).inc()
        if self.on_change is not None:
            detail = {"temperatures_c": self.reading.temperatures, "throttled": self.reading.throttled}
            try:
                self.on_change("power", "", mode, previous or "", reason, detail)
            except Exception:
                log.exception("power: reporting the change failed")

    def status(self) -> dict[str, Any]:
        temps = self.policy.watched(self.reading.temperatures)
        out = {"platform": self.backend.platform, "dry_run": self.backend.dry_run,
               "policy": self.cfg.policy, "mode": self.mode,
               "max_temperature_c": max(temps.values(), default=None),
               "throttled": self.reading.throttled, "changes": self.changes}
        if self.backend.dry_run:
            out["dry_run_reason"] = self.backend.dry_run_reason
            out["would_be_mode"] = self.would_be
        if self.error:
            out["error"] = self.error
        return out


def read_status(cfg: PowerConfig) -> dict[str, Any]:
    """One reading for `appliance power status`: platform, modes, temperatures, throttling."""
    backend = detect(cfg)
    out: dict[str, Any] = {"platform": backend.platform, "model": backend.model,
                           "backend": backend.name, "dry_run": backend.dry_run}
    if backend.dry_run:
        out["dry_run_reason"] = backend.dry_run_reason
    errors = []
    try:
        reading = backend.read()
        out["mode"] = backend.current_mode()
    except PowerError as e:
        reading, out["mode"] = Reading(), None
        errors.append(str(e))
    policy = PowerPolicy(cfg, backend.modes())
    out.update({"modes": backend.modes(), "policy": cfg.policy,
                "temperatures_c": reading.temperatures,
                "watched_zones": sorted(policy.watched(reading.temperatures)),
                "throttled": reading.throttled, "throttle_flags": reading.throttle_flags,
                "rails_w": reading.rails_w, **backend.extra()})
    if policy.error:
        errors.append(f"policy: {policy.error}")
    if errors:
        out["errors"] = errors
    return out


def describe(s: dict[str, Any]) -> str:
    lines = [f"platform {s['platform']}" + (f" ({s['model']})" if s.get("model") else "")
             + f", backend {s['backend']}"
             + (f", DRY RUN: {s['dry_run_reason']}" if s["dry_run"] else "")]
    lines.append(f"mode {s.get('mode') or 'unknown'}; available: {', '.join(s['modes']) or 'none'}; "
                 f"policy {s['policy']}")
    temps = ", ".join(f"{z} {t:.1f} C" for z, t in s["temperatures_c"].items())
    lines.append(f"temperatures: {temps or 'no thermal zones'}")
    thr = s["throttled"]
    lines.append("throttling: " + ("not reported on this platform" if thr is None else
                                    ("YES " if thr else "no ") + f"({', '.join(s['throttle_flags']) or 'no flags'})"))
    if s["rails_w"]:
        lines.append("power: " + ", ".join(f"{r} {w:.2f} W" for r, w in s["rails_w"].items()))
    if s.get("jetson_clocks_locked") is not None:
        lines.append(f"jetson_clocks: {'locked at maximum' if s['jetson_clocks_locked'] else 'dynamic'}")
    lines += [f"error: {e}" for e in s.get("errors", [])]
    return "\n".join(lines)
