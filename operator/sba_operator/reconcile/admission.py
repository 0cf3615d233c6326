"""Admission of runs by their Tenant (pure): may this run start, and if not, why not.

`admit_run(spec, tenant, planned_tools)` returns None (admitted) or a
`Refusal(reason, message)`:

| reason | when | what happens to the run |
|---|---|---|
| `TenantNotFound` | no Tenant of that name | fails |
| `TenantNotReady` | the Tenant exists but is not (yet) provisioned | **waits** (stays pending) |
| `TenantSuspended` | `spec.suspended` | fails |
| `ToolNotAllowed` | a planned tool is not in `spec.allowedTools` | fails |

Why `TenantNotReady` waits instead of failing: a run applied together with its
Tenant (one manifest, one GitOps sync) is normally seen moments before the
operator has provisioned the tenant; failing it would be a race the user
cannot win. The run stays `pending` with `status.reason=TenantNotReady` and a
message, and the Tenant driver touches every such run (an annotation) when the
Tenant becomes ready, which re-runs its reconcile — no polling. A run of a
Tenant being deleted also waits: the deletion removes it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, NamedTuple

from sba_core.models.run import AgentRunSpec
from sba_core.planning import Plan, PlanningError
from sba_operator.reconcile.model import TenantView

TENANT_NOT_FOUND: Final = "TenantNotFound"
TENANT_NOT_READY: Final = "TenantNotReady"
TENANT_SUSPENDED: Final = "TenantSuspended"
TOOL_NOT_ALLOWED: Final = "ToolNotAllowed"

WAITING_REASONS: Final = frozenset({TENANT_NOT_READY})
"""Refusals after which the run stays pending instead of failing."""

COND_READY: Final = "Ready"
READY_PHASE: Final = "ready"


class Refusal(NamedTuple):
    reason: str
    message: str

    @property
    def waits(self) -> bool:
        """The run should stay pending and be re-checked, not fail."""
        return self.reason in WAITING_REASONS


def ready_condition(status: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    for cond in (status or {}).get("conditions") or []:
        if isinstance(cond, Mapping) and cond.get("type") == COND_READY:
            return cond
    return None


def is_ready(tenant: Mapping[str, Any]) -> bool:
    """Provisioned and not being deleted: its runs may start."""
    meta = tenant.get("metadata") or {}
    status = tenant.get("status") or {}
    cond = ready_condition(status)
    return (
        not meta.get("deletionTimestamp")
        and status.get("phase") == READY_PHASE
        and cond is not None
        and cond.get("status") == "True"
    )


def tenant_view(tenant: Mapping[str, Any] | None) -> TenantView | None:
    """What a run needs to know about its Tenant; None when there is none."""
    if not tenant:
        return None
    name = str((tenant.get("metadata") or {}).get("name", ""))
    raw = tenant.get("spec") or {}
    allowed = raw.get("allowedTools")
    cond = ready_condition(tenant.get("status")) or {}
    quotas = raw.get("quotas") or {}
    concurrent = quotas.get("maxConcurrentRuns")
    tool_calls = quotas.get("toolCallsPerMinute")
    tokens = quotas.get("tokensPerDay")
    return TenantView(
        name=name,
        suspended=bool(raw.get("suspended", False)),
        allowed_tools=tuple(str(t) for t in allowed) if isinstance(allowed, list) else None,
        max_concurrent_runs=concurrent if isinstance(concurrent, int) else None,
        ready=is_ready(tenant),
        not_ready_message=str(cond.get("message") or "") or None,
        tool_calls_per_minute=tool_calls if isinstance(tool_calls, int) else None,
        tokens_per_day=tokens if isinstance(tokens, int) else None,
    )


def planned_tools(plan: Callable[[], Plan]) -> tuple[str, ...]:
    """The tools a plan uses; () when planning fails (the planning step reports that)."""
    try:
        return tuple(step.tool for step in plan().steps)
    except PlanningError:
        return ()


def admit_run(
    spec: AgentRunSpec,
    tenant: TenantView | Mapping[str, Any] | None,
    tools: Iterable[str],
) -> Refusal | None:
    """None when a run of `spec` planning `tools` may start under `tenant`."""
    view = tenant if isinstance(tenant, TenantView) or tenant is None else tenant_view(tenant)
    if view is None or view.name != spec.tenant:
        return Refusal(TENANT_NOT_FOUND, f"tenant {spec.tenant!r} does not exist")
    if view.suspended:
        return Refusal(TENANT_SUSPENDED, f"tenant {spec.tenant!r} is suspended")
    if not view.ready:
        detail = f": {view.not_ready_message}" if view.not_ready_message else ""
        return Refusal(
            TENANT_NOT_READY,
            f"waiting for tenant {spec.tenant!r} to be provisioned{detail}",
        )
    # An explicit plan's tools count even when planning it failed (bad params, say):
    # a tool the tenant may not use is the more fundamental refusal.
    explicit = [str(step.tool) for step in spec.plan or ()]
    refused = _refused([*tools, *explicit], view.allowed_tools)
    if refused:
        allowed = ", ".join(view.allowed_tools or ()) or "none"
        return Refusal(
            TOOL_NOT_ALLOWED,
            f"tenant {spec.tenant!r} does not allow {', '.join(refused)}; allowed: {allowed}",
        )
    return None


def _refused(tools: Iterable[str], allowed: Sequence[str] | None) -> list[str]:
    if allowed is None:
        return []
    return sorted({tool for tool in tools if tool not in allowed})
