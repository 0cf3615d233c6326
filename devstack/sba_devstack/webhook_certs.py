"""The operator's admission webhook on the local control plane: a serving certificate
for 127.0.0.1 from the cluster's CA, and the operator settings that serve it there."""

from __future__ import annotations

from pathlib import Path

from sba_devstack import certs
from sba_devstack.procs import free_port


def operator_webhook_env(ca: certs.KeyPair, ca_file: Path, out_dir: Path) -> dict[str, str]:
    """Env for `sba-agentic operator` so the kube-apiserver calls its webhook locally."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pair = certs.issue_serving_cert(
        ca, "sba-operator-webhook", dns_names=("localhost",), ip_addresses=("127.0.0.1",)
    )
    cert, key = out_dir / "webhook.crt", out_dir / "webhook.key"
    pair.write(cert, key)
    return {
        "SBA_ADMISSION_WEBHOOK": "on",
        "SBA_ADMISSION_ADDR": "127.0.0.1",
        "SBA_ADMISSION_HOST": "127.0.0.1",
        "SBA_ADMISSION_PORT": str(free_port()),
        "SBA_ADMISSION_CERT": str(cert),
        "SBA_ADMISSION_KEY": str(key),
        "SBA_ADMISSION_CA": str(ca_file),
    }
