"""Device key and CSR with `cryptography`, and the checks of TLS files before they go into a config."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from appliance.provision import csr

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc)


def check_tls_files(*args, **kwargs) -> list[str]:
    """csr.tls_problems as the installer reads them: "what: fix"."""
    return [f"{what}: {fix}" for what, fix in csr.tls_problems(*args, **kwargs)]


def _cert(folder: Path, name: str, key, start: dt.datetime, end: dt.datetime) -> Path:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(1).not_valid_before(start).not_valid_after(end).sign(key, hashes.SHA256()))
    path = folder / f"{name}.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _key(folder: Path, name: str):
    key = ec.generate_private_key(ec.SECP256R1())
    (folder / f"{name}.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return key, folder / f"{name}.key"


def test_key_and_csr(tmp_path):
    dk = csr.make_key_and_csr("gate-3", tmp_path / "tls")
    assert dk.created and oct(dk.key_file.stat().st_mode & 0o777) == "0o600"
    req = x509.load_pem_x509_csr(dk.csr_file.read_bytes())
    assert req.is_signature_valid and req.subject.rfc4514_string() == "CN=gate-3"
    key = serialization.load_pem_private_key(dk.key_file.read_bytes(), None)
    assert req.public_key().public_numbers() == key.public_key().public_numbers()
    # Again: the key is kept (a CSR already sent stays good), a new CSR is made from it.
    again = csr.make_key_and_csr("gate-3", tmp_path / "tls")
    assert not again.created and again.key_file.read_bytes() == dk.key_file.read_bytes()


def test_good_files_pass(tmp_path):
    key, key_file = _key(tmp_path, "dev")
    cert = _cert(tmp_path, "dev", key, NOW - dt.timedelta(days=1), NOW + dt.timedelta(days=1))
    assert check_tls_files(str(cert), str(cert), str(key_file), now=NOW) == []


def test_expired_not_yet_valid_and_mismatched(tmp_path):
    key, key_file = _key(tmp_path, "dev")
    old = _cert(tmp_path, "old", key, NOW - dt.timedelta(days=30), NOW - dt.timedelta(days=1))
    (p,) = check_tls_files(None, str(old), str(key_file), now=NOW)
    assert p.startswith(f"{old}: the certificate expired on 2026-05-31 ") and "fleet CA" in p
    future = _cert(tmp_path, "future", key, NOW + dt.timedelta(days=1), NOW + dt.timedelta(days=9))
    (p,) = check_tls_files(str(future), None, None, now=NOW)
    assert "valid only from 2026-06-02" in p and "clock" in p
    _, other_key = _key(tmp_path, "other")
    good = _cert(tmp_path, "good", key, NOW - dt.timedelta(days=1), NOW + dt.timedelta(days=1))
    (p,) = check_tls_files(None, str(good), str(other_key), now=NOW)
    assert p.startswith(f"{good} was not issued for the key {other_key}")


def test_not_pem(tmp_path):
    junk = tmp_path / "ca.crt"
    junk.write_text("hello\n")
    (p,) = check_tls_files(str(junk), None, None, now=NOW)
    assert p.startswith(f"{junk}: not a PEM certificate") and "mqtt.ca_file" in p
    (p,) = check_tls_files(str(tmp_path / "nope.crt"), None, None, now=NOW)
    assert "cannot read: No such file or directory" in p


def test_a_ca_bundle_is_wrong_only_when_none_of_its_certificates_is_valid(tmp_path):
    key, _ = _key(tmp_path, "ca")
    old = _cert(tmp_path, "old-root", key, NOW - dt.timedelta(days=900), NOW - dt.timedelta(days=1))
    current = _cert(tmp_path, "root", key, NOW - dt.timedelta(days=1), NOW + dt.timedelta(days=900))
    bundle = tmp_path / "bundle.crt"  # like /etc/ssl/certs/ca-certificates.crt: old roots beside current ones
    bundle.write_bytes(old.read_bytes() + current.read_bytes())
    assert check_tls_files(str(bundle), None, None, now=NOW) == []
    stale = tmp_path / "stale.crt"
    stale.write_bytes(old.read_bytes() * 2)
    (p,) = check_tls_files(str(stale), None, None, now=NOW)
    assert p.startswith(f"{stale}: the certificate expired on ") and "(and the 1 other certificates in it)" in p
    # The system's own bundle, as docs/installer-guide.md suggests for a public broker.
    system = Path("/etc/ssl/certs/ca-certificates.crt")
    if system.is_file():
        assert check_tls_files(str(system), None, None) == []


def test_problems_name_the_keys_of_where_they_come_from(tmp_path):
    junk = tmp_path / "device.crt"
    junk.write_text("hello\n")
    ((what, fix),) = csr.tls_problems(None, str(junk), None, now=NOW, keys="uplink.tls.")
    assert what.startswith(f"{junk}: not a PEM certificate") and fix.startswith("uplink.tls.cert_file must be")
