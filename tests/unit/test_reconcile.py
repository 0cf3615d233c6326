"""The operator's pure reconcile: run lifecycle decisions, the Job builder, summaries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sba_core import group
from sba_core.events import EventType
from sba_core.models.run import MAX_SUMMARY_CHARS, RunPhase, StepPhase
from sba_core.step_token import verify_step_token
from sba_core.summaries import summarize_result
from sba_core.tools.registry import builtin_registry
from sba_operator.reconcile import (
    Decision,
    JobState,
    Observation,
    ObservedJob,
    ObservedToolCall,
    RunRef,
    TenantView,
    build_job,
    build_step_secret,
    decide_run,
    job_name,
    observe_job,
)
from sba_operator.reconcile.jobs import labels_match, step_labels
from sba_operator.settings import Settings, ToolSettings

UID = "0b6a6f3e-1a2b-4c3d-8e9f-0123456789ab"
T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
TOOLS = ToolSettings(
    step_token_secret="test-step-token-secret-0123456789abcdef", gateway_url="http://gw.test:8080"
)
REGISTRY = builtin_registry()
ACME = TenantView(name="acme")


def agentrun(
    spec: dict[str, Any] | None = None,
    status: dict[str, Any] | None = None,
    *,
    name: str = "report",
    namespace: str = "tenant-acme",
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": group.API_VERSION,
        "kind": group.AGENTRUN_KIND,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": UID,
            "generation": 1,
            "resourceVersion": "1",
        },
        "spec": spec
        if spec is not None
        else {
            "tenant": "acme",
            "prompt": "What is the refund policy?",
            "options": {"locale": "en", "topK": 5, "maxSteps": 8},
        },
    }
    if status is not None:
        obj["status"] = status
    return obj


def decide(
    run: dict[str, Any],
    *,
    jobs: dict[str, ObservedJob] | None = None,
    calls: dict[tuple[str, int], ObservedToolCall] | None = None,
    tenant: TenantView | None = ACME,
    now: datetime = T0,
    foreign: frozenset[str] = frozenset(),
) -> Decision:
    return decide_run(
        Observation(
            run=run,
            now=now,
            jobs=jobs or {},
            tool_calls=calls or {},
            tenant=tenant,
            foreign_jobs=foreign,
        ),
        REGISTRY,
        TOOLS,
    )


def applied(run: dict[str, Any], decision: Decision) -> dict[str, Any]:
    """The AgentRun after the driver wrote the decision's status (as the API server stores it)."""
    return {**run, "status": decision.status.wire()}


def ours(name: str, step: str, attempt: int, state: JobState, **kw: Any) -> ObservedJob:
    ref = RunRef(uid=UID, name="report", namespace="tenant-acme", tenant="acme")
    return ObservedJob(name=name, labels=step_labels(ref, step, attempt), state=state, **kw)


SEARCH_RESULT = {
    "query": "What is the refund policy?",
    "hits": [
        {
            "documentId": "d1",
            "chunkId": "c1",
            "title": "Refunds",
            "snippet": "Refunds within 30 days.",
            "score": 0.91,
        }
    ],
}
RENDER_RESULT = {
    "artifactId": "7d4f0c8e-aaaa-bbbb-cccc-000000000001",
    "title": "What is the refund policy",
    "contentType": "text/markdown",
    "sizeBytes": 2048,
    "sha256": "0" * 64,
}


# -- lifecycle ------------------------------------------------------------------------------


def test_new_run_is_planned_and_its_first_job_created() -> None:
    run = agentrun()
    d = decide(run)
    s = d.status
    assert s.phase is RunPhase.EXECUTING
    assert s.run_id == UID
    assert s.started_at == T0
    assert [(x.id, x.tool) for x in s.steps] == [
        ("search", "knowledge.search"),
        ("answer", "llm.generate"),
    ]
    first = s.steps[0]
    assert first.phase is StepPhase.RUNNING
    assert first.attempts == 1
    assert first.job_name == "report-search-a1"
    assert s.current_step == "1/2 knowledge.search"
    assert {c.type: c.status for c in s.conditions} == {"Planned": "True", "Succeeded": "Unknown"}
    assert [e.dedupe_key for e in d.events] == [
        "phase:pending",
        "phase:planning",
        "plan:ready",
        "phase:executing",
        "step:search:1:started",
    ]
    assert d.record_run
    assert d.phase_changed
    assert d.db_tenant == "acme"
    (start,) = d.start_steps
    assert start.job_name == "report-search-a1"
    assert start.secret_name == "report-search-a1-token"
    assert start.params == {"query": "What is the refund policy?", "topK": 5}
    assert start.claims.step_id == "search"
    assert start.claims.attempt == 1
    assert start.job["metadata"]["name"] == "report-search-a1"
    assert d.kube_events == ()  # routine progress: the run events and status say it


def test_unchanged_input_is_a_fixpoint() -> None:
    run = agentrun()
    first = decide(run)
    job = ours("report-search-a1", "search", 1, JobState.ACTIVE)
    again = decide(applied(run, first), jobs={job.name: job}, now=T0 + timedelta(seconds=42))
    assert again.idle
    assert not again.status_changed
    assert again.events == ()
    assert again.start_steps == ()
    assert again.kube_events == ()


def test_succeeded_job_with_result_advances_to_next_step() -> None:
    run = applied(agentrun(), decide(agentrun()))
    job = ours(
        "report-search-a1", "search", 1, JobState.SUCCEEDED, finished_at=T0 + timedelta(seconds=3)
    )
    call = ObservedToolCall(id="call-1", success=True, result=SEARCH_RESULT)
    d = decide(
        run, jobs={job.name: job}, calls={("search", 1): call}, now=T0 + timedelta(seconds=4)
    )
    search, answer = d.status.steps
    assert search.phase is StepPhase.SUCCEEDED
    assert search.result_ref == "call-1"
    assert search.summary is not None
    assert search.summary.startswith("1 hit for")
    assert search.finished_at == T0 + timedelta(seconds=3)
    assert answer.phase is StepPhase.RUNNING
    assert answer.job_name == "report-answer-a1"
    assert d.status.current_step == "2/2 llm.generate"
    assert d.status.phase is RunPhase.EXECUTING
    assert [e.dedupe_key for e in d.events] == [
        "step:search:1:succeeded",
        "step:answer:1:started",
    ]
    assert [s.job_name for s in d.start_steps] == ["report-answer-a1"]
    assert d.start_steps[0].params["sources"] == ["search"]
    assert d.start_steps[0].params["prompt"] == "{goal}"
    assert d.delete_secrets == ("report-search-a1-token",)
    assert not d.record_run


def _through_search() -> dict[str, Any]:
    run = applied(agentrun(), decide(agentrun()))
    job = ours("report-search-a1", "search", 1, JobState.SUCCEEDED)
    call = ObservedToolCall(id="call-1", success=True, result=SEARCH_RESULT)
    return applied(run, decide(run, jobs={job.name: job}, calls={("search", 1): call}))


ANSWER_RESULT = {
    "text": "Based on the knowledge base:\n\nRefunds within 30 days. [1]\n\nSources:\n[1] Refunds",
    "model": "sba-extractive",
    "provider": "builtin",
    "finishReason": "stop",
    "usage": {"promptTokens": 12, "completionTokens": 14},
    "citations": [{"number": 1, "documentId": "d1", "chunkId": "c1", "title": "Refunds"}],
}


def test_model_step_answer_becomes_the_runs_result() -> None:
    run = _through_search()
    job = ours("report-answer-a1", "answer", 1, JobState.SUCCEEDED)
    call = ObservedToolCall(id="call-2", success=True, result=ANSWER_RESULT)
    d = decide(
        run, jobs={job.name: job}, calls={("answer", 1): call}, now=T0 + timedelta(seconds=10)
    )
    s = d.status
    assert s.phase is RunPhase.COMPLETED
    assert s.result is not None
    assert s.result.answer == ANSWER_RESULT["text"]
    assert s.result.answer_step == "answer"
    assert s.result.artifact_id is None
    assert s.result.summary is not None
    assert "sba-extractive (builtin) wrote" in s.result.summary
    completed = d.events[-1]
    assert completed.type is EventType.COMPLETED
    assert completed.payload["answer"] == ANSWER_RESULT["text"]
    assert completed.payload["answerStep"] == "answer"


def _document_run() -> dict[str, Any]:
    spec = {"tenant": "acme", "prompt": "Write a report on the refund policy"}
    return agentrun(spec=spec)


def test_a_document_request_is_answered_then_rendered() -> None:
    d = decide(_document_run())
    assert [(x.id, x.tool) for x in d.status.steps] == [
        ("search", "knowledge.search"),
        ("answer", "llm.generate"),
        ("render", "render.document"),
    ]
    plan = next(e for e in d.events if e.type is EventType.PLAN_READY).payload["steps"]
    assert plan[2]["params"]["sources"] == ["search", "answer"]


def test_last_step_completes_the_run_with_its_result() -> None:
    run = applied(_document_run(), decide(_document_run()))
    for step, result in (("search", SEARCH_RESULT), ("answer", ANSWER_RESULT)):
        job = ours(f"report-{step}-a1", step, 1, JobState.SUCCEEDED)
        call = ObservedToolCall(id=f"call-{step}", success=True, result=result)
        run = applied(run, decide(run, jobs={job.name: job}, calls={(step, 1): call}))
    job = ours("report-render-a1", "render", 1, JobState.SUCCEEDED)
    call = ObservedToolCall(id="call-2", success=True, result=RENDER_RESULT)
    d = decide(
        run, jobs={job.name: job}, calls={("render", 1): call}, now=T0 + timedelta(seconds=10)
    )
    s = d.status
    assert s.phase is RunPhase.COMPLETED
    assert s.reason == "Completed"
    assert s.finished_at == T0 + timedelta(seconds=10)
    assert s.result is not None
    assert s.result.artifact_id == RENDER_RESULT["artifactId"]
    assert s.result.artifact_url == f"/api/v1/runs/{UID}/artifacts/{RENDER_RESULT['artifactId']}"
    assert s.result.answer == ANSWER_RESULT["text"]
    assert s.result.summary
    assert "rendered" in s.result.summary
    assert s.usage.tool_calls == 3
    assert s.usage.run_seconds == 10.0
    assert {c.type: (c.status, c.reason) for c in s.conditions}["Succeeded"] == (
        "True",
        "Completed",
    )
    assert [e.dedupe_key for e in d.events] == ["step:render:1:succeeded", "phase:completed"]
    assert d.events[-1].type is EventType.COMPLETED
    assert d.phase_changed
    # ... and a completed run stays put.
    assert decide(applied(run, d), now=T0 + timedelta(hours=1)).idle


def test_failed_job_fails_the_step_and_the_run_with_a_reason() -> None:
    # One attempt allowed: the transient failure exhausts the retries (dead-lettered).
    spec = {"tenant": "acme", "prompt": "What is the refund policy?", "retry": {"maxAttempts": 1}}
    run = applied(agentrun(spec), decide(agentrun(spec)))
    job = ours(
        "report-search-a1",
        "search",
        1,
        JobState.FAILED,
        reason="BackoffLimitExceeded",
        message="Job has reached the specified backoff limit",
        termination_message='{"ok": false, "error": "gateway unreachable: connection refused"}',
    )
    d = decide(run, jobs={job.name: job}, now=T0 + timedelta(seconds=5))
    s = d.status
    step = s.steps[0]
    assert step.phase is StepPhase.FAILED
    assert step.error == "BackoffLimitExceeded: gateway unreachable: connection refused"
    assert s.phase is RunPhase.FAILED
    assert s.reason == "StepDeadLettered"
    assert s.message is not None
    assert "'search'" in s.message
    assert "connection refused" in s.message
    assert s.steps[1].phase is StepPhase.PENDING
    assert [e.dedupe_key for e in d.events] == [
        "step:search:1:failed",
        "step:search:dead_lettered",
        "phase:failed",
    ]
    assert [(x.step_id, x.attempts) for x in d.dead_letters] == [("search", 1)]
    assert d.start_steps == ()
    assert {c.type: c.status for c in s.conditions}["Succeeded"] == "False"
    assert any(k.type == "Warning" for k in d.kube_events)
    assert decide(applied(run, d)).idle


def test_completed_job_without_a_result_fails_the_step() -> None:
    run = applied(agentrun(), decide(agentrun()))
    job = ours("report-search-a1", "search", 1, JobState.SUCCEEDED)
    d = decide(run, jobs={job.name: job})
    assert d.status.phase is RunPhase.FAILED
    assert d.status.steps[0].error == "NoResult: tool exited without reporting a result"


def test_tool_reported_error_is_preferred_over_the_jobs_message() -> None:
    run = applied(agentrun(), decide(agentrun()))
    job = ours(
        "report-search-a1", "search", 1, JobState.FAILED, reason="PodFailurePolicy", message="x"
    )
    call = ObservedToolCall(id="c", success=False, error="params invalid: query too long")
    d = decide(run, jobs={job.name: job}, calls={("search", 1): call})
    assert d.status.steps[0].error == "PodFailurePolicy: params invalid: query too long"
    assert d.status.steps[0].result_ref == "c"


def test_invalid_spec_fails_the_run_without_crashing() -> None:
    d = decide(agentrun(spec={"tenant": "acme", "prompt": "", "bogus": 1}))
    assert d.status.phase is RunPhase.FAILED
    assert d.status.reason == "InvalidSpec"
    assert d.status.message
    assert "prompt" in d.status.message
    assert d.start_steps == ()
    assert d.db_tenant is None  # not recorded in Postgres: it never was a valid run
    assert decide(applied(agentrun(), d)).idle


@pytest.mark.parametrize(
    ("namespace", "tenant", "reason", "needle"),
    [
        ("tenant-other", ACME, "TenantMismatch", "must live in namespace 'tenant-acme'"),
        ("tenant-acme", None, "TenantNotFound", "does not exist"),
    ],
)
def test_tenant_mismatch_fails_the_run(
    namespace: str, tenant: TenantView | None, reason: str, needle: str
) -> None:
    d = decide(agentrun(namespace=namespace), tenant=tenant)
    assert d.status.phase is RunPhase.FAILED
    assert d.status.reason == reason
    assert d.status.message
    assert needle in d.status.message


def test_suspended_tenant_and_disallowed_tools_fail_the_run() -> None:
    d = decide(agentrun(), tenant=TenantView(name="acme", suspended=True))
    assert d.status.reason == "TenantSuspended"
    d = decide(agentrun(), tenant=TenantView(name="acme", allowed_tools=("knowledge.search",)))
    # No model step for a tenant without llm.generate: it would render, which it may not.
    assert d.status.reason == "ToolNotAllowed"  # refused at admission (reconcile/admission.py)
    assert d.status.phase is RunPhase.FAILED


def test_planning_error_fails_the_run() -> None:
    spec = {
        "tenant": "acme",
        "prompt": "x" * 10,
        "plan": [{"id": "s1", "tool": "knowledge.search", "params": {"topK": 500}}],
    }
    d = decide(agentrun(spec=spec))
    assert d.status.phase is RunPhase.FAILED
    assert d.status.reason == "PlanningFailed"
    assert d.status.message
    assert "s1" in d.status.message


def test_explicit_plan_is_honoured() -> None:
    spec = {
        "tenant": "acme",
        "prompt": "Find the refund policy",
        "plan": [{"id": "look", "tool": "knowledge.search", "params": {"query": "refunds"}}],
    }
    d = decide(agentrun(spec=spec))
    assert [(s.id, s.params) for s in d.status.steps] == [("look", {"query": "refunds", "topK": 5})]
    assert d.start_steps[0].job_name == "report-look-a1"


def test_existing_job_is_adopted_not_duplicated() -> None:
    # The driver created the Job, then crashed before writing status.
    job = ours("report-search-a1", "search", 1, JobState.ACTIVE)
    d = decide(agentrun(), jobs={job.name: job})
    assert d.status.steps[0].phase is StepPhase.RUNNING
    assert d.status.steps[0].job_name == "report-search-a1"
    assert d.start_steps == ()


def test_missing_job_of_a_running_step_is_recreated() -> None:
    run = applied(agentrun(), decide(agentrun()))
    d = decide(run)  # the Job is gone and no result was stored
    assert not d.status_changed
    assert [s.job_name for s in d.start_steps] == ["report-search-a1"]


def test_job_name_held_by_a_stranger_fails_the_step() -> None:
    run = applied(agentrun(), decide(agentrun()))
    d = decide(run, foreign=frozenset({"report-search-a1"}))
    assert d.status.phase is RunPhase.FAILED
    assert d.status.steps[0].error
    assert "JobNameConflict" in d.status.steps[0].error


def test_huge_params_are_compacted_in_status_but_not_in_the_job_input() -> None:
    query = "refund " * 280  # ~1960 chars, within the tool's limit
    spec = {
        "tenant": "acme",
        "prompt": "p" * 10,
        "plan": [{"id": "s1", "tool": "knowledge.search", "params": {"query": query}}],
    }
    d = decide(agentrun(spec=spec))
    assert len(d.status.steps[0].params["query"]) == 256
    assert d.start_steps[0].params["query"] == query


def test_condition_time_moves_only_when_status_flips() -> None:
    run = applied(agentrun(), decide(agentrun()))
    job = ours("report-search-a1", "search", 1, JobState.SUCCEEDED)
    call = ObservedToolCall(id="call-1", success=True, result=SEARCH_RESULT)
    later = T0 + timedelta(minutes=5)
    d = decide(run, jobs={job.name: job}, calls={("search", 1): call}, now=later)
    succeeded = next(c for c in d.status.conditions if c.type == "Succeeded")
    assert succeeded.message == "step 2/2 llm.generate"
    assert succeeded.last_transition_time == T0


# -- the Job builder ------------------------------------------------------------------------


def _job(run_name: str = "report", step: str = "search", attempt: int = 1) -> dict[str, Any]:
    ref = RunRef(uid=UID, name=run_name, namespace="tenant-acme", tenant="acme")
    return build_job(
        run=ref, step_id=step, attempt=attempt, spec=REGISTRY["knowledge.search"], tools=TOOLS
    )


def test_job_is_sandboxed() -> None:
    job = _job()
    spec = job["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["completions"] == 1
    assert spec["activeDeadlineSeconds"] == 300
    assert spec["ttlSecondsAfterFinished"] == 3600
    rules = spec["podFailurePolicy"]["rules"]
    assert rules[0]["action"] == "FailJob"
    assert rules[0]["onExitCodes"]["values"] == [2]
    assert rules[1]["action"] == "Ignore"
    assert rules[1]["onPodConditions"][0]["type"] == "DisruptionTarget"
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert psc["runAsUser"] == psc["runAsGroup"] == psc["fsGroup"] == 65532
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["image"] == "sba-agentic/tool-runtime:0.1.0"
    assert container["command"] == ["sba-tool"]
    csc = container["securityContext"]
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["privileged"] is False
    assert csc["capabilities"] == {"drop": ["ALL"]}
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) == {"cpu", "memory", "ephemeral-storage"}
    assert container["resources"]["limits"]["memory"] == "256Mi"
    env = {e["name"]: e for e in container["env"]}
    assert env["SBA_GATEWAY_URL"]["value"] == "http://gw.test:8080"
    assert env["SBA_STEP_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "report-search-a1-token",
        "key": "token",
    }
    assert env["SBA_RUN_ID"]["value"] == UID
    assert env["SBA_STEP_ID"]["value"] == "search"
    assert "sba.run_id=" in env["OTEL_RESOURCE_ATTRIBUTES"]["value"]
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]
    owner = job["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "AgentRun"
    assert owner["uid"] == UID
    assert owner["controller"] is True
    assert owner["blockOwnerDeletion"] is True
    labels = job["metadata"]["labels"]
    assert labels[group.LABEL_RUN_UID] == UID
    assert labels[group.LABEL_STEP] == "search"
    assert labels[group.LABEL_ATTEMPT] == "1"
    assert labels[group.LABEL_TENANT] == "acme"
    assert labels[group.LABEL_COMPONENT] == "tool-step"
    assert spec["template"]["metadata"]["labels"] == labels


def test_job_name_is_short_and_deterministic() -> None:
    assert job_name("report", "search", 1) == "report-search-a1"
    long_run = "a-very-long-run-name-that-goes-on-and-on-and-on-forever-and-ever"
    name = job_name(long_run, "search-12", 3)
    assert len(name) <= 63
    assert name == job_name(long_run, "search-12", 3)
    assert name != job_name(long_run, "search-12", 4)
    assert name[-1].isalnum()
    assert name[0].isalnum()
    dotted = job_name("my.run", "s1", 1)
    assert "." not in dotted
    assert len(dotted) <= 63
    assert len(_job(long_run)["metadata"]["labels"][group.LABEL_RUN_NAME]) <= 63


def test_step_secret_is_owned_and_carries_a_valid_token() -> None:
    from sba_core.step_token import StepClaims, mint_step_token

    ref = RunRef(uid=UID, name="report", namespace="tenant-acme", tenant="acme")
    claims = StepClaims(
        run_id=UID,
        tenant="acme",
        namespace="tenant-acme",
        run_name="report",
        step_id="search",
        attempt=1,
        tool="knowledge.search",
    )
    token = mint_step_token("test-step-token-secret-0123456789abcdef", claims, 60)
    secret = build_step_secret(ref, "search", 1, "report-search-a1-token", token)
    assert secret["metadata"]["ownerReferences"][0]["uid"] == UID
    assert (
        verify_step_token("test-step-token-secret-0123456789abcdef", secret["stringData"]["token"])
        == claims
    )
    assert labels_match(secret["metadata"]["labels"], ref, "search", 1)
    assert not labels_match(secret["metadata"]["labels"], ref, "search", 2)


def test_observe_job_reads_conditions_and_termination_message() -> None:
    failed = {
        "metadata": {"name": "j", "labels": {"a": "b"}},
        "status": {
            "conditions": [
                {"type": "FailureTarget", "status": "True", "reason": "PodFailurePolicy"},
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "PodFailurePolicy",
                    "message": "Container tool for pod x failed with exit code 2",
                    "lastTransitionTime": "2025-01-02T03:04:09Z",
                },
            ]
        },
    }
    pod = {
        "status": {
            "containerStatuses": [
                {
                    "name": "tool",
                    "state": {
                        "terminated": {
                            "exitCode": 2,
                            "message": '{"error": "bad params"}',
                            "finishedAt": "2025-01-02T03:04:08Z",
                        }
                    },
                }
            ]
        }
    }
    job = observe_job(failed, [pod])
    assert job.state is JobState.FAILED
    assert job.reason == "PodFailurePolicy"
    assert job.termination_message == '{"error": "bad params"}'
    assert job.finished_at == datetime(2025, 1, 2, 3, 4, 9, tzinfo=UTC)
    done = observe_job(
        {
            "metadata": {"name": "k"},
            "status": {
                "conditions": [{"type": "Complete", "status": "True"}],
                "completionTime": "2025-01-02T03:04:10Z",
            },
        }
    )
    assert done.state is JobState.SUCCEEDED
    assert (
        observe_job({"metadata": {"name": "z"}, "status": {"active": 1}}).state is JobState.ACTIVE
    )


# -- tenants ----------------------------------------------------------------------------------


# (Tenant provisioning: tests/unit/test_tenant_provisioning.py)


# -- summaries --------------------------------------------------------------------------------


def test_summaries() -> None:
    assert summarize_result("knowledge.search", SEARCH_RESULT) == (
        "1 hit for 'What is the refund policy?': Refunds (0.91)"
    )
    assert summarize_result("knowledge.search", {"query": "q", "hits": []}) == "0 hits for 'q'"
    rendered = summarize_result("render.document", RENDER_RESULT)
    assert rendered.startswith("rendered 'What is the refund policy' (text/markdown, 2.0 KiB)")
    assert str(RENDER_RESULT["artifactId"]) in rendered
    huge = summarize_result("knowledge.search", {"oops": "x" * 5000})
    assert len(huge) <= MAX_SUMMARY_CHARS
    assert huge.startswith("result: ")
    assert summarize_result("other.tool", None) == "no result"


def test_settings_from_env() -> None:
    s = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://x/y",
            "SBA_STEP_TOKEN_SECRET": "k",
            "SBA_WATCH_NAMESPACES": "tenant-a, tenant-b",
            "SBA_JOB_BACKOFF_LIMIT": "1",
        }
    )
    assert s.kubernetes.namespaces == ("tenant-a", "tenant-b")
    assert not s.kubernetes.clusterwide
    assert s.tools.job.backoff_limit == 1
    assert s.tools.image == "sba-agentic/tool-runtime:0.1.0"
    with pytest.raises(ValueError, match="DATABASE_URL"):
        Settings.from_env({"SBA_STEP_TOKEN_SECRET": "k"})
