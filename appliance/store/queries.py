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
  AND (:classification IS NULL OR classification = :classification)
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

# The same tracks (bucketed by when they were first seen) per type: the track's latest
# decided classification, from any of its events, read from the partial index
# events_classified. A track without one yet (a person, a vehicle not decided so far)
# is not counted; it is counted as soon as a type is decided.
_COUNTS_BY_CLASSIFICATION = """
SELECT b, cls, COUNT(*) FROM (
  SELECT CAST((n.ts - :start) / :bucket AS INTEGER) AS b,
         (SELECT c.classification FROM events AS c
          WHERE c.camera = n.camera AND c.track_id = n.track_id AND c.classification IS NOT NULL
          ORDER BY c.seq DESC LIMIT 1) AS cls
  FROM events AS n
  WHERE n.ts >= :start AND n.ts < :until AND n.type = 'new'
    AND (:camera IS NULL OR n.camera = :camera)
)
WHERE cls IS NOT NULL
GROUP BY b, cls
"""

COUNT_BY = ("label", "classification")  # what /api/counts can count by; the first is the default

_LABELS_SINCE = "SELECT DISTINCT label FROM events WHERE ts >= :since AND label IS NOT NULL"
_CLASSIFICATIONS_SINCE = ("SELECT DISTINCT classification FROM events "
                          "WHERE ts >= :since AND classification IS NOT NULL")
_CAMERAS = "SELECT DISTINCT camera FROM events"


@dataclass(frozen=True)
class EventFilter:
    camera: str | None = None
    label: str | None = None
    type: str | None = None
    classification: str | None = None  # the decided type (column classification)
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
                    camera: str | None = None, by: str = "label") -> dict[str, Any]:
    """New tracks per label (by="label", the detector's class) or per decided type
    (by="classification") in buckets of `bucket_s` seconds, aligned to multiples of it.

    Each track counts once, in the bucket where it was first seen. By classification, a
    track counts under its latest decided type, and tracks with none are left out.
    Empty buckets are included as zeros, so the series share one time axis.
    """
    if by not in COUNT_BY:
        raise ValueError(f"by: must be one of {', '.join(COUNT_BY)}, got {by!r}")
    start = math.floor(since / bucket_s) * bucket_s
    n = max(1, math.ceil((until - start) / bucket_s))
    sql = _COUNTS if by == "label" else _COUNTS_BY_CLASSIFICATION
    rows = conn.execute(sql, {"start": start, "until": until, "bucket": bucket_s,
                              "camera": camera}).fetchall()
    series: dict[str, list[int]] = {}
    for b, label, count in rows:
        if 0 <= b < n:
            series.setdefault(label or "?", [0] * n)[b] = count
    return {"bucket_s": bucket_s, "start": start, "by": by,
            "buckets": [start + i * bucket_s for i in range(n)],
            "series": dict(sorted(series.items()))}


def labels_seen(conn: sqlite3.Connection, since: float) -> list[str]:
    return sorted(r[0] for r in conn.execute(_LABELS_SINCE, {"since": since}).fetchall())


def classifications_seen(conn: sqlite3.Connection, since: float) -> list[str]:
    return sorted(r[0] for r in conn.execute(_CLASSIFICATIONS_SINCE, {"since": since}).fetchall())


def cameras_seen(conn: sqlite3.Connection) -> list[str]:
    return sorted(r[0] for r in conn.execute(_CAMERAS).fetchall())
