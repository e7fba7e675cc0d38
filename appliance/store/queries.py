"""Read-only queries for the dashboard: a filtered, paged event list and counts over time.

Every statement is a fixed string with named parameters; a filter left out is bound as
NULL and its clause (`:x IS NULL OR ...`) lets every row through. Nothing a user sends
is ever formatted into SQL.
"""
from __future__ import annotations

import math
import sqlite3
from dataclasses import asdict, dataclass
from typing import Any

_EVENTS_PAGE = """
SELECT seq, payload FROM events
WHERE (:camera IS NULL OR camera = :camera)
  AND (:label IS NULL OR label = :label)
  AND (:type IS NULL OR type = :type)
  AND (:since IS NULL OR ts >= :since)
  AND (:until IS NULL OR ts < :until)
  AND (:before IS NULL OR seq < :before)
ORDER BY seq DESC
LIMIT :limit
"""

# New tracks (one per object seen) per label and time bucket. The ts range comes first so
# that SQLite walks the ts index.
_COUNTS = """
SELECT CAST((ts - :start) / :bucket AS INTEGER) AS b, label, COUNT(*) FROM events
WHERE ts >= :start AND ts < :until AND type = 'new'
  AND (:camera IS NULL OR camera = :camera)
GROUP BY b, label
"""

_LABELS_SINCE = "SELECT DISTINCT label FROM events WHERE ts >= :since AND label IS NOT NULL"
_CAMERAS = "SELECT DISTINCT camera FROM events"


@dataclass(frozen=True)
class EventFilter:
    camera: str | None = None
    label: str | None = None
    type: str | None = None
    since: float | None = None  # unix seconds, inclusive
    until: float | None = None  # unix seconds, exclusive


def events_page(conn: sqlite3.Connection, flt: EventFilter, before: int | None,
                limit: int) -> tuple[list[str], int | None]:
    """The newest `limit` events matching the filter with seq below `before`, newest first.

    Returns the stored JSON payloads, unparsed (exactly what SQLite keeps), and the
    cursor for the next (older) page, or None when there is none.
    """
    params: dict[str, Any] = {**asdict(flt), "before": before, "limit": limit + 1}
    rows = conn.execute(_EVENTS_PAGE, params).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    return [r[1] for r in rows], (rows[-1][0] if more and rows else None)


def counts_by_label(conn: sqlite3.Connection, since: float, until: float, bucket_s: int,
                    camera: str | None = None) -> dict[str, Any]:
    """New tracks per label in buckets of `bucket_s` seconds, aligned to multiples of it.

    Empty buckets are included as zeros, so the series share one time axis.
    """
    start = math.floor(since / bucket_s) * bucket_s
    n = max(1, math.ceil((until - start) / bucket_s))
    rows = conn.execute(_COUNTS, {"start": start, "until": until, "bucket": bucket_s,
                                  "camera": camera}).fetchall()
    series: dict[str, list[int]] = {}
    for b, label, count in rows:
        if 0 <= b < n:
            series.setdefault(label or "?", [0] * n)[b] = count
    return {"bucket_s": bucket_s, "start": start,
            "buckets": [start + i * bucket_s for i in range(n)],
            "series": dict(sorted(series.items()))}


def labels_seen(conn: sqlite3.Connection, since: float) -> list[str]:
    return sorted(r[0] for r in conn.execute(_LABELS_SINCE, {"since": since}).fetchall())


def cameras_seen(conn: sqlite3.Connection) -> list[str]:
    return sorted(r[0] for r in conn.execute(_CAMERAS).fetchall())
