"""Adaptive detection stride: each camera keeps up with its target frame rate.

The knob is the stride k: the detector sees every k-th frame a camera delivers, and the
frames between are taken from the camera but not detected (the tracker spans the gap
with its motion model on the next detected frame). Throughput, the frames per second a
camera gets handled (detected or skipped on purpose, as opposed to dropped because the
detector was busy), is then up to k times the detector's own rate.

Why a stride and not the input size: the default SSD MobileNet v2 (and every model the
appliance fetches) has a fixed input of 300x300 or 640x640, so there is no smaller size
to step to. The controller only needs a ladder of levels and a load estimate per level,
so a model with dynamic input dimensions could add sizes as further rungs.

Control, once every `interval_s` (smoothed over about two intervals):

- step down (stride + 1) when a camera's throughput is below `down_ratio` x its target
  and the detector is the reason (frames were dropped, or the detector is busy >= 85 %
  of the time);
- step up (stride - 1) when the detector's load, predicted for the finer stride, would
  stay at or below `up_load`; at most one camera steps up per interval, so two cameras
  cannot both grab the same spare capacity;
- never within `cooldown_s` of that camera's last change, never outside
  [min_stride, max_stride].

The gap between the two rules (a step up must leave the detector at most `up_load`
busy; a step down needs it short of target and saturated) is the hysteresis that keeps
the stride from oscillating. The target is cameras[].target_fps, else
adaptive.target_fps, else the rate frames arrive from the camera ("keep up").
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Mapping

from appliance import metrics
from appliance.config import AdaptiveConfig

log = logging.getLogger(__name__)

SATURATED_LOAD = 0.85  # detector busy this much of the time: it is the bottleneck
DROP_SHARE = 0.02  # more than this share of arrivals dropped: frames were available
_ALPHA = 0.5  # smoothing of the per-interval measurements


@dataclass
class _Camera:
    target_fps: float
    stride: int
    counter: int = 0
    handled: int = 0  # frames taken since the last measurement (detected or skipped)
    infer_s: float = 0.0  # detector seconds spent on this camera since then
    dropped_seen: int = 0
    throughput: float | None = None  # smoothed frames handled per second
    arrival: float | None = None  # smoothed frames arriving per second (handled + dropped)
    load: float = 0.0  # smoothed share of wall time the detector spends on this camera
    last_change: float = float("-inf")
    changes: int = 0


def _smooth(old: float | None, new: float) -> float:
    return new if old is None else _ALPHA * new + (1.0 - _ALPHA) * old


# Called as on_change(camera, new_stride, old_stride, reason, detail).
OnChange = Callable[[str, int, int, str, dict], None]


class AdaptiveControl:
    """The stride controllers of all cameras that share one detector. Not thread-safe:
    the detect thread calls everything except status(), which only reads."""

    def __init__(self, cfg: AdaptiveConfig, targets: Mapping[str, float],
                 on_change: OnChange | None = None, clock: Callable[[], float] = time.monotonic):
        self.cfg = cfg
        self.on_change = on_change
        self._clock = clock
        self._cams = {cam: _Camera(t, cfg.min_stride) for cam, t in targets.items()}
        self._load: float | None = None
        self._last_eval = clock()
        for cam, c in self._cams.items():
            metrics.ADAPTIVE_STRIDE.labels(cam).set(c.stride)

    def stride(self, camera: str) -> int:
        return self._cams[camera].stride

    def take(self, camera: str) -> bool:
        """A frame of this camera was taken from the hub: should the detector see it?"""
        c = self._cams[camera]
        c.handled += 1
        detect = c.counter % c.stride == 0
        c.counter += 1
        if not detect:
            metrics.FRAMES_SKIPPED.labels(camera).inc()
        return detect

    def record_inference(self, camera: str, seconds: float) -> None:
        self._cams[camera].infer_s += seconds

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
            total_load += c.infer_s / dt
            c.handled, c.infer_s = 0, 0.0
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
                if c.stride < cfg.max_stride:
                    self._step(cam, c, c.stride + 1, now, target, load,
                               f"throughput {c.throughput:.1f} fps < {cfg.down_ratio:g} x target "
                               f"{target:.1f} fps, detector load {load:.0%}")
                continue
            if stepped_up or c.stride <= cfg.min_stride:
                continue
            predicted = load + c.load * (c.stride / (c.stride - 1) - 1.0)
            if predicted <= cfg.up_load:
                self._step(cam, c, c.stride - 1, now, target, load,
                           f"detector load {load:.0%} would be {predicted:.0%} <= {cfg.up_load:.0%}")
                load, stepped_up = predicted, True

    def _step(self, cam: str, c: _Camera, stride: int, now: float, target: float, load: float,
              reason: str) -> None:
        old, c.stride, c.last_change, c.counter = c.stride, stride, now, 0
        c.changes += 1
        direction = "down" if stride > old else "up"  # down: fewer frames detected
        log.info("adaptive: camera %s: stride %d -> %d (%s)", cam, old, stride, reason)
        metrics.ADAPTIVE_STRIDE.labels(cam).set(stride)
        metrics.ADAPTIVE_CHANGES.labels(cam, direction).inc()
        if self.on_change is not None:
            detail = {"stride": stride, "previous_stride": old, "direction": direction,
                      "throughput_fps": round(c.throughput or 0.0, 2), "target_fps": round(target, 2),
                      "detector_load": round(load, 3)}
            try:
                self.on_change(cam, stride, old, reason, detail)
            except Exception:
                log.exception("adaptive: reporting the change failed")

    def status(self, camera: str) -> dict:
        c = self._cams[camera]
        return {"stride": c.stride, "stride_changes": c.changes,
                "input_fps": round(c.throughput or 0.0, 2),
                "target_fps": round(self._target(c), 2)}

    @property
    def detector_load(self) -> float:
        return self._load or 0.0
