"""`device`: who this appliance is."""
from __future__ import annotations

import socket

from pydantic import field_validator
from pydantic_core import PydanticCustomError

from appliance.config.base import Section, Text, key

MQTT_FORBIDDEN = "+#\0"


def topic_part(value: str, *, levels: bool) -> str:
    """`value`, if it can be a part of an MQTT topic name; else a validation error.

    levels: `value` may span levels ("acme/site1"), but no empty ones; else no '/' at all."""
    problem = None
    if any(c in value for c in MQTT_FORBIDDEN) or value.startswith("/") or value.endswith("/") \
            or "//" in value:
        problem = "cannot be used in an MQTT topic (no '+', '#', empty levels or leading/trailing '/')"
    elif not levels and "/" in value:
        problem = "must not contain '/' (it is one level of the MQTT topics)"
    if problem:
        raise PydanticCustomError("mqtt_topic", "{value} {problem}", {"value": repr(value), "problem": problem})
    return value


class DeviceConfig(Section):
    id: Text = key(factory=socket.gethostname, shown="the host name",
                   doc="unique id of this device; the first half of every event id, and one level of "
                       "its MQTT topics (no `/`, `+` or `#`)")

    @field_validator("id")
    @classmethod
    def _mqtt_safe(cls, value: str) -> str:
        return topic_part(value, levels=False)
