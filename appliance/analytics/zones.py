"""Zones: enter and exit per track, occupancy, dwell per visit, loiter and speed alerts.

A track enters when its reference point is inside the polygon by at least half the
margin (lines.margin_px: a share of the box's height), and exits when it is outside by
as much, so a box standing on the edge does not flicker in and out; the band is
symmetric, so dwell times are not biased. A track that ends inside exits then, with its
last-seen time.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from appliance.analytics.lines import margin_px
from appliance.config.analytics import ZoneConfig


@dataclass
class Visit:
    entered_t: float  # monotonic seconds
    last_t: float  # last frame the track was seen inside (monotonic)
    last_wall: float
    last_frame: int
    last_point: tuple[float, float]
    loitered: bool = False
    sped: bool = False

    def dwell(self, t: float | None = None) -> float:
        return (self.last_t if t is None else t) - self.entered_t


class ZoneWatcher:
    """One zone of one camera: the visits in progress and the totals."""

    def __init__(self, cfg: ZoneConfig, points_px: np.ndarray):
        self.cfg = cfg
        self.polygon = np.asarray(points_px, np.float32).reshape(-1, 1, 2)
        self.visits: dict[int, Visit] = {}
        self.entered = self.exited = self.loiter = self.speeding = 0
        self.max_occupancy = 0
        self.dwell_sum_s, self.dwell_n = 0.0, 0
        self.by_label: dict[str, int] = {}
        self.by_type: dict[str, int] = {}

    def set_points(self, points_px: np.ndarray) -> None:
        self.polygon = np.asarray(points_px, np.float32).reshape(-1, 1, 2)

    def inside_by(self, point: tuple[float, float]) -> float:
        """Signed distance to the edge: positive inside."""
        return float(cv2.pointPolygonTest(self.polygon, (float(point[0]), float(point[1])), True))

    def update(self, track_id: int, t: float, wall: float, frame: int, point: tuple[float, float],
               box_h: float, label: str, type_: str | None, speed_kmh: float | None) -> list[tuple[str, Visit]]:
        """The track's reference point this frame; the actions it caused, with the visit."""
        d = self.inside_by(point)
        half = 0.5 * margin_px(box_h)
        v = self.visits.get(track_id)
        out: list[tuple[str, Visit]] = []
        if v is None:
            if d >= half:
                v = self.visits[track_id] = Visit(t, t, wall, frame, point)
                self.entered += 1
                self.by_label[label] = self.by_label.get(label, 0) + 1
                if type_:
                    self.by_type[type_] = self.by_type.get(type_, 0) + 1
                self.max_occupancy = max(self.max_occupancy, len(self.visits))
                out.append(("enter", v))
            else:
                return out
        elif d <= -half:
            v.last_t, v.last_wall, v.last_frame, v.last_point = t, wall, frame, point
            return [("exit", self.end(track_id))]
        v.last_t, v.last_wall, v.last_frame, v.last_point = t, wall, frame, point
        if self.cfg.loiter_s > 0 and not v.loitered and v.dwell() >= self.cfg.loiter_s:
            v.loitered = True
            self.loiter += 1
            out.append(("loiter", v))
        if self.cfg.max_speed_kmh > 0 and not v.sped and speed_kmh is not None and speed_kmh > self.cfg.max_speed_kmh:
            v.sped = True
            self.speeding += 1
            out.append(("speeding", v))
        return out

    def end(self, track_id: int) -> Visit | None:
        """Close the track's visit (it left, or the track ended inside); None if not inside."""
        v = self.visits.pop(track_id, None)
        if v is not None:
            self.exited += 1
            self.dwell_sum_s += v.dwell()
            self.dwell_n += 1
        return v

    def snapshot(self) -> dict:
        return {"occupancy": len(self.visits), "max_occupancy": self.max_occupancy,
                "entered": self.entered, "exited": self.exited, "loiter": self.loiter,
                "speeding": self.speeding,
                "mean_dwell_s": round(self.dwell_sum_s / self.dwell_n, 2) if self.dwell_n else None,
                "by_label": dict(sorted(self.by_label.items())), "by_type": dict(sorted(self.by_type.items()))}
