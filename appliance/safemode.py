"""Safe mode: what `appliance run` does when its config fails validation at boot, or
validates but the appliance cannot start with it (a damaged model file, a database it
cannot open: `START_FAILED`).

Exiting non-zero would make systemd restart it into the same error until the start limit
gives up, and leave a device on a roof unreachable. Instead it starts without cameras,
detector or uplink, with only the dashboard, which shows the errors and lets a logged-in
installer edit, validate and save the config, then restart (web/safemode.py).

- `<data dir>/last-good-config.yaml`: a copy of the last config that validated at start
  (written by every normal start, mode 0600: it holds the password hash). Safe mode takes
  the dashboard's address, port and password hash from it.
- `<data dir>/safe-mode.json`: `{"since": unix time, "errors": [...], "config": path,
  "reason": why}`, present while the appliance is in safe mode (`appliance selftest` reports it as a
  failure); a normal start removes it.

The dashboard's address and login in safe mode come from, in order: the last good config;
else the broken file's own `web` section, when that section is valid by itself and sets a
password; else 127.0.0.1:8080 with no login (like a dashboard without a password: only
someone on the device itself can reach it, so a broken file never opens an unprotected
editor to the network). `--web-port` overrides the port as usual.

Under systemd it sends READY=1 and `STATUS=safe mode: ...`, and pings the watchdog while
the dashboard's server thread lives, so the unit is not restarted in a loop. A restart
asked for from the dashboard exits with EXIT_RESTART (75), which systemd's
Restart=on-failure (or Docker's restart policy) turns into a fresh start with the new
config; SIGTERM exits 0.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from appliance.errors import ApplianceError

log = logging.getLogger("appliance.safemode")

SAFE_MODE_FILE = "safe-mode.json"
LAST_GOOD_FILE = "last-good-config.yaml"
EXIT_RESTART = 75  # EX_TEMPFAIL: "try again"; non-zero so that Restart=on-failure restarts
FALLBACK_HOST, FALLBACK_PORT = "127.0.0.1", 8080
# Why safe mode: the page, /healthz, the status line and the self-test say it.
CONFIG_INVALID = "the config does not validate"
START_FAILED = "the appliance cannot start with this config"


def marker_path(data: Path) -> Path:
    return data / SAFE_MODE_FILE


def last_good_path(data: Path) -> Path:
    return data / LAST_GOOD_FILE


def wanted(choice: str, env: Mapping[str, str]) -> bool:
    """--safe-mode auto|on|off: auto is on under systemd ($NOTIFY_SOCKET set), where an exit
    would be a restart loop, and off in a terminal, where an exit with the errors is clearer."""
    if choice == "auto":
        return bool(env.get("NOTIFY_SOCKET"))
    return choice == "on"


def remember_good(config_path: str | os.PathLike | None, data: Path) -> None:
    """Keep a copy of a config that validated at start; failures only warn."""
    if config_path is None:
        return
    target = last_good_path(data)
    try:
        text = Path(config_path).read_bytes()
        if target.exists() and target.read_bytes() == text:
            return
        data.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as e:
        log.warning("cannot keep a copy of the good config in %s: %s", target, e.strerror or e)


def leave(data: Path) -> None:
    """A normal start: no longer in safe mode."""
    try:
        marker_path(data).unlink(missing_ok=True)
    except OSError as e:
        log.warning("cannot remove %s: %s", marker_path(data), e.strerror or e)


def write_marker(data: Path, errors: list[str], config_path: str | None, now: float | None = None,
                 reason: str = CONFIG_INVALID) -> None:
    path = marker_path(data)
    body = {"since": time.time() if now is None else now, "errors": errors, "config": config_path, "reason": reason}
    try:
        data.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(body, indent=1) + "\n")
        os.replace(tmp, path)
    except OSError as e:
        log.error("cannot write %s: %s", path, e.strerror or e)


def read_marker(data: Path) -> dict[str, Any] | None:
    """safe-mode.json's contents, or None when not in safe mode (or unreadable)."""
    try:
        return json.loads(marker_path(data).read_text())
    except (OSError, ValueError):
        return None


@dataclass
class WebAccess:
    host: str
    port: int
    password_hash: str | None
    source: str  # where these came from, for the log and the page


def web_access(config_path: str | None, data: Path) -> WebAccess:
    """The dashboard's address and login in safe mode (module docstring)."""
    from appliance import config as config_mod
    from appliance.config.loader import parse_yaml, read_text
    from appliance.config.web import WebConfig

    good = last_good_path(data)
    if good.is_file():
        try:
            w = config_mod.load(good).web  # no file checks: only the web section matters
            return WebAccess(w.host, w.port, config_mod.secret_value(w.password_hash) or None,
                             f"the last good config ({good})")
        except ApplianceError as e:
            log.warning("safe mode: the last good config does not load either: %s", e)
    if config_path is not None:
        try:
            raw = parse_yaml(read_text(config_path))
            w = WebConfig.model_validate(raw["web"])
            if w.password_hash is not None:
                return WebAccess(w.host, w.port, w.password_hash.get_secret_value(),
                                 f"the web section of {config_path}")
        except Exception:  # anything wrong with it: fall back below
            pass
    return WebAccess(FALLBACK_HOST, FALLBACK_PORT, None, "no good config: local only, no login")


@dataclass
class SafeMode:
    """What the safe-mode pages need: the errors, the config file, and the way to restart."""

    config_path: str | None
    data_dir: Path
    errors: list[str]
    since: float = field(default_factory=time.time)
    reason: str = CONFIG_INVALID
    wake: threading.Event = field(default_factory=threading.Event)  # set by a signal or a restart
    restart_requested: bool = False

    @property
    def short(self) -> str:
        """The reason in two words, for the page's badge and systemd's status line."""
        return "config invalid" if self.reason == CONFIG_INVALID else "start failed"

    def request_restart(self) -> None:
        self.restart_requested = True
        self.wake.set()

    def status(self) -> dict[str, Any]:
        return {"running": False, "safe_mode": True, "since": self.since, "errors": self.errors,
                "reason": self.reason, "config": self.config_path, "cameras": {}, "services": {}}


def run(config_path: str | None, data: Path, errors: list[str], *, reason: str = CONFIG_INVALID,
        web_port: int | None = None, env: Mapping[str, str] | None = None, install_signals: bool = True,
        stop: threading.Event | None = None, on_started: Callable[[Any], None] | None = None) -> int:
    """Serve the safe-mode dashboard until SIGTERM/SIGINT (0) or a restart request (EXIT_RESTART)."""
    from appliance.config import Config, WebConfig
    from appliance.control.systemd import Notifier
    from web.safemode import install
    from web.service import WebService

    env = os.environ if env is None else env
    for line in errors:
        log.error("config: %s", line)
    log.error("safe mode: %s; no cameras, no uplink; fix it on the dashboard (or in the file) and restart",
              reason)
    state = SafeMode(config_path, data, errors, reason=reason, wake=stop or threading.Event())
    write_marker(data, errors, config_path, state.since, reason)
    access = web_access(config_path, data)

    if install_signals:
        def on_signal(signum, _frame):
            log.info("received %s: leaving safe mode", signal.Signals(signum).name)
            state.wake.set()
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)

    web_cfg = WebConfig.model_validate({"host": access.host, "port": access.port,
                                        "password_hash": access.password_hash})
    cfg = Config(web=web_cfg)
    service = WebService(cfg, state, data, None, port=web_port)
    install(service.app, state, assets_dir=_assets_dir(), source=access.source)
    service.start()
    log.warning("safe mode: dashboard address and login from %s%s", access.source,
                f"; open {service.url}safe-mode" if service.url else "")
    if on_started is not None:
        on_started(service)

    notifier = Notifier(env)
    status_line = f"STATUS=safe mode: {state.short} ({len(errors)} error{'s' if len(errors) != 1 else ''})" + \
        (f", dashboard {service.url}safe-mode" if service.url else "")
    notifier.notify("READY=1", status_line)
    ping_s = notifier.watchdog_s / 2 if notifier.watchdog_s else None
    try:
        while not state.wake.is_set():
            serving = service._thread is not None and service._thread.is_alive()
            if ping_s and (serving or service.error):  # a port clash is no reason for a restart loop
                notifier.notify("WATCHDOG=1")
            state.wake.wait(min(ping_s or 1.0, 1.0))
        if state.restart_requested:
            time.sleep(0.5)  # let the page that asked for it get its answer
    finally:
        notifier.notify("STOPPING=1", "STATUS=stopping (safe mode)")
        service.stop()
        notifier.close()
    if state.restart_requested:
        log.warning("safe mode: restart requested from the dashboard; exiting with status %d so that "
                    "the service manager starts the appliance again", EXIT_RESTART)
        return EXIT_RESTART
    return 0


def _assets_dir() -> Path:
    from appliance import paths

    return paths.assets_dir()
