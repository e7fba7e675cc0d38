"""`track`: SORT."""
from __future__ import annotations

from appliance.config.base import Section, key


class TrackConfig(Section):
    max_age: int = key(5, lo=1, hi=1000, doc="frames a track survives without a matching detection")
    min_hits: int = key(3, lo=1, hi=1000,
                        doc="detections in a row before a track is reported (and its `new` event sent)")
    iou_threshold: float = key(0.3, lo=0.0, hi=1.0, doc="least overlap for a detection to match a track")
