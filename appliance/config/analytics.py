"""`cameras[].lines`, `cameras[].zones`, `cameras[].calibration`: line and zone analytics
(appliance/analytics/, docs/analytics.md).

Coordinates are fractions of the frame when every value of a shape is within 0..1, else
source pixels. The shape rules are checked here; the bounds of the frame where the frame
size is known (the camera's `width`/`height`, or the video file's size when files are
checked, `check_analytics_frames`).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, Sequence

from pydantic import field_validator, model_validator
from pydantic_core import PydanticCustomError

from appliance.analytics import geometry
from appliance.config.base import Problems, Section, Text, key

NAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_. -]{0,62}[A-Za-z0-9_.-])?")
Anchor = Literal["bottom_center", "center", "top_center"]

_POINTS_DOC = ("in fractions of the frame (`[0.5, 0.25]`) when every value of the shape is within 0..1, "
               "else in source pixels (`[384, 144]`)")


def _name(value: str) -> str:
    if not NAME_RE.fullmatch(value):
        raise PydanticCustomError(
            "analytics_name", "expected 1-64 letters, digits, spaces, `_`, `.` or `-`, starting with a letter or "
                              "digit, got {value}", {"value": repr(value)})
    return value


def check_points(points: list[list[float]], at: str, least: int, p: Problems) -> bool:
    """Each point is [x, y], none negative, at least `least` of them; False if not."""
    ok = True
    for i, pt in enumerate(points):
        if len(pt) != 2:
            p.add(f"{at}[{i}]", f"expected a point [x, y], got {len(pt)} values")
            ok = False
        elif min(pt) < 0:
            p.add(f"{at}[{i}]", f"coordinates must not be negative (outside the frame), got {pt}")
            ok = False
    if len(points) < least:
        what = "a line needs" if least == 2 else ("a zone needs" if least == 3 else "needs")
        p.add(at, f"{what} at least {least} points, got {len(points)}")
        ok = False
    if ok and not geometry.is_fractions(points) and max(v for pt in points for v in pt) < 2:
        p.add(at, "fractions of the frame must be within 0..1 (a value above 1 makes the whole shape pixels, "
                  f"and this one would then fit in 2x2 pixels), got {points}")
        ok = False
    return ok


class LineConfig(Section):
    name: Text = key(doc="the line's name, unique among the camera's lines and zones (events and counts name it)")
    points: list[list[float]] = key(
        type="list of `[x, y]`",
        doc=f"two or more points, a polyline; {_POINTS_DOC}. Crossing from the right of the direction "
            "of travel from one point to the next to its left (in the image, y down) is `in`, the "
            "other way `out` (docs/analytics.md)")
    anchor: Anchor = key("bottom_center", doc="the point of a box that crosses: the feet or wheels by default")
    classes: list[Text] = key(factory=list, shown="all", doc="detector labels counted, e.g. `[person]`; "
                                                             "empty: all")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return _name(value)

    @model_validator(mode="after")
    def _rules(self) -> "LineConfig":
        p = Problems()
        if check_points(self.points, "points", 2, p):
            for i in range(len(self.points) - 1):
                if self.points[i] == self.points[i + 1]:
                    p.add(f"points[{i + 1}]", f"the same as points[{i}]: a segment needs two different points")
        p.raise_any()
        return self


class ZoneConfig(Section):
    name: Text = key(doc="the zone's name, unique among the camera's lines and zones")
    points: list[list[float]] = key(
        type="list of `[x, y]`",
        doc=f"three or more corners of a polygon that does not cross itself; {_POINTS_DOC}")
    anchor: Anchor = key("bottom_center", doc="the point of a box that must be inside")
    classes: list[Text] = key(factory=list, shown="all", doc="detector labels watched; empty: all")
    loiter_s: float = key(0.0, lo=0.0, hi=86400.0,
                          doc="a `loiter` event when a track stays in the zone longer than this; `0`: off")
    max_speed_kmh: float = key(
        0.0, lo=0.0, hi=300.0,
        doc="a `speeding` event when a track in the zone moves faster (needs the camera's `calibration`); "
            "`0`: off")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return _name(value)

    @model_validator(mode="after")
    def _rules(self) -> "ZoneConfig":
        p = Problems()
        if check_points(self.points, "points", 3, p):
            pair = geometry.self_crossing(self.points)
            if pair is not None:
                p.add("points", f"the polygon crosses itself (edges {pair[0]} and {pair[1]}, counting from 0 at "
                                "points[0]->points[1]): list the corners in order around the zone")
            elif geometry.polygon_area(self.points) <= 0.0:
                p.add("points", "the polygon has no area")
        p.raise_any()
        return self


class CalibrationConfig(Section):
    image: list[list[float]] = key(
        type="list of 4 `[x, y]`",
        doc=f"four points on the ground in the image, in order around a quadrilateral; {_POINTS_DOC}")
    world: list[list[float]] = key(
        type="list of 4 `[X, Y]`",
        doc="the same four points on the ground plane, in metres (any origin and axes, e.g. measured "
            "along the kerb and across the road)")

    @model_validator(mode="after")
    def _rules(self) -> "CalibrationConfig":
        p = Problems()
        for at, pts in (("image", self.image), ("world", self.world)):
            if len(pts) != 4:
                p.add(at, f"expected exactly 4 points, got {len(pts)}")
                continue
            bad = [i for i, pt in enumerate(pts) if len(pt) != 2]
            for i in bad:
                p.add(f"{at}[{i}]", f"expected a point [x, y], got {len(pts[i])} values")
            if bad:
                continue
            if at == "image" and not check_points(pts, at, 4, p):
                continue
            triple = geometry.collinear_triple(pts)
            if triple is not None:
                p.add(at, "points {} lie on one line (or coincide): the four points must span an area".format(
                    ", ".join(f"[{i}]" for i in triple)))
            elif not geometry.is_convex(pts):
                p.add(at, "the four points must be the corners of a convex quadrilateral, in order around it")
        p.raise_any()
        return self


def check_camera_analytics(cam: Any, p: Problems) -> None:
    """Rules across a camera's lines, zones and calibration: one namespace for names,
    speed alerts need a calibration, pixel coordinates inside a known frame size."""
    seen: dict[str, str] = {}
    for kind, items in (("lines", cam.lines), ("zones", cam.zones)):
        for i, item in enumerate(items):
            where = f"{kind}[{i}]"
            if item.name in seen:
                p.add(f"{where}.name", f"duplicate name {item.name!r} (also {seen[item.name]})")
            else:
                seen[item.name] = where
    if cam.calibration is None:
        for i, z in enumerate(cam.zones):
            if z.max_speed_kmh > 0:
                p.add(f"zones[{i}].max_speed_kmh", "a speed alert needs the camera's calibration")
    if cam.width > 0 and cam.height > 0:
        check_frame_bounds(cam, cam.width, cam.height, p, "the camera's width x height")


def shapes(cam: Any) -> list[tuple[str, Sequence[Sequence[float]]]]:
    """(key, points) of every shape of a camera."""
    out = [(f"lines[{i}].points", ln.points) for i, ln in enumerate(cam.lines)]
    out += [(f"zones[{i}].points", z.points) for i, z in enumerate(cam.zones)]
    if cam.calibration is not None:
        out.append(("calibration.image", cam.calibration.image))
    return out


def check_frame_bounds(cam: Any, width: int, height: int, p: Problems, what: str, prefix: str = "") -> None:
    """Pixel coordinates beyond the frame size are errors (fractions are inside by rule)."""
    for at, pts in shapes(cam):
        if geometry.is_fractions(pts):
            continue
        for j, pt in enumerate(pts):
            if len(pt) == 2 and (pt[0] > width or pt[1] > height):
                p.add(f"{prefix}{at}[{j}]", f"{pt} is outside the {width}x{height} frame ({what})")


def video_size(path: str) -> tuple[int, int] | None:
    """(width, height) of a video file, None when it cannot be read."""
    import cv2  # only when files are checked: the config loads without OpenCV otherwise

    cap = cv2.VideoCapture(path)
    try:
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    finally:
        cap.release()
    return (w, h) if w > 0 and h > 0 else None


def check_analytics_frames(cameras: list, files: Any, p: Problems) -> None:
    """With the file checks on: pixel coordinates of a video file's camera must lie within
    the file's frame size (live cameras are checked against width/height when set, and
    warned about at run time otherwise)."""
    from appliance.config.cameras import classify_source

    for i, cam in enumerate(cameras):
        if cam.width > 0 and cam.height > 0:
            continue  # checked against them already
        if all(geometry.is_fractions(pts) for _, pts in shapes(cam)):
            continue
        kind, target = classify_source(cam.source)
        path = files.assets_dir / target if kind == "asset" else target if kind == "file" else None
        # A missing file is reported by check_camera_files; OpenCV would only warn about it.
        size = video_size(str(path)) if path is not None and Path(path).is_file() else None
        if size is not None:
            check_frame_bounds(cam, size[0], size[1], p, f"the size of {target}", prefix=f"cameras[{i}].")
