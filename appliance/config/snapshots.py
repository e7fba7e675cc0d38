"""`snapshots`: the best picture of the tracks worth a look (appliance/events/snapshots.py)."""
from __future__ import annotations

from typing import Literal

from appliance.config.base import Section, key


class SnapshotsConfig(Section):
    policy: Literal["none", "low_confidence", "all"] = key(
        "low_confidence",
        doc="which ended tracks keep a JPEG of their best crop (largest, sharpest, least cut by the frame "
            "edge), named in their `end` event and sent over MQTT after it: `low_confidence` (the detector or "
            "the classifier was unsure, below), `all`, or `none` (nothing is kept or cut)")
    detection_below: float = key(
        0.6, lo=0.0, hi=1.0,
        doc="low_confidence: a track whose best detection score stayed below this")
    classification_below: float = key(
        0.5, lo=0.0, hi=1.0,
        doc="low_confidence: a track of a `classify.classes` label whose decided type scored below this, "
            "or that ended undecided (only while the classifier runs)")
    max_mb: float = key(
        100.0, lo=1.0, hi=1_000_000.0,
        doc="most space the snapshots take under `<data dir>/snapshots/`, in MiB; over it the oldest "
            "files are deleted (`appliance_snapshots_removed_total`)")
    quality: int = key(85, lo=10, hi=100, doc="JPEG quality of the snapshots")
