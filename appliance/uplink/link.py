"""One broker connection: a fresh paho client for each attempt.

paho keeps unacknowledged messages in memory and re-sends them when the same client
reconnects. The uplink never relies on that: every attempt gets a new client, with
paho's own reconnecting off, and when a connection ends its client (and whatever paho
still held) is thrown away. The next connection starts again from what SQLite says is
unsent. Reconnect timing is ours too (pacing.backoff_delay), because paho's has no
jitter.

paho runs the network in its own thread (`loop_start`). The callbacks only record what
happened, into queues and fields that the uplink thread reads, and wake it up.
"""
from __future__ import annotations

import logging
import queue
import ssl
import sys
import threading
from dataclasses import dataclass

import paho.mqtt.client as mqtt

log = logging.getLogger(__name__)

MAX_QUEUED_COMMANDS = 100  # more waiting than this and new commands are ignored


@dataclass(frozen=True)
class LinkSettings:
    host: str
    port: int
    client_id: str
    keepalive_s: int
    will_topic: str
    will_payload: bytes
    username: str = ""
    password: str = ""
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""

    @property
    def broker(self) -> str:
        return f"{self.host}:{self.port}"


def describe_error(exc: BaseException | None) -> str:
    if exc is None:
        return "connection failed"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: {exc.verify_message or exc}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


class Link:
    CONNECTING, CONNECTED, FAILED, CLOSED = "connecting", "connected", "failed", "closed"

    def __init__(self, settings: LinkSettings, wake: threading.Event):
        self.settings = settings
        self.wake = wake
        self.state = self.CONNECTING
        self.error = ""  # why the attempt failed or the connection ended
        self.acks: queue.SimpleQueue[int] = queue.SimpleQueue()  # mids of PUBACKs
        self.commands: queue.Queue[tuple[str, bytes, bool]] = queue.Queue(MAX_QUEUED_COMMANDS)
        s = settings
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=s.client_id, clean_session=True,
                        protocol=mqtt.MQTTv311, reconnect_on_failure=False)
        c.max_inflight_messages_set(0)  # the uplink bounds its own window
        c.max_queued_messages_set(0)
        # paho retries a failed first attempt by itself; make that wait long, and close()
        # ends the attempt instead.
        c.reconnect_delay_set(3600, 3600)
        c.will_set(s.will_topic, s.will_payload, qos=1, retain=True)
        if s.username:
            c.username_pw_set(s.username, s.password or None)
        if s.ca_file:
            c.tls_set(ca_certs=s.ca_file, certfile=s.cert_file or None, keyfile=s.key_file or None,
                      cert_reqs=ssl.CERT_REQUIRED)
        c.on_connect = self._on_connect
        c.on_connect_fail = self._on_connect_fail
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_message = self._on_message
        self.client = c

    # -- paho's thread: record and wake ----------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.error = f"broker refused the connection: {reason_code}"
            self.state = self.FAILED
        else:
            self.state = self.CONNECTED
        self.wake.set()

    def _on_connect_fail(self, client, userdata) -> None:
        # paho calls this from inside its `except OSError:`, so the cause is at hand.
        self.error = f"cannot connect: {describe_error(sys.exc_info()[1])}"
        self.state = self.FAILED
        self.wake.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self.state == self.CONNECTED:
            self.error = f"connection lost: {reason_code}"
            self.state = self.CLOSED
        elif self.state == self.CONNECTING:
            self.error = self.error or f"connection closed by the broker: {reason_code}"
            self.state = self.FAILED
        self.wake.set()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self.acks.put(mid)
        self.wake.set()

    def _on_message(self, client, userdata, message) -> None:
        try:
            self.commands.put_nowait((message.topic, bytes(message.payload), bool(message.retain)))
        except queue.Full:
            log.warning("uplink: %d commands waiting; ignoring %s", MAX_QUEUED_COMMANDS, message.topic)
        self.wake.set()

    # -- the uplink's thread ----------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.state == self.CONNECTED

    def open(self) -> None:
        self.client.connect_async(self.settings.host, self.settings.port, self.settings.keepalive_s)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int | None:
        """Queue a message; its mid, or None when the connection is already gone."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        return info.mid if info.rc == mqtt.MQTT_ERR_SUCCESS else None

    def subscribe(self, topic: str) -> None:
        self.client.subscribe(topic, qos=1)

    def close(self) -> None:
        """End the connection (cleanly, if there is one) and paho's thread."""
        self.client.disconnect()
        self.client.loop_stop()
        if self.state in (self.CONNECTING, self.CONNECTED):
            self.state = self.CLOSED
