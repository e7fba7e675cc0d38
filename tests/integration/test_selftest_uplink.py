"""The self-test's uplink check against a real mosquitto: the round trip on the device's own
topic, and each way a connection fails (nothing listening, an unknown CA, an expired
broker certificate, an expired client certificate, a plain port asked for TLS, a wrong
password), with its hint."""
from __future__ import annotations

import datetime as dt
import ipaddress
import socket

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from appliance.config import from_dict
from appliance.selftest.mqtt import check_uplink
from tests.mqtt_broker import Mosquitto, Subscriber, Tls, free_port, make_tls


def _cfg(port: int, tls: Tls | None = None, **uplink):
    u = {"enabled": True, "host": "127.0.0.1", "port": port, "topic_prefix": "t", **uplink}
    if tls is not None:
        u["tls"] = {"ca_file": str(tls.ca), "cert_file": str(tls.client_cert), "key_file": str(tls.client_key)}
    return from_dict({"device": {"id": "dev1"}, "uplink": u})


def _check(cfg, timeout_s: float = 5.0):
    check, session = check_uplink(cfg, timeout_s)
    if session is not None:
        session.close()
    return check


@pytest.fixture
def tls_broker(tmp_path):
    tls = make_tls(tmp_path / "tls")
    b = Mosquitto(tmp_path / "broker", tls=tls, users={"dev1": "right-password"}, require_certificate=True).start()
    yield b, tls
    b.close()


def test_round_trip_on_the_devices_own_topic(mqtt_broker):
    seen = Subscriber(mqtt_broker.port, ["t/dev1/#"]).start()
    try:
        check, session = check_uplink(_cfg(mqtt_broker.port), 5.0)
        assert check.status == "pass", check.value
        assert check.value.startswith(f"127.0.0.1:{mqtt_broker.port} (no TLS, no user): connected, round trip on "
                                      "t/dev1/selftest/ping in ")
        assert check.detail["round_trip_ms"] > 0
        assert session.publish('{"hello": 1}', 5.0) == ""
        session.close()
        seen.wait_for(lambda: seen.exact("t/dev1/selftest"), 5, "the report")
        assert seen.exact("t/dev1/selftest")[0].payload == b'{"hello": 1}'
        assert len(seen.exact("t/dev1/selftest/ping")) == 1
    finally:
        seen.close()
    late = Subscriber(mqtt_broker.port, ["t/dev1/selftest"]).start()  # retained: a late subscriber gets it
    try:
        late.wait_for(lambda: late.messages, 5, "the retained report")
        assert late.messages[0].retain
    finally:
        late.close()


def test_nothing_listening_is_unreachable():
    port = free_port()
    c = _check(_cfg(port))
    assert c.status == "fail"
    assert c.value == (f"127.0.0.1:{port} (no TLS, no user): unreachable: 127.0.0.1:{port} refused the "
                       "connection (nothing listens there)")
    assert "uplink.host and uplink.port" in c.hint


def test_a_port_that_never_answers_times_out():
    with socket.socket() as silent:  # accepts TCP (the backlog) and never speaks MQTT
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        c = _check(_cfg(silent.getsockname()[1]), timeout_s=1.0)
    assert c.status == "fail" and "no answer to CONNECT within 1 s" in c.value, c.value


def test_tls_with_the_right_password_passes(tls_broker):
    broker, tls = tls_broker
    c = _check(_cfg(broker.port, tls, username="dev1", password="right-password"))
    assert c.status == "pass", c.value
    assert "(TLS, user dev1): connected" in c.value


def test_wrong_password_is_refused_credentials(tls_broker, monkeypatch):
    broker, tls = tls_broker
    c = _check(_cfg(broker.port, tls, username="dev1", password="wrong-password"))
    assert c.status == "fail"
    assert c.value.endswith("the broker refused the connection: Not authorized"), c.value
    assert "uplink.username and uplink.password" in c.hint
    monkeypatch.setenv("APPLIANCE_MQTT_PASSWORD", "right-password")  # the env serves when the file has none
    assert _check(_cfg(broker.port, tls, username="dev1")).status == "pass"


def test_unknown_ca_is_untrusted(tls_broker, tmp_path):
    broker, _ = tls_broker
    other = make_tls(tmp_path / "other")  # a CA that did not sign the broker's certificate
    c = _check(_cfg(broker.port, other, username="dev1", password="right-password"))
    assert c.status == "fail"
    assert "TLS: the broker's certificate is not trusted" in c.value, c.value
    assert "uplink.tls.ca_file must be the CA that signed" in c.hint


def test_plain_port_asked_for_tls(mqtt_broker, tmp_path):
    tls = make_tls(tmp_path / "tls")
    c = _check(_cfg(mqtt_broker.port, tls))
    assert c.status == "fail"
    # mosquitto resets the connection on a TLS hello (other servers answer with a plain-text record)
    assert "TLS: the broker hung up during the TLS handshake" in c.value or "does not speak TLS" in c.value, c.value
    assert "8883" in c.hint


def _expired_server_cert(tls: Tls, folder) -> tuple:
    """A server certificate for 127.0.0.1 signed by the test CA, valid until yesterday."""
    ca_key = serialization.load_pem_private_key((tls.ca.parent / "ca.key").read_bytes(), None)
    ca = x509.load_pem_x509_certificate(tls.ca.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=30)).not_valid_after(now - dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_file, key_file = folder / "expired.crt", folder / "expired.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_expired_broker_certificate(tmp_path):
    tls = make_tls(tmp_path / "tls")
    cert, key = _expired_server_cert(tls, tmp_path / "tls")
    served = Tls(tls.ca, cert, key, tls.client_cert, tls.client_key)
    broker = Mosquitto(tmp_path / "broker", tls=served).start()
    try:
        c = _check(_cfg(broker.port, tls))
    finally:
        broker.close()
    assert c.status == "fail"
    assert "TLS: the broker's certificate has expired" in c.value, c.value
    assert "new certificate" in c.hint and "clock" in c.hint


def test_expired_client_certificate_is_named_before_the_broker_hangs_up(tmp_path):
    from tests.integration.test_provision import _expired_client_cert

    tls = make_tls(tmp_path / "tls")
    crt, key = _expired_client_cert(tls, tmp_path / "old")
    broker = Mosquitto(tmp_path / "broker", tls=tls, require_certificate=True).start()
    try:
        c = _check(_cfg(broker.port, Tls(tls.ca, tls.cert, tls.key, crt, key)))
        good = _check(_cfg(broker.port, tls))  # the same broker takes a valid client certificate
    finally:
        broker.close()
    assert c.status == "fail"
    assert f"(TLS, no user): {crt}: the certificate expired on " in c.value, c.value
    assert "new certificate from the fleet CA" in c.hint and "generate_key" in c.hint
    assert good.status == "pass", good.value


def test_disabled_uplink_passes_without_a_connection():
    c, session = check_uplink(from_dict({}), 1.0)
    assert (c.status, session) == ("pass", None)
