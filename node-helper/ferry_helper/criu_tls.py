"""Per-migration TLS identities for CRIU's page server link.

Each end of a page-server migration makes a fresh P-256 key and a
self-signed certificate, and trusts exactly the other end's certificate
(CRIU's ``tls-cacert``). Only the certificates cross, over the helpers' SSH
(the operator carries them), so no new trust is introduced: the page server
accepts only the source that holds this migration's key, and the source sends
only to the target that holds the other one. CRIU's GnuTLS server requires
the client's certificate (``GNUTLS_CERT_REQUIRE`` in CRIU's ``tls.c``).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

#: How long a migration's certificate is valid; a migration lasts at most an hour
#: (spec.timeoutSeconds), so a longer-lived certificate would only be a risk.
IDENTITY_LIFETIME = datetime.timedelta(hours=2)

_CONFIG_VALUE = re.compile(r"^[A-Za-z0-9_./:-]+$")


@dataclass(frozen=True, kw_only=True)
class TlsFiles:
    """This end's certificate and key, and the one certificate it trusts (PEM files)."""

    cert: Path
    key: Path
    peer_cert: Path


@dataclass(frozen=True, kw_only=True)
class Identity:
    """A self-signed certificate and its key, both PEM, made for one migration."""

    cert_pem: bytes
    key_pem: bytes


def make_identity(common_name: str, *, now: datetime.datetime | None = None) -> Identity:
    """A fresh P-256 key and a self-signed certificate for it.

    The other end trusts exactly this certificate, so it is marked a CA,
    which GnuTLS wants of a trust anchor. CRIU checks the peer's name against
    the page server's address unless told not to (``tls-no-cn-verify``); the
    pinned certificate is what authenticates, so names are not checked.
    """
    now = now or datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + IDENTITY_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    try:
        ip = ipaddress.ip_address(common_name)
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ip)]), critical=False
        )
    except ValueError:
        pass
    cert = builder.sign(key, hashes.SHA256())
    return Identity(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def check_certificate(pem: str) -> bytes:
    """``pem`` as bytes if it is one PEM certificate; ValueError otherwise."""
    data = pem.encode()
    try:
        x509.load_pem_x509_certificate(data)
    except ValueError:
        raise ValueError("not a PEM certificate") from None
    return data


def tls_files(directory: Path) -> TlsFiles:
    """Where an end's files live in ``directory`` (see :func:`write_identity`)."""
    return TlsFiles(
        cert=directory / "cert.pem", key=directory / "key.pem", peer_cert=directory / "peer.pem"
    )


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def write_identity(directory: Path, identity: Identity) -> TlsFiles:
    """Write this end's certificate and key (0600) into ``directory`` (0700)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    files = tls_files(directory)
    _write_private(files.cert, identity.cert_pem)
    _write_private(files.key, identity.key_pem)
    return files


def read_or_make_identity(directory: Path, common_name: str) -> TlsFiles:
    """This end's identity in ``directory``: the one made before (a repeated step), or new."""
    files = tls_files(directory)
    if files.cert.exists() and files.key.exists():
        return files
    return write_identity(directory, make_identity(common_name))


def trust_peer(files: TlsFiles, peer_cert_pem: bytes) -> None:
    """Trust ``peer_cert_pem``, and nothing else, as the other end."""
    _write_private(files.peer_cert, peer_cert_pem)


def config_value(text: str) -> str:
    """``text`` if CRIU's config parser takes it as one value (it knows no quoting)."""
    if not _CONFIG_VALUE.match(text):
        raise ValueError(f"not usable in a CRIU config file: {text!r}")
    return text


def tls_options(tls: TlsFiles) -> list[str]:
    """CRIU's TLS options (as config lines or, with ``--``, as arguments)."""
    return [
        "tls",
        f"tls-cacert {config_value(str(tls.peer_cert))}",
        f"tls-cert {config_value(str(tls.cert))}",
        f"tls-key {config_value(str(tls.key))}",
        "tls-no-cn-verify",
    ]
