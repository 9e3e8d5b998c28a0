"""A small private PKI for development and tests: a CA, a server certificate for localhost, a client certificate."""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _issue(
    subject_cn: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    sans: Sequence[x509.GeneralName] = (),
    usage: Sequence[x509.ObjectIdentifier] = (),
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject_cn))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usage)), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def write_dev_pki(directory: Path, extra_hosts: Sequence[str] = (), nap_ids: Sequence[str] = ()) -> dict[str, Path]:
    """Write ca.pem, server.pem, server.key, client.pem, client.key (keys mode 0600); returns their paths. For each of
    ``nap_ids`` also a NAP agent's client certificate ``nap-<id>.pem``/``.key`` whose SAN names the NAP (the PCE binds
    its NAP session to that name, issue 12 item 6; labels ``nap_cert:<id>``/``nap_key:<id>``)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca_cert = _issue("flame-dev-ca", ca_key, _name("flame-dev-ca"), ca_key, ca=True)
    sans: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    for host in extra_hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    server_key, client_key = _key(), _key()
    server = _issue(
        "localhost", server_key, ca_cert.subject, ca_key, sans=sans, usage=[ExtendedKeyUsageOID.SERVER_AUTH]
    )
    client = _issue("flame-client", client_key, ca_cert.subject, ca_key, usage=[ExtendedKeyUsageOID.CLIENT_AUTH])
    files = {
        "ca": ("ca.pem", ca_cert.public_bytes(serialization.Encoding.PEM)),
        "server_cert": ("server.pem", server.public_bytes(serialization.Encoding.PEM)),
        "server_key": ("server.key", _pem_key(server_key)),
        "client_cert": ("client.pem", client.public_bytes(serialization.Encoding.PEM)),
        "client_key": ("client.key", _pem_key(client_key)),
    }
    for nap in nap_ids:
        nap_key = _key()
        cert = _issue(
            nap, nap_key, ca_cert.subject, ca_key, sans=[x509.DNSName(nap)], usage=[ExtendedKeyUsageOID.CLIENT_AUTH]
        )
        files[f"nap_cert:{nap}"] = (f"nap-{nap}.pem", cert.public_bytes(serialization.Encoding.PEM))
        files[f"nap_key:{nap}"] = (f"nap-{nap}.key", _pem_key(nap_key))
    out = {}
    for label, (name, data) in files.items():
        path = directory / name
        path.write_bytes(data)
        if name.endswith(".key"):
            os.chmod(path, 0o600)
        out[label] = path
    return out
