"""The tenant driver: provision a Tenant, keep it in shape, and take it down in order.

- `reconcile(name)` (Tenant created, changed, resumed; or drift of one of its
  objects): the database row, the shared ClusterRoles, the namespace, then every
  object of `tenant_objects.desired_objects` — created, replaced when it drifted,
  deleted when no longer wanted (a removed member's RoleBinding) — and status.
- `object_changed(...)` (a labelled ResourceQuota, LimitRange, NetworkPolicy,
  ServiceAccount or RoleBinding was added, changed or deleted): re-reconciles
  only when the object is missing, differs from what the Tenant wants, or the
  Tenant waits for it (the quota controller counting usage). Our own writes
  come back here as equal objects and stop.
- `finalize(name)` (the Tenant's finalizer): delete its AgentRuns, wait until
  they are gone, delete the provisioned objects and our namespace, write the
  `tenant.deleted` audit entry. Past runs' rows and the audit log stay.

When the Tenant is ready, runs that were waiting for it (`TenantNotReady`) get
an annotation touch, which re-runs their reconcile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import kopf

from sba_core import group
from sba_core.models.tenant import ProvisionedObject, TenantPhase, TenantSpec, TenantStatus
from sba_operator.handlers.errors import to_kopf
from sba_operator.handlers.runs import PostEvent
from sba_operator.kube import Conflict, Kube
from sba_operator.reconcile import KubeEvent, Outcome, decide_namespace, tenant_status
from sba_operator.reconcile.admission import TENANT_NOT_READY, is_ready, ready_condition
from sba_operator.reconcile.tenant_objects import (
    COMPONENT,
    RBAC_GROUP,
    Action,
    Kind,
    Platform,
    build_cluster_roles,
    desired_objects,
    differs,
    gateway_port,
    object_key,
    plan_object,
    replacement,
    stale_objects,
)
from sba_operator.reconcile.tenants import namespace_is_ours, parse_spec
from sba_operator.settings import Settings
from sba_store.audit import AuditRepository
from sba_store.tenants import TenantRepository

log = logging.getLogger(__name__)

ANNOTATION_TENANT_READY: Final = f"{group.GROUP}/tenant-ready"
"""Set on runs waiting for their Tenant when it becomes ready (the value: when)."""
AUDIT_TENANT_DELETED: Final = "tenant.deleted"
RUNS_GONE_RETRY_SECONDS: Final = 2.0
NAMESPACE_GONE_RETRY_SECONDS: Final = 3.0


class RetryLater(Exception):
    """Nothing failed, but the work cannot finish yet (a namespace still terminating)."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


def platform_of(settings: Settings) -> Platform:
    return Platform(
        gateway_namespace=settings.tenants.gateway_namespace,
        gateway_pod_labels=dict(settings.tenants.gateway_pod_labels),
        gateway_port=gateway_port(settings.tools.gateway_url),
    )


def tenant_selector(tenant: str) -> str:
    return (
        f"{group.LABEL_MANAGED_BY}={group.MANAGED_BY},{group.LABEL_TENANT}={tenant},"
        f"{group.LABEL_COMPONENT}={COMPONENT}"
    )


class TenantDriver:
    def __init__(
        self,
        *,
        kube: Kube,
        tenants: TenantRepository,
        post_event: PostEvent,
        audit: AuditRepository | None = None,
        platform: Platform | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.kube = kube
        self.tenants = tenants
        self.audit = audit
        self.post_event = post_event
        self.platform = platform or Platform()
        self.clock = clock
        self._locks: dict[str, asyncio.Lock] = {}
        self._cluster_roles_ok = False
        self.read_tenant: Callable[[str], Awaitable[dict[str, Any] | None]] = kube.get_tenant
        """How drift events read the Tenant: the registration swaps in the watch-fed index
        (a ResourceQuota's status changes with every pod; a GET each was most of our reads).
        Provisioning itself reads it directly: it writes the Tenant's status from it."""

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def _event(self, tenant: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        try:
            self.post_event(tenant, KubeEvent(type_, reason, message))
        except Exception:
            log.warning("could not post event for tenant %s", tenant.get("metadata"))

    # -- provisioning -----------------------------------------------------------------------

    async def reconcile(self, name: str) -> TenantStatus | None:
        async with self._lock(name):
            return await self._reconcile(name)

    async def _reconcile(self, name: str) -> TenantStatus | None:
        tenant = await self.kube.get_tenant(name)
        if tenant is None or (tenant.get("metadata") or {}).get("deletionTimestamp"):
            return None
        ns_name = group.tenant_namespace(name)
        namespace = await self.kube.get_namespace(ns_name)
        decision = decide_namespace(tenant, namespace)
        if decision.spec is None:
            return await self._write_status(tenant, Outcome(problems=decision.problems))
        spec = decision.spec
        await self.tenants.upsert(name, spec.display_name, spec.plan)
        await self.ensure_cluster_roles()
        if decision.create_namespace is not None:
            try:
                namespace = await self.kube.create_namespace(decision.create_namespace)
                self._event(tenant, "Normal", "Provisioned", f"created namespace {ns_name}")
            except Conflict:
                namespace = await self.kube.get_namespace(ns_name)
                if namespace is None:
                    raise
                decision = decide_namespace(tenant, namespace)
        if decision.namespace_patch is not None:
            namespace = await self.kube.patch_namespace(ns_name, decision.namespace_patch)
        if namespace is not None and (namespace.get("metadata") or {}).get("deletionTimestamp"):
            # A namespace is re-created only once it is gone; nothing tells us when.
            await self._write_status(tenant, Outcome(namespace_terminating=True))
            raise RetryLater(f"namespace {ns_name} is terminating", NAMESPACE_GONE_RETRY_SECONDS)
        uid = str((tenant.get("metadata") or {}).get("uid", ""))
        quota = await self._ensure_objects(tenant, name, uid, spec)
        provisioned = [ProvisionedObject(kind="Namespace", name=ns_name)] + [
            ProvisionedObject(kind=kind, name=obj_name, namespace=ns_name)
            for kind, obj_name in (
                object_key(d) for d in desired_objects(name, uid, spec, self.platform)
            )
        ]
        counted = bool(((quota or {}).get("status") or {}).get("hard"))
        waiting = None if counted else "waiting for the quota controller to count the usage"
        status = await self._write_status(tenant, Outcome(provisioned, waiting_for=waiting))
        if status.phase is TenantPhase.READY:
            await self._poke_waiting_runs(ns_name, status)
        return status

    async def _write_status(self, tenant: Mapping[str, Any], outcome: Outcome) -> TenantStatus:
        name = str((tenant.get("metadata") or {}).get("name", ""))
        status, changed = tenant_status(tenant, outcome, self.clock())
        if changed:
            await self.kube.patch_tenant_status(name, status.wire())
            old = ready_condition(tenant.get("status")) or {}
            new = next((c for c in status.conditions if c.type == "Ready"), None)
            if new is not None and (old.get("status"), old.get("reason")) != (
                new.status,
                new.reason,
            ):
                kind = "Normal" if new.status == "True" else "Warning"
                if new.reason in ("Provisioning", "Terminating"):
                    kind = "Normal"
                self._event(tenant, kind, new.reason, new.message)
        return status

    async def ensure_cluster_roles(self, force: bool = False) -> None:
        """The shared tenant ClusterRoles; checked once per process unless `force`."""
        if self._cluster_roles_ok and not force:
            return
        for desired in build_cluster_roles():
            name = str(desired["metadata"]["name"])
            actual = await self.kube.get_cluster_role(name)
            if actual is None:
                try:
                    await self.kube.create_cluster_role(desired)
                    log.info("created ClusterRole %s", name)
                except Conflict:
                    actual = await self.kube.get_cluster_role(name)
            if actual is not None and differs(desired, actual):
                await self.kube.replace_cluster_role(replacement(desired, actual))
                log.info("restored ClusterRole %s", name)
        self._cluster_roles_ok = True

    async def _ensure_objects(
        self, tenant: Mapping[str, Any], name: str, uid: str, spec: TenantSpec
    ) -> dict[str, Any] | None:
        """Bring every object in line; the ResourceQuota as it now stands."""
        ns = group.tenant_namespace(name)
        desired = desired_objects(name, uid, spec, self.platform)
        actual: dict[tuple[str, str], dict[str, Any]] = {}
        for kind in Kind:
            for obj in await self.kube.list_tenant_objects(kind.value, ns, tenant_selector(name)):
                actual[object_key(obj)] = obj
        quota: dict[str, Any] | None = None
        for want in desired:
            key = object_key(want)
            have = actual.get(key)
            result = await self._ensure_one(tenant, ns, want, have)
            if key[0] == Kind.RESOURCE_QUOTA:
                quota = result
        for stale_kind, stale_name in stale_objects(desired, list(actual.values())):
            await self.kube.delete_tenant_object(stale_kind, ns, stale_name)
            self._event(tenant, "Normal", "Deprovisioned", f"deleted {stale_kind} {stale_name}")
        return quota

    async def _ensure_one(
        self,
        tenant: Mapping[str, Any],
        ns: str,
        want: Mapping[str, Any],
        have: Mapping[str, Any] | None,
    ) -> dict[str, Any] | None:
        kind, obj_name = object_key(want)
        action = plan_object(want, have)
        if action is Action.CREATE:
            try:
                created = await self.kube.create_tenant_object(ns, want)
                verb = "created" if not self._seen(tenant) else "restored"
                self._event(tenant, "Normal", "Provisioned", f"{verb} {kind} {obj_name}")
                return created
            except Conflict:
                # Exists without our labels (edited, or not ours yet): take it over below.
                have = await self.kube.get_tenant_object(kind, ns, obj_name)
                if have is None:
                    raise
                action = plan_object(want, have)
        if action is Action.REPLACE and have is not None:
            replaced = await self.kube.replace_tenant_object(ns, replacement(want, have))
            self._event(tenant, "Normal", "Restored", f"{kind} {obj_name} drifted; restored")
            return replaced
        if action is Action.RECREATE:
            await self.kube.delete_tenant_object(kind, ns, obj_name)
            created = await self.kube.create_tenant_object(ns, want)
            self._event(tenant, "Normal", "Provisioned", f"re-created {kind} {obj_name}")
            return created
        return dict(have) if have is not None else None

    @staticmethod
    def _seen(tenant: Mapping[str, Any]) -> bool:
        """Whether this Tenant was provisioned before (a missing object is then restored)."""
        return bool((tenant.get("status") or {}).get("provisioned"))

    async def _poke_waiting_runs(self, ns: str, status: TenantStatus) -> None:
        ready = next((c for c in status.conditions if c.type == "Ready"), None)
        stamp = (
            ready.last_transition_time.isoformat() if ready and ready.last_transition_time else ""
        )
        for run in await self.kube.list_agentruns(ns):
            run_status = run.get("status") or {}
            meta = run.get("metadata") or {}
            if (
                run_status.get("phase", "pending") == "pending"
                and run_status.get("reason") == TENANT_NOT_READY
                and (meta.get("annotations") or {}).get(ANNOTATION_TENANT_READY) != stamp
            ):
                await self.kube.annotate_agentrun(
                    ns, str(meta.get("name", "")), {ANNOTATION_TENANT_READY: stamp}
                )

    # -- drift ------------------------------------------------------------------------------

    async def object_changed(self, tenant_name: str, obj: Mapping[str, Any], deleted: bool) -> None:
        """React to an event on one of our labelled objects."""
        tenant = await self.read_tenant(tenant_name)
        if tenant is None or (tenant.get("metadata") or {}).get("deletionTimestamp"):
            return
        if deleted:
            await self.reconcile(tenant_name)
            return
        spec, _ = parse_spec(tenant)
        if spec is None:
            return
        uid = str((tenant.get("metadata") or {}).get("uid", ""))
        wanted = {object_key(d): d for d in desired_objects(tenant_name, uid, spec, self.platform)}
        want = wanted.get(object_key(obj))
        if (
            want is None
            or differs(want, obj)
            or (obj.get("kind") == Kind.RESOURCE_QUOTA and not is_ready(tenant))
        ):
            await self.reconcile(tenant_name)

    # -- deletion ---------------------------------------------------------------------------

    async def finalize(self, name: str) -> None:
        """Take the tenant down in order; RetryLater while its runs are still going."""
        async with self._lock(name):
            await self._finalize(name)

    async def _finalize(self, name: str) -> None:
        tenant = await self.kube.get_tenant(name)
        if tenant is None:
            return
        ns = group.tenant_namespace(name)
        uid = str((tenant.get("metadata") or {}).get("uid", ""))
        runs = await self.kube.list_agentruns(ns)
        waiting = f"deleting {len(runs)} run(s)" if runs else "deleting the provisioned objects"
        await self._write_status(tenant, Outcome(terminating=True, waiting_for=waiting))
        if runs:
            for run in runs:
                meta = run.get("metadata") or {}
                if not meta.get("deletionTimestamp"):
                    await self.kube.delete_agentrun(ns, str(meta.get("name", "")))
            raise RetryLater(f"waiting for {len(runs)} run(s) to go", RUNS_GONE_RETRY_SECONDS)
        deleted: list[str] = []
        for kind in Kind:
            for obj in await self.kube.list_tenant_objects(kind.value, ns, tenant_selector(name)):
                obj_name = str((obj.get("metadata") or {}).get("name", ""))
                await self.kube.delete_tenant_object(kind.value, ns, obj_name)
                deleted.append(f"{kind.value}/{obj_name}")
        namespace = await self.kube.get_namespace(ns)
        namespace_deleted = namespace is not None and namespace_is_ours(name, namespace)
        if namespace_deleted:
            await self.kube.delete_namespace(ns)
        await self._audit_deleted(name, uid, ns, namespace_deleted, deleted)
        self._event(
            tenant,
            "Normal",
            "Deleted",
            f"runs and {len(deleted)} objects deleted"
            + (f"; namespace {ns} is being deleted" if namespace_deleted else f"; {ns} kept"),
        )

    async def _audit_deleted(
        self, name: str, uid: str, ns: str, namespace_deleted: bool, deleted: list[str]
    ) -> None:
        if self.audit is None:
            return
        for entry in await self.audit.list_for_tenant(name, limit=20):
            if entry.action == AUDIT_TENANT_DELETED and (entry.payload or {}).get("uid") == uid:
                return  # a retried finalizer: written already
        await self.audit.append(
            tenant_id=name,
            actor="operator",
            action=AUDIT_TENANT_DELETED,
            target=f"tenant/{name}",
            payload={
                "uid": uid,
                "namespace": ns,
                "namespaceDeleted": namespace_deleted,
                "objectsDeleted": deleted,
            },
        )


# -- Kopf registration -----------------------------------------------------------------------


class RetrierLike(Protocol):
    def schedule(self, key: str, delay: float, fn: Callable[[], Awaitable[None]]) -> float: ...

    def succeeded(self, key: str) -> None: ...


class TenantHandlerContext(Protocol):
    @property
    def tenants(self) -> TenantDriver: ...

    @property
    def retrier(self) -> RetrierLike: ...


WATCHED_KINDS: Final = (
    ("", "v1", "resourcequotas"),
    ("", "v1", "limitranges"),
    ("", "v1", "serviceaccounts"),
    ("networking.k8s.io", "v1", "networkpolicies"),
    (RBAC_GROUP, "v1", "rolebindings"),
)
OUR_LABELS: Final = {
    group.LABEL_MANAGED_BY: group.MANAGED_BY,
    group.LABEL_COMPONENT: COMPONENT,
}


def _translated(exc: Exception) -> kopf.TemporaryError | kopf.PermanentError:
    if isinstance(exc, RetryLater):
        return kopf.TemporaryError(str(exc), delay=exc.delay)
    return to_kopf(exc)


def register_tenant_handlers(
    registry: kopf.OperatorRegistry,
    context: Callable[[kopf.Memo], TenantHandlerContext],
) -> None:
    """Tenant lifecycle, deletion (finalizer) and drift handlers on `registry`."""

    async def reconcile_or_retry(ctx: TenantHandlerContext, name: str, logger: Any) -> None:
        key = f"tenant:{name}"
        try:
            await ctx.tenants.reconcile(name)
        except Exception as exc:
            mapped = _translated(exc)
            if isinstance(mapped, kopf.TemporaryError):
                delay = ctx.retrier.schedule(
                    key, float(mapped.delay or 5), lambda: reconcile_or_retry(ctx, name, logger)
                )
                logger.warning(f"tenant {name}: {exc}; retrying in {delay:.0f}s")
            else:
                logger.error(f"tenant {name} failed permanently: {exc}", exc_info=exc)
            return
        ctx.retrier.succeeded(key)

    @kopf.on.startup(registry=registry)
    def tenant_watch_filters(settings: kopf.OperatorSettings, **_: Any) -> None:
        # Server-side filtering: only objects we provisioned reach the drift handlers.
        selector = ",".join(f"{k}={v}" for k, v in OUR_LABELS.items())
        for api_group, version, plural in WATCHED_KINDS:
            settings.watching.label_selectors[api_group, version, plural] = selector
        settings.watching.label_selectors[RBAC_GROUP, "v1", "clusterroles"] = selector

    @kopf.on.resume(group.GROUP, group.VERSION, group.TENANT_PLURAL, registry=registry)
    @kopf.on.create(group.GROUP, group.VERSION, group.TENANT_PLURAL, registry=registry)
    @kopf.on.update(group.GROUP, group.VERSION, group.TENANT_PLURAL, registry=registry)
    async def tenant_changed(name: str, memo: kopf.Memo, **_: Any) -> None:
        try:
            await context(memo).tenants.reconcile(name)
        except Exception as exc:
            raise _translated(exc) from exc

    @kopf.on.delete(group.GROUP, group.VERSION, group.TENANT_PLURAL, registry=registry)
    async def tenant_deleted(name: str, memo: kopf.Memo, **_: Any) -> None:
        try:
            await context(memo).tenants.finalize(name)
        except Exception as exc:
            raise _translated(exc) from exc

    labels: dict[str, Any] = {**OUR_LABELS, group.LABEL_TENANT: kopf.PRESENT}

    async def drift(
        event: Mapping[str, Any], memo: kopf.Memo, logger: kopf.Logger, **_: Any
    ) -> None:
        obj = event.get("object") or {}
        tenant = ((obj.get("metadata") or {}).get("labels") or {}).get(group.LABEL_TENANT)
        if not tenant:
            return
        ctx = context(memo)
        try:
            await ctx.tenants.object_changed(str(tenant), obj, event.get("type") == "DELETED")
        except Exception as exc:
            logger.warning(f"tenant {tenant}: reacting to {obj.get('kind')} drift failed: {exc}")
            await reconcile_or_retry(ctx, str(tenant), logger)

    for api_group, version, plural in WATCHED_KINDS:
        kopf.on.event(api_group, version, plural, labels=labels, registry=registry)(drift)

    @kopf.on.event(RBAC_GROUP, "v1", "clusterroles", labels=OUR_LABELS, registry=registry)
    async def cluster_role_drift(memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
        try:
            await context(memo).tenants.ensure_cluster_roles(force=True)
        except Exception as exc:
            logger.warning(f"could not restore the tenant ClusterRoles: {exc}")
