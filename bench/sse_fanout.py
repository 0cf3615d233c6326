"""SSE fan-out on the local stack: many open streams on one run, printed as JSON.

For each stream count N (default 1,000 and 10,000), against two servers started in the
same run, one after the other:
  - `api`: the stack's API process (restarted before each N, so its RSS starts fresh);
  - `bare`: a bare aiohttp process that answers every stream with the same frames and
    writes a published frame to each open stream in turn (the floor).
N clients connect at once from this process (raw asyncio protocols, one socket each) and
the bench reports: the time until all are streaming (response headers) and until all
have their first event; each stream's first-event latency from its connect (p50/p99);
the fan-out of one event, from just before the append+announce (bare: the publish
request) to each stream receiving it (p50/p99/max over all streams and rounds); and the
server's RSS per open stream (/proc/<pid>/status VmRSS, before and after opening them).
The clients share the machine's cores with the servers, the same for both. The run is a
row of its own with events appended here (as the operator would), so nothing else
writes to it. Usage: python bench/sse_fanout.py [--streams 1000 10000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from baselines import wait_up
from redis.asyncio import Redis

from sba_api.services.event_hub import encode_frame
from sba_core import sse
from sba_devstack.binaries import default_repo_root
from sba_devstack.procs import free_port
from sba_devstack.services import Service
from sba_devstack.stack import DEMO_TENANT, Stack, StackPorts, up
from sba_store import eventbus
from sba_store.db import Pool, create_pool
from sba_store.events import EventRepository
from sba_store.records import NewEvent, RunEventRecord
from sba_store.runs import RunRepository

TARGET_FANOUT_P99_MS = 250.0
INITIAL_EVENTS = 3

BARE_SERVER = textwrap.dedent(
    """
    import asyncio, sys
    from aiohttp import web
    first = open(sys.argv[2], "rb").read()
    streams = set()
    HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    async def events(request):
        response = web.StreamResponse(headers=HEADERS)
        await response.prepare(request)
        await response.write(first)
        streams.add(response)
        try:
            await asyncio.Event().wait()
        finally:
            streams.discard(response)
    async def publish(request):
        frame = await request.read()
        for response in list(streams):
            try:
                await response.write(frame)
            except ConnectionError:
                streams.discard(response)
        return web.Response(text=str(len(streams)))
    async def count(request):
        return web.Response(text=str(len(streams)))
    app = web.Application()
    app.router.add_post("/publish", publish)
    app.router.add_get("/count", count)
    app.router.add_get("/{tail:.*}", events)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None,
                handler_cancellation=True)
    """
)


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


class Round:
    """One fan-out: done when every stream has the marker."""

    def __init__(self, streams: int) -> None:
        self.remaining = streams
        self.done = asyncio.Event()

    def arrived(self) -> None:
        self.remaining -= 1
        if self.remaining <= 0:
            self.done.set()


class Stream(asyncio.Protocol):
    """One SSE client: when headers, the first event and each marker arrived."""

    def __init__(self, request: bytes, started: float) -> None:
        self.request = request
        self.started = started
        self.status: int | None = None
        self.headers_at: float | None = None
        self.first_event_at: float | None = None
        self.marks: dict[bytes, float] = {}
        self.waiting: bytes | None = None
        self.round: Round | None = None
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._head = b""
        self._carry = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        if self.headers_at is None:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            self.status = int(self._head.split(b" ", 2)[1])
            self.headers_at = now
            data = self._head[end + 4 :]
            self._head = b""
        # A marker may straddle two reads: search the end of the previous one too.
        window = self._carry + data
        self._carry = window[-64:]
        if self.first_event_at is None and b"id: " in window:
            self.first_event_at = now
        if self.waiting is not None and self.waiting in window:
            self.marks[self.waiting] = now
            self.waiting = None
            if self.round is not None:
                self.round.arrived()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True


async def open_streams(
    port: int, path: str, token: str, n: int
) -> tuple[list[Stream], float, dict[str, Any]]:
    loop = asyncio.get_running_loop()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()
    began = time.perf_counter()
    errors: list[str] = []

    async def one() -> Stream | None:
        stream = Stream(request, time.perf_counter())
        try:
            await loop.create_connection(lambda: stream, "127.0.0.1", port)
        except OSError as exc:
            errors.append(type(exc).__name__)
            return None
        return stream

    opened = [s for s in await asyncio.gather(*(one() for _ in range(n))) if s is not None]
    deadline = time.perf_counter() + 180
    while time.perf_counter() < deadline:
        if all(
            s.first_event_at is not None or s.closed or (s.status or 200) != 200 for s in opened
        ):
            break
        await asyncio.sleep(0.02)
    ok = [s for s in opened if s.status == 200 and s.first_event_at is not None]
    statuses: dict[str, int] = {}
    for s in opened:
        if s not in ok:
            key = str(s.status) if s.status is not None else "no answer"
            statuses[key] = statuses.get(key, 0) + 1
    for name in errors:
        statuses[name] = statuses.get(name, 0) + 1
    first = sorted((s.first_event_at - s.started) * 1000 for s in ok if s.first_event_at)
    summary: dict[str, Any] = {
        "streaming": len(ok),
        "failed": statuses,
        "all_streaming_s": round(max((s.headers_at or began) for s in ok) - began, 3)
        if ok
        else None,
        "all_first_event_s": round(max((s.first_event_at or began) for s in ok) - began, 3)
        if ok
        else None,
        "first_event_ms": {
            "p50": round(statistics.median(first), 1),
            "p99": round(percentile(first, 0.99), 1),
        }
        if first
        else None,
    }
    return ok, began, summary


async def fan_out(streams: list[Stream], rounds: int, send: Any, label: str) -> dict[str, Any]:
    latencies: list[float] = []
    lost = 0
    for i in range(rounds):
        marker = f"fanout-{label}-{i}-{uuid.uuid4().hex[:8]}".encode()
        this = Round(len(streams))
        for s in streams:
            s.waiting, s.round = marker, this
        sent = time.perf_counter()
        await send(marker.decode())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(this.done.wait(), 60)
        for s in streams:
            at = s.marks.get(marker)
            if at is None:
                lost += 1
            else:
                latencies.append((at - sent) * 1000)
        await asyncio.sleep(0.5)
    ordered = sorted(latencies)
    return {
        "p50_ms": round(statistics.median(ordered), 1),
        "p99_ms": round(percentile(ordered, 0.99), 1),
        "max_ms": round(ordered[-1], 1),
        "deliveries": len(ordered),
        "not_delivered": lost,
    }


def close_all(streams: list[Stream]) -> None:
    for s in streams:
        if s.transport is not None:
            s.transport.abort()


async def api_open_streams(api: str, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as http, http.get(f"{api}/metrics") as resp:
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith("orchestrator_sse_streams_open "):
            return int(float(line.split()[1]))
    return 0


async def measure_api(
    stack: Stack, api: Service, pool: Pool, redis: Redis, run_id: uuid.UUID, n: int, rounds: int
) -> dict[str, Any]:
    events = EventRepository(pool)
    port = int(stack.api_url.rsplit(":", 1)[1])
    path = f"/api/v1/runs/{run_id}/events"

    async def append(kind: str, payload: dict[str, Any]) -> None:
        records = await events.append(
            run_id, DEMO_TENANT, [NewEvent(type=kind, payload=payload, dedupe_key=None)]
        )
        await eventbus.announce(redis, str(run_id), records[-1].seq)

    async def send(marker: str) -> None:
        await append("step_progress", {"bench": marker})

    # Warm the fresh process's code paths (imports, caches) before measuring its RSS.
    warm, _, _ = await open_streams(port, path, stack.token, 10)
    close_all(warm)
    await drain_api(stack, append)
    assert api.pid is not None
    before = rss_kib(api.pid)
    streams, _, summary = await open_streams(port, path, stack.token, n)
    await asyncio.sleep(1.0)
    after = rss_kib(api.pid)
    summary["rss_before_kib"] = before
    summary["rss_after_kib"] = after
    summary["rss_per_stream_kib"] = round((after - before) / max(1, len(streams)), 2)
    summary["fanout"] = await fan_out(streams, rounds, send, f"api{n}")
    close_all(streams)
    await drain_api(stack, append)
    return summary


async def drain_api(stack: Stack, append: Any) -> None:
    """Let the API notice closed streams (their next write fails) before going on."""
    deadline = time.perf_counter() + 60
    while time.perf_counter() < deadline:
        await append("step_progress", {"bench": "flush"})
        await asyncio.sleep(0.5)
        if await api_open_streams(stack.api_url, stack.token) == 0:
            return
    raise RuntimeError("the API kept streams of closed clients open")


async def measure_bare(port: int, pid: int, frame: bytes, n: int, rounds: int) -> dict[str, Any]:
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:

        async def send(marker: str) -> None:
            body = frame.replace(b"MARKER", marker.encode())
            async with http.post(f"{base}/publish", data=body) as resp:
                await resp.read()

        async def count() -> int:
            async with http.get(f"{base}/count") as resp:
                return int(await resp.text())

        warm, _, _ = await open_streams(port, "/events", "-", 10)
        close_all(warm)
        await _until_zero(count)
        before = rss_kib(pid)
        streams, _, summary = await open_streams(port, "/events", "-", n)
        await asyncio.sleep(1.0)
        after = rss_kib(pid)
        summary["rss_before_kib"] = before
        summary["rss_after_kib"] = after
        summary["rss_per_stream_kib"] = round((after - before) / max(1, len(streams)), 2)
        summary["fanout"] = await fan_out(streams, rounds, send, f"bare{n}")
        close_all(streams)
        await _until_zero(count)
    return summary


async def _until_zero(count: Any) -> None:
    for _ in range(600):
        if await count() == 0:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError("the bare server kept streams open")


async def seed_run(stack: Stack) -> tuple[uuid.UUID, bytes, bytes]:
    """A run of its own with a few events; the frames the bare server answers with."""
    pool = await create_pool(stack.env["DATABASE_URL"], min_size=1, max_size=2)
    try:
        run_id = uuid.uuid4()
        await RunRepository(pool).upsert(
            run_id=run_id,
            tenant_id=DEMO_TENANT,
            namespace=f"tenant-{DEMO_TENANT}",
            name=f"bench-{run_id.hex[:8]}",
            prompt="SSE fan-out bench",
            spec={"tenant": DEMO_TENANT, "prompt": "SSE fan-out bench"},
        )
        records = await EventRepository(pool).append(
            run_id,
            DEMO_TENANT,
            [
                NewEvent(type=kind, payload={"bench": "seed"}, dedupe_key=None)
                for kind in ("pending", "planning", "plan_ready")[:INITIAL_EVENTS]
            ],
        )
        first = sse.retry(2000) + b"".join(encode_frame(r) for r in records)
        sample = records[-1]
        marked = encode_frame(
            RunEventRecord(
                run_id=sample.run_id,
                seq=sample.seq + 1,
                tenant_id=sample.tenant_id,
                type="step_progress",
                level="info",
                ts=sample.ts,
                payload={"bench": "MARKER"},
                dedupe_key=None,
            )
        )
        return run_id, first, marked
    finally:
        await pool.close()


async def measure(
    stack: Stack,
    api: Service,
    bare_port: int,
    bare_pid: int,
    run_id: uuid.UUID,
    marked: bytes,
    counts: list[int],
    rounds: int,
) -> dict[str, Any]:
    pool = await create_pool(stack.env["DATABASE_URL"], min_size=1, max_size=4)
    redis = Redis.from_url(stack.env["REDIS_URL"])
    results: dict[str, Any] = {}
    try:
        for n in counts:
            print(f"measuring {n} streams", file=sys.stderr, flush=True)
            bare = await measure_bare(bare_port, bare_pid, marked, n, rounds)
            await asyncio.to_thread(api.restart)
            log_from = api.log_path.stat().st_size
            measured = await measure_api(stack, api, pool, redis, run_id, n, rounds)
            measured["api_warnings"] = warnings_since(api.log_path, log_from)
            for key in ("p50", "p99"):
                if measured["first_event_ms"] and bare["first_event_ms"]:
                    measured["first_event_ms"][f"{key}_ratio_to_bare"] = round(
                        measured["first_event_ms"][key] / max(bare["first_event_ms"][key], 0.1),
                        2,
                    )
            results[str(n)] = {"api": measured, "bare": bare}
    finally:
        await pool.close()
        await redis.aclose()
    return results


def warnings_since(log_path: Path, offset: int) -> dict[str, int]:
    """The API's warnings and errors while measuring, by message (what limited it)."""
    counts: dict[str, int] = {}
    with log_path.open("rb") as log:
        log.seek(offset)
        for raw in log:
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if isinstance(line, dict) and line.get("level") in ("warning", "error", "critical"):
                message = str(line.get("message", ""))[:120]
                counts[message] = counts.get(message, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: -item[1])[:8])


def raise_fd_limit() -> int:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    # Inherited by every process the stack starts (the API holds one socket per stream).
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    fd_limit = raise_fd_limit()
    # One principal opens every stream: lift its request limits and the tenant's stream
    # cap (the cap's slot is still taken and renewed in Redis per stream, as for anyone).
    os.environ["SBA_RATE_LIMIT_TENANT_REQUESTS"] = str(10**9)
    os.environ["SBA_RATE_LIMIT_PRINCIPAL_REQUESTS"] = str(10**9)
    os.environ["SBA_SSE_MAX_STREAMS_PER_TENANT"] = str(10**7)
    os.environ.setdefault("SBA_LOG_LEVEL", "WARNING")
    state = Path(tempfile.mkdtemp(prefix="sba-bench-"))
    print(f"starting a stack in {state}", file=sys.stderr)
    stack = up(default_repo_root(), state_dir=state, ports=StackPorts.ephemeral())
    bare: subprocess.Popen[bytes] | None = None
    try:
        api = next(s for s in stack.services if s.command == "api")
        run_id, first, marked = asyncio.run(seed_run(stack))
        first_file = state / "first-frames"
        first_file.write_bytes(first)
        bare_port = free_port()
        bare = subprocess.Popen(
            [sys.executable, "-c", BARE_SERVER, str(bare_port), str(first_file)],
            stdout=subprocess.DEVNULL,
        )
        asyncio.run(wait_up(f"http://127.0.0.1:{bare_port}/count"))
        results = asyncio.run(
            measure(stack, api, bare_port, bare.pid, run_id, marked, args.streams, args.rounds)
        )
        largest = results.get(str(max(args.streams)), {}).get("api", {})
        p99 = (largest.get("fanout") or {}).get("p99_ms")
        print(
            json.dumps(
                {
                    "bench": "sse_fanout",
                    "cpus": os.cpu_count(),
                    "fd_limit": fd_limit,
                    "initial_events": INITIAL_EVENTS,
                    "rounds": args.rounds,
                    "results": results,
                    "target": {
                        "fanout_p99_ms": TARGET_FANOUT_P99_MS,
                        "streams": max(args.streams),
                        "api_fanout_p99_ms": p99,
                        "met": p99 is not None and p99 <= TARGET_FANOUT_P99_MS,
                    },
                },
                indent=2,
            )
        )
        return 0
    finally:
        if bare is not None:
            bare.terminate()
            bare.wait(10)
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
