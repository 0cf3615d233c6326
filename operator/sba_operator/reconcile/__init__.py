"""Pure decisions: given what was observed, what the operator should do. No I/O here."""

from sba_operator.reconcile.jobs import RunRef, build_job, build_step_secret, job_name
from sba_operator.reconcile.model import (
    Decision,
    JobState,
    KubeEvent,
    Observation,
    ObservedJob,
    ObservedToolCall,
    StartStep,
    TenantView,
    observe_job,
)
from sba_operator.reconcile.runs import decide_run, parse_status
from sba_operator.reconcile.tenants import TenantDecision, decide_tenant, tenant_view

__all__ = [
    "Decision",
    "JobState",
    "KubeEvent",
    "Observation",
    "ObservedJob",
    "ObservedToolCall",
    "RunRef",
    "StartStep",
    "TenantDecision",
    "TenantView",
    "build_job",
    "build_step_secret",
    "decide_run",
    "decide_tenant",
    "job_name",
    "observe_job",
    "parse_status",
    "tenant_view",
]
