"""`appliance uplink status`: link state, backlog, oldest unsent event, last error.

The backlog comes from SQLite itself, so it is right whether or not the appliance runs.
The link state and last error come from status.json, which a running appliance rewrites
every log.stats_interval_s; when that is missing, stale, or its process is gone, the
link is "not running" (and the last error it reported is still shown, with its age).
"""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import time
from typing import Any

from appliance import paths
from appliance.errors import ApplianceError
from appliance.uplink.outbox import backlog


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    up = sub.add_parser("uplink", help="MQTT uplink tools")
    up_sub = up.add_subparsers(dest="uplink_command", required=True)
    st = up_sub.add_parser("status", parents=[common],
                           help="link state, backlog rows, oldest unsent age, last error")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return True  # cannot tell; rely on the age
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reported(data_dir) -> tuple[dict[str, Any] | None, float | None, bool]:
    """(the uplink's last status, its age in s, whether it is fresh)."""
    try:
        status, age = paths.read_status(data_dir)
    except ApplianceError:
        return None, None, False
    svc = status.get("services", {}).get("uplink")
    fresh = (bool(svc) and status.get("running", False) and age < paths.STATUS_STALE_AFTER_S
             and _alive(svc.get("pid")))
    return svc, age, fresh


def _backlog(data_dir) -> tuple[int, float | None]:
    db = paths.db_path(data_dir)
    if not db.exists():
        raise ApplianceError(f"no event database at {db} (has 'appliance run' used this data dir?)")
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10.0)
    try:
        if conn.execute("PRAGMA user_version").fetchone()[0] < 2:  # from before the uplink: nothing sent
            rows, oldest = conn.execute("SELECT COUNT(*), MIN(ts) FROM events").fetchone()
        else:
            b = backlog(conn)
            rows, oldest = b.rows, b.oldest_ts
    except sqlite3.Error as e:
        raise ApplianceError(f"database {db}: {e}") from None
    finally:
        conn.close()
    return rows, None if oldest is None else max(0.0, time.time() - oldest)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"


def cmd_status(args: argparse.Namespace) -> int:
    data = paths.data_dir(args.data_dir)
    rows, oldest_age = _backlog(data)
    svc, age, fresh = _reported(data)
    state = svc["state"] if fresh else "not running"
    error = (svc or {}).get("last_error")
    error_age = time.time() - svc["last_error_at"] if error and svc.get("last_error_at") else None
    if args.json:
        print(json.dumps({"link": state, "broker": (svc or {}).get("broker"), "backlog_rows": rows,
                          "oldest_unsent_age_s": None if oldest_age is None else round(oldest_age, 1),
                          "last_error": error, "last_error_age_s": None if error_age is None else round(error_age, 1),
                          "status_age_s": None if age is None else round(age, 1)}))
        return 0
    broker = f" ({svc['broker']})" if svc and svc.get("broker") else ""
    print(f"link: {state}{broker}")
    print(f"backlog: {rows} events unsent" + (f", oldest {_age(oldest_age)} old" if rows else ""))
    when = f" ({_age(error_age)} ago{'' if fresh else ', reported by the last run'})" if error_age is not None else ""
    print(f"last error: {error}{when}" if error else "last error: none")
    return 0
