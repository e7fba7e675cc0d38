"""Tracking stage: SORT per camera, and MOTChallenge I/O for evaluation."""
from __future__ import annotations

from appliance.track.sort import Sort, Track, TrackerOutput

__all__ = ["Sort", "Track", "TrackerOutput"]
