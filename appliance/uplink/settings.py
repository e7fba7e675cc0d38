"""The broker connection's settings, from the config: shared by the uplink and the self-test.

The password comes from the config or, so that it need not be written in a file, from
$APPLIANCE_MQTT_PASSWORD.
"""
from __future__ import annotations

import os

from appliance.config import Config, secret_value
from appliance.config.base import readable
from appliance.errors import ApplianceError
from appliance.uplink.link import LinkSettings
from appliance.uplink.messages import Topics, offline_status

PASSWORD_ENV = "APPLIANCE_MQTT_PASSWORD"


def password(cfg: Config) -> str:
    """The broker password: uplink.password, else $APPLIANCE_MQTT_PASSWORD; "" without a username."""
    u = cfg.uplink
    return (secret_value(u.password) or os.environ.get(PASSWORD_ENV, "")) if u.username else ""


def link_settings(cfg: Config, topics: Topics) -> LinkSettings:
    """The connection settings. The config's own rules (MQTT-safe names, credentials, TLS
    keys that go together) were checked when it loaded; the TLS files are checked here
    again because they are opened now (a config built in code has not had them checked)."""
    u = cfg.uplink
    for key in ("ca_file", "cert_file", "key_file"):
        path = getattr(u.tls, key)
        problem = readable(path) if path is not None else None
        if problem:
            raise ApplianceError(f"config uplink.tls.{key}: {problem}")
    return LinkSettings(
        host=u.host, port=u.port, client_id=f"appliance-{cfg.device.id}", keepalive_s=u.keepalive_s,
        will_topic=topics.status, will_payload=offline_status(cfg.device.id), username=u.username or "",
        password=password(cfg), ca_file=u.tls.ca_file or "", cert_file=u.tls.cert_file or "",
        key_file=u.tls.key_file or "")
