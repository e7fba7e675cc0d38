"""`events`: when track events are made."""
from __future__ import annotations

from appliance.config.base import Section, key


class EventsConfig(Section):
    update_interval_s: float = key(5.0, lo=0.0, doc="least time between `update` events of one track")
