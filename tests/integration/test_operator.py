"""The operator against the real control plane, Postgres, Redis and the local node agent.

The operator runs as a real `sba-agentic operator` child process. Tests in
`TestWithoutGateway` point tool pods at a gateway URL where nothing listens, so
every step's Job fails — the failure path needs no API. `test_run_completes`
also starts the API (the tool gateway) and drives a two-step run to completion.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from sba_devstack.procs import free_port, log_tail
from sba_devstack.services import Service, http_ok
from sba_store.db import Pool
from sba_store.events import EventRepository
from sba_store.tenants import TenantRepository
from sba_store.tool_calls import ToolCallRepository
from tests.fixtures.controlplane import Kubectl
from tests.fixtures.stack import wait_for

pytestmark = pytest.mark.integration

TENANT = "opit"
NAMESPACE = f"tenant-{TENANT}"


def apply(kubectl: Kubectl, manifest: dict[str, Any]) -> None:
    done = kubectl("apply", "-f", "-", input=json.dumps(manifest))
    assert done.returncode == 0, done.stderr


def get_json(kubectl: Kubectl, *args: str) -> dict[str, Any] | None:
    done = kubectl("get", *args, "-o", "json")
    if done.returncode != 0:
        return None
    parsed: dict[str, Any] = json.loads(done.stdout)
    return parsed


def tenant_manifest(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "sba-agentic.io/v1alpha1",
        "kind": "Tenant",
        "metadata": {"name": name},
        "spec": {"displayName": f"Operator tests ({name})"},
    }


def run_manifest(name: str, tenant: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "sba-agentic.io/v1alpha1",
        "kind": "AgentRun",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"tenant": tenant, "prompt": "What is the refund policy?", **spec},
    }


def run_status(kubectl: Kubectl, name: str, namespace: str = NAMESPACE) -> dict[str, Any]:
    obj = get_json(kubectl, "agentrun", name, "-n", namespace)
    return (obj or {}).get("status") or {}


def wait_for_phase(
    kubectl: Kubectl, name: str, phases: set[str], operator: Service, timeout: float = 120.0
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        assert operator.running, f"operator died:\n{log_tail(operator.log_path)}"
        status = run_status(kubectl, name)
        return status if status.get("phase") in phases else None

    try:
        result: dict[str, Any] = wait_for(check, timeout=timeout, what=f"run {name} in {phases}")
    except AssertionError:
        print(log_tail(operator.log_path, 80))
        raise
    return result


def operator_env(
    kubeconfig: Path, dsn: str, redis_url: str, gateway_url: str, token_secret: str
) -> dict[str, str]:
    return {
        "KUBECONFIG": str(kubeconfig),
        "DATABASE_URL": dsn,
        "REDIS_URL": redis_url,
        "SBA_GATEWAY_URL": gateway_url,
        "SBA_STEP_TOKEN_SECRET": token_secret,
        "SBA_JOB_ACTIVE_DEADLINE": "120",
        "SBA_LOG_LEVEL": "INFO",
        # Several operators run at once in the suite; a test wanting /metrics picks a port.
        "SBA_OPERATOR_METRICS_PORT": "0",
    }


@pytest.fixture(scope="module")
def prepared(
    crds_installed: None,
    node_agent: Any,
    kubeconfig: Path,
    app_dsn: str,
    redis_url: str,
) -> dict[str, Any]:
    return {"kubeconfig": kubeconfig, "dsn": app_dsn, "redis_url": redis_url}


@pytest_asyncio.fixture(loop_scope="session")
async def repos(pg_pool: Pool) -> dict[str, Any]:
    return {
        "tenants": TenantRepository(pg_pool),
        "events": EventRepository(pg_pool),
        "tool_calls": ToolCallRepository(pg_pool),
    }


@pytest.fixture(scope="class")
def operator(
    prepared: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """An operator whose tool pods get a gateway URL where nothing listens."""
    dead_gateway = f"http://127.0.0.1:{free_port()}"
    env = operator_env(
        prepared["kubeconfig"],
        prepared["dsn"],
        prepared["redis_url"],
        dead_gateway,
        secrets.token_urlsafe(48),
    )
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    service = Service("operator", env, log).start()
    try:
        yield service
    finally:
        service.stop()
        print(f"operator log: {log}")


@pytest.fixture(scope="class")
def tenant(operator: Service, kubectl: Kubectl) -> str:
    apply(kubectl, tenant_manifest(TENANT))
    wait_for(
        lambda: (
            (get_json(kubectl, "tenant", TENANT) or {}).get("status", {}).get("phase") == "ready"
        ),
        what=f"tenant {TENANT} ready",
    )
    return TENANT


class TestWithoutGateway:
    """Tool pods get a gateway URL where nothing listens."""

    async def test_tenant_gets_a_restricted_namespace(
        self, tenant: str, kubectl: Kubectl, repos: dict[str, Any]
    ) -> None:
        obj = get_json(kubectl, "tenant", tenant)
        assert obj is not None
        status = obj["status"]
        assert status["namespace"] == NAMESPACE
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "True"
        assert "kopf" not in json.dumps(status)  # Kopf keeps its state in annotations
        ns = get_json(kubectl, "namespace", NAMESPACE)
        assert ns is not None
        labels = ns["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
        assert labels["sba-agentic.io/tenant"] == tenant
        owner = ns["metadata"]["ownerReferences"][0]
        assert owner["kind"] == "Tenant"
        assert owner["uid"] == obj["metadata"]["uid"]
        record = await repos["tenants"].get(tenant)
        assert record is not None
        assert record.display_name == f"Operator tests ({tenant})"

    def test_run_of_an_unknown_tenant_fails_with_a_reason(
        self, tenant: str, operator: Service, kubectl: Kubectl
    ) -> None:
        apply(kubectl, run_manifest("stranger", "nobody-here", NAMESPACE))
        status = wait_for_phase(kubectl, "stranger", {"failed"}, operator, timeout=60)
        assert status["reason"] == "TenantMismatch"
        assert "tenant-nobody-here" in status["message"]
        jobs = get_json(kubectl, "jobs", "-n", NAMESPACE, "-l", "sba-agentic.io/run=stranger")
        assert jobs is not None
        assert jobs["items"] == []

    async def test_step_against_an_unreachable_gateway_fails_the_run(
        self, tenant: str, operator: Service, kubectl: Kubectl, repos: dict[str, Any]
    ) -> None:
        plan = [{"id": "lookup", "tool": "knowledge.search", "params": {"query": "refunds"}}]
        # One attempt: the transient failure (exit 1) exhausts the retries at once.
        one = {"maxAttempts": 1}
        apply(kubectl, run_manifest("unreachable", tenant, NAMESPACE, plan=plan, retry=one))
        status = wait_for_phase(kubectl, "unreachable", {"failed"}, operator, timeout=180)
        assert status["reason"] == "StepDeadLettered", status
        assert "'lookup'" in status["message"]
        (step,) = status["steps"]
        assert step["phase"] == "failed"
        assert step["jobName"] == "unreachable-lookup-a1"
        assert step["error"]
        assert {c["type"]: c["status"] for c in status["conditions"]} == {
            "Planned": "True",
            "Succeeded": "False",
        }
        job = get_json(kubectl, "job", "unreachable-lookup-a1", "-n", NAMESPACE)
        assert job is not None
        run_obj = get_json(kubectl, "agentrun", "unreachable", "-n", NAMESPACE)
        assert run_obj is not None
        run_uid = run_obj["metadata"]["uid"]
        assert job["metadata"]["labels"]["sba-agentic.io/run-uid"] == run_uid
        assert job["metadata"]["ownerReferences"][0]["uid"] == run_uid
        # The attempt was recorded before its Job was created; its events are in Postgres.
        call = await repos["tool_calls"].get(uuid.UUID(run_uid), "lookup", 1, tenant_id=tenant)
        assert call is not None
        assert call.tool == "knowledge.search"
        events = await repos["events"].list_after(uuid.UUID(run_uid), tenant_id=tenant)
        keys = [e.dedupe_key for e in events]
        assert keys[0] == "phase:pending"
        assert "step:lookup:1:started" in keys
        assert "step:lookup:1:failed" in keys
        assert keys[-1] == "phase:failed"
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        # A fixpoint: nothing changes any more (no status churn from our own patches).
        version = run_obj["metadata"]["resourceVersion"]
        await asyncio.sleep(2)
        again = get_json(kubectl, "agentrun", "unreachable", "-n", NAMESPACE)
        assert again is not None
        assert again["metadata"]["resourceVersion"] == version

    def test_runs_created_while_the_operator_is_down_are_picked_up(
        self, tenant: str, operator: Service, kubectl: Kubectl
    ) -> None:
        operator.kill()  # as a crash would
        plan = [{"id": "later", "tool": "knowledge.search", "params": {"query": "x"}}]
        one = {"maxAttempts": 1}
        apply(kubectl, run_manifest("while-down", tenant, NAMESPACE, plan=plan, retry=one))
        operator.start()
        status = wait_for_phase(kubectl, "while-down", {"failed"}, operator, timeout=180)
        assert status["reason"] == "StepDeadLettered"
        assert status["steps"][0]["attempts"] == 1
        jobs = get_json(kubectl, "jobs", "-n", NAMESPACE, "-l", "sba-agentic.io/step=later")
        assert jobs is not None
        assert len(jobs["items"]) == 1


def _api_and_tool_runtime_exist() -> bool:
    import importlib.util
    import shutil
    import sys

    bin_dir = Path(sys.executable).parent
    return importlib.util.find_spec("sba_api.main") is not None and (
        shutil.which("sba-tool") is not None or (bin_dir / "sba-tool").exists()
    )


@pytest.mark.skipif(not _api_and_tool_runtime_exist(), reason="needs sba_api and sba-tool")
def test_run_completes(
    prepared: dict[str, Any], kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tenant = "opit-ok"
    namespace = f"tenant-{tenant}"
    port = free_port()
    api_url = f"http://127.0.0.1:{port}"
    env = {
        **operator_env(
            prepared["kubeconfig"],
            prepared["dsn"],
            prepared["redis_url"],
            api_url,
            secrets.token_urlsafe(48),
        ),
        "SBA_API_HOST": "127.0.0.1",
        "SBA_API_PORT": str(port),
        "SBA_PUBLIC_URL": api_url,
        "SBA_JWT_HS256_SECRET": secrets.token_urlsafe(48),  # the API refuses to start without
    }
    logs = tmp_path_factory.mktemp("happy")
    api = Service("api", env, logs / "api.log", ready=http_ok(f"{api_url}/readyz")).start()
    operator = Service("operator", env, logs / "operator.log").start()
    try:
        apply(kubectl, tenant_manifest(tenant))
        wait_for(
            lambda: (
                (get_json(kubectl, "tenant", tenant) or {}).get("status", {}).get("phase")
                == "ready"
            ),
            what=f"tenant {tenant} ready",
        )
        started = time.monotonic()
        apply(kubectl, run_manifest("happy", tenant, namespace))

        def done() -> dict[str, Any] | None:
            assert operator.running, log_tail(operator.log_path)
            obj = get_json(kubectl, "agentrun", "happy", "-n", namespace) or {}
            status: dict[str, Any] = obj.get("status") or {}
            return status if status.get("phase") in ("completed", "failed") else None

        try:
            status = wait_for(done, timeout=180, what="run happy finished")
        except AssertionError:
            print(log_tail(operator.log_path, 80))
            print(log_tail(api.log_path, 80))
            raise
        elapsed = time.monotonic() - started
        print(f"two-step run took {elapsed:.1f}s")
        assert status["phase"] == "completed", json.dumps(status, indent=2)
        assert [s["phase"] for s in status["steps"]] == ["succeeded", "succeeded"]
        assert [s["tool"] for s in status["steps"]] == ["knowledge.search", "llm.generate"]
        result = status["result"]
        assert result["answerStep"] == "answer"
        # No knowledge in this tenant: the builtin model says so instead of inventing.
        assert "could not find anything" in result["answer"]
        assert status["usage"]["toolCalls"] == 2
    finally:
        operator.stop()
        api.stop()
        print(f"logs: {logs}")
