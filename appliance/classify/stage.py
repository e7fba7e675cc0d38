"""The classify stage: each confirmed track of `classify.classes` gets a type, by votes.

Two halves, so that classification never slows detection or tracking:

- `ClassifyTracks`, a track processor (one per camera, on the track thread). For each
  frame it decides which tracks are worth a crop: of a classified class, not yet
  decided, due, and with a crop worth classifying (at least the model's `min_size`, not
  cut by the frame edge, from a detection matched this frame). It cuts the crop and
  hands it over, then applies the votes that came back and writes the decision into
  `result.attributes[track_id]["classification"]`, where the lifecycle events and the
  live view find it.
- `ClassifierStage`, one thread for all cameras, with a bounded latest-wins queue of
  crop requests: when it falls behind, the oldest request is dropped and counted. A
  token bucket caps its work at `classify.budget` crops per second; requests over it
  are counted and not made.

When: from a track's first detection, before it is confirmed (`result.tentative`), one
crop a frame until `min_votes` have been asked for, then one every
`classify.interval_frames`. So a type is often known when the track's `new` event goes
out, and a car seen for a handful of frames still gets one; a tentative track that the
tracker drops is forgotten. A track's type is decided once its leading type has
`min_votes` votes and at least `min_share` of them; then no more work is done on it, so
the type never flickers. After `max_attempts` classified crops an undecided track stays
undecided.
"""
from __future__ import annotations

import logging
import os
import queue
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from appliance import metrics
from appliance.config.classify import ClassifyConfig
from appliance.detect.detector import label_name
from appliance.result import FrameResult
from appliance.stage import QueueStage
from appliance.track.sort import Track

log = logging.getLogger(__name__)

AUTO_CPU_SHARE = 0.05  # budget auto: the classifier may use this share of the usable cores
EDGE_PX = 2  # a box this close to the frame's edge is cut by it


@dataclass
class Request:
    crop: np.ndarray
    reply: Callable[[Any], None]  # called on the classifier's thread with a Prediction


class TokenBucket:
    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic):
        self.rate, self._clock = rate, clock
        self.tokens, self._last = max(1.0, rate), clock()

    def take(self) -> bool:
        now = self._clock()
        self.tokens = min(max(1.0, self.rate), self.tokens + (now - self._last) * self.rate)
        self._last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class ClassifierStage(QueueStage):
    """The classifier's own thread: takes crop requests, classifies, replies."""

    def __init__(self, classifier, cfg: ClassifyConfig, clock: Callable[[], float] = time.monotonic):
        super().__init__("classify", maxsize=cfg.queue_size)
        self.classifier = classifier
        self.budget = self._budget(cfg)
        self.bucket = TokenBucket(self.budget, clock)
        self.classified = 0
        self.dropped = Counter()  # why: "budget", "queue"
        self.latency_s: deque = deque(maxlen=256)

    def _budget(self, cfg: ClassifyConfig) -> float:
        if cfg.budget != "auto":
            return float(cfg.budget)
        crop = np.zeros((96, 96, 3), np.uint8)
        self.classifier.classify([crop])  # warm up
        t0 = time.perf_counter()
        for _ in range(5):
            self.classifier.classify([crop])
        each = max((time.perf_counter() - t0) / 5, 1e-4)
        cores = len(os.sched_getaffinity(0))
        rate = round(AUTO_CPU_SHARE * cores / each, 1)
        log.info("classify.budget auto: %.1f crops/s (%.1f ms a crop, %.0f %% of %d cores)",
                 rate, each * 1000, AUTO_CPU_SHARE * 100, cores)
        return rate

    def offer(self, request: Request) -> bool:
        """Queue a request if the budget allows; never blocks. False when not queued."""
        if not self.bucket.take():
            self._drop("budget")
            return False
        while True:
            try:
                self.inbox.put_nowait(request)
                return True
            except queue.Full:
                try:
                    self.inbox.get_nowait()  # latest wins: the oldest request goes
                    self._drop("queue")
                except queue.Empty:
                    pass

    def _drop(self, why: str) -> None:
        self.dropped[why] += 1
        metrics.CLASSIFY_DROPPED.labels(why).inc()

    def handle(self, request: Request) -> None:
        t0 = time.perf_counter()
        (prediction,) = self.classifier.classify([request.crop], known=True)  # the detector said "vehicle"
        secs = time.perf_counter() - t0
        self.latency_s.append(secs)
        metrics.CLASSIFY_SECONDS.observe(secs)
        metrics.CLASSIFY_CROPS.inc()
        self.classified += 1
        request.reply(prediction)

    def status(self) -> dict[str, Any]:
        lat = np.fromiter(list(self.latency_s), float)
        return {"state": "running" if self.alive else "stopped", "model": self.classifier.name,
                "version": self.classifier.version, "budget_crops_per_s": self.budget,
                "classified": self.classified, "dropped_budget": self.dropped["budget"],
                "dropped_queue": self.dropped["queue"], "queue_depth": self.depth,
                "ms_p50": round(1000 * float(np.percentile(lat, 50)), 2) if len(lat) else None}


@dataclass
class _Votes:
    label: str  # the detector's label of the track
    confirmed_ts: float | None = None  # capture time of its first confirmed frame
    decided_ts: float | None = None
    votes: Counter = field(default_factory=Counter)
    scores: dict = field(default_factory=dict)  # type -> summed score
    attempts: int = 0  # crops classified
    requests: int = 0  # crops asked for
    last_request: int = -(10**9)  # frame seq of the last request
    decided: dict | None = None


class ClassifyTracks:
    """The per-camera track processor (runs on the track thread)."""

    def __init__(self, stage: ClassifierStage, cfg: ClassifyConfig, labels, camera_id: str):
        self.stage, self.cfg, self.labels = stage, cfg, labels
        self.camera_id = camera_id
        self.classes = set(cfg.classes)
        self._tracks: dict[int, _Votes] = {}
        self._replies: deque = deque()  # (track id, Prediction), appended by the classifier thread

    def _label(self, t: Track) -> str:
        return label_name(self.labels, int(t.class_id))

    def process(self, r: FrameResult) -> None:
        now = r.frame.t_capture_wall
        self._apply_replies(now)
        image = r.frame.image
        h, w = image.shape[:2]
        matched = [*r.tentative, *r.tracks]
        for t in matched:
            v = self._tracks.get(t.id)
            if v is None:
                label = self._label(t)
                if label not in self.classes:
                    continue
                v = self._tracks[t.id] = _Votes(label)
            if t.confirmed and v.confirmed_ts is None:
                v.confirmed_ts = now
                self._observe_decision(v)
            if v.decided is None and self._due(v, r.frame.seq) and whole(t.xyxy, w, h):
                crop = self.stage.classifier.crop(image, t.xyxy)
                if crop is None:
                    metrics.CLASSIFY_DROPPED.labels("crop").inc()
                elif self.stage.offer(Request(crop, lambda p, tid=t.id: self._replies.append((tid, p)))):
                    v.last_request = r.frame.seq
                    v.requests += 1
        # A tentative track not matched this frame is gone: the tracker drops it unreported.
        live = {t.id for t in matched}
        for tid in [tid for tid, v in self._tracks.items() if v.confirmed_ts is None and tid not in live]:
            del self._tracks[tid]
        for t in [*r.tracks, *r.ended]:
            v = self._tracks.get(t.id)
            if v is not None and v.decided is not None:
                r.attributes.setdefault(t.id, {})["classification"] = v.decided
        for t in r.ended:
            v = self._tracks.pop(t.id, None)
            if v is not None:
                metrics.CLASSIFY_TRACKS.labels("decided" if v.decided else "undecided").inc()

    def _due(self, v: _Votes, seq: int) -> bool:
        interval = 1 if v.requests < self.cfg.min_votes else self.cfg.interval_frames
        return v.attempts < self.cfg.max_attempts and seq - v.last_request >= interval

    def _observe_decision(self, v: _Votes) -> None:
        """Confirmation to decision (0 when decided before), once both have happened."""
        if v.confirmed_ts is not None and v.decided_ts is not None:
            metrics.CLASSIFY_DECISION_SECONDS.observe(max(0.0, v.decided_ts - v.confirmed_ts))

    def _apply_replies(self, now_ts: float) -> None:
        while self._replies:
            tid, p = self._replies.popleft()
            v = self._tracks.get(tid)
            if v is None or v.decided is not None:
                continue  # ended meanwhile, or decided by an earlier reply
            v.attempts += 1
            v.votes[p.label] += 1
            v.scores[p.label] = v.scores.get(p.label, 0.0) + p.score
            (best, n), = v.votes.most_common(1)
            if n >= self.cfg.min_votes and n / sum(v.votes.values()) >= self.cfg.min_share:
                c = self.stage.classifier
                v.decided = {"label": best, "score": round(v.scores[best] / n, 4), "votes": n,
                             "attempts": v.attempts, "model": c.name, "version": c.version}
                v.decided_ts = now_ts
                self._observe_decision(v)


def whole(xyxy: np.ndarray, w: int, h: int) -> bool:
    """The box is finite and not cut by the frame's edge."""
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    if not all(np.isfinite([x1, y1, x2, y2])):
        return False
    return x1 >= EDGE_PX and y1 >= EDGE_PX and x2 <= w - EDGE_PX and y2 <= h - EDGE_PX


def build(ctx, camera) -> ClassifyTracks | None:
    """The pipeline's factory: one classifier stage shared by every camera's processor.
    A classifier that cannot be loaded leaves the appliance running without one."""
    cfg = ctx.cfg.classify
    if not cfg.enabled:
        return None
    stage = ctx.shared("classify", lambda: _load_stage(ctx))
    return ClassifyTracks(stage, cfg, ctx.labels, camera.id) if stage is not None else None


def _load_stage(ctx) -> ClassifierStage | None:
    from appliance.classify.classifier import load_classifier
    from appliance.errors import ApplianceError

    cfg = ctx.cfg.classify
    try:
        classifier = load_classifier(cfg.model, ctx.assets_dir, backend=cfg.backend, threads=1)
    except ApplianceError as e:
        log.error("classify: running without classification: %s", e)
        ctx.notes["classify"] = {"state": "unavailable", "reason": str(e)}
        return None
    return ClassifierStage(classifier, cfg)

