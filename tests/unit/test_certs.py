"""The dev PKI: identities map to Kubernetes users/groups and chain to the CA."""

from __future__ import annotations

import base64
import ipaddress
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sba_devstack import certs


def _attrs(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> list[str]:
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(oid)]


def _assert_signed_by(cert: x509.Certificate, ca: x509.Certificate) -> None:
    key = ca.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert cert.signature_hash_algorithm is not None
    key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
    assert cert.issuer == ca.subject


def test_ca_is_a_ca() -> None:
    ca = certs.create_ca().cert
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.subject == ca.issuer


def test_client_cert_carries_user_and_groups() -> None:
    ca = certs.create_ca()
    pair = certs.issue_client_cert(ca, "alice", ["tenant:acme", "devs"])
    cert = pair.cert
    assert _attrs(cert, NameOID.COMMON_NAME) == ["alice"]
    assert _attrs(cert, NameOID.ORGANIZATION_NAME) == ["tenant:acme", "devs"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    _assert_signed_by(cert, ca.cert)


def test_serving_cert_has_apiserver_sans() -> None:
    ca = certs.create_ca()
    cert = certs.issue_serving_cert(ca).cert
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = set(sans.get_values_for_type(x509.DNSName))
    ips = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    assert {
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
    } <= dns
    assert {"127.0.0.1", "10.96.0.1"} <= ips
    assert all(
        isinstance(ip, ipaddress.IPv4Address) for ip in sans.get_values_for_type(x509.IPAddress)
    )
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    _assert_signed_by(cert, ca.cert)


def test_kubeconfig_embeds_credentials(tmp_path: Path) -> None:
    ca = certs.create_ca()
    client = certs.issue_client_cert(ca, "sba-admin", ["system:masters"])
    path = certs.write_kubeconfig(
        tmp_path / "kc", "https://127.0.0.1:16443", ca.cert_pem, client, "sba-admin"
    )
    assert path.stat().st_mode & 0o077 == 0
    data = yaml.safe_load(path.read_text())
    cluster = data["clusters"][0]["cluster"]
    assert cluster["server"] == "https://127.0.0.1:16443"
    assert base64.b64decode(cluster["certificate-authority-data"]) == ca.cert_pem
    user = data["users"][0]["user"]
    assert base64.b64decode(user["client-certificate-data"]) == client.cert_pem
    assert base64.b64decode(user["client-key-data"]) == client.key_pem
    assert data["current-context"] == data["contexts"][0]["name"]


def test_service_account_keys_are_rsa_pem() -> None:
    pair = certs.create_service_account_keys()
    assert pair.cert_pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    assert pair.key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
