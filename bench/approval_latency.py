"""Approval latency on the local stack, printed as JSON.

For each of N runs (default 20) of a three-step run — search-a → search-b →
render.document, the last one gated by the run's approval policy — it measures:
  - approval_to_job_ms: creating the `Approval` with kubectl's path (the Kubernetes API,
    as the admin user) → the gated step's Job exists;
  - api_approval_to_job_ms (another N runs): `POST /api/v1/runs/{id}/approvals` with a
    bearer token sent → the gated step's Job exists (the API creates the Approval in the
    token user's name and waits for the operator's verdict, then answers);
  - api_approval_response_ms: how long that POST took to answer (201);
  - baseline step_to_job_ms (same runs): search-a's Job seen Complete → search-b's Job
    exists, i.e. how fast the operator starts the next step without a person involved.
All are observed the same way (polling the API server every 20 ms), so the ratio
is what an approval adds over a plain step transition.
Usage: python bench/approval_latency.py [--runs N] [--state-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
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
    def __init__(self, kubeconfig: Path, api_url: str, token: str) -> None:
        self.api_url = api_url
        self.token = token
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

    def approve_via_api(self, run_uid: str, step_id: str) -> float:
        """POST the approval with the bearer token; the seconds until the API answered."""
        request = urllib.request.Request(
            f"{self.api_url}/api/v1/runs/{run_uid}/approvals",
            data=json.dumps({"stepId": step_id, "approval": {"status": "approved"}}).encode(),
            headers={
                "Authorization": f"Bearer {self.token}",
                "Content-Type": "application/json",
            },
            method="POST",
        )
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=60) as resp:
            if resp.status != 201:
                raise RuntimeError(f"approval answered {resp.status}: {resp.read()[:300]!r}")
        return time.perf_counter() - started

    def run(self, via_api: bool = False) -> tuple[float, float, float | None]:
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
        if via_api:
            obj: Any = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.ns, "agentruns", name
            )
            uid = str(obj["metadata"]["uid"])
            answered: list[float] = []
            started = time.perf_counter()
            # The POST waits for the operator's verdict; the Job may appear before it answers.
            poster = threading.Thread(
                target=lambda: answered.append(self.approve_via_api(uid, "doc"))
            )
            poster.start()
            until(lambda: self.job(f"{name}-doc-a1"))
            job_after = time.perf_counter() - started
            poster.join()
            if not answered:
                raise RuntimeError(f"the approval of {name} through the API failed")
            return job_after, step_to_job, answered[0]
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
        return time.perf_counter() - started, step_to_job, None


def measure(kubeconfig: Path, api_url: str, token: str, runs: int) -> dict[str, Any]:
    bench = Bench(kubeconfig, api_url, token)
    bench.run()  # warm-up
    bench.run(via_api=True)
    approval, api_approval, api_response, baseline = [], [], [], []
    for _ in range(runs):
        a, b, _ = bench.run()
        approval.append(a * 1000)
        baseline.append(b * 1000)
    for _ in range(runs):
        a, b, answered = bench.run(via_api=True)
        api_approval.append(a * 1000)
        baseline.append(b * 1000)
        assert answered is not None
        api_response.append(answered * 1000)
    a_s, api_s, b_s = summary(approval), summary(api_approval), summary(baseline)
    return {
        "benchmark": "approval_latency",
        "runs": runs,
        "approval_to_job_ms": a_s,
        "api_approval_to_job_ms": api_s,
        "api_approval_response_ms": summary(api_response),
        "baseline": {"step_to_job_ms": b_s},
        "ratios": {
            "approval_over_plain_step": round(a_s["median"] / max(b_s["median"], 0.1), 2),
            "api_approval_over_plain_step": round(api_s["median"] / max(b_s["median"], 0.1), 2),
        },
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
        result = measure(stack.control_plane.kubeconfig, stack.api_url, stack.token, args.runs)
    finally:
        stack.stop()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
