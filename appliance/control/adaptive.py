"""Adaptive detection: each camera keeps up with its target frame rate.

Two knobs, as one ladder of levels per camera:

- the detector's input size, when its model declares several (`input_sizes` in its
  manifest, e.g. 640, 480, 320): a smaller input costs about its area and still detects
  every frame, though small objects are found less well;
- the stride k: the detector sees every k-th frame a camera delivers, and the frames
  between are taken from the camera but not detected (the tracker spans the gap with its
  motion model on the next detected frame). Throughput, the frames per second a camera
  gets handled (detected or skipped on purpose, as opposed to dropped because the
  detector was busy), is then up to k times the detector's own rate.

The ladder steps the size down first, at `min_stride`, then the stride at the smallest
size: (640, 1) -> (480, 1) -> (320, 1) -> (320, 2) -> ... -> (320, max_stride), and back
up the same way. `adaptive.min_input_size` stops the sizes earlier. With one size (the
shipped SSD's fixed 300x300, or `adaptive.input_sizes: false`) it is the stride alone.

A live camera with a lower-resolution source (cameras[].detect_source, an RTSP
sub-stream, or detect_source_size for V4L2/CSI) has one more rung at the top: the
capture switches to that source before any size or stride step, and back to the main
source last. It comes first because it costs the least: every frame is still detected
at the full input size, and what it saves is decoding (and resizing) the main stream,
often the largest CPU cost on a small board with a high-resolution camera (it is what
Frigate users do by hand with a `detect` sub-stream). Boxes stay in the main stream's
pixels (detect/stage.py). Stepping back to the main source is predicted with the ratio
of this camera's inference time per frame on the main source (the last interval before
the switch) to that on the detect source (the first interval after it), at least 1: a
detector that runs slower while the main stream is decoded beside it is not brought
back to it until the load would allow it. The two are measured back to back, at one
size and stride, and the ratio is kept (not the times, which go stale as above).

Control, once every `interval_s` (smoothed over about two intervals):

- step down (one level) when a camera's throughput is below `down_ratio` x its target
  and the detector is the reason (frames were dropped, or the detector is busy >= 85 %
  of the time);
- step up (one level) when the detector's load, predicted for the level above, would
  stay at or below `up_load`. The prediction scales this camera's share of the load by
  the stride and by the sizes' areas (the YOLOv8 test model's time per frame falls a
  little faster than its area on a CPU, so the area errs on the safe side). Times
  measured at another size are not used: they go stale when the device's speed changes
  (temperature, power mode, other cameras). At most one camera steps up per interval,
  so two cameras cannot both grab the same spare capacity;
- never step up a camera that is short of its target while it still drops frames;
- never within `cooldown_s` of that camera's last change, never off the ladder.

The gap between the two rules (a step up must leave the detector at most `up_load`
busy; a step down needs it short of target and saturated) is the hysteresis that keeps
the level from oscillating. The target is cameras[].target_fps, else
adaptive.target_fps, else the rate frames arrive from the camera ("keep up").
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Collection, Mapping, Sequence

from appliance import metrics
from appliance.config import AdaptiveConfig

log = logging.getLogger(__name__)

SATURATED_LOAD = 0.85  # detector busy this much of the time: it is the bottleneck
DROP_SHARE = 0.02  # more than this share of arrivals dropped: frames were available
_ALPHA = 0.5  # smoothing of the per-interval measurements


@dataclass
class _Camera:
    target_fps: float
    level: int  # index into the ladder of (input size, stride)
    counter: int = 0
    handled: int = 0  # frames taken since the last measurement (detected or skipped)
    infer_s: float = 0.0  # detector seconds spent on this camera since then
    dropped_seen: int = 0
    throughput: float | None = None  # smoothed frames handled per second
    arrival: float | None = None  # smoothed frames arriving per second (handled + dropped)
    load: float = 0.0  # smoothed share of wall time the detector spends on this camera
    drop_share: float | None = None  # smoothed share of arrivals dropped
    last_change: float = float("-inf")
    changes: int = 0
    has_low: bool = False  # the camera has a detect source (one more rung at the top)
    low: bool = False  # capturing from it now
    detected: int = 0  # frames detected since the last measurement
    frame_s: float | None = None  # smoothed inference seconds per frame, since the last step
    main_frame_s: float | None = None  # the same, on the main source before it left it
    capture_ratio: float = 1.0  # main source's time per frame / the detect source's


def _smooth(old: float | None, new: float) -> float:
    return new if old is None else _ALPHA * new + (1.0 - _ALPHA) * old


def ladder(sizes: Sequence[int], min_stride: int, max_stride: int) -> list[tuple[int | None, int]]:
    """The levels, finest first: every size (largest first) at min_stride, then the strides
    at the smallest size. sizes () gives strides alone, with size None."""
    sizes = sorted(set(sizes), reverse=True) or [None]  # type: ignore[list-item]
    return [(s, min_stride) for s in sizes] + [(sizes[-1], k) for k in range(min_stride + 1, max_stride + 1)]


# Called as on_change(camera, new_stride, old_stride, reason, detail); detail has the sizes.
OnChange = Callable[[str, int, int, str, dict], None]
# Called as on_capture(camera, low): capture from the camera's detect source (low) or main.
OnCapture = Callable[[str, bool], None]


class AdaptiveControl:
    """The controllers of all cameras that share one detector. Not thread-safe: the
    detect thread calls everything except status(), which only reads.

    sizes: the detector's input sizes (Detector.sizes); () or one size: stride only.
    detect_sources: the cameras with a detect source; on_capture switches their capture."""

    def __init__(self, cfg: AdaptiveConfig, targets: Mapping[str, float],
                 on_change: OnChange | None = None, clock: Callable[[], float] = time.monotonic,
                 sizes: Sequence[int] = (), detect_sources: Collection[str] = (),
                 on_capture: OnCapture | None = None):
        self.cfg = cfg
        self.on_change = on_change
        self.on_capture = on_capture
        self._clock = clock
        self._ladder = self._make_ladder(sizes)
        self._cams = {cam: _Camera(t, 0, has_low=cam in detect_sources) for cam, t in targets.items()}
        self._load: float | None = None
        self._last_eval = clock()
        for cam in self._cams:
            self._publish(cam)

    def _make_ladder(self, sizes: Sequence[int]) -> list[tuple[int | None, int]]:
        cfg = self.cfg
        usable = [s for s in sizes if s >= cfg.min_input_size] or sorted(sizes)[-1:]
        return ladder(usable if cfg.input_sizes and len(usable) > 1 else (), cfg.min_stride, cfg.max_stride)

    def stride(self, camera: str) -> int:
        return self._ladder[self._cams[camera].level][1]

    def size(self, camera: str) -> int | None:
        """The input size this camera's frames are detected at; None: the detector's own."""
        return self._ladder[self._cams[camera].level][0]

    def capture(self, camera: str) -> str:
        """The source this camera is captured from: "main" or "detect_source"."""
        return "detect_source" if self._cams[camera].low else "main"

    def set_sizes(self, sizes: Sequence[int]) -> None:
        """A new detector (a model switch) with other input sizes: each camera keeps its
        stride and takes the smallest size at or above its own, else the largest there is."""
        new = self._make_ladder(sizes)
        if new == self._ladder:
            return
        for c in self._cams.values():
            size, stride = self._ladder[c.level]
            same = [i for i, (_, k) in enumerate(new) if k == stride] or [0]
            fits = [i for i in same if new[i][0] is None or size is None or new[i][0] >= size]
            c.level, c.counter = (fits[-1] if fits else same[0]), 0
        self._ladder = new
        for cam in self._cams:
            self._publish(cam)

    def take(self, camera: str) -> bool:
        """A frame of this camera was taken from the hub: should the detector see it?"""
        c = self._cams[camera]
        c.handled += 1
        detect = c.counter % self.stride(camera) == 0
        c.counter += 1
        if not detect:
            metrics.FRAMES_SKIPPED.labels(camera).inc()
        return detect

    def record_inference(self, camera: str, seconds: float) -> None:
        c = self._cams[camera]
        c.infer_s += seconds
        c.detected += 1

    def update(self, dropped: Mapping[str, int], now: float | None = None) -> None:
        """Measure and decide, if an interval has passed; `dropped`: per-camera totals."""
        now = self._clock() if now is None else now
        dt = now - self._last_eval
        if dt < self.cfg.interval_s:
            return
        self._last_eval = now
        total_load = 0.0
        drop_share: dict[str, float] = {}
        for cam, c in self._cams.items():
            drops = max(0, dropped.get(cam, 0) - c.dropped_seen)
            c.dropped_seen = dropped.get(cam, 0)
            first = c.throughput is None
            c.throughput = _smooth(c.throughput, c.handled / dt)
            c.arrival = _smooth(c.arrival, (c.handled + drops) / dt)
            c.load = _smooth(None if first else c.load, c.infer_s / dt)
            drop_share[cam] = drops / max(1, c.handled + drops)
            c.drop_share = _smooth(c.drop_share, drop_share[cam])
            total_load += c.infer_s / dt
            if c.detected:
                if c.low and c.frame_s is None and c.main_frame_s:  # the first interval after the switch
                    c.capture_ratio = max(1.0, c.main_frame_s / (c.infer_s / c.detected))
                    c.main_frame_s = None
                c.frame_s = _smooth(c.frame_s, c.infer_s / c.detected)
            c.handled, c.infer_s, c.detected = 0, 0.0, 0
        self._load = _smooth(self._load, total_load)
        if self.cfg.enabled:
            self._decide(now, drop_share)

    def _target(self, c: _Camera) -> float:
        return c.target_fps or self.cfg.target_fps or (c.arrival or 0.0)

    def _decide(self, now: float, drop_share: Mapping[str, float]) -> None:
        cfg, load = self.cfg, self._load or 0.0
        stepped_up = False
        for cam, c in self._cams.items():
            if now - c.last_change < cfg.cooldown_s or c.throughput is None:
                continue
            target = self._target(c)
            short = target > 0 and c.throughput < cfg.down_ratio * target
            bound = drop_share[cam] > DROP_SHARE or load >= SATURATED_LOAD
            if short and bound:
                why = (f"throughput {c.throughput:.1f} fps < {cfg.down_ratio:g} x target "
                       f"{target:.1f} fps, detector load {load:.0%}")
                if c.has_low and not c.low:  # the capture rung first (see the module's doc)
                    self._step(cam, c, 0, now, target, load, why, low=True)
                elif c.level < len(self._ladder) - 1:
                    self._step(cam, c, c.level + 1, now, target, load, why)
                continue
            # Short of target and still dropping frames (in bursts, so not in every interval):
            # a finer level could only drop more.
            if stepped_up or (c.level == 0 and not c.low) or (short and (c.drop_share or 0.0) > DROP_SHARE):
                continue
            if c.level == 0:  # back to the main source: same size and stride, its measured cost
                predicted = load + c.load * (c.capture_ratio - 1.0)
                up = (0, False)
            else:
                (size, stride), (up_size, up_stride) = self._ladder[c.level], self._ladder[c.level - 1]
                per_frame = (up_size / size) ** 2 if up_size and size else 1.0
                predicted = load + c.load * (per_frame * stride / up_stride - 1.0)
                up = (c.level - 1, c.low)
            if predicted <= cfg.up_load:
                self._step(cam, c, up[0], now, target, load,
                           f"detector load {load:.0%} would be {predicted:.0%} <= {cfg.up_load:.0%}",
                           low=up[1])
                load, stepped_up = predicted, True

    def _step(self, cam: str, c: _Camera, level: int, now: float, target: float, load: float,
              reason: str, low: bool | None = None) -> None:
        low = c.low if low is None else low
        (old_size, old), (size, stride) = self._ladder[c.level], self._ladder[level]
        old_capture = self.capture(cam)
        # down: fewer or smaller frames detected, or frames from the smaller source
        direction = "down" if (level, low) > (c.level, c.low) else "up"
        if low != c.low:
            if not c.low:
                c.main_frame_s, c.capture_ratio = c.frame_s, 1.0
            if self.on_capture is not None:
                try:
                    self.on_capture(cam, low)
                except Exception:
                    log.exception("adaptive: switching camera %s's capture failed", cam)
        c.level, c.low, c.last_change, c.counter = level, low, now, 0
        c.frame_s = None  # measured afresh at the new level
        c.changes += 1
        if self.capture(cam) != old_capture:
            what = f"capture {old_capture} -> {self.capture(cam)}"
        else:
            what = f"stride {old} -> {stride}" if size == old_size else f"input size {old_size} -> {size}"
        log.info("adaptive: camera %s: %s (%s)", cam, what, reason)
        self._publish(cam)
        metrics.ADAPTIVE_CHANGES.labels(cam, direction).inc()
        if self.on_change is not None:
            detail = {"stride": stride, "previous_stride": old, "size": size, "previous_size": old_size,
                      "direction": direction, "throughput_fps": round(c.throughput or 0.0, 2),
                      "target_fps": round(target, 2), "detector_load": round(load, 3)}
            if c.has_low:
                detail.update(capture=self.capture(cam), previous_capture=old_capture)
            try:
                self.on_change(cam, stride, old, reason, detail)
            except Exception:
                log.exception("adaptive: reporting the change failed")

    def _publish(self, cam: str) -> None:
        metrics.ADAPTIVE_STRIDE.labels(cam).set(self.stride(cam))
        size = self.size(cam)
        if size is not None:
            metrics.ADAPTIVE_INPUT_SIZE.labels(cam).set(size)

    def status(self, camera: str) -> dict:
        c = self._cams[camera]
        return {"stride": self.stride(camera), "input_size": self.size(camera), "stride_changes": c.changes,
                "input_fps": round(c.throughput or 0.0, 2),
                "target_fps": round(self._target(c), 2),
                **({"capture": self.capture(camera)} if c.has_low else {})}

    @property
    def detector_load(self) -> float:
        return self._load or 0.0


def describe(detail: dict) -> str:
    """An adaptive event's value: "stride 2", or "size 480 stride 1" when sizes step, with
    " on detect_source" (or " on main") for a camera that has a detect source."""
    size = detail.get("size")
    text = f"stride {detail['stride']}" if size is None else f"size {size} stride {detail['stride']}"
    return text if detail.get("capture") is None else f"{text} on {detail['capture']}"


def describe_previous(detail: dict) -> str:
    return describe({"stride": detail["previous_stride"], "size": detail.get("previous_size"),
                     "capture": detail.get("previous_capture")})
