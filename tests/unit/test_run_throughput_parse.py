"""bench/run_throughput.py: audit-log parsing, attribution of requests to processes, counts."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from sba_devstack.controlplane import AUDIT_LOG_ENV, ControlPlane

BENCH = Path(__file__).resolve().parents[2] / "bench" / "run_throughput.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_run_throughput", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    if str(BENCH.parent) not in sys.path:  # as `python bench/run_throughput.py` has it
        sys.path.insert(0, str(BENCH.parent))
    spec.loader.exec_module(module)
    return module


def _event(
    audit_id: str,
    *,
    stage: str = "ResponseComplete",
    verb: str = "get",
    user: str = "sba-admin",
    ua: str = "OpenAPI-Generator/37.0.2/python",
    resource: str | None = "agentruns",
    subresource: str | None = None,
    uri: str = "/apis/sba-agentic.io/v1alpha1/namespaces/tenant-demo/agentruns/run-x",
    at: str = "2025-01-01T00:00:10.500000Z",
    code: int = 200,
) -> str:
    ref: dict[str, Any] = {}
    if resource:
        ref = {"resource": resource, "namespace": "tenant-demo", "apiGroup": "sba-agentic.io"}
        if subresource:
            ref["subresource"] = subresource
    event = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": audit_id,
        "stage": stage,
        "requestURI": uri,
        "verb": verb,
        "user": {"username": user, "groups": ["system:masters"]},
        "userAgent": ua,
        "objectRef": ref or None,
        "responseStatus": {"code": code},
        "requestReceivedTimestamp": at,
        "stageTimestamp": at,
    }
    return json.dumps({k: v for k, v in event.items() if v is not None})


@pytest.mark.parametrize(
    ("user", "ua", "expected"),
    [
        ("sba-admin", "kopf/1.38.0", ("operator", "kopf")),
        ("sba-admin", "OpenAPI-Generator/37.0.2/python", ("operator", "kubernetes-client")),
        ("sba-api", "OpenAPI-Generator/37.0.2/python", ("api", "OpenAPI-Generator")),
        ("system:node:sba-dev-node", "sba-node-agent/v1.35.4", ("node_agent", "sba-node-agent")),
        ("sba-admin", "sba-node-agent/v1.35.4", ("node_agent", "sba-node-agent")),
        ("sba-admin", "sba-bench/run_throughput", ("bench", "sba-bench")),
        ("sba-admin", "kubectl/v1.35.4 (linux/amd64) kubernetes/abc", ("kubectl", "kubectl")),
        (
            "system:serviceaccount:kube-system:job-controller",
            "kube-controller-manager/v1.35.4 (linux/amd64) kubernetes/abc/system:serviceaccount",
            ("kube-controller-manager", "job-controller"),
        ),
        (
            "system:kube-scheduler",
            "kube-scheduler/v1.35.4 (linux/amd64) kubernetes/abc/scheduler",
            ("kube-scheduler", "kube-scheduler"),
        ),
        ("system:apiserver", "kube-apiserver/v1.35.4", ("kube-apiserver", "kube-apiserver")),
        ("someone", "curl/8.0", ("other", "someone curl")),
    ],
)
def test_client_of(bench: ModuleType, user: str, ua: str, expected: tuple[str, str]) -> None:
    assert bench.client_of(user, ua) == expected


def test_parse_counts_each_request_once_and_a_watch_at_its_start(bench: ModuleType) -> None:
    lines = [
        _event("a", verb="update", subresource="status"),
        _event("w", stage="ResponseStarted", verb="watch", ua="kopf/1.38.0"),
        "",
        '{"truncated": ',
        _event("w", stage="ResponseComplete", verb="watch", ua="kopf/1.38.0"),
        _event("n", resource=None, uri="/readyz?verbose", user="sba-api", code=500),
    ]
    requests = bench.parse_audit(lines)
    assert [(r.client, r.key, r.code) for r in requests] == [
        ("operator", "update agentruns/status", 200),
        ("operator", "watch agentruns", 200),
        ("api", "get /readyz", 500),
    ]
    assert requests[0].at == pytest.approx(1735689610.5)


def test_tally_floor_and_window(bench: ModuleType) -> None:
    lines = [
        _event("1", verb="create", resource="jobs", ua="kopf/1.38.0"),
        _event("2", verb="update", subresource="status"),
        _event("3", verb="get"),
        _event("4", verb="get", code=404),
        _event("5", verb="create", user="sba-api"),
        _event("6", verb="get", user="sba-api"),
        _event("7", verb="create", ua="sba-bench/run_throughput"),  # left out
        _event("8", verb="patch", resource="pods", subresource="status", ua="sba-node-agent/v1"),
        _event("9", verb="get", at="2025-01-01T00:01:00Z"),  # outside the window
    ]
    requests = bench.parse_audit(lines)
    window = bench.between(requests, 1735689600.0, 1735689620.0)
    counted = bench.tally(window, 2)
    assert counted["per_unit_by_client"] == {"operator": 2.0, "api": 1.0, "node_agent": 0.5}
    assert counted["per_unit_writes_by_client"] == {"operator": 1.0, "api": 0.5, "node_agent": 0.5}
    assert counted["per_unit_by_client_verb_resource"]["operator"] == {
        "get agentruns": 1.0,
        "create jobs": 0.5,
        "update agentruns/status": 0.5,
    }
    assert counted["per_unit_by_client_part"]["operator"] == {
        "kubernetes-client": 1.5,
        "kopf": 0.5,
    }
    assert counted["non_2xx_counts"] == {"operator": {"404 get agentruns": 1}}
    assert counted["requests"] == 7
    floor = bench.floor_report(counted)
    assert floor["floor_writes_per_run"] == 1.5
    assert floor["total_requests_per_run"] == 3.0
    assert floor["ratio_to_floor"] == 2.0


def test_startup_report(bench: ModuleType) -> None:
    lines = [
        _event("1", verb="list", ua="kopf/1.38.0", at="2025-01-01T00:00:01Z"),
        _event("2", verb="watch", ua="kopf/1.38.0", at="2025-01-01T00:00:01Z"),
        _event("3", verb="list", resource="tools", at="2025-01-01T00:00:02Z"),
        _event("4", verb="patch", resource="tenants", at="2025-01-01T00:00:03Z"),
        _event("5", verb="list", at="2025-01-01T00:00:30Z"),  # after start-up
        _event("6", verb="list", user="sba-api", at="2025-01-01T00:00:01Z"),
    ]
    report = bench.startup_report(bench.parse_audit(lines), 1735689610.0)
    assert report == {
        "requests": 4,
        "list": {"agentruns": 1, "tools": 1},
        "watch": {"agentruns": 1},
        "other": {"patch tenants": 1},
    }


def test_parse_stat_with_spaces_in_the_name(bench: ModuleType) -> None:
    fields = ["S", "7", *["0"] * 9, "120", "30", "5", "2", *["0"] * 30]
    text = "4242 (python3 -m (x)) " + " ".join(fields)
    assert bench.parse_stat(text) == (7, 150, 7)


def test_tree_ticks_sums_live_descendants(bench: ModuleType) -> None:
    table = {1: (0, 10, 5), 2: (1, 3, 1), 3: (2, 4, 0), 9: (0, 100, 0)}
    assert bench.tree_ticks(table, 1) == 10 + 5 + 3 + 1 + 4
    assert bench.tree_ticks(table, 42) == 0


def test_audit_is_opt_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(AUDIT_LOG_ENV, raising=False)
    plane = ControlPlane(tmp_path / "cp", tmp_path / "bin")
    assert plane.audit_log is None
    assert plane._audit_flags() == []
    monkeypatch.setenv(AUDIT_LOG_ENV, str(tmp_path / "audit.log"))
    (tmp_path / "cp").mkdir()
    plane = ControlPlane(tmp_path / "cp", tmp_path / "bin")
    flags = plane._audit_flags()
    assert f"--audit-log-path={tmp_path / 'audit.log'}" in flags
    policy = json.loads((tmp_path / "cp" / "audit-policy.json").read_text())
    assert policy["rules"] == [{"level": "Metadata"}]


def test_owner_lookups_cached_once_the_controller_manager_watches_agentruns(
    bench: ModuleType,
) -> None:
    kcm = "kube-controller-manager/v1.35.4 (linux/amd64) kubernetes/x/metadata-informers"
    before = [
        _event("1", verb="watch", user="system:kube-controller-manager", ua=kcm, resource="tools")
    ]
    assert not bench.owner_lookups_cached(bench.parse_audit(before))
    after = [*before, _event("2", verb="watch", user="system:kube-controller-manager", ua=kcm)]
    assert bench.owner_lookups_cached(bench.parse_audit(after))


def test_audit_tail_reads_what_was_added_and_waits_for_a_whole_line(
    bench: ModuleType, tmp_path: Path
) -> None:
    log = tmp_path / "audit.log"
    tail = bench.AuditTail(log)
    assert tail.poll() == []
    first, second = _event("1", verb="create"), _event("2", verb="delete")
    log.write_text(first + "\n" + second[:20])
    assert [r.verb for r in tail.poll()] == ["create"]
    with log.open("a") as fh:
        fh.write(second[20:] + "\n" + _event("1", stage="ResponseStarted") + "\n")
    assert [r.verb for r in tail.poll()] == ["delete"]
    assert [r.verb for r in tail.requests] == ["create", "delete"]


def test_wait_quiet_returns_the_last_platform_request(bench: ModuleType, tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_text(
        _event("1", at="2025-01-01T00:00:05Z")
        + "\n"
        + _event("2", ua="sba-node-agent/v1", at="2025-01-01T00:00:09Z")
        + "\n"
    )
    last, quiet = bench.wait_quiet(bench.AuditTail(log), 1735689601.0, quiet=1.0, timeout=5)
    assert (last, quiet) == (1735689605.0, True)
