"""`uplink`: MQTT store-and-forward (appliance/uplink/, docs/mqtt.md)."""
from __future__ import annotations

from pydantic import field_validator, model_validator

from appliance.config.base import FileCheck, OptionalText, Problems, Secret, Section, Text, key, readable
from appliance.config.device import topic_part


class UplinkTlsConfig(Section):
    """TLS is on when ca_file is set."""

    ca_file: OptionalText = key(
        None, type="path",
        doc="CA certificate(s) (PEM) that signed the broker's certificate. Setting it turns TLS on; the "
            "broker's name is checked against its certificate. For a broker with a public certificate, "
            "point it at `/etc/ssl/certs/ca-certificates.crt`")
    cert_file: OptionalText = key(
        None, type="path", doc="client certificate (PEM), for brokers that require one; needs `key_file`")
    key_file: OptionalText = key(
        None, type="path",
        doc="the client certificate's private key (PEM); needs `cert_file`. When one PEM file holds both, "
            "name it in both keys")

    @model_validator(mode="after")
    def _rules(self) -> "UplinkTlsConfig":
        p = Problems()
        for name in ("cert_file", "key_file"):
            if getattr(self, name) is not None and self.ca_file is None:
                p.add(name, "needs uplink.tls.ca_file (TLS is on when ca_file is set)")
        if self.cert_file is not None and self.key_file is None:
            p.add("cert_file", "set uplink.tls.key_file too")
        if self.key_file is not None and self.cert_file is None:
            p.add("key_file", "set uplink.tls.cert_file too")
        p.raise_any()
        return self


class UplinkBacklogConfig(Section):
    max_rows: int = key(1_000_000, lo=1, doc="most events kept in SQLite")
    max_bytes: int = key(512 * 1024 * 1024, lo=1000, shown="`536870912` (512 MiB)",
                         doc="most event payload bytes kept in SQLite")
    max_age_days: float = key(30.0, lo=0.001, doc="events older than this are removed")
    check_interval_s: float = key(60.0, lo=0.1, doc="seconds between checks of the three limits")


class UplinkHomeAssistantConfig(Section):
    """Home Assistant MQTT discovery (docs/mqtt.md, "Home Assistant")."""

    enabled: bool = key(
        False, doc="publish Home Assistant discovery configs (retained): a sensor per line count (in, out) "
                   "and zone occupancy, a binary sensor per camera, and their retained state topic "
                   "`<topic_prefix>/<device.id>/analytics`. Off: nothing of this is published, and "
                   "configs published before are removed")
    discovery_prefix: Text = key("homeassistant", doc="Home Assistant's discovery prefix (its MQTT "
                                                      "integration's setting)")
    interval_s: float = key(5.0, lo=0.5, hi=3600.0,
                            doc="seconds between looks at the live counts; the state is published when "
                                "it changed")

    @field_validator("discovery_prefix")
    @classmethod
    def _mqtt_safe(cls, value: str) -> str:
        return topic_part(value, levels=True)


class UplinkConfig(Section):
    enabled: bool = key(False, doc="send events to an MQTT broker")
    host: Text = key("localhost", doc="broker host name or address")
    port: int = key(1883, lo=1, hi=65535, doc="broker port (8883 is usual with TLS)")
    topic_prefix: Text = key(
        "appliance", doc="topics are `<topic_prefix>/<device.id>/...`; may contain `/`, not `+`, `#` or "
                         "empty levels")
    username: OptionalText = key(None, doc="broker user name")
    password: Secret = key(
        None, doc="broker password; when not in the file, taken from the environment variable "
                  "`APPLIANCE_MQTT_PASSWORD`. Needs `uplink.username`. Masked wherever the config is shown")
    tls: UplinkTlsConfig = key(factory=UplinkTlsConfig, doc="TLS to the broker")
    batch_size: int = key(50, lo=1, hi=1000, doc="most events per MQTT message; `1` sends one event per message")
    max_inflight: int = key(10, lo=1, hi=1000,
                            doc="most event messages published and not yet acknowledged (PUBACK)")
    bandwidth_bytes_per_s: int = key(
        0, lo=0, doc="payload bytes per second at most, on average (bursts up to one second's worth); "
                     "`0`: no cap")
    stats_interval_s: float = key(60.0, lo=1.0, doc="seconds between `stats` messages")
    keepalive_s: int = key(30, lo=5, hi=3600, doc="MQTT keepalive; a dead link is noticed within 1.5× this")
    reconnect_min_s: float = key(0.5, lo=0.05, hi=3600.0, doc="ceiling of the first reconnect delay")
    reconnect_max_s: float = key(
        60.0, lo=0.1, hi=3600.0,
        doc="the delay ceiling doubles up to this; each delay is random in the upper half of the ceiling; "
            "at least `reconnect_min_s`")
    drain_timeout_s: float = key(10.0, lo=0.0, hi=3600.0,
                                 doc="at shutdown, while connected, how long to keep sending the backlog")
    backlog: UplinkBacklogConfig = key(factory=UplinkBacklogConfig, doc="limits of the event backlog")
    counts_interval_s: float = key(
        60.0, lo=1.0, hi=86400.0,
        doc="seconds between `counts` messages (per-minute line and zone counts, docs/mqtt.md); each "
            "carries the finished minutes not yet acknowledged")
    counts_delay_s: float = key(
        10.0, lo=0.0, hi=3600.0,
        doc="a minute is finished, and its counts are sent, this long after it ends (events reach "
            "SQLite within `store.flush_interval_s`); a late event sends its minute again with the new "
            "total")
    homeassistant: UplinkHomeAssistantConfig = key(factory=UplinkHomeAssistantConfig,
                                                   doc="Home Assistant MQTT discovery")

    @field_validator("topic_prefix")
    @classmethod
    def _mqtt_safe(cls, value: str) -> str:
        return topic_part(value, levels=True)

    @model_validator(mode="after")
    def _rules(self) -> "UplinkConfig":
        p = Problems()
        if self.password is not None and self.username is None:
            p.add("password", "set uplink.username too (MQTT sends no password without a user)")
        if self.reconnect_max_s < self.reconnect_min_s:
            p.add("reconnect_max_s", f"must not be less than uplink.reconnect_min_s ({self.reconnect_min_s})")
        p.raise_any()
        return self


def check_uplink_files(u: UplinkConfig, files: FileCheck, p: Problems) -> None:
    """The TLS files must be readable (with the uplink off too: a file the config names is
    there, or the config is wrong)."""
    for name in ("ca_file", "cert_file", "key_file"):
        path = getattr(u.tls, name)
        problem = readable(path) if path is not None else None
        if problem is not None:
            files.missing(p, f"uplink.tls.{name}", problem)
