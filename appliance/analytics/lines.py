"""Counting lines: a track's reference point crossing a polyline, with hysteresis.

Rule (docs/analytics.md): every move of the point between two frames that crosses a
segment within its extent adds +1 (`in`, from s < 0 to s > 0) or -1 (`out`) to the
track's running sum for the line. The sum is settled when the point is at least the
margin away from the line: a non-zero sum is a crossing in its direction, then the sum
starts again from 0. A box that jitters across the line crosses back and forth (the sum
stays near 0) and never gets the margin away on the other side until it really walks
on, so jitter never counts. A track counts at most once per line and direction. When
the stream ends (a file's last frame), a crossing short of the margin counts. A track
that continues a broken one (stitch.py) carries on from where that one was last seen.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from appliance.analytics import geometry
from appliance.config.analytics import LineConfig

MARGIN_BOX_SHARE = 0.1  # the margin: this share of the box's height ...
MARGIN_MIN_PX = 2.0  # ... and at least this many pixels


def margin_px(box_h: float) -> float:
    """How far from a line (or inside/outside a zone's edge) a point must get to count."""
    return max(MARGIN_MIN_PX, MARGIN_BOX_SHARE * box_h)


@dataclass
class _OnLine:
    first: tuple[float, float]
    last: tuple[float, float]
    net: int = 0  # crossings (+1 in, -1 out) not settled yet
    counted: set = field(default_factory=set)  # directions already counted for this track


def _bump(table: dict, key: str, direction: str) -> None:
    row = table.setdefault(key, {"in": 0, "out": 0})
    row[direction] += 1


def _settled(s: _OnLine) -> str | None:
    """The direction of a track's net crossing (s.net != 0), now settled: None when that
    direction was counted for this track already (once per line and direction)."""
    direction = "in" if s.net > 0 else "out"
    s.net = 0
    if direction in s.counted:
        return None
    s.counted.add(direction)
    return direction


class LineCounter:
    """One line of one camera: per-track state and the totals."""

    def __init__(self, cfg: LineConfig, points_px: np.ndarray | None):
        self.cfg = cfg
        self.points = [] if points_px is None else [tuple(p) for p in np.asarray(points_px).tolist()]
        self.totals = {"in": 0, "out": 0}
        self.by_label: dict[str, dict[str, int]] = {}
        self.by_type: dict[str, dict[str, int]] = {}
        self._tracks: dict[int, _OnLine] = {}

    def update(self, track_id: int, point: tuple[float, float], box_h: float,
               continues: int | None = None) -> str | None:
        """The track's reference point this frame; "in" or "out" when a crossing is
        settled now (the caller counts it with count()). `continues`: a lost track that
        this one continues (stitch.py): the way from where that one was last seen to
        where this one was first seen counts as walked, with that one's unsettled
        crossings, and the two count at most once per direction together."""
        s = self._tracks.get(track_id)
        if s is None:
            s = self._tracks[track_id] = _OnLine(point, point)
        old = None if continues is None else self._tracks.get(continues)
        if old is not None:
            s.net += old.net + geometry.cross_polyline(self.points, old.last, s.first)
            s.counted |= old.counted
        s.net += geometry.cross_polyline(self.points, s.last, point)
        s.last = point
        if s.net == 0 or geometry.distance_to_polyline(self.points, point) < margin_px(box_h):
            return None
        return _settled(s)

    def settle(self, track_id: int) -> tuple[str, tuple[float, float]] | None:
        """At the end of the stream: a crossing still short of the margin counts, since no
        later frame can confirm it (a file that ends as someone steps over the line).
        Its direction and the track's last point, or None."""
        s = self._tracks.get(track_id)
        if s is None or s.net == 0:
            return None
        direction = _settled(s)
        return None if direction is None else (direction, s.last)

    def count(self, direction: str, label: str, type_: str | None) -> None:
        self.totals[direction] += 1
        _bump(self.by_label, label, direction)
        if type_:
            _bump(self.by_type, type_, direction)

    def drop(self, track_id: int) -> None:
        self._tracks.pop(track_id, None)

    def snapshot(self) -> dict:
        return {**self.totals, "by_label": {k: dict(v) for k, v in sorted(self.by_label.items())},
                "by_type": {k: dict(v) for k, v in sorted(self.by_type.items())}}
