"""The one thing that travels after detection: a frame and everything learnt about it.

The detect stage makes a `FrameResult` from a frame and its detections; the track stage
fills in the tracks; each track processor (lifecycle events today; classification and
line/zone analytics next) reads it and adds to it: attributes per track, and events.
The result never changes shape on the way, it only gains fields.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from appliance.capture.frame import Frame
from appliance.detect.types import Detections
from appliance.track.sort import Track


@dataclass
class FrameResult:
    frame: Frame
    detections: Detections
    inference_s: float = 0.0  # detector time spent on this frame
    # Set by the track stage. Track ids are unique on this device across restarts.
    tracks: list[Track] = field(default_factory=list)  # confirmed tracks matched this frame
    # Tracks matched this frame but not confirmed yet: never reported (no events); the
    # classifier starts on them, so that a type can be known by the time a track is new.
    tentative: list[Track] = field(default_factory=list)
    ended: list[Track] = field(default_factory=list)  # tracks that ended with this frame
    final: bool = False  # the camera's stream ended: `ended` holds every track still live
    # Per track id, what processors learnt (e.g. {"classification": {...}}).
    attributes: dict[int, dict[str, Any]] = field(default_factory=dict)
    events: list = field(default_factory=list)  # made by processors; numbered by the sink
    # The detector that made `detections`: {"name", "version"} (events carry it on).
    model: dict[str, str] | None = None

    @property
    def camera_id(self) -> str:
        return self.frame.camera_id
