"""Streaming latency of model steps on the local stack, printed as JSON.

Over N runs (default 10) of a one-step run (`llm.generate`) whose tenant's model is an
OpenAI-compatible stand-in writing a 60-piece answer at 20 ms a piece:
  - first_token_ms: the step's `step_started` event → its first `token` event, both as
    received by an SSE client (Job start, pod start, gateway, model, Postgres, Redis, SSE);
  - piece_delivery_ms: for every piece the model wrote, the stand-in's emission time → the
    time the SSE client received the `token` event carrying it (batched ≤ 50 ms).
Baselines from the same stand-in in the same run, read directly with the official SDK:
  - direct_first_token_ms: request → first content chunk (the model's own first-token time);
  - direct_piece_delivery_ms: emission → the SDK client's receipt of the chunk.
Usage: python bench/token_latency.py [--runs N] [--state-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from openai import AsyncOpenAI

from sba_devstack.binaries import default_repo_root
from sba_devstack.openai_standin import OpenAIStandIn
from sba_devstack.stack import StackPorts, up

sys.path.insert(0, str(Path(__file__).parent))
from run_latency import summary

TENANT = "bench-llm"
MODEL = "gpt-4o-mini"
PIECES = 60
DELAY = 0.02
ANSWER = " ".join(f"word{i}" for i in range(PIECES))


def _control(llm: OpenAIStandIn) -> str:
    return llm.base_url.removesuffix("/v1") + "/_control"


async def _script(session: aiohttp.ClientSession, llm: OpenAIStandIn) -> None:
    async with session.post(
        f"{_control(llm)}/script", json={"replies": [{"content": ANSWER}]}
    ) as resp:
        resp.raise_for_status()


async def _emissions(session: aiohttp.ClientSession, llm: OpenAIStandIn) -> list[dict[str, Any]]:
    async with session.get(f"{_control(llm)}/emissions") as resp:
        body: list[dict[str, Any]] = (await resp.json())["emissions"]
    return body


def _piece_ends(pieces: list[str]) -> list[int]:
    ends, total = [], 0
    for piece in pieces:
        total += len(piece)
        ends.append(total)
    return ends


def _delivery(
    emitted: list[float], ends: list[int], received: list[tuple[int, float]]
) -> list[float]:
    """Per piece: the receipt of the first event that covers its end offset, minus its emission."""
    out: list[float] = []
    for end, at in zip(ends, emitted, strict=True):
        got = next((t for covered, t in received if covered >= end), None)
        if got is not None:
            out.append((got - at) * 1000)
    return out


async def one_run(
    api: aiohttp.ClientSession, base: str, control: aiohttp.ClientSession, llm: OpenAIStandIn
) -> tuple[float, list[float]]:
    await _script(control, llm)
    before = len(await _emissions(control, llm))
    plan = [{"id": "answer", "tool": "llm.generate", "params": {"prompt": "{goal}"}}]
    async with api.post(
        f"{base}/api/v1/runs", json={"tenant": TENANT, "prompt": "Say it", "plan": plan}
    ) as resp:
        if resp.status != 201:
            raise RuntimeError(f"POST /runs answered {resp.status}: {await resp.text()}")
        created = await resp.json()
    started: float | None = None
    first: float | None = None
    received: list[tuple[int, float]] = []
    event = ""
    async with api.get(base + created["links"]["events"]) as stream:
        async for raw in stream.content:
            line = raw.decode().strip()
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                now = time.time()
                body = json.loads(line[5:])
                if event == "step_started" and started is None:
                    started = now
                elif event == "token":
                    first = first or now
                    payload = body["payload"]
                    received.append((payload["offset"] + len(payload["text"]), now))
                elif event in ("completed", "failed"):
                    if event == "failed":
                        raise RuntimeError(f"run {created['id']} failed: {body['payload']}")
                    break
    emission = (await _emissions(control, llm))[before]
    ends = _piece_ends(emission["pieces"])
    assert started is not None
    assert first is not None
    return (first - started) * 1000, _delivery(emission["times"], ends, received)


async def direct(llm: OpenAIStandIn, control: aiohttp.ClientSession) -> tuple[float, list[float]]:
    await _script(control, llm)
    before = len(await _emissions(control, llm))
    client = AsyncOpenAI(base_url=llm.base_url, api_key="unused", max_retries=0)
    received: list[tuple[int, float]] = []
    total = 0
    start = time.time()
    first: float | None = None
    stream = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say it"}], stream=True
    )
    async for chunk in stream:
        for choice in chunk.choices:
            if choice.delta.content:
                now = time.time()
                first = first or now
                total += len(choice.delta.content)
                received.append((total, now))
    await client.close()
    emission = (await _emissions(control, llm))[before]
    ends = _piece_ends(emission["pieces"])
    return ((first or start) - start) * 1000, _delivery(emission["times"], ends, received)


async def measure(base: str, token: str, llm: OpenAIStandIn, runs: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as api, aiohttp.ClientSession() as control:
        await one_run(api, base, control, llm)  # warm-up
        first, pieces, d_first, d_pieces = [], [], [], []
        for _ in range(runs):
            f, p = await one_run(api, base, control, llm)
            first.append(f)
            pieces.extend(p)
            df, dp = await direct(llm, control)
            d_first.append(df)
            d_pieces.extend(dp)
    first_s, pieces_s = summary(first), summary(pieces)
    d_first_s, d_pieces_s = summary(d_first), summary(d_pieces)
    return {
        "benchmark": "token_latency",
        "runs": runs,
        "pieces_per_answer": PIECES,
        "piece_interval_ms": DELAY * 1000,
        "first_token_ms": first_s,
        "piece_delivery_ms": pieces_s,
        "baseline": {"direct_first_token_ms": d_first_s, "direct_piece_delivery_ms": d_pieces_s},
        "overhead": {
            "first_token_over_direct_ms": round(first_s["median"] - d_first_s["median"], 1),
            "piece_delivery_over_direct_ms": round(pieces_s["median"] - d_pieces_s["median"], 1),
        },
        "targets": {"first_token_ms_max": 2000, "note": "seed: first token < 2 s"},
    }


def _tenant(kubectl: list[str], llm: OpenAIStandIn) -> None:
    manifest = {
        "apiVersion": "sba-agentic.io/v1alpha1",
        "kind": "Tenant",
        "metadata": {"name": TENANT},
        "spec": {
            "displayName": "Benchmark (model steps)",
            "quotas": {"tokensPerDay": 100_000_000},
            "model": {"provider": "openai", "baseUrl": llm.base_url, "model": MODEL},
        },
    }
    subprocess.run([*kubectl, "apply", "-f", "-"], input=json.dumps(manifest).encode(), check=True)
    for _ in range(240):
        phase = subprocess.run(
            [*kubectl, "get", "tenant", TENANT, "-o", "jsonpath={.status.phase}"],
            capture_output=True,
            text=True,
        ).stdout
        if phase == "ready":
            return
        time.sleep(0.25)
    raise RuntimeError(f"tenant {TENANT} never became ready")


async def _bench(args: argparse.Namespace) -> dict[str, Any]:
    from sba_core.auth.dev_tokens import mint_dev_token

    state = args.state_dir or Path(tempfile.mkdtemp(prefix="sba-bench-"))
    print(f"starting a stack in {state}", file=sys.stderr)
    stack = await asyncio.to_thread(
        up, default_repo_root(), state_dir=state, ports=StackPorts.ephemeral()
    )
    try:
        async with OpenAIStandIn(models=(MODEL,), token_delay_seconds=DELAY) as llm:
            assert stack.control_plane is not None
            assert stack.bin_dir is not None
            kubectl = [str(stack.bin_dir / "kubectl"), "--kubeconfig", str(stack.paths.kubeconfig)]
            await asyncio.to_thread(_tenant, kubectl, llm)
            token = mint_dev_token(
                stack.paths.jwt_secret_file.read_text().strip(),
                tenant=TENANT,
                user="bench",
                roles=["member"],
                ttl_seconds=3600,
            )
            return await measure(stack.api_url, token, llm, args.runs)
    finally:
        await asyncio.to_thread(stack.stop)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--state-dir", type=Path, default=None)
    result = asyncio.run(_bench(parser.parse_args()))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
