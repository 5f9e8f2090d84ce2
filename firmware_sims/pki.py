"""A throw-away certificate authority and broker certificate for the local demo and tests only.

`generate_demo_pki(folder)` makes an ECDSA P-256 CA (RFC 5480 curve secp256r1) and a server
certificate for 127.0.0.1 and localhost signed by it, valid for a day, and writes them as PEM:
`ca.pem` (the trust anchor clients are given), `server.pem` and `server.key` (mode 0600, what
Mosquitto's TLS listener presents). The CA's private key is never written anywhere: once the
server certificate is signed nobody can issue another under this CA, so a leaked demo folder
cannot be used to impersonate a real broker. A hospital deployment uses its own PKI instead
(docs/broker-security.md); nothing here is meant for production.

Certificate profile: RFC 5280 §4.2.1.9 basic constraints (CA with path length 0; the server not
a CA), §4.2.1.3 key usage, §4.2.1.12 extended key usage (serverAuth), §4.2.1.6 subject
alternative names (the names a client's hostname check compares, RFC 6125 §6), and §4.2.1.1 /
§4.2.1.2 authority and subject key identifiers so chain building is unambiguous.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEMO_VALIDITY_S: Final = 86_400
"""A day: long enough for any demo or test session, short enough that a copy soon expires."""
CLOCK_SKEW_S: Final = 300
"""Certificates start this much in the past so a client whose clock lags a little accepts them."""
DEMO_HOSTS: Final = ("127.0.0.1", "localhost")
CA_FILE: Final = "ca.pem"
SERVER_CERT_FILE: Final = "server.pem"
SERVER_KEY_FILE: Final = "server.key"


@dataclass(slots=True, frozen=True)
class DemoPki:
    """Where the generated files are: the CA certificate, the server certificate and its key."""

    ca_file: Path
    server_cert_file: Path
    server_key_file: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "bedside-twin local demo"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _san(hosts: tuple[str, ...]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Create the file with its final mode from the start (a key is never readable by others)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    os.fchmod(fd, mode)  # an existing file keeps its old mode through O_CREAT
    with open(fd, "wb") as handle:
        handle.write(data)


def generate_demo_pki(
    folder: Path,
    *,
    hosts: tuple[str, ...] = DEMO_HOSTS,
    validity_s: int = DEMO_VALIDITY_S,
    now: datetime.datetime | None = None,
) -> DemoPki:
    """Write a fresh CA certificate, server certificate and server key into `folder`."""
    now = now or datetime.datetime.now(datetime.UTC)
    not_before = now - datetime.timedelta(seconds=CLOCK_SKEW_S)
    not_after = now + datetime.timedelta(seconds=validity_s)
    folder.mkdir(parents=True, exist_ok=True)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("bedside-twin demo CA")
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,  # ECDHE-ECDSA handshakes sign with the server key
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_san(hosts), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    pki = DemoPki(folder / CA_FILE, folder / SERVER_CERT_FILE, folder / SERVER_KEY_FILE)
    _write(pki.ca_file, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(pki.server_cert_file, server_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(
        pki.server_key_file,
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        0o600,
    )
    return pki
