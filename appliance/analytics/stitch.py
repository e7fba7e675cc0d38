"""Continuing broken tracks for line counting.

The tracker re-finds a lost track only by the overlap of its predicted box with a new
detection (appliance/track/). When someone walks on unseen for a moment (in a crowd,
behind another walker) the prediction misses, and the tracker starts a new track, with a
new id, a little further on. If a line lay in that gap, neither track crossed it.

A new track continues a lost one (docs/analytics.md, "Broken tracks") when:

- the lost track was last seen at most WINDOW_S before the new one was first seen, had
  the same label, was not seen again since, and no other track continues it;
- neither box touches the frame's border: a track last seen at the edge has left the
  scene, one first seen there has entered it;
- the boxes are of a similar height (MAX_SIZE_RATIO): the same object at about the same
  depth;
- once the new track's own velocity is known (motion.py: 0.3 s), its first point is near
  where the lost one would have got to: from its last point at the mean of the two
  velocities (the lost track's when it vanished, the new one's when it appeared) for the
  time between, within NEAR_BOXES box heights plus SPREAD_BOXES_PER_S for each second of
  the gap (it may have slowed down or turned); not behind its last point, against that
  motion, by more than BACK_BOXES; and not walking back the way the lost one came
  (TURN_COS). A new track that never gets a velocity (a flicker of a few frames)
  continues nothing.

Everything is in box heights and seconds, so it holds at any resolution, distance and
frame rate. When several new tracks could continue the same lost one, the closest to its
prediction does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from appliance.analytics.geometry import anchor_point
from appliance.analytics.motion import STILL_BOXES_PER_S  # slower has no direction to be behind

WINDOW_S = 2.0  # the tracker's default max_age_s: most occlusions by a passer-by are over by then
DECIDE_S = 1.0  # a new track without a velocity this long after it appeared continues nothing
NEAR_BOXES = 0.5  # the prediction's error right away: box jitter, a step sideways ...
SPREAD_BOXES_PER_S = 0.5  # ... growing with the gap: a walker (about 0.8 heights a second) may stop
BACK_BOXES = 0.25  # people do not reappear behind where they vanished (beyond a box's jitter)
TURN_COS = -0.5  # nor walking back: velocities more than 120 degrees apart are two people
MAX_SIZE_RATIO = 1.5
EDGE_SHARE = 0.02  # a box within this share of the frame's width (height) of a side is at the edge


@dataclass
class _Seen:
    t: float
    point: tuple[float, float]  # bottom centre
    box_h: float
    label: str
    at_edge: bool
    velocity: tuple[float, float] | None = None  # px/s in the image, once the motion is known
    claimed: bool = False  # continued by a new track
    ended: bool = False  # the tracker ended it


@dataclass
class _Birth:
    """A new track that may continue one of `lost` (id -> when it was last seen)."""
    t: float
    point: tuple[float, float]
    box_h: float
    lost: dict[int, float] = field(default_factory=dict)


def at_edge(box: Sequence[float], size: tuple[int, int]) -> bool:
    """The box touches the border of a frame of `size` (width, height), within EDGE_SHARE."""
    w, h = size
    mx, my = EDGE_SHARE * w, EDGE_SHARE * h
    return box[0] <= mx or box[1] <= my or box[2] >= w - mx or box[3] >= h - my


def cost(old: _Seen, new: _Birth, v_new: tuple[float, float]) -> float | None:
    """How far the new track's first point is from the lost one's prediction, as a share
    of the gate (0..1), or None when the new track cannot be its continuation."""
    gap = new.t - old.t
    h = 0.5 * (old.box_h + new.box_h)
    if min(old.box_h, new.box_h) <= 0 or max(old.box_h, new.box_h) > MAX_SIZE_RATIO * min(old.box_h, new.box_h):
        return None
    still = STILL_BOXES_PER_S * h
    if old.velocity is None:
        vx, vy = v_new
    else:
        (ox, oy), (nx, ny) = old.velocity, v_new
        so, sn = math.hypot(ox, oy), math.hypot(nx, ny)
        if min(so, sn) >= still and ox * nx + oy * ny < TURN_COS * so * sn:
            return None
        vx, vy = 0.5 * (ox + nx), 0.5 * (oy + ny)
    dx, dy = new.point[0] - old.point[0], new.point[1] - old.point[1]
    speed = math.hypot(vx, vy)
    if speed >= still and (dx * vx + dy * vy) / speed < -BACK_BOXES * h:
        return None
    miss = math.hypot(dx - vx * gap, dy - vy * gap)
    gate = (NEAR_BOXES + SPREAD_BOXES_PER_S * gap) * h
    return miss / gate if miss <= gate else None


class Stitcher:
    """Per camera, on the track thread: each track as last seen, and the new tracks that
    may continue a lost one."""

    def __init__(self) -> None:
        self._seen: dict[int, _Seen] = {}
        self._births: dict[int, _Birth] = {}

    def seen(self, track_id: int, t: float, box: Sequence[float], label: str, size: tuple[int, int],
             velocity: tuple[float, float] | None, live: set[int]) -> None:
        """The track as reported at time t; `live`: the ids reported with it."""
        point = anchor_point(box)
        edge = at_edge(box, size)
        s = self._seen.get(track_id)
        if s is None:
            self._seen[track_id] = _Seen(t, point, box[3] - box[1], label, edge, velocity)
            if not edge:
                lost = {i: o.t for i, o in self._seen.items()
                        if i not in live and not (o.at_edge or o.claimed) and o.label == label
                        and 0.0 < t - o.t <= WINDOW_S}
                if lost:
                    self._births[track_id] = _Birth(t, point, box[3] - box[1], lost)
            return
        s.t, s.point, s.box_h, s.label, s.at_edge = t, point, box[3] - box[1], label, edge
        if velocity is not None:
            s.velocity = velocity

    def decide(self, t: float, live: set[int]) -> dict[int, int]:
        """{new id: lost id} for the new tracks among `live` whose velocity is now known
        and that continue a lost track; the best match first, each lost track once.
        Call before this frame's seen()."""
        pairs = []
        for new_id, b in list(self._births.items()):
            v = self._seen[new_id].velocity
            if v is None:
                if t - b.t > DECIDE_S:
                    del self._births[new_id]
                continue
            if new_id not in live:
                continue
            del self._births[new_id]
            for old_id, last_t in b.lost.items():
                old = self._seen.get(old_id)
                if old is None or old.claimed or old.t != last_t:  # gone, taken, or found again
                    continue
                c = cost(old, b, v)
                if c is not None:
                    pairs.append((c, new_id, old_id))
        links: dict[int, int] = {}
        for _, new_id, old_id in sorted(pairs):
            old = self._seen[old_id]
            if new_id not in links and not old.claimed:
                old.claimed = True
                links[new_id] = old_id
        return links

    def end(self, track_id: int) -> bool:
        """The tracker ended the track. True when nothing can continue it any more (the
        caller may forget its state now); else sweep() names it later."""
        self._births.pop(track_id, None)
        s = self._seen.get(track_id)
        if s is None:
            return True
        s.ended = True
        if s.claimed or s.at_edge:
            del self._seen[track_id]
            return True
        return False

    def sweep(self, t: float) -> list[int]:
        """Forget ended tracks that nothing can continue any more: continued ones, and
        those lost longer than a new track may wait for its decision. Their ids."""
        keep_s = WINDOW_S + DECIDE_S
        gone = [i for i, s in self._seen.items() if s.ended and (s.claimed or t - s.t > keep_s)]
        for i in gone:
            del self._seen[i]
        return gone
