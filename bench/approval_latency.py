"""Approval latency on the local stack, printed as JSON.

For each of N runs (default 20) of a three-step run — search-a → search-b →
render.document, the last one gated by the run's approval policy — it measures:
  - approval_to_job_ms: creating the `Approval` → the gated step's Job exists;
  - baseline step_to_job_ms (same run): search-a's Job seen Complete → search-b's Job
    exists, i.e. how fast the operator starts the next step without a person involved.
Both are observed the same way (polling the API server every 20 ms), so the ratio
is what an approval adds over a plain step transition.
Usage: python bench/approval_latency.py [--runs N] [--state-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from sba_devstack.binaries import default_repo_root
from sba_devstack.stack import DEMO_TENANT, StackPorts, up

GROUP, VERSION = "sba-agentic.io", "v1alpha1"
PLAN = [
    {"id": "search-a", "tool": "knowledge.search", "params": {"query": "refund policy"}},
    {"id": "search-b", "tool": "knowledge.search", "params": {"query": "shipping"}},
    {"id": "doc", "tool": "render.document", "params": {"title": "Brief"}},
]
POLL = 0.02


def summary(samples: list[float]) -> dict[str, Any]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "median": round(statistics.median(ordered), 1),
        "p95": round(p95, 1),
        "min": round(ordered[0], 1),
        "max": round(ordered[-1], 1),
        "n": len(ordered),
    }


def until(check: Callable[[], Any], timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(POLL)
    raise RuntimeError("timed out")


class Bench:
    def __init__(self, kubeconfig: Path) -> None:
        config.load_kube_config(str(kubeconfig))
        self.custom = client.CustomObjectsApi()
        self.batch = client.BatchV1Api()
        self.ns = f"tenant-{DEMO_TENANT}"
        review = client.AuthenticationV1Api().create_self_subject_review({})
        self.user = review.status.user_info.username

    def job(self, name: str) -> Any:
        try:
            return self.batch.read_namespaced_job_status(name, self.ns)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def complete(self, name: str) -> bool:
        job = self.job(name)
        conds = {c.type: c.status for c in ((job.status.conditions or []) if job else [])}
        if conds.get("Failed") == "True":
            raise RuntimeError(f"job {name} failed")
        return conds.get("Complete") == "True"

    def run(self) -> tuple[float, float]:
        name = f"bench-apr-{uuid.uuid4().hex[:6]}"
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "AgentRun",
            "metadata": {"name": name},
            "spec": {
                "tenant": DEMO_TENANT,
                "prompt": "approval latency",
                "plan": PLAN,
                "approvalPolicy": {"tools": ["render.document"]},
            },
        }
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, "agentruns", body)
        until(lambda: self.complete(f"{name}-search-a-a1"))
        seen_complete = time.perf_counter()
        until(lambda: self.job(f"{name}-search-b-a1"))
        step_to_job = time.perf_counter() - seen_complete

        def waiting() -> str | None:
            obj = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.ns, "agentruns", name
            )
            status = obj.get("status") or {}
            if status.get("phase") == "failed":
                raise RuntimeError(f"run {name} failed: {status.get('message')}")
            if status.get("phase") != "awaiting_approval":
                return None
            return str(status["steps"][2]["approval"]["digest"])

        digest = until(waiting)
        approval = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Approval",
            "metadata": {"name": f"{name}-ok"},
            "spec": {
                "run": name,
                "stepId": "doc",
                "decision": "approved",
                "approver": self.user,
                "digest": digest,
            },
        }
        started = time.perf_counter()
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, "approvals", approval)
        until(lambda: self.job(f"{name}-doc-a1"))
        return time.perf_counter() - started, step_to_job


def measure(kubeconfig: Path, runs: int) -> dict[str, Any]:
    bench = Bench(kubeconfig)
    bench.run()  # warm-up
    approval, baseline = [], []
    for _ in range(runs):
        a, b = bench.run()
        approval.append(a * 1000)
        baseline.append(b * 1000)
    a_s, b_s = summary(approval), summary(baseline)
    return {
        "benchmark": "approval_latency",
        "runs": runs,
        "approval_to_job_ms": a_s,
        "baseline": {"step_to_job_ms": b_s},
        "ratios": {"approval_over_plain_step": round(a_s["median"] / max(b_s["median"], 0.1), 2)},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--state-dir", type=Path, default=None)
    args = parser.parse_args()
    state = args.state_dir or Path(tempfile.mkdtemp(prefix="sba-bench-"))
    print(f"starting a stack in {state}", file=sys.stderr)
    stack = up(default_repo_root(), state_dir=state, ports=StackPorts.ephemeral())
    try:
        assert stack.control_plane is not None
        result = measure(stack.control_plane.kubeconfig, args.runs)
    finally:
        stack.stop()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
