"""Certificates and keys for the local control plane.

One self-signed CA signs the API server's serving certificate, the admin's
client certificate (group ``system:masters``) and the client certificates of
the scheduler, controller-manager, kubelets and kube-proxies; a separate RSA key signs
ServiceAccount tokens. Files are written once and kept, so an ``up`` that finds
a healthy cluster does not invalidate kubeconfigs handed out earlier.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=365)
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True, kw_only=True)
class Pki:
    """Paths of every PEM file the control plane and its clients use."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def apiserver_cert(self) -> Path:
        return self.directory / "apiserver.crt"

    @property
    def apiserver_key(self) -> Path:
        return self.directory / "apiserver.key"

    @property
    def admin_cert(self) -> Path:
        return self.directory / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.directory / "admin.key"

    @property
    def sa_key(self) -> Path:
        return self.directory / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.directory / "sa.pub"

    def complete(self) -> bool:
        files = (self.ca_cert, self.ca_key, self.apiserver_cert, self.apiserver_key)
        return all(p.exists() for p in (*files, self.admin_cert, self.admin_key, self.sa_key))


def _write_key(path: Path, key: PrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.touch(mode=0o600)
    path.write_bytes(pem)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attrs)


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
    )


def _leaf(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_name: x509.Name,
    *,
    common_name: str,
    org: str | None,
    usage: x509.ObjectIdentifier,
    sans: list[x509.GeneralName],
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        _builder(_name(common_name, org), ca_name, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        # Python 3.13 verifies strictly (VERIFY_X509_STRICT): it needs both key IDs.
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


@dataclass(frozen=True, kw_only=True)
class ClientCert:
    cert: Path
    key: Path


def ensure_client_cert(
    pki: Pki, stem: str, *, common_name: str, organization: str | None = None
) -> ClientCert:
    """A client certificate of the cluster's CA (``stem``.crt/.key), issued unless present.

    The control plane's other parts and the kubelets authenticate with these:
    ``system:node:<name>`` in ``system:nodes`` for the Node authorizer, and the
    well-known users the default RBAC roles bind (``system:kube-scheduler``...).
    """
    out = ClientCert(cert=pki.directory / f"{stem}.crt", key=pki.directory / f"{stem}.key")
    if out.cert.exists() and out.key.exists():
        return out
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{pki.ca_key} is not the EC key this module writes")
    ca_name = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes()).subject
    key, cert = _leaf(
        ca_key,
        ca_name,
        common_name=common_name,
        org=organization,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        sans=[],
    )
    _write_key(out.key, key)
    _write_cert(out.cert, cert)
    return out


def ensure_pki(
    pki: Pki, *, server_ips: list[ipaddress.IPv4Address], server_names: list[str]
) -> None:
    """Create the CA, serving, admin and ServiceAccount keys unless all exist."""
    if pki.complete():
        return
    pki.directory.mkdir(parents=True, exist_ok=True)
    pki.directory.chmod(0o700)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("ferry-local-ca")
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
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
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(pki.ca_key, ca_key)
    _write_cert(pki.ca_cert, ca_cert)

    def leaf(
        common_name: str,
        org: str | None,
        usage: x509.ObjectIdentifier,
        sans: list[x509.GeneralName],
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        return _leaf(ca_key, ca_name, common_name=common_name, org=org, usage=usage, sans=sans)

    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in server_names]
    sans += [x509.IPAddress(ip) for ip in server_ips]
    key, cert = leaf("kube-apiserver", None, ExtendedKeyUsageOID.SERVER_AUTH, sans)
    _write_key(pki.apiserver_key, key)
    _write_cert(pki.apiserver_cert, cert)

    key, cert = leaf("ferry-admin", "system:masters", ExtendedKeyUsageOID.CLIENT_AUTH, [])
    _write_key(pki.admin_key, key)
    _write_cert(pki.admin_cert, cert)

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(pki.sa_key, sa_key)
    pki.sa_pub.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
