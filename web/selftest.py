"""The self-test page: the last report (`<data dir>/selftest.json`) and a button to run it
again. Made for a phone on a roof: one column, big marks, the hint under each check that
did not pass, and no script (the page reloads itself while a run is in progress).

    GET  /selftest        the page (login required, like every page)
    POST /selftest/run    start a run (login and CSRF token); answers with a redirect to the page
    GET  /api/selftest    {"running", "error", "report"}: the same as JSON

The run happens in a thread of the appliance (appliance/selftest/run.py), against the
config the appliance runs with; the config check loads the file again
(app.config["APPLIANCE_CONFIG_PATH"], set by `appliance run`).
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from flask import Blueprint, current_app, jsonify, redirect, render_template, url_for

from appliance.errors import ApplianceError
from appliance.selftest import report as report_mod
from appliance.selftest.report import MARKS

log = logging.getLogger(__name__)
bp = Blueprint("selftest", __name__)
REFRESH_S = 2  # the page reloads this often while a run is in progress


class Runner:
    """At most one self-test at a time from the dashboard; remembers the last error."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.error = ""
        self.started: float | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, cfg, data_dir: Path, config_path: Path | None) -> bool:
        """Start a run; False when one is in progress already."""
        with self._lock:
            if self.running:
                return False
            self.error, self.started = "", time.time()
            self._thread = threading.Thread(target=self._run, args=(cfg, data_dir, config_path),
                                            name="selftest", daemon=True)
            self._thread.start()
            return True

    def _run(self, cfg, data_dir: Path, config_path: Path | None) -> None:
        from appliance.selftest import run_selftest  # loads models on demand: not at import

        try:
            report = run_selftest(cfg, data_dir, config_path=config_path)
            log.info("self-test from the dashboard: %s", "passed" if report.ok else "FAILED")
        except ApplianceError as e:
            self.error = str(e)
        except Exception as e:  # shown on the page; the traceback goes to the log
            log.exception("self-test from the dashboard failed")
            self.error = f"the self-test could not run: {type(e).__name__}: {e}"

    def wait(self, timeout: float) -> None:
        t = self._thread
        if t is not None:
            t.join(timeout)


def runner() -> Runner:
    return current_app.extensions.setdefault("appliance_selftest", Runner())


def _data_dir() -> Path:
    return Path(current_app.config["APPLIANCE_DATA_DIR"])


@bp.get("/selftest")
def page():
    r = runner()
    last = report_mod.load(_data_dir())
    return render_template("selftest.html", report=last, running=r.running, error=r.error, marks=MARKS,
                           refresh_s=REFRESH_S, device_id=current_app.config["APPLIANCE_CONFIG"].device.id,
                           when=time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last.ts)) if last else "")


@bp.post("/selftest/run")
def run():
    cfg = current_app.config["APPLIANCE_CONFIG"]
    path = current_app.config.get("APPLIANCE_CONFIG_PATH")
    runner().start(cfg, _data_dir(), Path(path) if path else None)  # a second press joins the running one
    return redirect(url_for("selftest.page"), code=303)


@bp.get("/api/selftest")
def api():
    r = runner()
    last = report_mod.load(_data_dir())
    return jsonify(running=r.running, error=r.error or None, report=last.to_dict() if last else None)
