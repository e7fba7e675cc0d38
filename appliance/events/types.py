"""Every event type the appliance produces, in one list (docs/events.md describes each).

Track events follow one object; state events record a change of a camera, a detection
stride or the power mode. All share one id sequence, one table and one MQTT topic.
"""
from __future__ import annotations

TRACK_TYPES = ("new", "update", "end")
STATE_TYPES = ("camera", "adaptive", "power")
EVENT_TYPES = TRACK_TYPES + STATE_TYPES
