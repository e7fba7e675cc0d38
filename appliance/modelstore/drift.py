"""Drift: is the model still seeing what it saw right after it was activated?

Per camera and model, the first `baseline_frames` detected frames after the model started
on that camera are the baseline: a histogram of detection scores (from `min_score` up)
and the class mix. The last `window_frames` frames are compared with it every
`every_frames` frames. The drift score is the larger of the two Jensen-Shannon distances
(base 2, so 0 = the same distribution, 1 = nothing in common): scores, and classes. It is
exported as `appliance_model_drift{camera,model}`; crossing `threshold` upward sends one
`drift` event, and the next waits until the score fell under half the threshold.
A camera whose model changes starts a new baseline.
"""
from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from scipy.spatial.distance import jensenshannon

from appliance import metrics


@dataclass(frozen=True)
class DriftPolicy:
    baseline_frames: int = 300
    window_frames: int = 300
    every_frames: int = 50
    threshold: float = 0.3
    min_score: float = 0.3  # detections below this are not counted
    bins: int = 10  # of the scores, over [min_score, 1]
    min_detections: int = 30  # fewer in the baseline or the window: no score yet


@dataclass
class _Camera:
    model: str
    baseline_scores: np.ndarray
    baseline_classes: Counter = field(default_factory=Counter)
    baseline_n: int = 0  # frames in the baseline so far
    window: deque = field(default_factory=deque)  # (score histogram, class Counter) per frame
    since_eval: int = 0
    score: float | None = None
    alarmed: bool = False


def js_distance(p: np.ndarray, q: np.ndarray) -> float:
    if p.sum() <= 0 or q.sum() <= 0:
        return 0.0
    d = float(jensenshannon(p, q, base=2))
    return 0.0 if np.isnan(d) else d


class DriftMonitor:
    """A detect-stage observer; `state` is the event sink's state(kind, camera, ...)."""

    def __init__(self, policy: DriftPolicy = DriftPolicy(), state: Callable[..., None] | None = None):
        self.policy = policy
        self._state = state
        self._edges = np.linspace(policy.min_score, 1.0, policy.bins + 1)
        self.cameras: dict[str, _Camera] = {}

    def observe(self, result) -> None:
        if result.model is None:
            return
        p = self.policy
        model = f"{result.model['name']}@{result.model['version']}"
        cam = self.cameras.get(result.camera_id)
        if cam is None or cam.model != model:
            if cam is not None and cam.score is not None:  # the old model's gauge goes with it
                metrics.MODEL_DRIFT.remove(result.camera_id, cam.model)
            cam = self.cameras[result.camera_id] = _Camera(model, np.zeros(p.bins))
        scores = result.detections.score
        keep = scores >= p.min_score
        hist = np.histogram(np.minimum(scores[keep], 1.0), self._edges)[0].astype(float)
        classes = Counter(int(c) for c in result.detections.class_id[keep])
        if cam.baseline_n < p.baseline_frames:
            cam.baseline_scores += hist
            cam.baseline_classes.update(classes)
            cam.baseline_n += 1
            return
        cam.window.append((hist, classes))
        if len(cam.window) > p.window_frames:
            cam.window.popleft()
        cam.since_eval += 1
        if cam.since_eval >= p.every_frames:
            cam.since_eval = 0
            self._evaluate(result.camera_id, cam)

    def _evaluate(self, camera: str, cam: _Camera) -> None:
        p = self.policy
        scores = np.sum([h for h, _ in cam.window], axis=0)
        classes: Counter = Counter()
        for _, c in cam.window:
            classes.update(c)
        if cam.baseline_scores.sum() < p.min_detections or scores.sum() < p.min_detections:
            return
        ids = sorted(set(cam.baseline_classes) | set(classes))
        d_scores = js_distance(cam.baseline_scores, scores)
        d_classes = js_distance(np.array([cam.baseline_classes[i] for i in ids], float),
                                np.array([classes[i] for i in ids], float))
        previous, cam.score = cam.score, max(d_scores, d_classes)
        metrics.MODEL_DRIFT.labels(camera, cam.model).set(cam.score)
        if not cam.alarmed and cam.score >= p.threshold:
            cam.alarmed = True
            if self._state is not None:
                self._state("drift", camera, f"drift {cam.score:.2f}",
                            "baseline" if previous is None else f"drift {previous:.2f}",
                            f"detections differ from the baseline taken after {cam.model} started "
                            f"(score {cam.score:.2f} >= {p.threshold:g})",
                            {"model": cam.model, "score": round(cam.score, 4),
                             "scores_distance": round(d_scores, 4), "classes_distance": round(d_classes, 4),
                             "threshold": p.threshold, "baseline_frames": cam.baseline_n,
                             "window_frames": len(cam.window)})
        elif cam.alarmed and cam.score < p.threshold / 2:
            cam.alarmed = False

    def status(self) -> dict[str, Any]:
        return {cam: {"model": c.model, "score": None if c.score is None else round(c.score, 4),
                      "baseline_frames": c.baseline_n} for cam, c in list(self.cameras.items())}
