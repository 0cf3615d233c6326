"""Node credentials, obtained the way a kubelet's TLS bootstrap does.

With whatever kubeconfig it was given (typically the admin's), the agent asks for a
client certificate for `CN=system:node:<name>, O=system:nodes` through a
CertificateSigningRequest (signer kubernetes.io/kube-apiserver-client-kubelet), approves
it, and waits for the controller-manager to sign it. From then on it talks to the API as
the node, so the Node authorizer and NodeRestriction confine it exactly as they would a
kubelet. If any step is refused (no CSR rights, no signer) it keeps the given identity.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sba_devstack import certs
from sba_devstack.nodeagent.kube import API_ERRORS, Json, Kube
from sba_devstack.nodeagent.logs import log

SIGNER = "kubernetes.io/kube-apiserver-client-kubelet"
CSR_PATH = "/apis/certificates.k8s.io/v1/certificatesigningrequests"
SIGN_TIMEOUT = 30.0
_ERRORS: tuple[type[Exception], ...] = (*API_ERRORS, TimeoutError)


def node_user(node_name: str) -> str:
    return f"system:node:{node_name}"


def whoami(kube: Kube) -> str:
    review = kube.request(
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    return str(review.get("status", {}).get("userInfo", {}).get("username", ""))


def _csr_pem(node_name: str, key: ec.EllipticCurvePrivateKey) -> bytes:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
            x509.NameAttribute(NameOID.COMMON_NAME, node_user(node_name)),
        ]
    )
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def _request_certificate(kube: Kube, node_name: str, key: ec.EllipticCurvePrivateKey) -> bytes:
    created = kube.request(
        "POST",
        CSR_PATH,
        body={
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "CertificateSigningRequest",
            "metadata": {"generateName": f"node-csr-{node_name}-"},
            "spec": {
                "request": base64.b64encode(_csr_pem(node_name, key)).decode(),
                "signerName": SIGNER,
                "usages": ["digital signature", "client auth"],
            },
        },
    )
    name = created["metadata"]["name"]
    created.setdefault("status", {})["conditions"] = [
        {
            "type": "Approved",
            "status": "True",
            "reason": "SBANodeAgentBootstrap",
            "message": "approved by the sba dev node agent for its own node",
        }
    ]
    kube.request("PUT", f"{CSR_PATH}/{name}/approval", body=created)
    deadline = time.monotonic() + SIGN_TIMEOUT
    while time.monotonic() < deadline:
        csr: Json = kube.request("GET", f"{CSR_PATH}/{name}")
        cert = csr.get("status", {}).get("certificate")
        if cert:
            return base64.b64decode(cert)
        time.sleep(0.2)
    raise TimeoutError(f"CSR {name} was not signed within {SIGN_TIMEOUT:.0f}s")


def node_kube(kube: Kube, node_name: str, pki_dir: Path) -> Kube | None:
    """A client authenticated as the node, or None to keep using `kube`."""
    if not kube.ca_pem():
        return None
    try:
        if whoami(kube) == node_user(node_name):
            return None
        key = ec.generate_private_key(ec.SECP256R1())
        cert_pem = _request_certificate(kube, node_name, key)
    except _ERRORS as err:
        log("node.credentials_kept", node=node_name, reason=str(err))
        return None
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pki_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = certs.write_kubeconfig(
        pki_dir / "node.kubeconfig",
        kube.host,
        kube.ca_pem(),
        certs.KeyPair(cert_pem, key_pem),
        node_user(node_name),
    )
    node = Kube.from_kubeconfig(path)
    user = whoami(node)
    log("node.credentials", node=node_name, user=user, kubeconfig=str(path))
    return node
