"""Kopf indexes: the cluster state a reconcile reads, kept by one watch per kind.

Kopf lists each kind once, follows it with a watch, and calls these functions on
every event before any handler sees it; it starts no handler until every index has
its first listing. So a reconcile finds the run's Jobs, pods, Approvals, Tenant and
the namespace's other runs in memory (`sba_operator.kube.view.IndexedReads`) instead
of asking the API server each time. What each index holds, and under which keys, is
in `sba_operator.kube.view`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import kopf

from sba_core import group
from sba_operator.kube.view import (
    IndexLike,
    index_agentrun,
    index_approval,
    index_job,
    index_pod,
    index_tenant,
)

AGENTRUNS: Final = "sba_agentruns_index"
APPROVALS: Final = "sba_approvals_index"
TENANTS: Final = "sba_tenants_index"
JOBS: Final = "sba_jobs_index"
PODS: Final = "sba_pods_index"
NAMES: Final = (AGENTRUNS, APPROVALS, TENANTS, JOBS, PODS)
"""Also the names of the handlers' kwargs Kopf passes them as."""


@dataclass(frozen=True)
class KopfRunIndexes:
    """The live indexes, as Kopf passes them to every handler (they update in place)."""

    agentruns: IndexLike
    approvals: IndexLike
    tenants: IndexLike
    jobs: IndexLike
    pods: IndexLike

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> KopfRunIndexes | None:
        """From a handler's kwargs; None when Kopf passed none (indexes not registered)."""
        if not all(name in kwargs for name in NAMES):
            return None
        return cls(
            agentruns=kwargs[AGENTRUNS],
            approvals=kwargs[APPROVALS],
            tenants=kwargs[TENANTS],
            jobs=kwargs[JOBS],
            pods=kwargs[PODS],
        )


def _raw(body: kopf.Body) -> Mapping[str, Any]:
    # A Body's top-level items are the event's own dicts: no copy of the object.
    return {key: body[key] for key in body}


def register_indexes(registry: kopf.OperatorRegistry) -> None:
    @kopf.index(group.GROUP, group.VERSION, group.AGENTRUN_PLURAL, id=AGENTRUNS, registry=registry)
    def agentruns(body: kopf.Body, **_: Any) -> dict[Any, Any]:
        return index_agentrun(_raw(body))

    @kopf.index(group.GROUP, group.VERSION, group.APPROVAL_PLURAL, id=APPROVALS, registry=registry)
    def approvals(body: kopf.Body, **_: Any) -> dict[Any, Any]:
        return index_approval(_raw(body))

    @kopf.index(group.GROUP, group.VERSION, group.TENANT_PLURAL, id=TENANTS, registry=registry)
    def tenants(body: kopf.Body, **_: Any) -> dict[Any, Any]:
        return index_tenant(_raw(body))

    # Jobs and pods are watched with the run-uid label selector (server side, see
    # `configure_kopf`): only our tool Jobs and their pods reach the operator.
    @kopf.index(
        "batch",
        "v1",
        "jobs",
        id=JOBS,
        labels={group.LABEL_RUN_UID: kopf.PRESENT},
        registry=registry,
    )
    def jobs(body: kopf.Body, **_: Any) -> dict[Any, Any]:
        return index_job(_raw(body))

    @kopf.index(
        "", "v1", "pods", id=PODS, labels={group.LABEL_RUN_UID: kopf.PRESENT}, registry=registry
    )
    def pods(body: kopf.Body, **_: Any) -> dict[Any, Any]:
        return index_pod(_raw(body))
