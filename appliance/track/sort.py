"""The multi-object tracker: SORT, with lifetimes in seconds and the ideas that keep ids.

Written from the papers, not from their code:

- SORT (Bewley et al., ICIP 2016): a Kalman filter per target (kalman.py), detections
  assigned to the predicted boxes by IoU with the Hungarian algorithm.
- Time, not frames: each update takes the frame's time, the filter predicts over the
  real interval (the live pipeline's detection stride varies), and a lost track is kept
  for ``max_age_s`` seconds, so a config behaves the same at 10 and at 30 fps.
- ByteTrack (Zhang et al., ECCV 2022): detections from ``low_threshold`` up are seen,
  but only those from ``high_threshold`` up start tracks. High-score detections are
  assigned first; tracks left over that were seen at the last update then take
  low-score ones (an occluded or blurred person).

(Tried and left out, as they cut IDF1 on TUD: recovering lost tracks by the box they
were last seen with (OC-SORT's observation-centric recovery), or by a looser grown-box
gate; matching recently seen tracks before lost ones, as DeepSORT's cascade does; a
stricter IoU for low-score matches. OC-SORT's re-update along a virtual path made no
difference with this filter's small velocity noise, so it is left out too.)

A lost track keeps its id: when it is matched again within ``max_age_s`` it is reported
again under that id. Only confirmed tracks (``min_hits`` detections in a row) are
reported, so only they make events.

One ``Sort`` instance per camera. It is not thread-safe; what it returns is.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from appliance.track import kalman
from appliance.track.association import assign, iou_matrix

log = logging.getLogger(__name__)

__all__ = ["Sort", "Track", "TrackerOutput", "iou_matrix"]

_EPS_S = 1e-6  # float slack when comparing times: 30 frames of 1/30 s is 1 s


@dataclass(eq=False)  # compared by identity: == on the xyxy array would be ambiguous
class Track:
    """A snapshot of one track; never changed by the tracker after it is returned."""

    id: int  # stable, 1-based per tracker
    xyxy: np.ndarray  # (4,) float current box estimate x1, y1, x2, y2
    score: float  # score of the last matched high-score detection (see Sort)
    class_id: int  # most frequent class among matched detections
    hits: int  # total matched detections (the one that started the track included)
    hit_streak: int  # consecutive updates matched, up to this one
    age: int  # updates since birth
    time_since_update: int  # updates since the last match (0: matched this update)
    confirmed: bool  # has ever reached min_hits consecutive hits (sticky); see Sort
    lost_s: float = 0.0  # seconds since the last match (0.0: matched this update)


@dataclass
class TrackerOutput:
    tracks: list[Track]  # matched this update and confirmed (or in warm-up, if enabled)
    ended: list[Track]  # confirmed tracks deleted in this update
    tentative: list[Track] = field(default_factory=list)  # matched, not confirmed yet: never reported


class _Target:
    """The tracker's mutable state for one target, but for its filter: that is the row of
    the tracker's ``kalman.Filters`` at this target's index in ``Sort._targets``."""

    __slots__ = ("id", "score", "votes", "class_id", "hits", "hit_streak", "age",
                 "time_since_update", "confirmed", "t_match")

    def __init__(self, track_id: int, score: float, class_id: int, t: float) -> None:
        self.id = track_id
        self.score = score
        self.votes = {class_id: 1}
        self.class_id = class_id
        self.hits = 1
        self.hit_streak = 1
        self.age = 0
        self.time_since_update = 0
        self.confirmed = False
        self.t_match = t

    def update(self, score: float, class_id: int, t: float) -> None:
        """Count a hit at time ``t`` (the filter is corrected by the tracker, in a batch)."""
        self.t_match = t
        if score == score:  # nan: a low-score detection, which keeps the last high score
            self.score = score
        n = self.votes.get(class_id, 0) + 1
        self.votes[class_id] = n
        if n > self.votes[self.class_id]:  # ties keep the current label: no flicker
            self.class_id = class_id
        self.hits += 1
        self.hit_streak += 1
        self.time_since_update = 0

    def snapshot(self, xyxy: np.ndarray, now: float) -> Track:
        return Track(self.id, xyxy, self.score, self.class_id, self.hits, self.hit_streak,
                     self.age, self.time_since_update, self.confirmed,
                     0.0 if self.time_since_update == 0 else max(now - self.t_match, 0.0))


class Sort:
    """Multi-object tracker for one camera.

    ``max_age_s``: seconds a confirmed track may go unmatched before it ends; within
    that time it can be found again under its id. A track not yet confirmed ends at
    its first miss.
    ``min_hits``: detections in a row before a track is confirmed and reported. A
    count, not a time: it is the evidence that the object is real, and each detection
    is one piece of it whatever the frame rate.
    ``iou_threshold``: least IoU between a detection and a track's box to match.
    ``high_threshold``, ``low_threshold``: detections scoring under ``low_threshold``
    are ignored; those under ``high_threshold`` only keep existing tracks going.
    Both 0 (the default): every detection is a high one.
    ``report_warmup``: also report unconfirmed tracks during the first ``min_hits``
    updates, as the SORT paper's MOTChallenge evaluation does; such tracks count as
    confirmed so that every reported id gets its end.
    ``frame_s``: the time between updates called without ``t``.
    """

    def __init__(self, max_age_s: float = 1.0, min_hits: int = 3, iou_threshold: float = 0.3,
                 high_threshold: float = 0.0, low_threshold: float = 0.0,
                 report_warmup: bool = False, frame_s: float = 1.0 / 25) -> None:
        if not (math.isfinite(max_age_s) and max_age_s >= 0.0):
            raise ValueError(f"max_age_s must be a number >= 0, got {max_age_s}")
        if min_hits < 0:
            raise ValueError(f"min_hits must be >= 0, got {min_hits}")
        if not 0.0 <= iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
        if not (math.isfinite(low_threshold) and math.isfinite(high_threshold)
                and low_threshold <= high_threshold):
            raise ValueError(f"low_threshold ({low_threshold}) must be at most "
                             f"high_threshold ({high_threshold})")
        if not (math.isfinite(frame_s) and frame_s > 0.0):
            raise ValueError(f"frame_s must be a number > 0, got {frame_s}")
        self.max_age_s = float(max_age_s)
        self.min_hits = int(min_hits)
        self.iou_threshold = float(iou_threshold)
        self.high_threshold = float(high_threshold)
        self.low_threshold = float(low_threshold)
        self.report_warmup = bool(report_warmup)
        self.frame_s = float(frame_s)
        self.frame_count = 0
        self._t: float | None = None  # time of the last update
        self._targets: list[_Target] = []
        self._filters = kalman.Filters()  # row i is _targets[i]'s
        self._next_id = 1

    @property
    def live(self) -> list[Track]:
        """Snapshots of every live track, confirmed or not."""
        if not self._targets:
            return []
        boxes = self._filters.boxes()
        now = self._t or 0.0
        return [t.snapshot(boxes[i], now) for i, t in enumerate(self._targets)]

    def update(self, xyxy: np.ndarray, score: np.ndarray | None = None,
               class_id: np.ndarray | None = None, t: float | None = None) -> TrackerOutput:
        """Advance to time ``t`` (seconds, any origin; None: ``frame_s`` after the last
        update) with that frame's detections: ``xyxy`` (N, 4), N may be 0."""
        dets, score, class_id = _clean_detections(xyxy, score, class_id)
        if self.low_threshold > 0.0 and len(dets):
            seen = score >= self.low_threshold
            dets, score, class_id = dets[seen], score[seen], class_id[seen]
        now, dt = self._advance(t)
        self.frame_count += 1
        ended: list[Track] = []
        warmup = self.report_warmup and self.frame_count <= self.min_hits

        targets = self._targets
        filters = self._filters
        if targets:
            filters.predict(kalman.dt_model(dt))  # all move dt ahead
            for tg in targets:
                tg.age += 1
                tg.time_since_update += 1
            boxes = filters.boxes()
            bad = ~np.isfinite(boxes).all(axis=1)
            if bad.any():
                targets, boxes = self._drop(boxes, bad, ended, now)
        else:
            boxes = np.zeros((0, 4))

        high = score >= self.high_threshold
        det_of, new = self._associate(targets, boxes, dets, high)

        z = kalman.xyxy_to_z(dets)
        # A low-score match keeps the track's score: it never shows as a detection's.
        scores = np.where(high, score, np.nan).tolist()
        classes = class_id.tolist()
        # Targets whose box comes from a detection. (Array methods, not np.flatnonzero:
        # the hot path avoids numpy's Python-level wrappers.)
        matched = (det_of >= 0).nonzero()[0]
        if len(matched):
            matched_dets = det_of[matched]
            filters.update(matched, z[:, matched_dets])
            for k, d in zip(matched.tolist(), matched_dets.tolist()):
                targets[k].update(scores[d], classes[d], now)
        if len(new):
            filters.add(z[:, new])
            for d in new.tolist():
                targets.append(_Target(self._next_id, scores[d], classes[d], now))
                self._next_id += 1
        if len(matched) or len(new):
            # All rows at once: unmatched ones give their predicted box again.
            cur = filters.boxes()
            bad = ~np.isfinite(cur).all(axis=1)
            if bad.any():
                targets, cur = self._drop(cur, bad, ended, now)
        else:
            cur = boxes

        tracks: list[Track] = []
        tentative: list[Track] = []
        survivors: list[_Target] = []
        rows: list[int] = []  # their filters' rows
        for i, tg in enumerate(targets):
            if tg.time_since_update == 0:
                if tg.hit_streak >= self.min_hits or warmup:
                    tg.confirmed = True
                (tracks if tg.confirmed else tentative).append(tg.snapshot(cur[i], now))
                survivors.append(tg)
                rows.append(i)
            elif not tg.confirmed:
                pass  # missed before it was confirmed: gone, unreported
            elif now - tg.t_match > self.max_age_s + _EPS_S:
                ended.append(tg.snapshot(cur[i], now))
            else:
                tg.hit_streak = 0
                survivors.append(tg)
                rows.append(i)
        if len(survivors) < len(targets):
            self._filters.keep(np.array(rows, dtype=np.intp))
        self._targets = survivors
        return TrackerOutput(tracks, ended, tentative)

    def flush(self) -> list[Track]:
        """End every live confirmed track (the source ended or shutdown) and reset.

        Ids keep counting, so that they stay unique for this instance's lifetime.
        """
        ended = [t for t in self.live if t.confirmed]
        self._targets = []
        self._filters = kalman.Filters()
        self.frame_count = 0
        self._t = None
        return ended

    def _advance(self, t: float | None) -> tuple[float, float]:
        """(now, seconds since the last update); time never runs backwards."""
        last = self._t
        if t is None:
            now = 0.0 if last is None else last + self.frame_s
        else:
            now = float(t)
            if not math.isfinite(now):
                raise ValueError(f"t must be a finite number of seconds, got {t}")
            if last is not None and now < last:
                log.debug("time went back %.3f s; holding it", last - now)
                now = last
        self._t = now
        return now, 0.0 if last is None else now - last

    def _drop(self, boxes: np.ndarray, bad: np.ndarray, ended: list[Track],
              now: float) -> tuple[list[_Target], np.ndarray]:
        """Remove targets whose filter diverged (nan, non-positive area or aspect)."""
        targets = self._targets
        for i in np.flatnonzero(bad).tolist():
            log.debug("dropping track %d: degenerate box estimate", targets[i].id)
            if targets[i].confirmed:
                ended.append(targets[i].snapshot(boxes[i], now))
        keep = ~bad
        self._targets = [t for t, k in zip(targets, keep.tolist()) if k]
        self._filters.keep(keep)
        return self._targets, boxes[keep]

    def _associate(self, targets: list[_Target], boxes: np.ndarray, dets: np.ndarray,
                   high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The detection matched to each target (-1: none), in three rounds, and the
        high-score detections left unmatched, which start tracks."""
        det_of = np.empty(len(targets), dtype=np.intp)
        det_of.fill(-1)
        hi = high.nonzero()[0]
        if not targets or not len(dets):
            return det_of, hi
        lo = (~high).nonzero()[0]
        iou = iou_matrix(dets, boxes)  # once; each round takes its rows and columns
        thr = self.iou_threshold
        confirmed = [k for k, t in enumerate(targets) if t.confirmed]
        # 1. Confirmed tracks, lost ones included, take high-score detections.
        trk = np.array(confirmed, dtype=np.intp)
        hi, trk = _round(iou, hi, trk, thr, det_of)
        # 2. Those left that were seen at the last update take low-score ones
        # (ByteTrack). A lost track may not: a low score where it was predicted to
        # be is too weak a sign that it is the same object.
        if len(lo) and len(trk):
            trk = trk[[targets[k].time_since_update == 1 for k in trk.tolist()]]
            _round(iou, lo, trk, thr, det_of)
        # 3. Tracks on probation take the high-score detections left.
        if len(confirmed) < len(targets):
            is_confirmed = np.zeros(len(targets), dtype=bool)
            is_confirmed[confirmed] = True
            hi, _ = _round(iou, hi, (~is_confirmed).nonzero()[0], thr, det_of)
        return det_of, hi


def _round(iou: np.ndarray, d_idx: np.ndarray, t_idx: np.ndarray, threshold: float,
           det_of: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Match detections ``d_idx`` to targets ``t_idx`` by ``iou`` (all detections x all
    targets), record the pairs in ``det_of``; returns the detections and targets left."""
    if len(d_idx) == 0 or len(t_idx) == 0:
        return d_idx, t_idx
    # Indices are sorted and unique: as many as rows (columns) means all of them, the
    # common case, which needs no copy of the matrix.
    sub = iou if len(d_idx) == iou.shape[0] else iou[d_idx]
    if len(t_idx) != iou.shape[1]:
        sub = sub[:, t_idx]
    rows, cols = assign(sub, threshold)
    if len(rows) == 0:
        return d_idx, t_idx
    det_of[t_idx[cols]] = d_idx[rows]
    d_used = np.zeros(len(d_idx), dtype=bool)
    d_used[rows] = True
    t_used = np.zeros(len(t_idx), dtype=bool)
    t_used[cols] = True
    return d_idx[~d_used], t_idx[~t_used]


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
        good &= np.isfinite(score)
        if not good.all():
            log.debug("ignoring %d degenerate detection(s)", n - int(good.sum()))
            dets, score, class_id = dets[good], score[good], class_id[good]
    return dets, score, class_id
