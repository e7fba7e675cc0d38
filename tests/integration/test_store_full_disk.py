"""The appliance on a small file system, end to end through the real CLI: a full disk does
not keep SIGTERM from stopping it, and the events it could not write are reported; with
the disk guard on, it keeps writing by deleting the oldest events.

The file system is mounted by the test (tests/unit/small_fs.py: tmpfs, else an ext4 loop
image; skipped with the reason when neither can be mounted). Timeouts here only turn a
hang into a failure; nothing is timed.
"""
from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.unit.small_fs import fill, small_fs

STOP_LIMIT_S = 60.0  # SIGTERM must stop the appliance well within this
WAIT_LIMIT_S = 180.0  # for the disk to fill, or the guard to act


def _start(data: Path, cfg: Path, log: Path, assets_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "APPLIANCE_ASSETS_DIR": str(assets_dir), "APPLIANCE_WEB_PORT": "0"}
    env.pop("APPLIANCE_DATA_DIR", None)
    with open(log, "w") as out:  # a file, not a pipe: a full pipe would stall the appliance
        return subprocess.Popen([sys.executable, "-m", "appliance", "run", "--fast", "--loop",
                                 "--config", str(cfg), "--data-dir", str(data)],
                                stdout=out, stderr=subprocess.STDOUT, text=True, env=env)


def _wait_for(proc: subprocess.Popen, log: Path, needle: str) -> None:
    end = time.monotonic() + WAIT_LIMIT_S
    while needle not in log.read_text():
        if proc.poll() is not None:
            raise AssertionError(f"the appliance ended (rc {proc.returncode}) before {needle!r}:\n"
                                 + log.read_text()[-4000:])
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError(f"no {needle!r} after {WAIT_LIMIT_S:.0f} s:\n" + log.read_text()[-4000:])
        time.sleep(0.2)


def _terminate(proc: subprocess.Popen, log: Path) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_LIMIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"still running {STOP_LIMIT_S:.0f} s after SIGTERM:\n"
                             + log.read_text()[-4000:]) from None
    return log.read_text()


def test_sigterm_stops_the_appliance_on_a_full_disk_and_reports_the_unwritten(tmp_path, assets_dir):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("store:\n  disk_reserve_mb: 0\n")  # the guard only watches: the disk fills
    log = tmp_path / "appliance.log"
    with small_fs(tmp_path, 300 * 1024) as root:
        data = root / "data"
        proc = _start(data, cfg, log, assets_dir)
        try:
            _wait_for(proc, log, "fails (database or disk is full")  # the writer's one line
            time.sleep(2)  # more events pile up behind the failing batch
            text = _terminate(proc, log)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert "Traceback" not in text, text[-4000:]
        assert text.count("fails (database or disk is full") == 1  # one line, not one per retry
        m = re.search(r"store: (\d+) events could not be written to (\S+)", text)
        assert m, text[-4000:]
        assert int(m.group(1)) > 0 and m.group(2).startswith(str(data))
        assert "finished" in text


def test_with_the_guard_on_a_small_disk_keeps_taking_events(tmp_path, assets_dir):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("store:\n  disk_reserve_mb: 0.4\n  disk_check_interval_s: 0.5\n")
    log = tmp_path / "appliance.log"
    with small_fs(tmp_path, 2 * 1024 * 1024) as root:
        fill(root, leave=400 * 1024 + 256 * 1024)  # the reserve, and room for a few hundred events
        data = root / "data"
        proc = _start(data, cfg, log, assets_dir)
        try:
            _wait_for(proc, log, "store: disk low")
            time.sleep(5)  # keep going under the reserve for a while
            text = _terminate(proc, log)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert "Traceback" not in text, text[-4000:]
        assert "could not be written" not in text and "fails (" not in text, text[-4000:]
        conn = sqlite3.connect(data / "appliance.db")
        count, low, high = conn.execute("SELECT COUNT(*), MIN(seq), MAX(seq) FROM events").fetchone()
        conn.close()
        assert count > 0 and low > 1 and high - low + 1 == count  # the oldest went, the rest has no gap
