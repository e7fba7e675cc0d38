"""`track`: the tracker (appliance/track/sort.py)."""
from __future__ import annotations

from typing import Any

from pydantic import model_validator

from appliance.config.base import Problems, Section, key

# Keys that were renamed, and what to write instead: an old config gets told, not just
# "unknown key".
RENAMED = {
    "max_age": "replaced by track.max_age_s, in seconds, not frames (frames / fps: "
               "e.g. 30 frames at 15 fps is max_age_s: 2.0)",
}


class TrackConfig(Section):
    # Defaults: the settings scored on MOT15 TUD-Campus + TUD-Stadtmitte at 25 fps
    # (tests/integration/test_mot_metrics.py). 2 s outlasts most occlusions of people
    # walking past each other there; shorter (1.2 s) loses ids, longer gains nothing.
    # An IoU of 0.2, not SORT's 0.3: a track predicted through 2 s of occlusion has
    # drifted, and 0.2 re-finds it with fewer id switches (5 against 8 there).
    max_age_s: float = key(2.0, lo=0.0, hi=600.0,
                           doc="seconds a confirmed track is kept without a matching detection; found "
                               "again within this time it keeps its id, and its `end` event waits for it")
    min_hits: int = key(3, lo=1, hi=1000,
                        doc="detections in a row before a track is confirmed and reported (and its `new` "
                            "event sent); a count, not a time: each detection is one piece of evidence")
    iou_threshold: float = key(0.2, lo=0.0, hi=1.0, doc="least overlap for a detection to match a track")
    low_threshold: float = key(
        0.3, lo=0.0, hi=1.0,
        doc="the tracker also sees detections down to this score (the detector runs at the lower of this "
            "and `detect.threshold`); those under `detect.threshold` only keep existing tracks going, never "
            "start one, and are never shown as detections")

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict):
            p = Problems()
            for old, message in RENAMED.items():
                if old in data:
                    p.add(old, message)
            p.raise_any()
        return data
