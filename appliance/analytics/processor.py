"""The analytics track processor: one per camera, after the classifier and before the
lifecycle (pipeline.TRACK_PROCESSORS).

Per frame, for each confirmed track: its reference point, its motion (speed, heading),
then every line and zone of the camera. Events go into `result.events` (numbered by the
sink with the rest); the track's motion into `result.attributes[id]["motion"]`. A new
track that continues a lost one (stitch.py) carries on that one's line state, so a
crossing in the gap between them counts.

The geometry is resolved to pixels at the first frame (fractions need the frame size),
and again when the frame size changes or `reconfigure()` gave new lines and zones; a
line or zone that keeps its name, points and anchor keeps its counts and its tracks' state.
`reconfigure()` and `counts()` are called from other threads (the dashboard's editor,
the MQTT counts); one lock guards the state, held for a frame at most (well under a
millisecond with a few lines and zones).
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Sequence

from appliance.analytics import geometry
from appliance.analytics.events import LineEvent, ZoneEvent
from appliance.analytics.lines import LineCounter
from appliance.analytics.motion import GroundPlane, Motion, MotionEstimator
from appliance.analytics.stitch import Stitcher
from appliance.analytics.zones import Visit, ZoneWatcher
from appliance.config.analytics import check_frame_bounds
from appliance.config.base import Problems
from appliance.detect.detector import label_name
from appliance.result import FrameResult
from appliance.track.sort import Track

log = logging.getLogger(__name__)


class CameraAnalytics:
    def __init__(self, device_id: str, camera_id: str, labels: Sequence[str], camera_cfg: Any,
                 continue_tracks: bool = True):
        """`continue_tracks`: a new track may continue a lost one on the lines (stitch.py);
        off only to count perfect tracks as they are (scripts/bench counts, "on truth")."""
        self.device_id, self.camera_id, self.labels = device_id, camera_id, labels
        self._lock = threading.Lock()
        self._cfg = camera_cfg
        self._pending: Any = camera_cfg  # applied at the next frame, when its size is known
        self._size: tuple[int, int] | None = None
        self._calibration: Any = None
        self.lines: dict[str, LineCounter] = {}
        self.zones: dict[str, ZoneWatcher] = {}
        self.motion = MotionEstimator()
        self.stitch = Stitcher() if continue_tracks else None
        self._model: dict | None = None  # the detector of the latest frame, for the events

    # -- other threads --------------------------------------------------------------------

    def reconfigure(self, camera_cfg: Any) -> None:
        """New lines, zones and calibration (a validated CameraConfig), from the next frame."""
        with self._lock:
            self._pending = camera_cfg

    def counts(self) -> dict:
        """Totals since start (or since the line or zone was added or changed), JSON-ready."""
        with self._lock:
            if self._pending is None:
                return {"lines": {n: c.snapshot() for n, c in self.lines.items()},
                        "zones": {n: z.snapshot() for n, z in self.zones.items()}}
            # Not applied yet: the new shapes, with the counts of those that stay.
            lines, zones = {}, {}
            for ln in self._pending.lines:
                old = self.lines.get(ln.name)
                kept = old is not None and _same_place(old.cfg, ln)
                lines[ln.name] = (old if kept else LineCounter(ln, None)).snapshot()
            for z in self._pending.zones:
                old_z = self.zones.get(z.name)
                kept = old_z is not None and _same_place(old_z.cfg, z)
                zones[z.name] = (old_z if kept else ZoneWatcher(z, [[0, 0]] * 3)).snapshot()
            return {"lines": lines, "zones": zones}

    # -- the track thread -----------------------------------------------------------------

    def _apply(self, width: int, height: int) -> None:
        cfg = self._pending if self._pending is not None else self._cfg
        self._pending, self._cfg, self._size = None, cfg, (width, height)
        p = Problems()
        check_frame_bounds(cfg, width, height, p, "the frames this camera delivers")
        for k, msg in p.items:
            log.warning("camera %s: %s: %s", self.camera_id, k, msg)
        lines: dict[str, LineCounter] = {}
        for ln in cfg.lines:
            px = geometry.to_pixels(ln.points, width, height)
            old = self.lines.get(ln.name)
            if old is not None and _same_place(old.cfg, ln):
                old.cfg, old.points = ln, [tuple(p) for p in px.tolist()]
                lines[ln.name] = old
            else:
                lines[ln.name] = LineCounter(ln, px)
        zones: dict[str, ZoneWatcher] = {}
        for z in cfg.zones:
            px = geometry.to_pixels(z.points, width, height)
            old_z = self.zones.get(z.name)
            if old_z is not None and _same_place(old_z.cfg, z):
                old_z.cfg = z
                old_z.set_points(px)
                zones[z.name] = old_z
            else:
                zones[z.name] = ZoneWatcher(z, px)
        self.lines, self.zones = lines, zones
        c = cfg.calibration
        if (c, width, height) != self._calibration or not (lines or zones or c):
            # A new ground plane, or nothing left to watch: no track's motion carries over.
            self._calibration = (c, width, height)
            self.motion = MotionEstimator(None if c is None else GroundPlane(
                geometry.to_pixels(c.image, width, height), c.world))

    def process(self, r: FrameResult) -> None:
        with self._lock:
            h, w = r.frame.image.shape[:2]
            if self._pending is not None or self._size != (w, h):
                self._apply(w, h)
            if not self.lines and not self.zones and self.motion.plane is None:
                return
            if r.model is not None:  # a final result (stream end) has none: the last one made it
                self._model = r.model
            live = {t.id for t in r.tracks}
            links = self.stitch.decide(r.frame.t, live) if self.stitch is not None else {}
            for t in r.tracks:
                self._track(r, t, links.get(t.id), (w, h), live)
            for t in r.ended:
                self._ended(r, t)
            if self.stitch is not None:
                for track_id in self.stitch.sweep(r.frame.t):
                    self._forget(track_id)

    def _track(self, r: FrameResult, t: Track, continues: int | None, size: tuple[int, int],
               live: set[int]) -> None:
        label = label_name(self.labels, int(t.class_id))
        attrs = r.attributes.get(t.id, {})
        cls = attrs.get("classification")
        type_ = cls.get("label") if isinstance(cls, dict) else None
        box = t.xyxy.tolist()  # plain floats: cheaper than numpy for a few points
        box_h = box[3] - box[1]
        now = r.frame.t  # the video's time for files: dwell and speed hold with --fast too
        # Motion at the default anchor: speeds and headings belong to the track, not a line.
        m = self.motion.update(t.id, now, geometry.anchor_point(box), box_h)
        if m is not None:
            r.attributes.setdefault(t.id, {})["motion"] = m.fields()
        if self.stitch is not None:
            self.stitch.seen(t.id, now, box, label, size, None if m is None else m.velocity_px_s, live)
        for line in self.lines.values():
            if line.cfg.classes and label not in line.cfg.classes:
                continue
            point = geometry.anchor_point(box, line.cfg.anchor)
            direction = line.update(t.id, point, box_h, continues)
            if direction is not None:
                line.count(direction, label, type_)
                r.events.append(LineEvent(
                    **self._common(t, label, r.frame.t_capture_wall, r.frame.seq), type="line",
                    line=line.cfg.name, direction=direction, point=_rounded(point), classification=cls,
                    **_motion(m)))
        for zone in self.zones.values():
            if zone.cfg.classes and label not in zone.cfg.classes:
                continue
            point = geometry.anchor_point(box, zone.cfg.anchor)
            for action, visit in zone.update(t.id, now, r.frame.t_capture_wall, r.frame.seq, point, box_h,
                                             label, type_, None if m is None else m.speed_kmh):
                r.events.append(self._zone_event(t, label, zone, action, visit, cls, m,
                                                 r.frame.t_capture_wall, r.frame.seq))

    def _ended(self, r: FrameResult, t: Track) -> None:
        label = label_name(self.labels, int(t.class_id))
        cls = r.attributes.get(t.id, {}).get("classification")
        for zone in self.zones.values():
            visit = zone.end(t.id)
            if visit is not None:  # the track ended inside: it leaves when last seen
                r.events.append(self._zone_event(t, label, zone, "exit", visit, cls, None,
                                                 visit.last_wall, visit.last_frame))
        for line in self.lines.values():
            settled = line.settle(t.id) if r.final else None
            if settled is not None:
                direction, point = settled
                line.count(direction, label, cls.get("label") if isinstance(cls, dict) else None)
                r.events.append(LineEvent(
                    **self._common(t, label, r.frame.t_capture_wall, r.frame.seq), type="line",
                    line=line.cfg.name, direction=direction, point=_rounded(point), classification=cls))
        if r.final or self.stitch is None or self.stitch.end(t.id):
            self._forget(t.id)
        # else a new track may still continue it: its line state stays until sweep() says
        self.motion.drop(t.id)

    def _forget(self, track_id: int) -> None:
        for line in self.lines.values():
            line.drop(track_id)

    def _common(self, t: Track, label: str, ts: float, frame_seq: int) -> dict:
        return {"id": "", "seq": 0, "device": self.device_id, "camera": self.camera_id, "ts": ts,
                "frame_seq": frame_seq, "track_id": t.id, "label": label, "score": round(float(t.score), 4),
                "model": self._model}

    def _zone_event(self, t: Track, label: str, zone: ZoneWatcher, action: str, v: Visit,
                    cls: dict | None, m: Motion | None, ts: float, seq: int) -> ZoneEvent:
        return ZoneEvent(**self._common(t, label, ts, seq), type="zone", zone=zone.cfg.name, action=action,
                         occupancy=len(zone.visits), point=_rounded(v.last_point),
                         dwell_s=None if action == "enter" else round(v.dwell(), 2), classification=cls,
                         **_motion(m))


def _same_place(old: Any, new: Any) -> bool:
    """A line or zone that keeps its counts across a reconfiguration: same name (the
    caller's lookup), same points and anchor; classes and thresholds may change."""
    return old.points == new.points and old.anchor == new.anchor


def _rounded(p: tuple[float, float]) -> tuple[float, float]:
    return round(float(p[0]), 1), round(float(p[1]), 1)


def _motion(m: Motion | None) -> dict:
    return {} if m is None else m.fields()


def build(ctx, camera) -> CameraAnalytics:
    """The pipeline's factory (TRACK_PROCESSORS). Every camera gets one, lines or not, so
    the dashboard's editor can add lines to any camera without a restart."""
    known = set(ctx.labels)
    for kind, items in (("lines", camera.lines), ("zones", camera.zones)):
        for item in items:
            for c in item.classes:
                if c not in known:  # the config cannot know the model's labels; say it once here
                    log.warning("camera %s: %s %r: class %r is not a label of the detector, so it never "
                                "matches", camera.id, kind[:-1], item.name, c)
    return CameraAnalytics(ctx.cfg.device.id, camera.id, ctx.labels, camera)
