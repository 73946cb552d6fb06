from __future__ import annotations

import base64
import ipaddress
from pathlib import Path

import yaml
from cryptography import x509
from ferry_cluster import kubeconfig
from ferry_cluster.pki import Pki, ensure_pki


def test_serving_and_admin_certificates_chain_to_the_ca(tmp_path: Path) -> None:
    pki = Pki(directory=tmp_path / "pki")
    ensure_pki(pki, server_ips=[ipaddress.IPv4Address("10.213.0.1")], server_names=["localhost"])
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    serving = x509.load_pem_x509_certificate(pki.apiserver_cert.read_bytes())
    admin = x509.load_pem_x509_certificate(pki.admin_cert.read_bytes())
    serving.verify_directly_issued_by(ca)
    admin.verify_directly_issued_by(ca)
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.IPv4Address("10.213.0.1") in sans.get_values_for_type(x509.IPAddress)
    orgs = admin.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)
    assert [o.value for o in orgs] == ["system:masters"]
    assert pki.ca_key.stat().st_mode & 0o777 == 0o600


def test_pki_is_kept_once_made(tmp_path: Path) -> None:
    pki = Pki(directory=tmp_path / "pki")
    ensure_pki(pki, server_ips=[], server_names=["localhost"])
    before = pki.ca_cert.read_bytes()
    ensure_pki(pki, server_ips=[], server_names=["localhost"])
    assert pki.ca_cert.read_bytes() == before


def test_a_kubeconfig_embeds_the_ca_and_is_private(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_bytes(b"PEM")
    out = tmp_path / "kc"
    kubeconfig.write(
        out,
        kubeconfig.render(
            cluster="c",
            server="https://10.0.0.1:6443",
            ca_cert=ca,
            user={"token": "t"},
            namespace="ns",
        ),
    )
    loaded = yaml.safe_load(out.read_text())
    cluster = loaded["clusters"][0]["cluster"]
    assert base64.b64decode(cluster["certificate-authority-data"]) == b"PEM"
    assert loaded["contexts"][0]["context"]["namespace"] == "ns"
    assert out.stat().st_mode & 0o777 == 0o600
