"""Per-minute counts of line and zone events (table `counts`, schema version 5).

The writer calls `add(conn, rows)` inside the transaction that inserts the events, so a
count exists exactly when its event does: a crash, a failed write or a rollback takes
both or neither. A row is one minute of one (camera, kind, name, direction, label, type):

| column | meaning |
|---|---|
| `minute` | unix time of the minute's start (a multiple of 60), from the event's `ts` |
| `kind`, `name` | `line` and the line's name, or `zone` and the zone's name |
| `direction` | lines: `in` / `out`; zones: the action, `enter` / `exit` / `loiter` / `speeding` |
| `label`, `type` | the detector's label; the classifier's decided type, or `''` |
| `count`, `dwell_sum_s` | events, and the sum of their `dwell_s` (zones: mean dwell = sum / count) |
| `rev`, `sent_rev` | bumped on every change; the `rev` the broker acknowledged (appliance/uplink/counts.py) |

Rows older than `store.counts_retention_days` are deleted by `prune` (from the writer's
thread), independently of the events' own limits: counts outlive the events they came from.
"""
from __future__ import annotations

import json
import logging
import math
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

log = logging.getLogger(__name__)

KINDS = ("line", "zone")
KEY = ("minute", "camera", "kind", "name", "direction", "label", "type")
COLUMNS = (*KEY, "count", "dwell_sum_s")
PRUNE_CHUNK = 5000  # rows deleted per transaction, so the writer never waits long

_UPSERT = (
    "INSERT INTO counts (minute, camera, kind, name, direction, label, type, count, dwell_sum_s, rev) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1) "
    "ON CONFLICT (minute, camera, kind, name, direction, label, type) DO UPDATE SET "
    "count = count + excluded.count, dwell_sum_s = dwell_sum_s + excluded.dwell_sum_s, rev = rev + 1")

_QUERY = f"""
SELECT {", ".join(COLUMNS)} FROM counts
WHERE minute > :since - 60 AND minute < :until
  AND (:camera IS NULL OR camera = :camera)
  AND (:kind IS NULL OR kind = :kind)
ORDER BY {", ".join(KEY)}
"""


def minute_of(ts: float) -> float:
    return math.floor(ts / 60.0) * 60.0


def _key(row: dict[str, Any]) -> tuple[tuple, float] | None:
    """(key, dwell seconds) of a line or zone event row (writer.event_row's dict), None for
    other types. Read from the stored JSON: the event contract, whatever class made it."""
    kind = row.get("type")
    if kind not in KINDS:
        return None
    e = json.loads(row["payload"])
    name = e["line"] if kind == "line" else e["zone"]
    direction = e["direction"] if kind == "line" else e["action"]
    if not isinstance(name, str) or not isinstance(direction, str):
        raise ValueError(f"{kind} name and direction must be strings, got {name!r}, {direction!r}")
    dwell = e.get("dwell_s") if kind == "zone" else None
    dwell = float(dwell) if isinstance(dwell, (int, float)) and math.isfinite(dwell) else 0.0
    ts = float(row["ts"])
    key = (minute_of(ts), str(row["camera"]), kind, name, direction, row.get("label") or "",
           row.get("classification") or "")
    return key, dwell


def tally(rows: Iterable[dict[str, Any]]) -> dict[tuple, list]:
    """Counts and dwell sums per key of a batch of event rows. A line or zone event that does
    not follow the contract (a bug) is logged and left out of the counts; the event itself
    is still stored."""
    out: dict[tuple, list] = {}
    for row in rows:
        try:
            got = _key(row)
        except (KeyError, TypeError, ValueError) as e:
            log.error("store: %s event %s has no valid line/zone fields (%s); not counted",
                      row.get("type"), row.get("id"), e)
            continue
        if got is None:
            continue
        key, dwell = got
        acc = out.setdefault(key, [0, 0.0])
        acc[0] += 1
        acc[1] += dwell
    return out


def add(conn: sqlite3.Connection, rows: Sequence[dict[str, Any]]) -> int:
    """Add the line and zone events among `rows` to their minutes; returns how many were
    counted. Call it inside the transaction that inserts the rows."""
    counts = tally(rows)
    if counts:
        conn.executemany(_UPSERT, [(*k, n, dwell) for k, (n, dwell) in counts.items()])
    return sum(n for n, _ in counts.values())


def query_rollups(conn: Any, since: float, until: float, camera: str | None = None,
                  kind: str | None = None) -> list[dict[str, Any]]:
    """The minutes that overlap [since, until) (unix seconds), oldest first, as dicts
    {minute, camera, kind, name, direction, label, type, count, dwell_sum_s}; optionally of
    one camera and one kind (`line` or `zone`). `conn`: a sqlite3 connection or a
    sqlite_utils Database. ValueError, naming the argument, for bad input."""
    for name, v in (("since", since), ("until", until)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{name}: expected unix seconds (a finite number), got {v!r}")
    if until < since:
        raise ValueError(f"until ({until}) is before since ({since})")
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    if camera is not None and not isinstance(camera, str):
        raise ValueError(f"camera: expected a camera id, got {camera!r}")
    cur = conn.execute(_QUERY, {"since": since, "until": until, "camera": camera, "kind": kind})
    return [dict(zip(COLUMNS, r)) for r in cur.fetchall()]


def prune(conn: sqlite3.Connection, before: float, chunk: int = PRUNE_CHUNK) -> int:
    """Delete the minutes that started before `before`, `chunk` rows per transaction;
    returns the rows deleted."""
    total = 0
    while True:
        with conn:
            n = conn.execute("DELETE FROM counts WHERE id IN (SELECT id FROM counts "
                             "WHERE minute < ? LIMIT ?)", [before, chunk]).rowcount
        total += n
        if n < chunk:
            return total


# -- the uplink's side (appliance/uplink/counts.py) -------------------------------------


def unsent(conn: sqlite3.Connection, before: float, after: tuple[float, int], limit: int
           ) -> list[tuple[int, int, dict[str, Any]]]:
    """(id, rev, row) of rows changed since the broker last acknowledged them, of minutes
    that started before `before`, in (minute, id) order after `after`."""
    cur = conn.execute(
        f"SELECT id, rev, {', '.join(COLUMNS)} FROM counts "
        "WHERE (sent_rev IS NULL OR sent_rev < rev) AND minute < ? AND (minute, id) > (?, ?) "
        "ORDER BY minute, id LIMIT ?", [before, after[0], after[1], limit])
    return [(r[0], r[1], dict(zip(COLUMNS, r[2:]))) for r in cur.fetchall()]


def mark_sent(conn: sqlite3.Connection, sent: Sequence[tuple[int, int]]) -> None:
    """Record the acknowledged (id, rev) pairs. A row changed since it was published keeps a
    higher rev, so it is sent again with its new total."""
    with conn:
        conn.executemany("UPDATE counts SET sent_rev = ? WHERE id = ? AND (sent_rev IS NULL OR sent_rev < ?)",
                         [(rev, row_id, rev) for row_id, rev in sent])
