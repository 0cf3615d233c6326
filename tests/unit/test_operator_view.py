"""The operator's reads from memory: Kopf's indexes corrected by its own writes."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, cast

from sba_core import group
from sba_operator.kube import Kube
from sba_operator.kube.view import (
    JOB_NAME_LABEL,
    IndexedReads,
    index_agentrun,
    index_approval,
    index_job,
    index_pod,
    index_tenant,
)

NS = "tenant-acme"


@dataclass
class FakeIndexes:
    """Kopf's indexes as the index functions would fill them."""

    agentruns: dict[Any, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    approvals: dict[Any, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    tenants: dict[Any, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    jobs: dict[Any, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    pods: dict[Any, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))

    def put(self, index: dict[Any, list[dict[str, Any]]], entries: dict[Any, Any]) -> None:
        """One object's index entries (replacing its earlier ones, as Kopf does)."""
        for key, value in entries.items():
            name = value["metadata"]["name"]
            index[key] = [v for v in index[key] if v["metadata"]["name"] != name] + [value]


class FakeKube:
    def __init__(self) -> None:
        self.gets: list[tuple[str, str]] = []
        self.current: dict[str, Any] | None = None

    async def get_agentrun(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.gets.append((namespace, name))
        return self.current


def run(name: str, rv: int, uid: str = "u-1", phase: str = "pending") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": NS, "uid": uid, "resourceVersion": str(rv)},
        "spec": {"tenant": "acme"},
        "status": {"phase": phase},
    }


def reads() -> tuple[IndexedReads, FakeIndexes, FakeKube]:
    idx, kube = FakeIndexes(), FakeKube()
    return IndexedReads(idx, cast(Kube, kube)), idx, kube


def test_a_run_is_read_from_the_index_without_a_request() -> None:
    view, idx, kube = reads()
    idx.put(idx.agentruns, index_agentrun(run("r1", 10)))
    got = asyncio.run(view.agentrun(NS, "r1"))
    assert got is not None
    assert got["metadata"]["resourceVersion"] == "10"
    assert asyncio.run(view.agentrun(NS, "nope")) is None
    assert kube.gets == []


def test_our_status_write_wins_until_the_watch_catches_up() -> None:
    view, idx, _ = reads()
    idx.put(idx.agentruns, index_agentrun(run("r1", 10)))
    view.wrote_agentrun(run("r1", 11, phase="executing"))
    got = asyncio.run(view.agentrun(NS, "r1"))
    assert got is not None
    assert got["status"]["phase"] == "executing"
    (peer,) = asyncio.run(view.agentruns(NS))
    assert peer["status"]["phase"] == "executing"
    # The MODIFIED event of our write (and a later one of somebody else's) arrives.
    idx.put(idx.agentruns, index_agentrun(run("r1", 12, phase="awaiting-approval")))
    got = asyncio.run(view.agentrun(NS, "r1"))
    assert got is not None
    assert got["status"]["phase"] == "awaiting-approval"


def test_a_recreated_run_is_not_shadowed_by_the_old_one_s_write() -> None:
    view, idx, _ = reads()
    view.wrote_agentrun(run("r1", 50, uid="old"))
    idx.put(idx.agentruns, index_agentrun(run("r1", 20, uid="new")))
    got = asyncio.run(view.agentrun(NS, "r1"))
    assert got is not None
    assert got["metadata"]["uid"] == "new"
    view.wrote_agentrun(run("r1", 60, uid="gone"))
    view.forget_agentrun(NS, "r1")
    got = asyncio.run(view.agentrun(NS, "r1"))
    assert got is not None
    assert got["metadata"]["uid"] == "new"


def test_fresh_reads_ask_the_api_server_once() -> None:
    view, idx, kube = reads()
    idx.put(idx.agentruns, index_agentrun(run("r1", 10)))
    kube.current = run("r1", 15, phase="executing")
    got = asyncio.run(view.agentrun(NS, "r1", fresh=True))
    assert got is not None
    assert got["metadata"]["resourceVersion"] == "15"
    assert kube.gets == [(NS, "r1")]
    # And the direct answer is remembered over the older index copy.
    got = asyncio.run(view.agentrun(NS, "r1"))
    assert got is not None
    assert got["status"]["phase"] == "executing"


def approval(name: str, run_name: str, outcome: str | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": NS},
        "spec": {"run": run_name, "stepId": "s"},
        "status": {"outcome": outcome} if outcome else {},
    }


def test_answered_approvals_leave_the_index_and_our_answers_hide_them_at_once() -> None:
    assert index_approval(approval("a1", "r1", outcome="accepted")) == {}
    deleting = approval("a2", "r1")
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert index_approval(deleting) == {}
    view, idx, _ = reads()
    idx.put(idx.approvals, index_approval(approval("a3", "r1")))
    idx.put(idx.approvals, index_approval(approval("a4", "r2")))
    names = [a["metadata"]["name"] for a in asyncio.run(view.unanswered_approvals(NS, "r1"))]
    assert names == ["a3"]
    view.answered_approval(NS, "a3")
    assert asyncio.run(view.unanswered_approvals(NS, "r1")) == []


def job(name: str, run_uid: str, failed: bool = False) -> dict[str, Any]:
    conditions = [{"type": "Failed", "status": "True"}] if failed else []
    return {
        "metadata": {"name": name, "namespace": NS, "labels": {group.LABEL_RUN_UID: run_uid}},
        "status": {"conditions": conditions},
    }


def test_a_job_we_created_is_seen_before_its_watch_event() -> None:
    view, idx, _ = reads()
    idx.put(idx.jobs, index_job(job("j-other", "u-2")))
    view.created_job(job("j1", "u-1"))
    assert [j["metadata"]["name"] for j in asyncio.run(view.run_jobs(NS, "u-1"))] == ["j1"]
    assert asyncio.run(view.job(NS, "j1")) is not None
    # The watch brings it back, since failed: the index's copy is the one read.
    idx.put(idx.jobs, index_job(job("j1", "u-1", failed=True)))
    (seen,) = asyncio.run(view.run_jobs(NS, "u-1"))
    assert seen["status"]["conditions"][0]["type"] == "Failed"
    assert [j["metadata"]["name"] for j in asyncio.run(view.run_jobs(NS, "u-2"))] == ["j-other"]


def test_pods_are_indexed_slim_under_their_job() -> None:
    pod = {
        "metadata": {
            "name": "j1-abcde",
            "namespace": NS,
            "labels": {JOB_NAME_LABEL: "j1", group.LABEL_RUN_UID: "u-1"},
        },
        "spec": {"containers": [{"name": "tool", "image": "x" * 1000}]},
        "status": {
            "phase": "Failed",
            "containerStatuses": [{"name": "tool", "state": {"terminated": {"message": "boom"}}}],
        },
    }
    entries = index_pod(pod)
    assert list(entries) == [(NS, "j1")]
    assert "spec" not in entries[(NS, "j1")]
    view, idx, _ = reads()
    idx.put(idx.pods, entries)
    (found,) = asyncio.run(view.job_pods(NS, "j1"))
    assert found["status"]["containerStatuses"][0]["state"]["terminated"]["message"] == "boom"
    assert index_pod({"metadata": {"name": "p", "namespace": NS}}) == {}


def test_tenants_by_name() -> None:
    view, idx, _ = reads()
    idx.put(idx.tenants, index_tenant({"metadata": {"name": "acme"}, "spec": {}}))
    assert asyncio.run(view.tenant("acme")) == {"metadata": {"name": "acme"}, "spec": {}}
    assert asyncio.run(view.tenant("other")) is None
