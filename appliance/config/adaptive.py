"""`adaptive`: each camera's detector input size and stride (appliance/control/adaptive.py)."""
from __future__ import annotations

from pydantic import model_validator

from appliance.config.base import Problems, Section, key


class AdaptiveConfig(Section):
    enabled: bool = key(True, doc="adapt the input size and stride; `false` holds every camera at the "
                                  "model's full input size and `min_stride`")
    input_sizes: bool = key(
        True, doc="step the detector's input size down first (through the sizes its manifest declares, "
                  "`input_sizes`, e.g. 640, 480, 320), then the stride; `false`: the stride alone")
    min_input_size: int = key(
        0, lo=0, hi=10000,
        doc="smallest input size to step down to (`0`: the model's smallest); small objects, such as "
            "distant people, are the first lost at small sizes, so a scene of them may want the stride "
            "sooner (scripts/bench resolution)")
    target_fps: float = key(
        0.0, lo=0.0, hi=1000.0,
        doc="frames per second each camera should be handled at; `0`: the rate the camera delivers "
            "(\"keep up\"). `cameras[].target_fps` overrides it per camera")
    min_stride: int = key(1, lo=1, hi=100, doc="finest stride (1: every frame is detected)")
    max_stride: int = key(4, lo=1, hi=100, doc="coarsest stride; at least `min_stride`")
    interval_s: float = key(1.0, lo=0.1, hi=60.0,
                            doc="seconds between measurements (throughput, arrivals, detector load)")
    cooldown_s: float = key(5.0, lo=0.0, hi=3600.0, doc="least time between two changes of one camera")
    down_ratio: float = key(
        0.9, lo=0.1, hi=1.0,
        doc="step down (coarser) when a camera handles fewer than `down_ratio` × its target frames per "
            "second and the detector is the reason (frames dropped, or detector ≥ 85 % busy)")
    up_load: float = key(
        0.7, lo=0.05, hi=1.0,
        doc="step up (finer) when the detector's load, predicted for the finer stride, stays at or "
            "below this; the gap to the step-down rule is the hysteresis")

    @model_validator(mode="after")
    def _rules(self) -> "AdaptiveConfig":
        p = Problems()
        if self.min_stride > self.max_stride:
            p.add("min_stride", f"must not exceed adaptive.max_stride ({self.max_stride})")
        p.raise_any()
        return self
