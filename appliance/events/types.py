"""Every event type the appliance produces, in one list (docs/events.md describes each).

Track events follow one object; state events record a change of a camera, a detection
stride, the power mode, the running model version (model) or a camera's
drift (drift); analytics events record a track crossing a line or entering,
leaving or loitering in a zone (appliance/analytics/). All share one id sequence, one
table and one MQTT topic.
"""
from __future__ import annotations

TRACK_TYPES = ("new", "update", "end")
STATE_TYPES = ("camera", "adaptive", "power", "model", "drift")
ANALYTICS_TYPES = ("line", "zone")
EVENT_TYPES = TRACK_TYPES + STATE_TYPES + ANALYTICS_TYPES
