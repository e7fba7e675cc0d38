"""The self-check a model version passes before it detects a single live frame.

A candidate is already loaded (load_detector refused it if its outputs do not fit the
decoder its manifest names). Here it runs on the reference images (data/assets person.jpg
and dog.jpg), beside the model it would replace, and must:

- give well-formed outputs: finite boxes, scores in [0, 1], class ids within its labels;
- find objects: at least one detection from `min_score` up on every reference image
  where the running model finds one (on at least one image when there is none running);
- be fast enough: its median time per image at most `latency_factor` times the running
  model's, measured in the same run, plus `latency_slack_ms` (timer noise on tiny models).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from appliance.detect.types import Detections

REFERENCE_IMAGES = ("person.jpg", "dog.jpg")


@dataclass(frozen=True)
class CheckPolicy:
    latency_factor: float = 2.0
    latency_slack_ms: float = 5.0
    repeats: int = 3  # timed runs per image and model (after one warm-up run)
    min_score: float = 0.5
    images: tuple[str, ...] = REFERENCE_IMAGES


@dataclass
class CheckReport:
    ok: bool
    problems: list[str] = field(default_factory=list)
    latency_ms: float = 0.0  # the candidate's median per image
    baseline_ms: float | None = None  # the running model's, same images, same run
    found: dict[str, int] = field(default_factory=dict)  # image -> candidate detections >= min_score
    baseline_found: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["latency_ms"] = round(self.latency_ms, 2)
        d["baseline_ms"] = None if self.baseline_ms is None else round(self.baseline_ms, 2)
        return d


def reference_images(assets_dir: Path, names: tuple[str, ...] = REFERENCE_IMAGES) -> dict[str, np.ndarray]:
    out = {}
    for n in names:
        img = cv2.imread(str(Path(assets_dir) / n))
        if img is None:
            raise FileNotFoundError(f"reference image {Path(assets_dir) / n} is missing; run 'appliance fetch'")
        out[n] = img
    return out


def _malformed(det: Detections, n_labels: int) -> str | None:
    if len(det.xyxy) != len(det.score) or len(det.score) != len(det.class_id):
        return "boxes, scores and classes differ in length"
    if len(det.xyxy) and not np.isfinite(det.xyxy).all():
        return "boxes are not finite"
    if len(det.score) and (not np.isfinite(det.score).all() or det.score.min() < 0 or det.score.max() > 1):
        return "scores outside [0, 1]"
    if len(det.class_id) and (det.class_id.min() < 0 or det.class_id.max() >= n_labels):
        return f"class ids outside the model's {n_labels} labels"
    return None


def _run(detector, images: dict[str, np.ndarray], repeats: int,
         timer: Callable[[], float]) -> tuple[dict[str, Detections], list[float]]:
    dets, times = {}, []
    for name, img in images.items():
        dets[name] = detector.detect([img])[0]  # warm-up, and the answer checked
        for _ in range(repeats):
            t0 = timer()
            detector.detect([img])
            times.append(timer() - t0)
    return dets, times


def self_check(candidate, baseline=None, images: dict[str, np.ndarray] | None = None,
               assets_dir: Path | None = None, policy: CheckPolicy = CheckPolicy(),
               timer: Callable[[], float] = time.perf_counter) -> CheckReport:
    """Check `candidate` (a Detector) against `baseline` (the running one, or None)."""
    if images is None:
        from appliance import paths

        images = reference_images(assets_dir or paths.assets_dir(), policy.images)
    problems: list[str] = []
    try:
        dets, times = _run(candidate, images, policy.repeats, timer)
    except Exception as e:  # a model that loads but fails on real images
        return CheckReport(False, [f"inference on the reference images failed: {type(e).__name__}: {e}"])
    for name, d in dets.items():
        bad = _malformed(d, len(candidate.labels))
        if bad:
            problems.append(f"outputs on {name} do not match the manifest: {bad}")
    found = {n: int((d.score >= policy.min_score).sum()) for n, d in dets.items()}
    report = CheckReport(False, problems, 1000.0 * float(np.median(times)) if times else 0.0, found=found)
    if baseline is not None:
        bdets, btimes = _run(baseline, images, policy.repeats, timer)
        report.baseline_ms = 1000.0 * float(np.median(btimes)) if btimes else 0.0
        report.baseline_found = {n: int((d.score >= policy.min_score).sum()) for n, d in bdets.items()}
        missed = [n for n, k in report.baseline_found.items() if k and not found.get(n)]
        if missed:
            problems.append(f"finds nothing from score {policy.min_score} on {', '.join(missed)}, "
                            "where the running model does")
        bound = policy.latency_factor * report.baseline_ms + policy.latency_slack_ms
        if report.latency_ms > bound:
            problems.append(f"too slow: {report.latency_ms:.1f} ms per image, the running model "
                            f"{report.baseline_ms:.1f} ms (bound {policy.latency_factor:g}x + "
                            f"{policy.latency_slack_ms:g} ms = {bound:.1f} ms)")
    elif not any(found.values()):
        problems.append(f"finds nothing from score {policy.min_score} on any reference image "
                        f"({', '.join(images)})")
    report.ok = not problems
    return report
