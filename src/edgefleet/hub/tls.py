"""The hub's own certificate authority and server certificate (``edgefleet hub init``).

A small CA of the fleet signs the hub's server certificate; the CLI and the agents are given the
CA certificate and verify the hub with it. Keys are ECDSA P-256, written 0600. Running ``init``
again keeps the CA and reissues the server certificate only when it lacks a requested name or is
near its end, so agents that trust the CA keep trusting the hub.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
SERVER_DAYS = 825
RENEW_BEFORE = timedelta(days=30)


@dataclass(frozen=True)
class HubPki:
    """Where ``init`` keeps the hub's TLS files."""

    dir: Path

    @property
    def ca_cert(self) -> Path:
        """The CA certificate: give it to the CLI (``--ca``) and agents (``--hub-ca``)."""
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        """The CA's private key: keep it offline once the hub's certificate is made."""
        return self.dir / "ca.key"

    @property
    def server_cert(self) -> Path:
        """The hub's server certificate."""
        return self.dir / "server.crt"

    @property
    def server_key(self) -> Path:
        """The hub's server key."""
        return self.dir / "server.key"


def default_names() -> list[str]:
    """Names a hub on this machine is reached by: loopback and the host name."""
    return sorted({"localhost", "127.0.0.1", "::1", socket.gethostname()})


def _write(path: Path, data: bytes, *, secret: bool) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    tmp.replace(path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _alt_names(names: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for name in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def cert_names(path: Path) -> set[str]:
    """The DNS names and addresses a certificate is good for."""
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(v) for v in san.get_values_for_type(x509.IPAddress)} | set(
        san.get_values_for_type(x509.DNSName)
    )


def init_pki(directory: Path, names: list[str], *, now: datetime | None = None) -> list[str]:
    """Make (or keep) the CA and a server certificate for ``names`` under ``directory``; returns
    what was made, for the operator to read."""
    now = now or datetime.now(UTC)
    pki = HubPki(directory)
    directory.mkdir(parents=True, exist_ok=True)
    made: list[str] = []
    for name in names:
        if not name or any(c.isspace() for c in name):
            raise ValueError(f"--san {name!r}: expected a DNS name or an IP address")
    if pki.ca_cert.exists() and pki.ca_key.exists():
        ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{pki.ca_key}: not the EC key 'hub init' makes")
        ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgefleet fleet CA")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
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
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        _write(pki.ca_key, _key_pem(ca_key), secret=True)
        _write(pki.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM), secret=False)
        made.append(f"CA {pki.ca_cert}")
    if pki.server_cert.exists() and pki.server_key.exists():
        current = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
        fresh = current.not_valid_after_utc - now > RENEW_BEFORE
        if fresh and set(names) <= cert_names(pki.server_cert):
            return made
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgefleet hub")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=SERVER_DAYS))
        .add_extension(x509.SubjectAlternativeName(_alt_names(names)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write(pki.server_key, _key_pem(key), secret=True)
    _write(pki.server_cert, cert.public_bytes(serialization.Encoding.PEM), secret=False)
    made.append(f"server certificate {pki.server_cert} for {', '.join(names)}")
    return made


LOOPBACK_NAMES = frozenset({"localhost", "::1"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or 'localhost') is on this machine only."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
