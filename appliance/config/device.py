"""`device`: who this appliance is."""
from __future__ import annotations

import socket

from pydantic import field_validator
from pydantic_core import PydanticCustomError

from appliance.config.base import Section, Text, key

MQTT_FORBIDDEN = "+#\0"


def topic_problem(value: str, *, levels: bool) -> str | None:
    """Why `value` cannot be a part of an MQTT topic name, or None.

    levels: `value` may span levels ("acme/site1"), but no empty ones; else no '/' at all."""
    if any(c in value for c in MQTT_FORBIDDEN):
        return "cannot be used in an MQTT topic (no '+', '#', empty levels or leading/trailing '/')"
    if not levels and "/" in value:
        return "must not contain '/' (it is one level of the MQTT topics)"
    if value.startswith("/") or value.endswith("/") or "//" in value:
        return "cannot be used in an MQTT topic (no '+', '#', empty levels or leading/trailing '/')"
    return None


class DeviceConfig(Section):
    id: Text = key(factory=socket.gethostname, shown="the host name",
                   doc="unique id of this device; the first half of every event id, and one level of "
                       "its MQTT topics (no `/`, `+` or `#`)")

    @field_validator("id")
    @classmethod
    def _mqtt_safe(cls, value: str) -> str:
        problem = topic_problem(value, levels=False)
        if problem:
            raise PydanticCustomError("mqtt_topic", "{value} {problem}", {"value": repr(value), "problem": problem})
        return value
