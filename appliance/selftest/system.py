"""The self-test's checks of the device itself: the data directory (writable, write speed),
the database (`PRAGMA integrity_check`), free disk, the clock, temperatures and
throttling, and the dashboard."""
from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from appliance import paths
from appliance.config import Config
from appliance.selftest.report import Check, failed, passed, warned

WRITE_PROBE_BYTES = 4 * 1024 * 1024  # written and fsync'd to measure the write speed
SLOW_WRITE_MB_S = 2.0  # below this an SD card is failing or very slow; events back up
LOW_DISK_FACTOR = 4  # free space under this many reserves is a warning
TOOL_TIMEOUT_S = 5.0
# Earlier than this, the clock was never set (a board without a battery-backed clock boots
# at 1970 or at its last shutdown): events would carry wrong times.
EARLIEST_PLAUSIBLE = 1735689600  # 2025-01-01 UTC


def _mib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def check_data_dir(data_dir: Path) -> Check:
    """The data directory can be written, and how fast (a fsync'd write, as SQLite's commits are)."""
    hint = (f"the appliance stores its database in {data_dir}: it must be writable by the appliance user "
            f"(sudo chown -R appliance:appliance {data_dir}); a read-only file system is often an SD card "
            "that is failing (check dmesg) or mounted read-only")
    probe = data_dir / f".selftest-write-{os.getpid()}"
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        block = os.urandom(1 << 20)
        t0 = time.perf_counter()
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for _ in range(WRITE_PROBE_BYTES // len(block)):
                os.write(fd, block)
            os.fsync(fd)
        finally:
            os.close(fd)
        seconds = time.perf_counter() - t0
    except OSError as e:
        return failed("data_dir", f"{data_dir}: cannot write: {e.strerror or e}", hint, path=str(data_dir))
    finally:
        try:
            probe.unlink()
        except OSError:
            pass
    mb_s = WRITE_PROBE_BYTES / 2**20 / max(seconds, 1e-6)
    value = f"{data_dir}: writable, {mb_s:.1f} MB/s (4 MiB written and synced)"
    detail = {"path": str(data_dir), "write_mb_s": round(mb_s, 1)}
    if mb_s < SLOW_WRITE_MB_S:
        return warned("data_dir", value, f"writes under {SLOW_WRITE_MB_S:g} MB/s: a slow or failing SD card "
                      "(use an A1/A2 class card or an SSD); events may back up in memory", **detail)
    return passed("data_dir", value, **detail)


def check_database(data_dir: Path) -> Check:
    """SQLite's own check of the whole file (read-only; WAL lets it run beside the writer)."""
    db = paths.db_path(data_dir)
    if not db.exists():
        return passed("database", f"{db}: not created yet (the first 'appliance run' creates it)")
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            rows = [r[0] for r in conn.execute("PRAGMA integrity_check(20)")]
        finally:
            conn.close()
    except sqlite3.Error as e:
        return failed("database", f"{db}: cannot be read: {e}",
                      "a damaged or foreign file: stop the appliance, move the file aside (its unsent events "
                      "are lost with it) and start the appliance again; it makes a new one", path=str(db))
    if rows == ["ok"]:
        return passed("database", f"{db}: integrity_check ok ({_mib(db.stat().st_size)})", path=str(db))
    return failed("database", f"{db}: integrity_check found {len(rows)} problem(s): {rows[0]}",
                  "the database is damaged (power cut on a card without power-loss protection?): stop the "
                  "appliance, copy the file away for a look, move it aside and start again", path=str(db),
                  problems=rows)


def check_disk(data_dir: Path, reserve_mb: float) -> Check:
    """Free space on the data directory's file system against store.disk_reserve_mb."""
    try:
        du = shutil.disk_usage(data_dir if data_dir.exists() else data_dir.parent)
    except OSError as e:
        return failed("disk", f"{data_dir}: cannot read free space: {e.strerror or e}",
                      "check that the data directory's file system is mounted", path=str(data_dir))
    reserve = reserve_mb * 2**20
    value = f"{_mib(du.free)} free of {_mib(du.total)} (reserve {_mib(reserve)})"
    detail = {"path": str(data_dir), "free_bytes": du.free, "total_bytes": du.total, "reserve_bytes": int(reserve)}
    if du.free <= max(reserve, 1 << 20):
        return failed("disk", value + ": full", "the appliance deletes the oldest events to keep the reserve and "
                      "cannot store new ones: free space on this file system, or use a larger card", **detail)
    if du.free < LOW_DISK_FACTOR * reserve:
        return warned("disk", value + ": low", "little room left above the reserve: old events will be deleted "
                      "soon; free space or use a larger card", **detail)
    return passed("disk", value, **detail)


# -- clock ------------------------------------------------------------------------------------


def _tool(*args: str) -> str | None:
    """A tool's output, or None when it is missing or fails (no systemd, no daemon)."""
    if shutil.which(args[0]) is None:
        return None
    try:
        r = subprocess.run(list(args), capture_output=True, text=True, timeout=TOOL_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout if r.returncode == 0 else None


def clock_sync() -> tuple[bool | None, str]:
    """(synchronised, how it was told); None when nothing here can tell."""
    out = _tool("timedatectl", "show", "-p", "NTPSynchronized", "--value")
    if out is not None and out.strip() in ("yes", "no"):
        return out.strip() == "yes", "timedatectl"
    out = _tool("chronyc", "-n", "tracking")
    if out is not None:
        leap = re.search(r"^Leap status\s*:\s*(.+)$", out, re.M)
        offset = re.search(r"^System time\s*:\s*(.+)$", out, re.M)
        if leap:
            synced = leap.group(1).strip().lower() != "not synchronised"
            return synced, "chronyc" + (f" ({offset.group(1).strip()})" if offset else "")
    if Path("/run/systemd/timesync").is_dir():  # timesyncd marks a sync with this file
        return Path("/run/systemd/timesync/synchronized").exists(), "systemd-timesyncd"
    return None, ""


def check_clock(now: float | None = None) -> Check:
    now = time.time() if now is None else now
    shown = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(now))
    if now < EARLIEST_PLAUSIBLE:
        return failed("clock", f"{shown}: the clock was never set",
                      "events would carry wrong times: connect the device to a network with a time server "
                      "(NTP, UDP port 123), or set the time, then run the self-test again", time=now)
    synced, how = clock_sync()
    if synced is None:
        return warned("clock", f"{shown}: synchronisation unknown (no timedatectl, chronyc or timesyncd answered)",
                      "events carry wall-clock time: make sure an NTP client runs (systemd-timesyncd or chrony)",
                      time=now)
    if not synced:
        return failed("clock", f"{shown}: not synchronised ({how})",
                      "events carry wall-clock time: enable NTP (sudo timedatectl set-ntp true) and allow UDP "
                      "port 123 to a time server; right after boot a sync can take a minute, so run again",
                      time=now, source=how)
    return passed("clock", f"{shown}: synchronised ({how})", time=now, source=how)


# -- temperatures and throttling ----------------------------------------------------------


def check_thermal(cfg: Config) -> Check:
    from appliance.control.power import read_status

    s = read_status(cfg.power)
    temps = {z: t for z, t in s["temperatures_c"].items() if z in s["watched_zones"]}
    hottest = max(temps.items(), key=lambda zt: zt[1], default=None)
    detail = {"platform": s["platform"], "mode": s.get("mode"), "temperatures_c": s["temperatures_c"],
              "throttled": s["throttled"], "throttle_flags": s["throttle_flags"]}
    temp = f"{hottest[0]} {hottest[1]:.1f} C" if hottest else "no temperature sensors"
    flags = ", ".join(s["throttle_flags"])
    value = f"{temp}; throttling: " + ("not reported" if s["throttled"] is None else
                                       ("YES" if s["throttled"] else "no") + (f" ({flags})" if flags else ""))
    if s["throttled"]:
        hint = ("under-voltage: use the board's official power supply and a short, thick cable"
                if "under-voltage" in s["throttle_flags"] else
                "the board is slowing itself down: improve cooling (heatsink, fan, shade) or a lower power mode")
        return failed("thermal", value, hint, **detail)
    if hottest and hottest[1] >= cfg.power.step_down_c:
        return warned("thermal", value, f"at or above power.step_down_c ({cfg.power.step_down_c:g} C): improve "
                      "cooling or ventilation of the enclosure", **detail)
    if any(f.endswith("-occurred") for f in s["throttle_flags"]):
        return warned("thermal", value, "throttling happened since boot: check the power supply and cooling", **detail)
    if hottest is None:
        return warned("thermal", value, "this device reports no temperatures (a VM or container?): heat "
                      "cannot be watched", **detail)
    return passed("thermal", value, **detail)


# -- the dashboard ----------------------------------------------------------------------------


def check_dashboard(cfg: Config, running: dict | None, timeout_s: float) -> Check:
    """GET /healthz where the running appliance's dashboard listens."""
    if not cfg.web.enabled:
        return passed("dashboard", "web.enabled is false: no dashboard")
    if running is None:
        return warned("dashboard", "the appliance is not running: not checked",
                      "start it (sudo systemctl start appliance) and run the self-test again")
    web = running.get("services", {}).get("web", {})
    if web.get("state") != "serving" or not web.get("listen"):
        return failed("dashboard", f"not serving: {web.get('error') or web.get('state') or 'no web service'}",
                      "another program may hold web.port: set another port (web.port) and restart", web=web)
    port = int(str(web["listen"]).rsplit(":", 1)[1])
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            code, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        code, body = e.code, e.read()
    except (urllib.error.URLError, OSError) as e:
        return failed("dashboard", f"{url}: no answer: {getattr(e, 'reason', e)}",
                      "the dashboard does not answer: check the appliance's log (journalctl -u appliance)", url=url)
    try:
        reason = json.loads(body).get("reason", "")
    except (ValueError, AttributeError):
        reason = ""
    if code != 200:
        return failed("dashboard", f"{url}: {code} {reason}", "the appliance is running but not healthy: the "
                      "reason says why (a stalled camera, a full disk); see the dashboard", url=url, code=code)
    value = f"answers on port {port} (/healthz: {reason or 'ok'})"
    if cfg.web.password_hash is None:
        return warned("dashboard", value + "; no password set", "with no password the dashboard listens on "
                      "127.0.0.1 only: set one with 'sudo appliance passwd' to open it to the network",
                      url=url, code=code)
    return passed("dashboard", value, url=url, code=code)
