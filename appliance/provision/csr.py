"""TLS material for `appliance provision`: a device key and a certificate signing request
(CSR) for the fleet's CA, and the checks of certificates before they are written into a
config (expired, not yet valid, not matching the key, not PEM).

The key is EC P-256 (small, fast on a Pi, accepted by mosquitto and every common broker);
the CSR's subject CN is the device id, which is what a fleet CA usually puts in the
certificate and what a broker's ACL can match (use_identity_as_username in mosquitto).
"""
from __future__ import annotations

import datetime as dt
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from appliance.errors import ApplianceError


@dataclass
class DeviceKey:
    key_file: Path
    csr_file: Path
    created: bool  # False: the key was there already and was kept (a new CSR from it)


def make_key_and_csr(device_id: str, folder: Path) -> DeviceKey:
    """<folder>/device.key (0600, kept when present: a CSR already sent stays valid) and
    <folder>/device.csr for `device_id`."""
    folder.mkdir(parents=True, exist_ok=True)
    key_file, csr_file = folder / "device.key", folder / "device.csr"
    created = not key_file.exists()
    if created:
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
    else:
        key = _load_key(key_file)
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
           .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
           .sign(key, hashes.SHA256()))
    csr_file.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    return DeviceKey(key_file, csr_file, created)


def _load_key(path: Path):
    try:
        return serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except OSError as e:
        raise ApplianceError(f"{path}: cannot read: {e.strerror or e}") from None
    except (ValueError, TypeError) as e:
        raise ApplianceError(f"{path}: not an unencrypted PEM private key ({e})") from None


def _load_certs(path: Path) -> list[x509.Certificate]:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ApplianceError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        with warnings.catch_warnings():  # a system bundle's odd old roots (negative serials) are not our problem
            warnings.simplefilter("ignore")
            certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise ApplianceError(f"{path}: not a PEM certificate (expected -----BEGIN CERTIFICATE-----)")
    return certs


def _validity(cert: x509.Certificate, path: Path, now: dt.datetime) -> str | None:
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now > end:
        return f"{path}: the certificate expired on {end:%Y-%m-%d %H:%M} UTC"
    if now < start:
        return (f"{path}: the certificate is valid only from {start:%Y-%m-%d %H:%M} UTC (is this device's "
                "clock right? timedatectl)")
    return None


def tls_problems(ca_file: str | None, cert_file: str | None, key_file: str | None,
                 now: dt.datetime | None = None, keys: str = "mqtt.") -> list[tuple[str, str]]:
    """(what is wrong, how to fix it) for each problem with the TLS files; [] when they look
    right. `keys`: how the files are named to the reader ("mqtt." in an answers file,
    "uplink.tls." in a config)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    problems: list[tuple[str, str]] = []
    if ca_file:
        try:
            cas = _load_certs(Path(ca_file))
            # A bundle (/etc/ssl/certs/ca-certificates.crt) holds roots that expired long ago
            # beside the current ones: it is wrong only when none of them is valid now.
            invalid = [p for p in (_validity(c, Path(ca_file), now) for c in cas) if p]
            if len(invalid) == len(cas):
                problems.append((invalid[0] + (f" (and the {len(cas) - 1} other certificates in it)"
                                               if len(cas) > 1 else ""),
                                 "ask the fleet's operator for the current CA certificate"))
        except ApplianceError as e:
            problems.append((str(e), f"{keys}ca_file must be the PEM file of the CA that signed the broker's "
                                     "certificate"))
    if cert_file:
        try:
            cert = _load_certs(Path(cert_file))[0]
            p = _validity(cert, Path(cert_file), now)
            if p:
                problems.append((p, "get a new certificate from the fleet CA (`appliance provision` with "
                                    "generate_key makes a key and a CSR for it)"))
            if key_file:
                key = _load_key(Path(key_file))
                pub = serialization.PublicFormat.SubjectPublicKeyInfo
                if key.public_key().public_bytes(serialization.Encoding.PEM, pub) != \
                        cert.public_key().public_bytes(serialization.Encoding.PEM, pub):
                    problems.append((f"{cert_file} was not issued for the key {key_file}",
                                     "use the key the CSR was made with, or have a certificate signed for this key"))
        except ApplianceError as e:
            problems.append((str(e), f"{keys}cert_file must be this device's certificate and {keys}key_file its "
                                     "unencrypted private key, both PEM"))
    return problems
