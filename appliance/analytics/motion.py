"""Speed and heading of tracks: a short window of positions, smoothed by a straight-line
fit, with absurd values rejected.

Without a calibration the speed is in pixels per second and the heading is in the image
(0 = right, 90 = down). With one, each reference point is mapped to the ground plane
through the perspective transform of four image points and their positions in metres
(cv2.getPerspectiveTransform), so the speed is in km/h and the heading is on the ground
(0 = the world X axis, 90 = the world Y axis). A single metres-per-pixel factor is wrong
everywhere but at one depth (users of such counters report 1,536 km/h walkers); the
transform is right at every depth on the ground.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import cv2
import numpy as np

from appliance.analytics.geometry import heading_deg

WINDOW_S = 1.0  # positions this far back are fitted
MIN_SPAN_S = 0.3  # no speed until the window spans this long ...
MIN_SAMPLES = 3  # ... with at least this many positions
MAX_SPEED_KMH = 300.0  # faster is a tracking error (an id switch, a jump), never reported
PX_JUMP_BOXES_PER_S = 20.0  # uncalibrated: a step faster than this many box sizes a second is a jump
STILL_BOXES_PER_S = 0.1  # slower than this (box heights a second) has no heading: it stands ...
STILL_KMH = 1.0  # ... or, calibrated, slower than this


class GroundPlane:
    """Image pixels -> metres on the ground plane."""

    def __init__(self, image_px: np.ndarray, world_m: np.ndarray):
        image_px = np.asarray(image_px, np.float32)
        self.h = cv2.getPerspectiveTransform(image_px, np.asarray(world_m, np.float32))
        cx, cy = image_px.mean(0)
        # The homogeneous scale has one sign on the ground's side of the horizon; which
        # sign depends on the matrix, so take it from a point known to be on the ground.
        self._sign = 1.0 if (self.h @ (cx, cy, 1.0))[2] > 0 else -1.0

    def to_world(self, x: float, y: float) -> tuple[float, float] | None:
        """The ground position of an image point; None at or above the horizon, where the
        plane's image does not reach."""
        u, v, w = self.h @ (x, y, 1.0)
        if w * self._sign <= 1e-9:
            return None
        return float(u / w), float(v / w)


@dataclass
class Motion:
    heading_deg: float | None  # None while the track stands still
    speed_px_s: float
    speed_kmh: float | None = None  # with a calibration only
    velocity_px_s: tuple[float, float] = (0.0, 0.0)  # in the image (x, y), for continuing broken tracks

    def fields(self) -> dict:
        """For events and attributes: rounded, unknowns left out."""
        out: dict = {"speed_px_s": round(self.speed_px_s, 1)}
        if self.heading_deg is not None:
            out["heading_deg"] = round(self.heading_deg, 1)
        if self.speed_kmh is not None:
            out["speed_kmh"] = round(self.speed_kmh, 1)
        return out


@dataclass
class _Window:
    t: deque = field(default_factory=deque)
    px: deque = field(default_factory=deque)  # (x, y) image
    m: deque = field(default_factory=deque)  # (X, Y) ground, or None


def _slope(t: list[float], v: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares velocity of positions v at times t (plain floats: a window holds a
    few dozen, where numpy's per-call overhead would cost more than the sums)."""
    n = len(t)
    tm = sum(t) / n
    xm = sum(p[0] for p in v) / n
    ym = sum(p[1] for p in v) / n
    stt = sx = sy = 0.0
    for ti, (x, y) in zip(t, v):
        dt = ti - tm
        stt += dt * dt
        sx += dt * (x - xm)
        sy += dt * (y - ym)
    return sx / stt, sy / stt


class MotionEstimator:
    """Per track of one camera. Not thread-safe (the track thread only)."""

    def __init__(self, plane: GroundPlane | None = None):
        self.plane = plane
        self._w: dict[int, _Window] = {}

    def drop(self, track_id: int) -> None:
        self._w.pop(track_id, None)

    def update(self, track_id: int, t: float, point: tuple[float, float], box_h: float) -> Motion | None:
        """Add the track's reference point at time t (seconds, monotonic); its motion, or
        None until the window is long enough."""
        w = self._w.setdefault(track_id, _Window())
        g = self.plane.to_world(*point) if self.plane is not None else None
        size = max(box_h, 1.0)
        if w.t:
            dt = t - w.t[-1]
            if dt <= 0:
                return None  # the same instant again: nothing to learn
            step_px = math.hypot(point[0] - w.px[-1][0], point[1] - w.px[-1][1])
            jump = step_px / dt > PX_JUMP_BOXES_PER_S * size
            if self.plane is not None:
                last = w.m[-1]
                if g is None or last is None:
                    jump = True
                else:
                    jump = math.hypot(g[0] - last[0], g[1] - last[1]) / dt * 3.6 > MAX_SPEED_KMH
            if jump:  # start again from here: the old positions belong to something else
                w.t.clear(), w.px.clear(), w.m.clear()
        w.t.append(t), w.px.append(point), w.m.append(g)
        while t - w.t[0] > WINDOW_S:
            w.t.popleft(), w.px.popleft(), w.m.popleft()
        if len(w.t) < MIN_SAMPLES or w.t[-1] - w.t[0] < MIN_SPAN_S:
            return None
        ts = list(w.t)
        vx, vy = _slope(ts, list(w.px))
        speed_px = math.hypot(vx, vy)
        heading = heading_deg(vx, vy) if speed_px >= STILL_BOXES_PER_S * size else None
        v = (vx, vy)
        if self.plane is None:
            return Motion(heading, speed_px, velocity_px_s=v)
        if any(m is None for m in w.m):
            return Motion(None, speed_px, velocity_px_s=v)
        vX, vY = _slope(ts, list(w.m))
        kmh = math.hypot(vX, vY) * 3.6
        if kmh > MAX_SPEED_KMH:
            return Motion(None, speed_px, velocity_px_s=v)
        return Motion(heading_deg(vX, vY) if kmh >= STILL_KMH else None, speed_px, kmh, v)
