"""Adaptive input resolution: the YOLOv8 test model (ONNX Runtime, CPU) at 640, 480 and 320,
and how the adaptive controller holds a camera's target fps that the full size cannot reach.

1. ms per frame at each input size: detector.detect() on vtest.avi frames, one at a time
   (decode excluded), the sizes taking turns on each frame, median of --frames after a
   warm-up; the converted models are made once (appliance/detect/resize.py) before timing.
2. Holding a target: one camera delivering vtest.avi at --fps into the real FrameHub,
   DetectStage and AdaptiveControl, on virtual time. Each detection costs the ms measured
   in part 1 at the size it runs at, and returns the detections the real model gave for
   that frame at that size (computed beforehand on a --clip of frames, replayed in a loop).
   Virtual time makes the dynamics exact and the run short; the costs and detections are
   this machine's and this model's. Four policies, each --seconds long:
     sizes+stride  input size first (640 -> 480 -> 320), then the stride (the default)
     >=480+stride  the same with adaptive.min_input_size: 480
     stride alone  adaptive.input_sizes: false, full size, stride 1..max_stride
     full size     adaptive disabled: 640, every frame the detector can take
   Reported over the second half of the run (after the controller settled): handled fps
   (frames taken, detected or skipped on purpose), detected fps, frames dropped, and person
   detections per second kept (detections >= --score on the detected frames; both of the
   model's classes, Normal and Fall, are people).

    scripts/bench resolution [--frames 8] [--clip 20] [--fps 10] [--seconds 60] [--threads 1]
"""
from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from appliance import paths
from appliance.assets import fetch
from appliance.capture.frame import Frame
from appliance.capture.hub import FrameHub
from appliance.capture.stage import CaptureStage
from appliance.config import AdaptiveConfig
from appliance.control.adaptive import AdaptiveControl, describe
from appliance.detect import load_detector
from appliance.detect.stage import DetectStage
from appliance.detect.types import Detections

MODEL = "yolov8-fall-test"
POLICIES = {
    "sizes+stride": {},
    ">=480+stride": {"min_input_size": 480},
    "stride alone": {"input_sizes": False},
    "full size": {"enabled": False},
}


def read_frames(path: Path, start: int, n: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    out = []
    for i in range(start + n):
        ok, img = cap.read()
        if not ok:
            break
        if i >= start:
            out.append(img)
    cap.release()
    return out


def ms_per_frame(detector, frames: list[np.ndarray]) -> dict[int, float]:
    """Median ms per frame at each size; the sizes take turns on every frame, so a machine
    whose load changes during the run (other processes) slows them alike."""
    times: dict[int, list[float]] = {s: [] for s in detector.sizes}
    for s in detector.sizes:
        detector.detect(frames[:1], size=s)  # warm-up: first-run allocations
    for f in frames:
        for s in detector.sizes:
            t0 = time.perf_counter()
            detector.detect([f], size=s)
            times[s].append(time.perf_counter() - t0)
    return {s: 1000.0 * statistics.median(v) for s, v in times.items()}


class Replay:
    """The real model's detections for each clip frame at each size, on a virtual clock that
    advances by the measured cost of the size."""

    def __init__(self, clock: list[float], sizes: tuple[int, ...], cost_s: dict[int, float],
                 dets: dict[int, list[Detections]]):
        self.clock, self.sizes, self.cost_s, self.dets = clock, sizes, cost_s, dets
        self.name, self.version = MODEL, "replay"
        self._seq: list[int] = []

    def prepare(self, size: int) -> None:
        pass  # made in part 1

    def detect(self, images, size: int | None = None) -> list[Detections]:
        size = size or self.sizes[0]
        out = []
        for img in images:
            self.clock[0] += self.cost_s[size]
            seq = int(img[0, 0, 0])  # the clip index, written into the stand-in image
            out.append(self.dets[size][seq])
        return out


class Sink:
    def __init__(self, score: float):
        self.score, self.persons, self.detected = score, [], []

    def put(self, item) -> None:
        if hasattr(item, "detections"):
            self.detected.append(item.frame.t_capture_monotonic)
            self.persons.append((item.frame.t_capture_monotonic, int((item.detections.score >= self.score).sum())))


def hold(policy: str, sizes: tuple[int, ...], cost_s: dict[int, float], dets: dict[int, list[Detections]],
         fps: float, seconds: float, max_stride: int, score: float) -> dict:
    clock = [0.0]
    now = lambda: clock[0]  # noqa: E731
    cfg = AdaptiveConfig(interval_s=1.0, cooldown_s=3.0, max_stride=max_stride, **POLICIES[policy])
    hub = FrameHub()
    hub.add_camera("cam", latest_wins=True)
    capture = CaptureStage("cam", hub)
    steps: list[str] = []
    adaptive = AdaptiveControl(cfg, {"cam": fps}, clock=now, sizes=sizes,
                               on_change=lambda cam, new, old, reason, d: steps.append(
                                   f"{now():.0f}s {describe(d)}"))
    sink = Sink(score)
    stage = DetectStage(Replay(clock, sizes, cost_s, dets), hub, sink, adaptive, {"cam": 1e9},
                        dropped=lambda cam: capture.dropped, clock=now)
    clip = len(dets[sizes[0]])
    half = seconds / 2
    handled_at_half = dropped_at_half = None
    for i in range(int(seconds * fps)):
        due = i / fps
        while clock[0] < due and hub.depth("cam"):
            stage.step(timeout=0)
        clock[0] = max(clock[0], due)
        if handled_at_half is None and due >= half:
            cam = stage.cameras["cam"]
            handled_at_half, dropped_at_half = cam.detected + cam.skipped, capture.dropped
        img = np.full((2, 2, 3), i % clip, np.uint8)
        capture.deliver(Frame(img, "cam", i, due, 1000.0 + due), 0.0)
    cam = stage.cameras["cam"]
    late = [t for t in sink.detected if t >= half]
    return {
        "handled_fps": (cam.detected + cam.skipped - handled_at_half) / half,
        "detected_fps": len(late) / half,
        "dropped": (capture.dropped - dropped_at_half) / half,
        "persons_per_s": sum(n for t, n in sink.persons if t >= half) / half,
        "level": f"size {adaptive.size('cam') or sizes[0]} stride {adaptive.stride('cam')}",
        "steps": steps,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="scripts/bench resolution", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=8, help="frames timed per size (default 8)")
    ap.add_argument("--clip", type=int, default=20, help="frames whose detections are replayed (default 20)")
    ap.add_argument("--fps", type=float, default=10.0, help="the camera's rate and target (vtest.avi's own: 10)")
    ap.add_argument("--seconds", type=float, default=60.0, help="virtual seconds per policy (default 60)")
    ap.add_argument("--threads", type=int, default=1, help="inference threads (default 1)")
    ap.add_argument("--max-stride", type=int, default=8, help="adaptive.max_stride for every policy (default 8)")
    ap.add_argument("--score", type=float, default=0.25, help="a detection counted as a person from this score")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    assets = paths.assets_dir()
    fetch(assets, ("default", "test"))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        detector = load_detector(MODEL, assets, threshold=0.1, threads=args.threads, cache_dir=Path(tmp))
        for size in detector.sizes:
            detector.prepare(size)
        print(f"{MODEL}: sizes {list(detector.sizes)}, converted and loaded in {time.perf_counter() - t0:.1f} s "
              f"(onnxruntime, {args.threads} thread(s))")
        timed = read_frames(assets / "vtest.avi", 100, args.frames)
        ms = ms_per_frame(detector, timed)
        full = detector.sizes[0]
        print("\n1. ms per frame (median of %d vtest.avi frames)" % len(timed))
        print(f"{'size':>6} {'ms/frame':>9} {'fps':>6} {'vs full':>8} {'area':>6}")
        for s, v in ms.items():
            print(f"{s:>6} {v:>9.1f} {1000 / v:>6.1f} {v / ms[full]:>8.2f} {(s / full) ** 2:>6.2f}")

        clip = read_frames(assets / "vtest.avi", 100, args.clip)
        dets = {s: detector.detect(clip, size=s) for s in detector.sizes}
    per_frame = {s: np.mean([(d.score >= args.score).sum() for d in dets[s]]) for s in dets}
    print(f"\npersons >= {args.score} per detected frame on the {len(clip)}-frame clip: "
          + ", ".join(f"{s}: {v:.2f}" for s, v in per_frame.items()))

    print(f"\n2. one camera at {args.fps:g} fps, target {args.fps:g} fps; full size can detect "
          f"{1000 / ms[full]:.1f} fps; {args.seconds:g} virtual s per policy, second half reported")
    print(f"{'policy':<13} {'handled fps':>11} {'detected fps':>12} {'dropped/s':>9} {'persons/s':>9}  settled at")
    results = {}
    for policy in POLICIES:
        r = results[policy] = hold(policy, detector.sizes, {s: v / 1000 for s, v in ms.items()}, dets,
                                   args.fps, args.seconds, args.max_stride, args.score)
        print(f"{policy:<13} {r['handled_fps']:>11.1f} {r['detected_fps']:>12.1f} {r['dropped']:>9.1f} "
              f"{r['persons_per_s']:>9.1f}  {r['level']}")
    for policy, r in results.items():
        print(f"  {policy} steps: {', '.join(r['steps']) or 'none'}")
    a, b = results["sizes+stride"], results["stride alone"]
    print(f"\nsizes+stride / stride alone: detected fps x{a['detected_fps'] / max(b['detected_fps'], 1e-9):.2f}, "
          f"persons/s x{a['persons_per_s'] / max(b['persons_per_s'], 1e-9):.2f}, "
          f"handled fps x{a['handled_fps'] / max(b['handled_fps'], 1e-9):.2f}")


if __name__ == "__main__":
    main()
