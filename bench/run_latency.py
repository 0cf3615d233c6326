"""Run latency on the local stack, printed as JSON.

Measures, over N runs (default 10) of a two-step run (knowledge.search →
render.document):
  - first_event_ms: POST /api/v1/runs → the first SSE event received;
  - run_wall_ms:    POST /api/v1/runs → the `completed` event.
Baselines measured in the same process, on the same stack, so the numbers are
comparable across machines:
  - http_roundtrip_ms: GET /healthz — the floor under first_event_ms;
  - bare_job_ms: a trivial Job (create → Complete) through the same scheduler, Job
    controller and node agent — the floor under each tool step.
Usage: python bench/run_latency.py [--runs N] [--state-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from baselines import bare_job_body
from kubernetes import client, config

from sba_devstack.binaries import default_repo_root
from sba_devstack.stack import DEMO_TENANT, StackPorts, up

PLAN = [
    {"id": "search", "tool": "knowledge.search", "params": {"query": "refund policy", "topK": 3}},
    {"id": "doc", "tool": "render.document", "params": {"title": "Refunds", "sources": ["search"]}},
]


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


async def one_run(session: aiohttp.ClientSession, api: str) -> tuple[float, float]:
    start = time.perf_counter()
    async with session.post(
        f"{api}/api/v1/runs",
        json={"tenant": DEMO_TENANT, "prompt": "Refund brief", "plan": PLAN},
    ) as resp:
        if resp.status != 201:
            raise RuntimeError(f"POST /runs answered {resp.status}: {await resp.text()}")
        created = await resp.json()
    first: float | None = None
    async with session.get(api + created["links"]["events"]) as stream:
        async for raw in stream.content:
            line = raw.decode().strip()
            if line.startswith("data:") and first is None:
                first = time.perf_counter()
            if line == "event: completed":
                return (first or 0) - start, time.perf_counter() - start
            if line == "event: failed":
                raise RuntimeError(f"benchmark run {created['id']} failed")
    raise RuntimeError("stream ended before the run completed")


async def http_roundtrip(session: aiohttp.ClientSession, api: str) -> float:
    start = time.perf_counter()
    async with session.get(f"{api}/healthz") as resp:
        await resp.read()
    return time.perf_counter() - start


def bare_job(batch: client.BatchV1Api, namespace: str) -> float:
    name = f"bench-bare-{uuid.uuid4().hex[:8]}"
    body = bare_job_body(name, ttl_seconds=60)
    start = time.perf_counter()
    batch.create_namespaced_job(namespace, body)
    while True:
        job = batch.read_namespaced_job_status(name, namespace)
        conditions = {c.type: c.status for c in (job.status.conditions or [])}
        if conditions.get("Complete") == "True":
            return time.perf_counter() - start
        if conditions.get("Failed") == "True":
            raise RuntimeError(f"baseline job {name} failed")
        time.sleep(0.02)


async def measure(api: str, kubeconfig: Path, runs: int, token: str) -> dict[str, Any]:
    config.load_kube_config(str(kubeconfig))
    batch = client.BatchV1Api()
    namespace = f"tenant-{DEMO_TENANT}"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as session:
        await one_run(session, api)  # warm-up: imports, caches, first Job
        bare_job(batch, namespace)
        first, wall, rtt, bare = [], [], [], []
        for _ in range(runs):
            f, w = await one_run(session, api)
            first.append(f * 1000)
            wall.append(w * 1000)
            rtt.append(await http_roundtrip(session, api) * 1000)
            bare.append(await asyncio.to_thread(bare_job, batch, namespace) * 1000)
    first_s, wall_s, rtt_s, bare_s = summary(first), summary(wall), summary(rtt), summary(bare)
    return {
        "benchmark": "run_latency",
        "runs": runs,
        "first_event_ms": first_s,
        "run_wall_ms": wall_s,
        "baseline": {"http_roundtrip_ms": rtt_s, "bare_job_ms": bare_s},
        "ratios": {
            "first_event_over_http_roundtrip": round(first_s["median"] / rtt_s["median"], 2),
            "run_wall_over_two_bare_jobs": round(wall_s["median"] / (2 * bare_s["median"]), 2),
        },
        "targets": {
            "first_event_ms_max": 1000,
            "note": "seed: streaming starts < 1 s after create",
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--state-dir", type=Path, default=None)
    args = parser.parse_args()
    state = args.state_dir or Path(tempfile.mkdtemp(prefix="sba-bench-"))
    print(f"starting a stack in {state}", file=sys.stderr)
    stack = up(default_repo_root(), state_dir=state, ports=StackPorts.ephemeral())
    try:
        assert stack.control_plane is not None
        result = asyncio.run(
            measure(stack.api_url, stack.control_plane.kubeconfig, args.runs, stack.token)
        )
    finally:
        stack.stop()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
