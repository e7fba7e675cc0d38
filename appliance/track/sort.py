"""SORT: Simple Online and Realtime Tracking (Bewley et al., ICIP 2016).

Written from the paper: each target is a constant-velocity Kalman filter on
[cx, cy, s, r, vcx, vcy, vs] (s = area, r = aspect ratio, held constant);
detections are assigned to the predicted boxes by IoU with the Hungarian
algorithm; unmatched detections start tracks and tracks unmatched for more than
``max_age`` frames are deleted.

One ``Sort`` instance per camera. It is not thread-safe; what it returns is.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import numpy as np
from filterpy.kalman import KalmanFilter
from scipy.optimize import linear_sum_assignment

log = logging.getLogger(__name__)

__all__ = ["Sort", "Track", "TrackerOutput", "iou_matrix"]


@dataclass(eq=False)  # compared by identity: == on the xyxy array would be ambiguous
class Track:
    """A snapshot of one track; never changed by the tracker after it is returned."""

    id: int  # stable, 1-based per tracker
    xyxy: np.ndarray  # (4,) float current box estimate x1, y1, x2, y2
    score: float  # score of the last matched detection
    class_id: int  # most frequent class among matched detections
    hits: int  # total matched detections (the one that started the track included)
    hit_streak: int  # consecutive frames matched, up to this one
    age: int  # frames since birth
    time_since_update: int  # frames since the last match (0: matched this frame)
    confirmed: bool  # has ever reached min_hits consecutive hits (sticky); see Sort


@dataclass
class TrackerOutput:
    tracks: list[Track]  # matched this frame and confirmed (or in warm-up, if enabled)
    ended: list[Track]  # confirmed tracks deleted in this update


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N, 4) with every box in ``b`` (M, 4), xyxy -> (N, M)."""
    ax1, ay1, ax2, ay2 = (a[:, i : i + 1] for i in range(4))  # columns (N, 1)
    bx1, by1, bx2, by2 = b.T  # rows (M,)
    w = np.minimum(ax2, bx2) - np.maximum(ax1, bx1)
    h = np.minimum(ay2, by2) - np.maximum(ay1, by1)
    inter = np.maximum(w, 0.0) * np.maximum(h, 0.0)
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    # A degenerate pair (no area, nan) scores 0 rather than nan or a warning.
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0.0)


def _xyxy_to_z(xyxy: np.ndarray) -> np.ndarray:
    """(N, 4) boxes -> (4, N) measurements [cx, cy, s, r], one column per box."""
    x1, y1, x2, y2 = xyxy.T
    w = x2 - x1
    h = y2 - y1
    z = np.empty((4, len(xyxy)))
    z[0] = x1 + 0.5 * w
    z[1] = y1 + 0.5 * h
    z[2] = w * h
    z[3] = w / h
    return z


def _states_to_xyxy(x: np.ndarray) -> np.ndarray:
    """(7, N) states -> (N, 4) boxes; a non-positive area or aspect gives nan."""
    cx, cy, s, r = x[0], x[1], x[2], x[3]
    with np.errstate(invalid="ignore", divide="ignore"):
        half_w = 0.5 * np.sqrt(s * r)
        half_h = 0.25 * s / half_w
    half_h[(s <= 0.0) | (r <= 0.0)] = np.nan  # both negative would give a finite w
    out = np.empty((len(cx), 4))
    out[:, 0] = cx - half_w
    out[:, 1] = cy - half_h
    out[:, 2] = cx + half_w
    out[:, 3] = cy + half_h
    return out


# Model. The paper gives the motion model but not the noise; these are our own
# choices, in pixels (centre), pixels^2 (area) and 1 (aspect ratio), checked on
# TUD-Campus and TUD-Stadtmitte (tests/integration/test_mot_metrics.py): MOTA is
# flat (70.1-70.5%) for velocity noise from 3e-4 to 3e-3 and aspect noise 0.3-3.
_F = np.eye(7)
_F[0, 4] = _F[1, 5] = _F[2, 6] = 1.0  # position += velocity, one frame step
_H = np.eye(4, 7)
# Detector jitter: a few pixels on the centre. The same variance is tiny for the
# area (so the box size follows the detector) and large for the aspect ratio
# (so the box shape is smoothed over several frames).
_R = np.diag([10.0, 10.0, 10.0, 10.0])
# A new track knows its box from one detection and nothing of its velocity.
_P0 = np.diag([10.0, 10.0, 10.0, 10.0, 1e4, 1e4, 1e4])
# Walkers and cars change velocity slowly; the area's rate changes slower still.
_Q = np.diag([1.0, 1.0, 1.0, 1.0, 1e-3, 1e-3, 1e-5])


def _template_filter() -> KalmanFilter:
    kf = KalmanFilter(dim_x=7, dim_z=4)
    kf.F, kf.H, kf.R, kf.Q = _F.copy(), _H.copy(), _R.copy(), _Q.copy()
    for m in vars(kf).values():
        if isinstance(m, np.ndarray):
            # Shallow copies share these: filterpy rebinds its arrays rather
            # than writing into them, and read-only makes sure nothing ever does.
            m.flags.writeable = False
    return kf


_TEMPLATE = _template_filter()


class _Target:
    """The tracker's mutable state for one target."""

    __slots__ = ("kf", "id", "score", "votes", "class_id", "hits", "hit_streak", "age",
                 "time_since_update", "confirmed")

    def __init__(self, track_id: int, z: np.ndarray, score: float, class_id: int) -> None:
        # A shallow copy of the template shares its read-only model matrices and
        # is several times cheaper than building a KalmanFilter from scratch.
        kf = copy.copy(_TEMPLATE)
        kf.x = np.zeros((7, 1))
        kf.x[:4, 0] = z
        kf.P = _P0.copy()
        self.kf = kf
        self.id = track_id
        self.score = score
        self.votes = {class_id: 1}
        self.class_id = class_id
        self.hits = 1
        self.hit_streak = 1
        self.age = 0
        self.time_since_update = 0
        self.confirmed = False

    def predict(self) -> None:
        x = self.kf.x
        if x[2, 0] + x[6, 0] <= 0.0:
            # A shrinking box would be predicted to a non-positive area: the
            # area velocity is wrong, so hold the area instead of losing the track.
            x[6, 0] = 0.0
        self.kf.predict()
        self.age += 1
        self.time_since_update += 1

    def update(self, z: np.ndarray, score: float, class_id: int) -> None:
        """Correct the filter with measurement ``z`` (4, 1) and count the hit."""
        self.kf.update(z)
        self.score = score
        n = self.votes.get(class_id, 0) + 1
        self.votes[class_id] = n
        if n > self.votes[self.class_id]:  # ties keep the current label: no flicker
            self.class_id = class_id
        self.hits += 1
        self.hit_streak += 1
        self.time_since_update = 0

    def snapshot(self, xyxy: np.ndarray) -> Track:
        return Track(self.id, xyxy, self.score, self.class_id, self.hits, self.hit_streak,
                     self.age, self.time_since_update, self.confirmed)


class Sort:
    """SORT multi-object tracker for one camera.

    ``max_age``: frames a track may go unmatched before it is deleted.
    ``min_hits``: consecutive matched detections before a track is reported.
    ``iou_threshold``: minimum IoU between a detection and a predicted box to match.
    ``report_warmup``: also report unconfirmed tracks during the first ``min_hits``
    frames, as the paper's MOTChallenge evaluation does; such tracks count as
    confirmed so that every reported id gets its end.
    """

    def __init__(self, max_age: int = 1, min_hits: int = 3, iou_threshold: float = 0.3,
                 report_warmup: bool = False) -> None:
        if max_age < 0:
            raise ValueError(f"max_age must be >= 0, got {max_age}")
        if min_hits < 0:
            raise ValueError(f"min_hits must be >= 0, got {min_hits}")
        if not 0.0 <= iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
        self.max_age = int(max_age)
        self.min_hits = int(min_hits)
        self.iou_threshold = float(iou_threshold)
        self.report_warmup = bool(report_warmup)
        self.frame_count = 0
        self._targets: list[_Target] = []
        self._next_id = 1

    @property
    def live(self) -> list[Track]:
        """Snapshots of every live track, confirmed or not."""
        if not self._targets:
            return []
        boxes = self._boxes()
        return [t.snapshot(boxes[i]) for i, t in enumerate(self._targets)]

    def update(self, xyxy: np.ndarray, score: np.ndarray | None = None,
               class_id: np.ndarray | None = None) -> TrackerOutput:
        """Advance one frame with its detections: ``xyxy`` (N, 4), N may be 0."""
        dets, score, class_id = _clean_detections(xyxy, score, class_id)
        self.frame_count += 1
        ended: list[Track] = []
        warmup = self.report_warmup and self.frame_count <= self.min_hits

        targets = self._targets
        for t in targets:
            t.predict()
        if targets:
            boxes = self._boxes()
            bad = ~np.isfinite(boxes).all(axis=1)
            if bad.any():
                targets, boxes = self._drop(targets, boxes, bad, ended)
        else:
            boxes = np.zeros((0, 4))

        det_idx, trk_idx = self._associate(dets, boxes)

        z = _xyxy_to_z(dets)
        scores, classes = score.tolist(), class_id.tolist()
        fresh = trk_idx.tolist()  # targets whose box comes from this frame's detection
        for d, k in zip(det_idx.tolist(), fresh):
            targets[k].update(z[:, d : d + 1], scores[d], classes[d])
        if len(det_idx) < len(dets):
            unmatched = np.ones(len(dets), dtype=bool)
            unmatched[det_idx] = False
            for d in np.flatnonzero(unmatched).tolist():
                fresh.append(len(targets))
                targets.append(_Target(self._next_id, z[:, d], scores[d], classes[d]))
                self._next_id += 1
        if fresh:
            # Unmatched targets keep their predicted box; the others moved.
            cur = np.empty((len(targets), 4))
            cur[: len(boxes)] = boxes
            cur[fresh] = _states_to_xyxy(np.concatenate([targets[i].kf.x for i in fresh], axis=1))
            bad = ~np.isfinite(cur).all(axis=1)
            if bad.any():
                targets, cur = self._drop(targets, cur, bad, ended)
        else:
            cur = boxes

        tracks: list[Track] = []
        survivors: list[_Target] = []
        for i, t in enumerate(targets):
            if t.time_since_update == 0:
                if t.hit_streak >= self.min_hits or warmup:
                    t.confirmed = True
                if t.confirmed:
                    tracks.append(t.snapshot(cur[i]))
                survivors.append(t)
            elif t.time_since_update > self.max_age:
                if t.confirmed:
                    ended.append(t.snapshot(cur[i]))
            else:
                t.hit_streak = 0
                survivors.append(t)
        self._targets = survivors
        return TrackerOutput(tracks, ended)

    def flush(self) -> list[Track]:
        """End every live confirmed track (the source ended or shutdown) and reset.

        Ids keep counting, so that they stay unique for this instance's lifetime.
        """
        ended = [t for t in self.live if t.confirmed]
        self._targets = []
        self.frame_count = 0
        return ended

    def _boxes(self) -> np.ndarray:
        """Current boxes of all targets, (T, 4); one concatenate, not T conversions."""
        return _states_to_xyxy(np.concatenate([t.kf.x for t in self._targets], axis=1))

    @staticmethod
    def _drop(targets: list[_Target], boxes: np.ndarray, bad: np.ndarray,
              ended: list[Track]) -> tuple[list[_Target], np.ndarray]:
        """Remove targets whose filter diverged (nan, non-positive area or aspect)."""
        for i in np.flatnonzero(bad).tolist():
            log.debug("dropping track %d: degenerate box estimate", targets[i].id)
            if targets[i].confirmed:
                ended.append(targets[i].snapshot(boxes[i]))
        keep = ~bad
        return [t for t, k in zip(targets, keep.tolist()) if k], boxes[keep]

    def _associate(self, dets: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Matched (detection indices, track indices) with IoU >= iou_threshold."""
        if len(dets) == 0 or len(boxes) == 0:
            empty = np.zeros(0, dtype=np.intp)
            return empty, empty
        iou = iou_matrix(dets, boxes)
        ok = iou >= self.iou_threshold
        if self.iou_threshold <= 0.0:
            ok &= iou > 0.0  # a threshold of 0 must not pair disjoint boxes
        # Below-threshold pairs are worth nothing to the assignment, so the
        # Hungarian solver cannot trade a good match for two rejected ones.
        rows, cols = linear_sum_assignment(np.where(ok, iou, 0.0), maximize=True)
        keep = ok[rows, cols]
        return rows[keep], cols[keep]


def _clean_detections(xyxy, score, class_id) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """As float64 / int arrays, without boxes that are not finite or have no area."""
    dets = np.asarray(xyxy, dtype=np.float64)
    if dets.size == 0:
        dets = dets.reshape(0, 4)
    if dets.ndim != 2 or dets.shape[1] != 4:
        raise ValueError(f"xyxy must have shape (N, 4), got {dets.shape}")
    n = len(dets)
    score = np.ones(n) if score is None else np.asarray(score, dtype=np.float64).reshape(-1)
    class_id = (np.zeros(n, dtype=np.int64) if class_id is None
                else np.asarray(class_id).reshape(-1).astype(np.int64))
    if len(score) != n or len(class_id) != n:
        raise ValueError(f"got {n} boxes, {len(score)} scores and {len(class_id)} class ids")
    if n:
        good = (dets[:, 2] > dets[:, 0]) & (dets[:, 3] > dets[:, 1])  # nan compares False
        good &= np.isfinite(dets).all(axis=1)
        if not good.all():
            log.debug("ignoring %d degenerate detection(s)", n - int(good.sum()))
            dets, score, class_id = dets[good], score[good], class_id[good]
    return dets, score, class_id
