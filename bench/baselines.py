"""What the benchmarks share: the bare Job every run baseline is made of, and waiting
for a baseline server to answer."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp


def bare_job_body(
    name: str, labels: dict[str, str] | None = None, ttl_seconds: int | None = None
) -> dict[str, Any]:
    """A trivial Job, shaped like a tool step's pod for the scheduler (100m CPU)."""
    meta: dict[str, Any] = {"name": name, **({"labels": labels} if labels else {})}
    template: dict[str, Any] = {
        **({"metadata": {"labels": labels}} if labels else {}),
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 65532,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "main",
                    "image": "busybox",
                    "command": ["sh", "-c", "true"],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "resources": {
                        "limits": {"cpu": "100m", "memory": "64Mi"},
                        "requests": {"cpu": "100m", "memory": "64Mi"},
                    },
                }
            ],
        },
    }
    spec: dict[str, Any] = {"backoffLimit": 0, "template": template}
    if ttl_seconds is not None:
        spec["ttlSecondsAfterFinished"] = ttl_seconds
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": spec}


async def wait_up(url: str) -> None:
    """Until `url` answers 200 (10 s at most)."""
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")
