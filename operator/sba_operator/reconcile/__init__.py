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
from sba_operator.reconcile.tenants import (
    NamespaceDecision,
    Outcome,
    decide_namespace,
    tenant_status,
    tenant_view,
)

__all__ = [
    "Decision",
    "JobState",
    "KubeEvent",
    "NamespaceDecision",
    "Observation",
    "ObservedJob",
    "ObservedToolCall",
    "Outcome",
    "RunRef",
    "StartStep",
    "TenantView",
    "build_job",
    "build_step_secret",
    "decide_namespace",
    "decide_run",
    "job_name",
    "observe_job",
    "parse_status",
    "tenant_status",
    "tenant_view",
]
