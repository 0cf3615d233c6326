"""API read throughput on the local stack, printed as JSON.

`GET /api/v1/runs/{id}` of a finished two-step run and `GET /api/v1/tools`, from C
concurrent keep-alive connections for D seconds each, against three servers started in
the same run (the bare one answers the run's body on every path):
  - `api`: the stack's API (AgentRuns, Tenants and tools from its watch caches);
  - `api_direct`: a second API process on the same stack with SBA_API_WATCH_CACHE=off
    (kube-apiserver reads per request: the behaviour before the caches);
  - `bare`: a bare aiohttp process answering the same body (the floor).
Each reports req/s and latency p50/p95/p99 (ms); `ratio_to_bare` compares req/s. The
load generator shares the machine's cores with the servers, the same for all three.
Usage: python bench/api_throughput.py [--connections 32] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import aiohttp
from baselines import wait_up

from sba_devstack.binaries import default_repo_root
from sba_devstack.procs import free_port
from sba_devstack.services import Service, http_ok
from sba_devstack.stack import DEMO_TENANT, StackPorts, up

PLAN = [
    {"id": "search", "tool": "knowledge.search", "params": {"query": "refund policy", "topK": 3}},
    {"id": "doc", "tool": "render.document", "params": {"title": "Refunds", "sources": ["search"]}},
]

BARE_SERVER = textwrap.dedent(
    """
    import sys
    from aiohttp import web
    body = open(sys.argv[2], "rb").read()
    async def handler(request):
        return web.Response(body=body, content_type="application/json")
    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
    """
)


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def load(url: str, headers: dict[str, str], connections: int, seconds: float) -> Any:
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop_at:
                start = time.perf_counter()
                async with session.get(url) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
                latencies.append((time.perf_counter() - start) * 1000)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - began
    ordered = sorted(latencies)
    return {
        "req_per_s": round(len(ordered) / elapsed, 1),
        "p50_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(percentile(ordered, 0.95), 2),
        "p99_ms": round(percentile(ordered, 0.99), 2),
        "requests": len(ordered),
        "errors": errors,
    }


async def finished_run(api: str, token: str) -> tuple[str, bytes]:
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.post(
            f"{api}/api/v1/runs", json={"tenant": DEMO_TENANT, "prompt": "Bench", "plan": PLAN}
        ) as resp:
            created = await resp.json()
            if resp.status != 201:
                raise RuntimeError(f"POST /runs answered {resp.status}: {created}")
        for _ in range(600):
            async with session.get(f"{api}/api/v1/runs/{created['id']}") as resp:
                body = await resp.read()
                if json.loads(body)["phase"] in ("completed", "failed"):
                    return str(created["id"]), body
            await asyncio.sleep(0.1)
    raise RuntimeError("the bench run did not finish")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    # A bench hammers as one principal: raise its limits (the per-request Redis window is
    # still taken, as for any caller) rather than measure 429s.
    os.environ["SBA_RATE_LIMIT_TENANT_REQUESTS"] = str(10**9)
    os.environ["SBA_RATE_LIMIT_PRINCIPAL_REQUESTS"] = str(10**9)
    state = Path(tempfile.mkdtemp(prefix="sba-bench-"))
    print(f"starting a stack in {state}", file=sys.stderr)
    stack = up(default_repo_root(), state_dir=state, ports=StackPorts.ephemeral())
    extra: list[Any] = []
    try:
        run_id, body = asyncio.run(finished_run(stack.api_url, stack.token))
        body_file = state / "body.json"
        body_file.write_bytes(body)
        bare_port, direct_port = free_port(), free_port()
        bare = subprocess.Popen(
            [sys.executable, "-c", BARE_SERVER, str(bare_port), str(body_file)],
            stdout=subprocess.DEVNULL,
        )
        extra.append(bare)
        direct_env = {
            **stack.env,
            "SBA_API_PORT": str(direct_port),
            "SBA_API_WATCH_CACHE": "off",
        }
        direct_url = f"http://127.0.0.1:{direct_port}"
        direct = Service(
            "api", direct_env, state / "api-direct.log", ready=http_ok(f"{direct_url}/readyz")
        ).start()
        extra.append(direct)
        bare_url = f"http://127.0.0.1:{bare_port}"
        asyncio.run(wait_up(bare_url))
        headers = {"Authorization": f"Bearer {stack.token}"}
        servers = (("bare", bare_url), ("api", stack.api_url), ("api_direct", direct_url))
        routes = {
            "GET /api/v1/runs/{id}": f"/api/v1/runs/{run_id}",
            "GET /api/v1/tools": "/api/v1/tools",
        }
        results: dict[str, dict[str, Any]] = {}
        for route, path in routes.items():
            measured: dict[str, Any] = {}
            for label, base in servers:
                asyncio.run(load(base + path, headers, args.connections, 1.0))  # warm up
                measured[label] = asyncio.run(
                    load(base + path, headers, args.connections, args.seconds)
                )
            failed = {k: v["errors"] for k, v in measured.items() if v["errors"]}
            if failed:
                raise RuntimeError(f"{route}: non-200 answers while measuring: {failed}")
            floor = measured["bare"]["req_per_s"] or 1.0
            for label in ("api", "api_direct"):
                measured[label]["ratio_to_bare"] = round(measured[label]["req_per_s"] / floor, 3)
            results[route] = measured
        print(
            json.dumps(
                {
                    "bench": "api_throughput",
                    "run_body_bytes": len(body),
                    "connections": args.connections,
                    "seconds": args.seconds,
                    "cpus": os.cpu_count(),
                    "results": results,
                },
                indent=2,
            )
        )
        return 0
    finally:
        for proc in extra:
            if isinstance(proc, subprocess.Popen):
                proc.terminate()
                proc.wait(10)
            else:
                proc.stop()
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
