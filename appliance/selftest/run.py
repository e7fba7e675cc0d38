"""`appliance selftest`: every check in order, the report kept, published, returned.

    report = run_selftest(cfg, data_dir, config_path=Path("/etc/appliance/config.yaml"))
    print(report.summary()); sys.exit(0 if report.ok else 1)

Order: safe mode, the config, each camera (its first frame feeds the detector), the
detector, the classifier, the data directory, the database, free disk, the uplink, the
clock, temperatures, the dashboard. A check that raises is reported as failed with the
error: the self-test always finishes. One self-test runs at a time per data directory
(the dashboard's button and a terminal may ask at once).
"""
from __future__ import annotations

import fcntl
import logging
import time
from pathlib import Path
from typing import Callable

from appliance import __version__, paths
from appliance.config import Config
from appliance.errors import ApplianceError
from appliance.selftest import checks, mqtt, system
from appliance.selftest.report import Check, Report, failed, save

log = logging.getLogger(__name__)

# What `only` may name (a camera's check is "camera:<id>", named by "camera").
GROUPS = ("mode", "config", "camera", "detector", "classifier", "data_dir", "database", "disk", "uplink",
          "clock", "thermal", "dashboard")
LOCK_FILE = "selftest.lock"


def _guarded(name: str, fn: Callable[[], Check]) -> Check:
    try:
        return fn()
    except Exception as e:  # a check must never stop the others
        log.exception("selftest: check %s raised", name)
        return failed(name, f"the check itself failed: {type(e).__name__}: {e}",
                      "a bug in the self-test or something very wrong with the device: the log has the details")


def run_selftest(cfg: Config | None, data_dir: Path, *, config_path: Path | None, timeout_s: float = 10.0,
                 only: set[str] | None = None) -> Report:
    """Run the checks and keep the report in `<data_dir>/selftest.json`.

    cfg: the config the appliance runs with (None when it does not load: the checks that
    need one are left out, and the config check says why). config_path: the file the
    config check loads again, as `appliance run` would now. only: check groups to run
    (GROUPS); None runs all. ApplianceError when another self-test holds the data dir.
    """
    unknown = sorted(set(only or ()) - set(GROUPS))
    if unknown:
        raise ApplianceError(f"selftest: unknown check(s) {', '.join(unknown)}; valid: {', '.join(GROUPS)}")
    with _exclusive(data_dir):
        return _run(cfg, data_dir, config_path, timeout_s, only)


class _exclusive:
    def __init__(self, data_dir: Path):
        self.path = data_dir / LOCK_FILE
        self.f = None

    def __enter__(self) -> None:
        try:
            self.f = open(self.path, "a")
        except OSError:
            return  # a data dir that cannot be written: the data_dir check reports it
        try:
            fcntl.flock(self.f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.f.close()
            raise ApplianceError(f"a self-test is running already (data dir {self.path.parent})") from None

    def __exit__(self, *exc: object) -> None:
        if self.f is not None:
            self.f.close()


def _run(cfg: Config | None, data_dir: Path, config_path: Path | None, timeout_s: float,
         only: set[str] | None) -> Report:
    assets = paths.assets_dir()
    t0 = time.monotonic()
    base = cfg or Config()  # the device's checks read their settings from the defaults then
    report = Report(device=base.device.id, version=__version__,
                    config=str(config_path) if config_path else "built-in")

    def want(group: str) -> bool:
        return only is None or group in only

    out = report.checks

    def add(name: str, fn: Callable[[], Check]) -> None:
        if want(name.split(":", 1)[0]):
            out.append(_guarded(name, fn))

    add("mode", lambda: checks.check_mode(data_dir))
    if want("config"):
        try:
            check, loaded = checks.check_config(config_path, assets)
        except Exception as e:
            check, loaded = failed("config", f"the check itself failed: {e}", "the log has the details"), None
        out.append(check)
        if cfg is None and loaded is not None:
            cfg = loaded
    ctx = checks.Context(cfg or base, data_dir, assets, config_path, timeout_s)
    session = None
    if cfg is not None:
        for cam in cfg.cameras:
            add(f"camera:{cam.id}", lambda cam=cam: checks.check_camera(ctx, cam))
        add("detector", lambda: checks.check_detector(ctx))
        add("classifier", lambda: checks.check_classifier(ctx))
    add("data_dir", lambda: system.check_data_dir(data_dir))
    add("database", lambda: system.check_database(data_dir))
    add("disk", lambda: system.check_disk(data_dir, base.store.disk_reserve_mb))
    if cfg is not None and want("uplink"):
        try:
            check, session = mqtt.check_uplink(cfg, timeout_s)
        except Exception as e:
            log.exception("selftest: check uplink raised")
            check = failed("uplink", f"the check itself failed: {type(e).__name__}: {e}", "the log has the details")
        out.append(check)
    add("clock", system.check_clock)
    add("thermal", lambda: system.check_thermal(base))
    add("dashboard", lambda: system.check_dashboard(base, ctx.running(), timeout_s))
    report.duration_s = time.monotonic() - t0
    if session is not None:
        error = session.publish(report.to_json(published=False), timeout_s)
        session.close()
        if error:
            log.warning("selftest: publishing the report on %s failed: %s", session.topic, error)
        else:
            report.published = session.topic
    try:
        save(report, data_dir)
    except OSError as e:  # the data_dir check has failed already and says why
        log.warning("selftest: cannot keep the report in %s: %s", data_dir, e.strerror or e)
    return report
