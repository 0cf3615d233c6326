"""Run throughput on the local stack, and what each run costs the platform, printed as JSON.

N two-step runs (knowledge.search → render.document; default 200) are created at once
through the API (POST /api/v1/runs) and followed until every one is `completed`:
  - runs_per_min (first create → last completion) and the run wall time p50/p95
    (POST → the bench's AgentRun watch sees a terminal phase);
  - kube-apiserver requests per run, by client and by verb+resource, from the apiserver's
    own audit log (Metadata level: user, userAgent, verb, objectRef), counting only
    requests received inside the window; a WATCH counts once, when it starts. The floor
    is the writes (create/update/patch/delete) the operator and the API make per run;
    the issue's target is operator+API requests per run ≤ 1.3 x that floor. The
    operator's start-up requests (until the stack is up) are reported apart. Under load
    the operator is still working through watch events after the last run finished, so
    each phase also has a drain (until the operator and the API sent nothing for
    --quiet seconds) and `*_incl_drain` counts: window + drain, the fuller cost;
  - CPU per run of each process (utime+stime from /proc/<pid>/stat, before and after,
    children included): operator, API, kube-apiserver, etcd, controller-manager,
    scheduler, node agent (and, apart, the pods it ran), Postgres, Redis, and this
    bench's own process (its load generator and watches share the cores).
Baseline in the same run, through the same scheduler, Job controller and node agent:
N bare Jobs (a trivial command, same namespace and pod shape) created at once: jobs/min
and the apiserver requests and CPU per bare Job: what the platform costs per pod.

The bench raises the demo tenant's quotas (concurrent runs, tool calls per minute, the
namespace's ResourceQuota) so that N runs fit at once and the numbers measure the system,
not its configured limits; `--keep-quotas` measures with the tenant as provisioned.
Clients are told apart by the audit log's user and userAgent: the API has its own
identity (sba-api); the operator is the admin identity with the kubernetes client's or
Kopf's user agent; the node agent sends its own; this bench sends `sba-bench/…` and
kubectl (stack set-up) its own, both left out of the platform's numbers.
Usage: python bench/run_throughput.py [--runs N] [--quiet S] [--keep-quotas]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from baselines import bare_job_body
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from sba_devstack.binaries import default_repo_root
from sba_devstack.controlplane import AUDIT_LOG_ENV
from sba_devstack.stack import API_K8S_USER, DEMO_TENANT, Stack, StackPorts, up

PLAN = [
    {"id": "search", "tool": "knowledge.search", "params": {"query": "refund policy", "topK": 3}},
    {"id": "doc", "tool": "render.document", "params": {"title": "Refunds", "sources": ["search"]}},
]
NAMESPACE = f"tenant-{DEMO_TENANT}"
BENCH_UA = "sba-bench/run_throughput"
ADMIN_USER = "sba-admin"
GROUP, VERSION = "sba-agentic.io", "v1alpha1"
TERMINAL_PHASES = frozenset({"completed", "failed", "cancelled"})
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
PLATFORM = ("operator", "api")
"""The clients the floor and the 1.3x target are about."""
TARGET_RATIO_TO_FLOOR = 1.3
TARGET_OPERATOR_CPU_MS_PER_RUN = 50
_watch: Any = watch  # untyped


# -- the audit log -------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One apiserver request, from its audit events (deduplicated by auditID)."""

    at: float
    """requestReceivedTimestamp, seconds since the epoch."""
    client: str
    sub: str
    """The client's part: Kopf or the kubernetes client, a controller's ServiceAccount."""
    verb: str
    resource: str
    """`jobs`, `agentruns/status`, or a non-resource path such as `/readyz`."""
    code: int

    @property
    def key(self) -> str:
        return f"{self.verb} {self.resource}"


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def client_of(user: str, user_agent: str) -> tuple[str, str]:
    """(process, part) for an audit event's user and userAgent."""
    product = user_agent.split("/", 1)[0]
    if user_agent.startswith("sba-bench/"):
        return "bench", product
    if user_agent.startswith("sba-node-agent/") or user.startswith("system:node:"):
        return "node_agent", product
    if user == API_K8S_USER:
        return "api", product
    if user_agent.startswith("kubectl"):
        return "kubectl", product
    if user == ADMIN_USER and product in ("kopf", "OpenAPI-Generator"):
        return "operator", "kopf" if product == "kopf" else "kubernetes-client"
    if user.startswith("system:serviceaccount:kube-system:"):
        return "kube-controller-manager", user.rsplit(":", 1)[1]
    if user == "system:kube-controller-manager" or product == "kube-controller-manager":
        return "kube-controller-manager", "kube-controller-manager"
    if user == "system:kube-scheduler" or product == "kube-scheduler":
        return "kube-scheduler", "kube-scheduler"
    if user.startswith("system:apiserver") or product == "kube-apiserver":
        return "kube-apiserver", "kube-apiserver"
    return "other", f"{user} {product}"


def parse_audit(lines: Iterable[str], seen: set[str] | None = None) -> list[Request]:
    """Requests in an audit log (JSON lines), each once however many stages it logged
    (`seen`: the auditIDs met already, when the log is read in pieces)."""
    seen = set() if seen is None else seen
    out: list[Request] = []
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a line cut short by a write in progress
        audit_id = str(event.get("auditID", ""))
        if not audit_id or audit_id in seen:
            continue
        seen.add(audit_id)
        ref = event.get("objectRef") or {}
        if ref.get("resource"):
            resource = str(ref["resource"])
            if ref.get("subresource"):
                resource += f"/{ref['subresource']}"
        else:
            resource = str(event.get("requestURI", "")).split("?", 1)[0]
        user = str((event.get("user") or {}).get("username", ""))
        proc, sub = client_of(user, str(event.get("userAgent", "")))
        stamp = event.get("requestReceivedTimestamp") or event.get("stageTimestamp")
        out.append(
            Request(
                at=_epoch(str(stamp)),
                client=proc,
                sub=sub,
                verb=str(event.get("verb", "")),
                resource=resource,
                code=int((event.get("responseStatus") or {}).get("code") or 0),
            )
        )
    return out


class AuditTail:
    """The audit log read as it grows: each poll parses only what was added since."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0
        self._partial = b""
        self._seen: set[str] = set()
        self.requests: list[Request] = []

    def poll(self) -> list[Request]:
        try:
            with self._path.open("rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()  # the line being written, if any
        new = parse_audit((line.decode(errors="replace") for line in lines), self._seen)
        self.requests.extend(new)
        return new


def wait_quiet(
    tail: AuditTail, since: float, quiet: float, timeout: float, clients: Iterable[str] = PLATFORM
) -> tuple[float, bool]:
    """Until `clients` sent nothing for `quiet` seconds: (their last request's time, or
    `since`; whether they went quiet before `timeout`). Under load the operator works
    through a backlog of watch events well after the last run finished, so a phase's
    requests are only all in once it is quiet."""
    wanted = frozenset(clients)
    last = since
    deadline = time.monotonic() + timeout
    while True:
        for r in tail.poll():
            if r.client in wanted and r.at > last:
                last = r.at
        if time.time() - last >= quiet:
            return last, True
        if time.monotonic() > deadline:
            return last, False
        time.sleep(0.5)


def between(requests: Iterable[Request], start: float, end: float) -> list[Request]:
    return [r for r in requests if start <= r.at <= end]


def _per(counter: Mapping[str, int], n: int) -> dict[str, float]:
    return {k: round(v / n, 2) for k, v in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))}


def tally(requests: Iterable[Request], n: int) -> dict[str, Any]:
    """Requests per unit (run or Job) by client, by client and verb+resource, and the
    non-2xx answers; the bench's own and kubectl's are left out."""
    total: Counter[str] = Counter()
    by_key: defaultdict[str, Counter[str]] = defaultdict(Counter)
    by_sub: defaultdict[str, Counter[str]] = defaultdict(Counter)
    errors: defaultdict[str, Counter[str]] = defaultdict(Counter)
    writes: Counter[str] = Counter()
    for r in requests:
        if r.client in ("bench", "kubectl"):
            continue
        total[r.client] += 1
        by_key[r.client][r.key] += 1
        by_sub[r.client][r.sub] += 1
        if r.verb in WRITE_VERBS:
            writes[r.client] += 1
        if not 200 <= r.code < 300:
            errors[r.client][f"{r.code} {r.key}"] += 1
    n = max(n, 1)
    return {
        "per_unit_by_client": _per(total, n),
        "per_unit_total": round(sum(total.values()) / n, 2),
        "per_unit_writes_by_client": _per(writes, n),
        "per_unit_by_client_verb_resource": {c: _per(by_key[c], n) for c in sorted(by_key)},
        "per_unit_by_client_part": {c: _per(by_sub[c], n) for c in sorted(by_sub)},
        "non_2xx_counts": {c: dict(errors[c].most_common()) for c in sorted(errors)},
        "requests": sum(total.values()),
    }


def _counts(requests: Iterable[Request]) -> dict[str, dict[str, int]]:
    by_key: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for r in requests:
        if r.client not in ("bench", "kubectl"):
            by_key[r.client][r.key] += 1
    return {c: dict(by_key[c].most_common()) for c in sorted(by_key)}


def owner_lookups_cached(requests: Iterable[Request]) -> bool:
    """Whether the controller-manager's metadata informers (the garbage collector's and
    the quota controller's view of every resource) watch AgentRuns yet. Until they do
    (their discovery runs every 30s, so for a while after the CRDs appear) the garbage
    collector GETs the owner of every new Job, which is a start-up cost, not a run's."""
    return any(
        r.client == "kube-controller-manager" and r.verb == "watch" and r.resource == "agentruns"
        for r in requests
    )


def floor_report(counted: Mapping[str, Any]) -> dict[str, Any]:
    """Operator+API requests per run against their writes per run (the floor)."""
    by_client = counted["per_unit_by_client"]
    writes = counted["per_unit_writes_by_client"]
    total = sum(by_client.get(c, 0.0) for c in PLATFORM)
    floor = sum(writes.get(c, 0.0) for c in PLATFORM)
    return {
        "clients": list(PLATFORM),
        "writes_per_run": {c: writes.get(c, 0.0) for c in PLATFORM},
        "floor_writes_per_run": round(floor, 2),
        "requests_per_run": {c: by_client.get(c, 0.0) for c in PLATFORM},
        "total_requests_per_run": round(total, 2),
        "ratio_to_floor": round(total / floor, 2) if floor else None,
        "target_ratio_max": TARGET_RATIO_TO_FLOOR,
    }


def startup_report(requests: Iterable[Request], until: float) -> dict[str, Any]:
    """The operator's requests until `until` (the stack up): its LISTs and WATCH starts."""
    mine = [r for r in requests if r.client == "operator" and r.at <= until]
    lists = Counter(r.resource for r in mine if r.verb == "list")
    watches = Counter(r.resource for r in mine if r.verb == "watch")
    other = Counter(r.key for r in mine if r.verb not in ("list", "watch"))
    return {
        "requests": len(mine),
        "list": dict(lists.most_common()),
        "watch": dict(watches.most_common()),
        "other": dict(other.most_common()),
    }


# -- CPU time from /proc ---------------------------------------------------------------------


def parse_stat(text: str) -> tuple[int, int, int]:
    """(ppid, utime+stime, cutime+cstime) in clock ticks from /proc/<pid>/stat."""
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state): ppid is field 4, utime..cstime fields 14..17.
    return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def _processes() -> dict[int, tuple[int, int, int]]:
    table: dict[int, tuple[int, int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            table[int(entry)] = parse_stat(Path(f"/proc/{entry}/stat").read_text())
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    return table


def _descendants(table: Mapping[int, tuple[int, int, int]], root: int) -> list[int]:
    children: defaultdict[int, list[int]] = defaultdict(list)
    for pid, (ppid, _, _) in table.items():
        children[ppid].append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def tree_ticks(table: Mapping[int, tuple[int, int, int]], root: int) -> int:
    """CPU of `root` and everything under it, reaped children included: a child that exits
    between two samples moves from its own line to its parent's cutime, so the sum holds."""
    return sum(table[pid][1] + table[pid][2] for pid in _descendants(table, root) if pid in table)


def _argv0(pid: int) -> str:
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].decode()
    except (OSError, UnicodeDecodeError):
        return ""
    # Redis rewrites its title to "redis-server 127.0.0.1:PORT".
    return Path(argv0.split(" ", 1)[0]).name if argv0 else ""


@dataclass
class Pids:
    """The processes whose CPU the bench reads, by the name it reports."""

    trees: dict[str, int]
    node_agent: int | None

    @classmethod
    def of(cls, stack: Stack) -> Pids:
        trees: dict[str, int] = {}
        for service in stack.services:
            if service.pid is not None and service.command in ("operator", "api"):
                trees[service.command] = service.pid
        agent = next((s.pid for s in stack.services if s.command == "node-agent"), None)
        # The control plane and Redis are this process's own children (procs.spawn).
        wanted = {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}
        wanted.add("redis-server")
        for pid, (ppid, _, _) in _processes().items():
            name = _argv0(pid) if ppid == os.getpid() else ""
            if name in wanted:
                trees["redis" if name == "redis-server" else name] = pid
        if stack.postgres is not None and not stack.postgres.external:
            pidfile = stack.postgres.data_dir / "postmaster.pid"
            trees["postgres"] = int(pidfile.read_text().split()[0])
        return cls(trees, agent)

    def sample(self) -> dict[str, int]:
        table = _processes()
        ticks = {name: tree_ticks(table, pid) for name, pid in self.trees.items()}
        ticks["bench"] = table[os.getpid()][1] if os.getpid() in table else 0
        if self.node_agent is not None and self.node_agent in table:
            own = table[self.node_agent][1]
            ticks["node_agent"] = own
            ticks["node_agent_pods"] = tree_ticks(table, self.node_agent) - own
        return ticks


def cpu_ms_per(before: Mapping[str, int], after: Mapping[str, int], n: int) -> dict[str, float]:
    tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
    return {
        name: round((after[name] - before.get(name, 0)) * tick_ms / max(n, 1), 2)
        for name in sorted(after)
    }


# -- watching objects finish -----------------------------------------------------------------


class Finished(threading.Thread):
    """Watches a namespace's objects of one kind; records when each first looks finished.

    `state(obj)` says "completed", "failed" (…) or None (not yet). Runs in a thread on the
    kubernetes client (user agent BENCH_UA, so its requests are left out of the counts).
    """

    def __init__(
        self,
        lister: Callable[..., Any],
        state: Callable[[Any], str | None],
        name: Callable[[Any], str],
        **list_kwargs: Any,
    ) -> None:
        super().__init__(daemon=True)
        self._lister = lister
        self._state = state
        self._name = name
        self._kwargs = list_kwargs
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.done: dict[str, tuple[float, str]] = {}
        self.ready = threading.Event()

    def _see(self, obj: Any) -> None:
        state = self._state(obj)
        if state is None:
            return
        with self._lock:
            self.done.setdefault(self._name(obj), (time.time(), state))

    def count(self, names: Iterable[str]) -> int:
        with self._lock:
            return sum(1 for n in names if n in self.done)

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                listing = self._lister(**self._kwargs)
                items, version = _items_and_version(listing)
                for obj in items:
                    self._see(obj)
                self.ready.set()
                stream = _watch.Watch()
                while not self._stop.is_set():
                    for event in stream.stream(
                        self._lister, resource_version=version, timeout_seconds=5, **self._kwargs
                    ):
                        self._see(event["object"])
                    version = str(stream.resource_version)
            except ApiException as exc:
                if exc.status != 410:  # 410 Gone: list again
                    time.sleep(0.2)
            except Exception:
                time.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()


def _items_and_version(listing: Any) -> tuple[list[Any], str]:
    if isinstance(listing, dict):
        return list(listing.get("items") or []), str(listing["metadata"]["resourceVersion"])
    return list(listing.items or []), str(listing.metadata.resource_version)


def run_state(obj: Any) -> str | None:
    phase = str((obj.get("status") or {}).get("phase") or "")
    return phase if phase in TERMINAL_PHASES else None


def run_name(obj: Any) -> str:
    return str(obj["metadata"]["name"])


def job_state(job: Any) -> str | None:
    conditions = (job.status.conditions if job.status else None) or []
    for cond in conditions:
        if cond.status == "True" and cond.type in ("Complete", "Failed"):
            return "completed" if cond.type == "Complete" else "failed"
    return None


def job_name(job: Any) -> str:
    return str(job.metadata.name)


def wait_all(watcher: Finished, names: list[str], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    last_report = time.monotonic()
    while watcher.count(names) < len(names):
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{what}: {len(names) - watcher.count(names)} of {len(names)} not finished "
                f"after {timeout:.0f}s"
            )
        if time.monotonic() - last_report > 15:
            last_report = time.monotonic()
            print(f"   {what}: {watcher.count(names)}/{len(names)} finished", file=sys.stderr)
        time.sleep(0.05)


# -- the workloads ---------------------------------------------------------------------------


def summary(samples: list[float]) -> dict[str, Any]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "p50": round(statistics.median(ordered), 1),
        "p95": round(p95, 1),
        "min": round(ordered[0], 1),
        "max": round(ordered[-1], 1),
        "n": len(ordered),
    }


async def create_runs(api: str, token: str, n: int) -> list[tuple[str, float, float]]:
    """(AgentRun name, POST started, POST answered) for `n` runs created at once."""
    connector = aiohttp.TCPConnector(limit=0)
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:

        async def one() -> tuple[str, float, float]:
            start = time.time()
            async with session.post(
                f"{api}/api/v1/runs",
                json={"tenant": DEMO_TENANT, "prompt": "Refund brief", "plan": PLAN},
            ) as resp:
                body = await resp.json()
                if resp.status != 201:
                    raise RuntimeError(f"POST /runs answered {resp.status}: {body}")
            return str(body["name"]), start, time.time()

        return await asyncio.gather(*(one() for _ in range(n)))


def create_bare_jobs(
    batch_api: client.BatchV1Api, n: int, batch: str, prefix: str = "bench-bare"
) -> list[tuple[str, float, float]]:
    """(Job name, create started, create answered) for `n` Jobs created at once."""

    def one(i: int) -> tuple[str, float, float]:
        name = f"{prefix}-{batch}-{i}"
        start = time.time()
        # The client takes plain dicts too.
        body: Any = bare_job_body(name, {"sba-bench/baseline": batch})
        for attempt in range(1, 20):
            try:
                batch_api.create_namespaced_job(NAMESPACE, body)
                break
            except ApiException as exc:
                # Many creates at once race on the namespace's ResourceQuota (count/jobs):
                # the apiserver answers 409 for the quota object; a client tries again.
                if exc.status != 409 or "resourcequotas" not in str(exc.body):
                    raise
                time.sleep(0.05 * attempt)
        else:
            raise RuntimeError(f"Job {name}: the ResourceQuota kept conflicting")
        return name, start, time.time()

    with ThreadPoolExecutor(max_workers=min(32, max(n, 1))) as pool:
        return list(pool.map(one, range(n)))


def raise_quotas(custom: client.CustomObjectsApi, core: client.CoreV1Api, n: int) -> Any:
    """Room for n runs at once (and 3n+ Jobs kept until their TTL), so limits don't pace."""
    pods = min(10_000, max(20, 2 * n + 20))
    quotas = {
        "maxConcurrentRuns": min(1000, n + 10),
        "toolCallsPerMinute": 100_000,
        "apiRequestsPerMinute": 1_000_000,
        "compute": {
            "pods": pods,
            "cpu": str(pods),
            "memory": f"{pods}Gi",
            "jobs": min(100_000, 4 * n + 100),
        },
    }
    custom.patch_cluster_custom_object(
        GROUP, VERSION, "tenants", DEMO_TENANT, {"spec": {"quotas": quotas}}
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for rq in core.list_namespaced_resource_quota(NAMESPACE).items:
            if rq.spec is not None and (rq.spec.hard or {}).get("pods") == str(pods):
                return quotas
        time.sleep(0.2)
    raise RuntimeError("the tenant's ResourceQuota did not follow the raised quotas")


@dataclass
class Phase:
    created: list[tuple[str, float, float]]
    """(name, create started, create answered)"""
    cpu: dict[str, float]
    """ms per unit, from before the first create to the last finish"""
    cpu_drained: dict[str, float]
    """ms per unit, from before the first create to the end of the drain"""
    drained_at: float
    drained: bool


def phase_result(
    phase: Phase, watcher: Finished, requests: list[Request], unit: str
) -> dict[str, Any]:
    created = phase.created
    n = len(created)
    one = unit.rstrip("s")
    start = min(s for _, s, _ in created)
    ends = {name: watcher.done[name] for name, _, _ in created}
    end = max(at for at, _ in ends.values())
    states = Counter(state for _, state in ends.values())
    wall = [(ends[name][0] - s) * 1000 for name, s, _ in created]
    create_ms = [(e - s) * 1000 for _, s, e in created]
    drained_at = max(end, phase.drained_at)
    window = between(requests, start, end)
    drain = between(requests, end + 1e-6, drained_at)
    return {
        unit: n,
        "finished": dict(states),
        "window_s": round(end - start, 2),
        f"{unit}_per_min": round(states.get("completed", 0) / (end - start) * 60, 1),
        "create_ms": summary(create_ms),
        "wall_ms": summary(wall),
        "apiserver_requests": tally(window, n),
        "drain": {
            "note": f"after the last {one} finished, until the operator and the API were "
            "quiet: requests the window caused but the operator had not sent yet",
            "seconds": round(drained_at - end, 2),
            "quiet_before_timeout": phase.drained,
            "counts_by_client_verb_resource": _counts(drain),
        },
        "apiserver_requests_incl_drain": tally(window + drain, n),
        f"cpu_ms_per_{one}": phase.cpu,
        f"cpu_ms_per_{one}_incl_drain": phase.cpu_drained,
    }


DRAIN_TIMEOUT = 300.0


def measure(stack: Stack, n: int, quiet: float, keep_quotas: bool) -> dict[str, Any]:
    assert stack.control_plane is not None
    assert stack.control_plane.audit_log is not None
    up_at = time.time()
    audit = AuditTail(stack.control_plane.audit_log)
    cfg = client.Configuration()
    config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(stack.control_plane.kubeconfig), client_configuration=cfg
    )
    cfg.connection_pool_maxsize = 64
    api_client = client.ApiClient(cfg)
    api_client.user_agent = BENCH_UA
    custom = client.CustomObjectsApi(api_client)
    batch_api = client.BatchV1Api(api_client)
    core = client.CoreV1Api(api_client)
    quotas = None if keep_quotas else raise_quotas(custom, core, n)

    runs = Finished(
        custom.list_namespaced_custom_object,
        run_state,
        run_name,
        group=GROUP,
        version=VERSION,
        namespace=NAMESPACE,
        plural="agentruns",
    )
    batch = uuid.uuid4().hex[:6]
    jobs = Finished(
        batch_api.list_namespaced_job,
        job_state,
        job_name,
        namespace=NAMESPACE,
        label_selector=f"sba-bench/baseline={batch}",
    )
    runs.start()
    jobs.start()
    runs.ready.wait(30)
    jobs.ready.wait(30)
    pids = Pids.of(stack)

    def phase(
        what: str, create: Callable[[], list[tuple[str, float, float]]], watcher: Finished
    ) -> Phase:
        print(f"==> {n} {what} at once", file=sys.stderr)
        before = pids.sample()
        created = create()
        wait_all(watcher, [c[0] for c in created], max(900.0, 3.0 * n), what)
        done = pids.sample()
        last = max(watcher.done[c[0]][0] for c in created)
        drained_at, drained = wait_quiet(audit, last, quiet, DRAIN_TIMEOUT)
        return Phase(
            created,
            cpu_ms_per(before, done, n),
            cpu_ms_per(before, pids.sample(), n),
            drained_at,
            drained,
        )

    try:
        deadline = time.monotonic() + 90
        while not owner_lookups_cached(audit.requests + audit.poll()):
            if time.monotonic() > deadline:
                raise RuntimeError("the controller-manager never watched AgentRuns")
            time.sleep(1)
        # Warm-up: imports, caches, the first Job of each kind; not measured.
        warm = asyncio.run(create_runs(stack.api_url, stack.token, 1))
        wait_all(runs, [w[0] for w in warm], 120, "warm-up run")
        warm_job = create_bare_jobs(batch_api, 1, batch, prefix="bench-warm")
        wait_all(jobs, [warm_job[0][0]], 120, "warm-up Job")
        wait_quiet(audit, time.time(), quiet, DRAIN_TIMEOUT)

        run_phase = phase(
            "runs", lambda: asyncio.run(create_runs(stack.api_url, stack.token, n)), runs
        )
        job_phase = phase("bare Jobs", lambda: create_bare_jobs(batch_api, n, batch), jobs)
    finally:
        runs.stop()
        jobs.stop()
    audit.poll()
    requests = audit.requests
    run_result = phase_result(run_phase, runs, requests, "runs")
    job_result = phase_result(job_phase, jobs, requests, "jobs")
    run_result["apiserver_requests_vs_floor"] = floor_report(run_result["apiserver_requests"])
    run_result["apiserver_requests_vs_floor_incl_drain"] = floor_report(
        run_result["apiserver_requests_incl_drain"]
    )
    run_rate = run_result["runs_per_min"]
    job_rate = job_result["jobs_per_min"]
    run_total = run_result["apiserver_requests_incl_drain"]["per_unit_total"]
    job_total = job_result["apiserver_requests_incl_drain"]["per_unit_total"]
    return {
        "benchmark": "run_throughput",
        "runs": n,
        "cpus": os.cpu_count(),
        "tenant_quotas": quotas or "as provisioned",
        "runs_result": run_result,
        "operator_startup": startup_report(requests, up_at),
        "baseline_bare_jobs": job_result,
        "ratios": {
            "runs_per_min_over_bare_jobs_per_min": round(run_rate / job_rate, 3)
            if job_rate
            else None,
            "run_requests_over_two_bare_jobs": round(run_total / (2 * job_total), 2)
            if job_total
            else None,
        },
        "targets": {
            "operator_api_requests_over_floor_max": TARGET_RATIO_TO_FLOOR,
            "operator_api_requests_over_floor": run_result["apiserver_requests_vs_floor"][
                "ratio_to_floor"
            ],
            "operator_api_requests_over_floor_incl_drain": run_result[
                "apiserver_requests_vs_floor_incl_drain"
            ]["ratio_to_floor"],
            "operator_cpu_ms_per_run_max": TARGET_OPERATOR_CPU_MS_PER_RUN,
            "operator_cpu_ms_per_run": run_phase.cpu.get("operator"),
            "operator_cpu_ms_per_run_incl_drain": run_phase.cpu_drained.get("operator"),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument(
        "--quiet",
        type=float,
        default=3.0,
        help="seconds without operator/API requests that end a phase's drain",
    )
    parser.add_argument("--keep-quotas", action="store_true")
    parser.add_argument("--state-dir", type=Path, default=None)
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    state = (args.state_dir or Path(tempfile.mkdtemp(prefix="sba-bench-"))).resolve()
    # Read by the control plane when it starts (default off everywhere else).
    os.environ[AUDIT_LOG_ENV] = str(state / "audit" / "kube-apiserver-audit.log")
    # One principal creates every run: the API's per-request limits are not the subject.
    os.environ["SBA_RATE_LIMIT_TENANT_REQUESTS"] = str(10**9)
    os.environ["SBA_RATE_LIMIT_PRINCIPAL_REQUESTS"] = str(10**9)
    print(f"starting a stack in {state}", file=sys.stderr)
    began = time.monotonic()
    stack = up(default_repo_root(), state_dir=state, ports=StackPorts.ephemeral())
    try:
        result = measure(stack, args.runs, args.quiet, args.keep_quotas)
    finally:
        stack.stop()
    result["bench_seconds"] = round(time.monotonic() - began, 1)
    print(json.dumps(result, indent=2))
    return 0 if result["runs_result"]["finished"] == {"completed": args.runs} else 1


if __name__ == "__main__":
    sys.exit(main())
