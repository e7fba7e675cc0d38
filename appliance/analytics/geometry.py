"""Plane geometry of lines and zones in image coordinates (x right, y down), numpy only.

The config module validates shapes with these functions, so this module imports nothing
heavier than numpy (OpenCV is imported where a frame is processed).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

Point = Sequence[float]

ANCHORS = ("bottom_center", "center", "top_center")


def is_fractions(points: Sequence[Point]) -> bool:
    """The units rule: a shape is in fractions of the frame when every value is within
    0..1, else in source pixels."""
    return all(0.0 <= v <= 1.0 for p in points for v in p)


def to_pixels(points: Sequence[Point], width: int, height: int) -> np.ndarray:
    """(N, 2) float source pixels of a shape given in fractions or pixels."""
    a = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if is_fractions(points):
        a = a * (width, height)
    return a


def anchor_point(xyxy: Sequence[float], anchor: str = "bottom_center") -> tuple[float, float]:
    """The reference point of a box: bottom_center (the feet, the wheels on the ground),
    center or top_center."""
    x1, y1, x2, y2 = (xyxy.tolist() if isinstance(xyxy, np.ndarray) else xyxy)[:4]
    cx = 0.5 * (x1 + x2)
    if anchor == "bottom_center":
        return cx, y2
    if anchor == "top_center":
        return cx, y1
    if anchor == "center":
        return cx, 0.5 * (y1 + y2)
    raise ValueError(f"anchor must be one of {', '.join(ANCHORS)}, got {anchor!r}")


def side(a: Point, b: Point, p: Point) -> float:
    """s = (x2-x1)(py-y1) - (y2-y1)(px-x1): the sign tells the side of segment a->b."""
    return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])


def cross_segments(a: Point, b: Point, p: Point, q: Point, closed_end: bool = True) -> int:
    """+1 when the move p->q crosses segment a->b from s <= 0 to s > 0, -1 for the
    reverse, 0 when it does not cross it within the segment's extent.

    One half-plane takes s == 0, so a point exactly on the line is on one side only and a
    crossing is counted once. The segment's end b is excluded unless closed_end, so a move
    through the joint of two segments of a polyline crosses only one of them."""
    s0, s1 = side(a, b, p), side(a, b, q)
    if (s0 > 0) == (s1 > 0):
        return 0
    u = s0 / (s0 - s1)  # where the move meets the segment's line
    x, y = p[0] + u * (q[0] - p[0]), p[1] + u * (q[1] - p[1])
    dx, dy = b[0] - a[0], b[1] - a[1]
    t = ((x - a[0]) * dx + (y - a[1]) * dy) / (dx * dx + dy * dy)
    if t < 0.0 or t > 1.0 or (t == 1.0 and not closed_end):
        return 0
    return 1 if s1 > 0 else -1


# Plain floats below, not numpy: a handful of segments per call, where numpy's per-call
# overhead would cost more than the arithmetic.

def cross_polyline(points: Sequence[Point], p: Point, q: Point) -> int:
    """The net crossings of the move p->q over a polyline (+1 per `in`, -1 per `out`)."""
    n = len(points) - 1
    return sum(cross_segments(points[i], points[i + 1], p, q, closed_end=i == n - 1) for i in range(n))


def distance_to_polyline(points: Sequence[Point], p: Point) -> float:
    """Shortest distance from p to any segment of the polyline."""
    best = math.inf
    for (ax, ay), (bx, by) in zip(points[:-1], points[1:]):
        dx, dy = bx - ax, by - ay
        t = min(1.0, max(0.0, ((p[0] - ax) * dx + (p[1] - ay) * dy) / max(dx * dx + dy * dy, 1e-12)))
        best = min(best, math.hypot(ax + t * dx - p[0], ay + t * dy - p[1]))
    return best


def _proper_intersect(a: Point, b: Point, c: Point, d: Point) -> bool:
    """Segments a-b and c-d share a point (touching or overlapping counts)."""
    def orient(p: Point, q: Point, r: Point) -> int:
        v = side(p, q, r)
        return 0 if abs(v) <= 1e-12 else (1 if v > 0 else -1)

    def on(p: Point, q: Point, r: Point) -> bool:  # r on segment p-q, given collinear
        return min(p[0], q[0]) <= r[0] <= max(p[0], q[0]) and min(p[1], q[1]) <= r[1] <= max(p[1], q[1])

    o1, o2, o3, o4 = orient(a, b, c), orient(a, b, d), orient(c, d, a), orient(c, d, b)
    if o1 != o2 and o3 != o4 and 0 not in (o1, o2, o3, o4):
        return True
    return ((o1 == 0 and on(a, b, c)) or (o2 == 0 and on(a, b, d))
            or (o3 == 0 and on(c, d, a)) or (o4 == 0 and on(c, d, b)))


def self_crossing(points: Sequence[Point]) -> tuple[int, int] | None:
    """The first pair of edges (i, j) of a closed polygon that cross or touch, other than
    neighbours at their shared corner; None for a simple polygon."""
    n = len(points)
    edges = [(points[i], points[(i + 1) % n]) for i in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if j == i + 1 or (i == 0 and j == n - 1):
                # Neighbours share a corner; they only overlap when folding back on each other.
                a, b = edges[i]
                c, d = edges[j]
                shared, far1, far2 = (b, a, d) if j == i + 1 else (a, b, c)
                dot = (far1[0] - shared[0]) * (far2[0] - shared[0]) + (far1[1] - shared[1]) * (far2[1] - shared[1])
                if abs(side(shared, far1, far2)) <= 1e-12 and dot > 0:
                    return i, j
                continue
            if _proper_intersect(*edges[i], *edges[j]):
                return i, j
    return None


def polygon_area(points: Sequence[Point]) -> float:
    """Absolute area (shoelace)."""
    a = np.asarray(points, dtype=np.float64)
    x, y = a[:, 0], a[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def collinear_triple(points: Sequence[Point], rel_tol: float = 1e-4) -> tuple[int, int, int] | None:
    """Three of the points (indices) on one line, or two the same; tolerance relative to
    the square of the points' spread."""
    a = np.asarray(points, dtype=np.float64)
    scale = float(((a - a.mean(0)) ** 2).sum(1).max()) or 1.0
    n = len(a)
    for i in range(n):
        for j in range(i + 1, n):
            for k in range(j + 1, n):
                if abs(side(a[i], a[j], a[k])) <= rel_tol * scale:
                    return i, j, k
    return None


def is_convex(points: Sequence[Point]) -> bool:
    """A convex polygon with its corners in order around it (either way round)."""
    n = len(points)
    signs = {side(points[i], points[(i + 1) % n], points[(i + 2) % n]) > 0 for i in range(n)}
    return len(signs) == 1 and self_crossing(points) is None


def heading_deg(dx: float, dy: float) -> float:
    """Angle of a move in degrees 0..360: 0 along +x, 90 along +y (in the image: right,
    then down, i.e. clockwise on screen)."""
    return math.degrees(math.atan2(dy, dx)) % 360.0
