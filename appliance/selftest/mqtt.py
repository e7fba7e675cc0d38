"""The self-test's uplink check: connect to the broker as the config says (TLS, client
certificate, user and password), then a publish/subscribe round trip on the device's own
topic `<prefix>/<device>/selftest/ping`. The connection stays open so that the finished
report can be published retained on `<prefix>/<device>/selftest`.

Its own paho client, with its own client id (`appliance-<device>-selftest`): a running
appliance keeps its connection, since a broker drops the older of two clients with one id.
The TLS files are checked before connecting (appliance/provision/csr.py: an expired or not
yet valid certificate, a client certificate not made for its key, a file that is not PEM),
since a broker answers a bad client certificate only by hanging up. Each way a connection
fails gets its own words and hint: an unreachable broker, TLS (an unknown CA, an expired
broker certificate, a name that does not match, a port without TLS), and a refusal by the
broker (bad credentials: MQTT CONNACK codes).
"""
from __future__ import annotations

import json
import socket
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt

from appliance.config import Config
from appliance.provision.csr import tls_problems
from appliance.selftest.report import Check, failed, passed
from appliance.uplink.settings import PASSWORD_ENV, password

EXPIRED, HOSTNAME_MISMATCH, IP_MISMATCH = 10, 62, 64  # OpenSSL X509_V_ERR_* codes


@dataclass
class _Events:
    """What paho's thread saw; the check waits on these."""

    connack: threading.Event = field(default_factory=threading.Event)
    refused: str = ""  # the CONNACK's reason when the broker refused
    closed: threading.Event = field(default_factory=threading.Event)
    suback: threading.Event = field(default_factory=threading.Event)
    sub_refused: bool = False
    got: dict[str, float] = field(default_factory=dict)  # ping nonce -> arrival (perf_counter)
    arrived: threading.Event = field(default_factory=threading.Event)


@dataclass
class Session:
    """The open connection after a passed check: publishes the report, then closes."""

    client: mqtt.Client
    topic: str

    def publish(self, payload: str, timeout_s: float) -> str:
        """Publish retained at QoS 1 and wait for the broker's PUBACK; "" or why it failed."""
        try:
            info = self.client.publish(self.topic, payload.encode(), qos=1, retain=True)
            info.wait_for_publish(timeout_s)
        except (RuntimeError, ValueError) as e:
            return str(e)
        return "" if info.is_published() else f"no acknowledgement within {timeout_s:g} s"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _tls_problem(e: ssl.SSLError, host: str) -> tuple[str, str]:
    if isinstance(e, ssl.SSLCertVerificationError):
        code, msg = e.verify_code, e.verify_message or str(e)
        if code == EXPIRED:
            return (f"TLS: the broker's certificate has expired ({msg})",
                    "the broker needs a new certificate (or the device clock is wrong: see the clock check)")
        if code in (HOSTNAME_MISMATCH, IP_MISMATCH):
            return (f"TLS: the broker's certificate is not for {host} ({msg})",
                    "set uplink.host to a name the broker's certificate holds (its CN or subjectAltName)")
        return (f"TLS: the broker's certificate is not trusted ({msg})",
                "uplink.tls.ca_file must be the CA that signed the broker's certificate (ask the fleet's "
                "operator for it); for a broker with a public certificate use /etc/ssl/certs/ca-certificates.crt")
    reason = e.reason or str(e)
    if reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG", "UNEXPECTED_RECORD"):
        return (f"TLS: the broker's port does not speak TLS ({reason})",
                "is uplink.port the broker's TLS port (usually 8883)? Or remove uplink.tls for a plain port")
    if "CERTIFICATE" in reason or "UNKNOWN_CA" in reason:
        return (f"TLS: the broker refused this device's certificate ({reason})",
                "uplink.tls.cert_file must be signed by a CA the broker trusts, not expired, and match key_file")
    return f"TLS: {reason}", "check uplink.tls (CA, client certificate and key) against the broker's settings"


def _connect_problem(e: BaseException, broker: str, tls: bool) -> tuple[str, str]:
    unreachable = ("check uplink.host and uplink.port, that the broker runs, and that this network lets the "
                   "device reach it (firewall, VPN, APN)")
    if tls and isinstance(e, (ConnectionResetError, ssl.SSLEOFError)):  # a plain port hangs up on a TLS hello
        return (f"TLS: the broker hung up during the TLS handshake ({e.strerror or e})",
                "is uplink.port the broker's TLS port (usually 8883)? Or remove uplink.tls for a plain port")
    if isinstance(e, ssl.SSLError):
        return _tls_problem(e, broker.rsplit(":", 1)[0])
    if isinstance(e, socket.gaierror):
        return f"unreachable: cannot resolve the broker's name ({e.strerror or e})", \
            "check uplink.host and the device's DNS (resolvectl status)"
    if isinstance(e, (TimeoutError, socket.timeout)):
        return f"unreachable: no answer from {broker} (timed out)", unreachable
    if isinstance(e, ConnectionRefusedError):
        return f"unreachable: {broker} refused the connection (nothing listens there)", unreachable
    if isinstance(e, OSError):
        return f"unreachable: {e.strerror or e}", unreachable
    return f"cannot connect: {e}", unreachable


def _refusal_hint(reason: str) -> str:
    low = reason.lower()
    if "user name or password" in low or "not authorized" in low:
        return (f"the broker refused the credentials: check uplink.username and uplink.password (or "
                f"${PASSWORD_ENV}); the broker's operator can tell which user this device should use")
    if "identifier" in low:
        return "the broker refused the client id: ask its operator which ids it accepts"
    return "the broker refused the connection: its log says why"


def check_uplink(cfg: Config, timeout_s: float) -> tuple[Check, Session | None]:
    u, device = cfg.uplink, cfg.device.id
    if not u.enabled:
        return passed("uplink", "uplink.enabled is false: events stay on this device"), None
    broker = f"{u.host}:{u.port}"
    tls = "TLS" if u.tls.ca_file else "no TLS"
    who = f"user {u.username}" if u.username else "no user"
    detail = {"broker": broker, "tls": bool(u.tls.ca_file), "client_certificate": bool(u.tls.cert_file),
              "username": u.username}
    prefix = f"{u.topic_prefix}/{device}"
    ev = _Events()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"appliance-{device}-selftest",
                    clean_session=True, protocol=mqtt.MQTTv311, reconnect_on_failure=False)
    c.connect_timeout = timeout_s
    if u.username:
        c.username_pw_set(u.username, password(cfg) or None)

    def on_connect(client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            ev.refused = str(reason_code)
        ev.connack.set()

    def on_subscribe(client, userdata, mid, reason_codes, properties) -> None:
        ev.sub_refused = any(rc.is_failure for rc in reason_codes)
        ev.suback.set()

    def on_message(client, userdata, msg) -> None:
        try:
            ev.got[json.loads(msg.payload)["nonce"]] = time.perf_counter()
        except (ValueError, KeyError, TypeError):
            return  # someone else's message on our topic
        ev.arrived.set()

    c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
    c.on_disconnect = lambda *a: ev.closed.set()
    deadline = time.monotonic() + timeout_s

    def wait(event: threading.Event) -> bool:
        while not event.is_set() and not ev.closed.is_set() and time.monotonic() < deadline:
            event.wait(0.02)
        return event.is_set()

    def fail(value: str, hint: str) -> tuple[Check, None]:
        c.disconnect()
        c.loop_stop()
        return failed("uplink", f"{broker} ({tls}, {who}): {value}", hint, **detail), None

    # The files first: an expired client certificate shows only as a hang-up by the broker.
    problems = tls_problems(u.tls.ca_file, u.tls.cert_file, u.tls.key_file, keys="uplink.tls.")
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return failed("uplink", f"{broker} ({tls}, {who}): {problems[0][0]}{more}",
                      "; ".join(dict.fromkeys(fix for _, fix in problems)), **detail,
                      problems=[what for what, _ in problems]), None
    try:
        if u.tls.ca_file:
            c.tls_set(ca_certs=u.tls.ca_file, certfile=u.tls.cert_file or None, keyfile=u.tls.key_file or None,
                      cert_reqs=ssl.CERT_REQUIRED)
    except (ssl.SSLError, OSError, ValueError) as e:
        return failed("uplink", f"{broker}: cannot load the TLS files: {getattr(e, 'reason', None) or e}",
                      "uplink.tls.ca_file, cert_file and key_file must be PEM files, and the key must be "
                      "cert_file's", **detail), None
    try:
        c.connect(u.host, u.port, keepalive=min(u.keepalive_s, 60))
    except (OSError, ValueError) as e:
        return fail(*_connect_problem(e, broker, bool(u.tls.ca_file)))
    c.loop_start()
    if not wait(ev.connack):
        if ev.closed.is_set():
            return fail("the broker closed the connection before accepting it",
                        "the broker may want TLS on this port (uplink.tls.ca_file) or a client certificate "
                        "(uplink.tls.cert_file, key_file) that it trusts; its log says which")
        return fail(f"no answer to CONNECT within {timeout_s:g} s", "the port may belong to something other "
                    "than an MQTT broker: check uplink.port")
    if ev.refused:
        return fail(f"the broker refused the connection: {ev.refused}", _refusal_hint(ev.refused))
    ping = f"{prefix}/selftest/ping"
    c.subscribe(ping, qos=1)
    if not wait(ev.suback) or ev.sub_refused:
        return fail(f"cannot subscribe to {ping}", "the broker's access list must let this device read and "
                    f"write {prefix}/#")
    nonce = uuid.uuid4().hex
    t0 = time.perf_counter()
    c.publish(ping, json.dumps({"nonce": nonce, "ts": time.time()}), qos=1)
    while nonce not in ev.got and wait(ev.arrived):
        ev.arrived.clear()
    if nonce not in ev.got:
        return fail(f"published on {ping}, nothing came back within {timeout_s:g} s",
                    f"the broker's access list must let this device read and write {prefix}/#")
    ms = (ev.got[nonce] - t0) * 1000.0
    c.unsubscribe(ping)
    return passed("uplink", f"{broker} ({tls}, {who}): connected, round trip on {ping} in {ms:.0f} ms",
                  **detail, round_trip_ms=round(ms, 1)), Session(c, f"{prefix}/selftest")
