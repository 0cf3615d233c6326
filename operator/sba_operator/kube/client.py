"""Thin wrappers around the `kubernetes` sync client, run in threads.

Every call returns plain JSON-ready dicts (or None for "not found" on reads)
and raises only the exceptions below, so the layers above never see a
`kubernetes` or `urllib3` type.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from sba_core import group
from sba_telemetry import Telemetry

T = TypeVar("T")

# The client's config helpers and a few ApiClient methods are untyped.
_config: Any = k8s_config

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"


class KubeError(Exception):
    """A Kubernetes API call failed."""


class KubeUnavailable(KubeError):
    """The API server could not be reached (connection refused, timeout, TLS)."""


class ApiError(KubeError):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    """409: the object exists already (create) or changed under us (update)."""


def _translate(exc: Exception) -> KubeError:
    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        reason = str(exc.reason or "")
        message = reason
        body = exc.body
        if body:
            try:
                parsed = json.loads(body)
                message = str(parsed.get("message") or reason)
                reason = str(parsed.get("reason") or reason)
            except (ValueError, AttributeError):
                message = str(body)[:500]
        if status == 404:
            return NotFound(status, reason, message)
        if status == 409:
            return Conflict(status, reason, message)
        if status == 0:
            return KubeUnavailable(message or "no response from the API server")
        return ApiError(status, reason, message)
    return KubeUnavailable(f"{type(exc).__name__}: {exc}")


_TRANSPORT_ERRORS: tuple[type[Exception], ...] = (
    ApiException,
    urllib3.exceptions.HTTPError,
    OSError,
)


def new_api_client(kubeconfig: str | None) -> k8s.ApiClient:
    """An ApiClient from in-cluster config, else `kubeconfig` (or the default kubeconfig)."""
    if kubeconfig is None:
        try:
            configuration = k8s.Configuration()
            _config.load_incluster_config(client_configuration=configuration)
            return k8s.ApiClient(configuration)
        except _config.ConfigException:
            pass
    api: k8s.ApiClient = _config.new_client_from_config(config_file=kubeconfig)
    return api


class Kube:
    """The operator's Kubernetes calls. One instance per process, created at startup."""

    def __init__(
        self,
        api: k8s.ApiClient,
        request_timeout: float = 60.0,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._api = api
        self._telemetry = telemetry
        self._untyped: Any = api
        self._timeout = request_timeout
        self._custom = k8s.CustomObjectsApi(api)
        self._batch = k8s.BatchV1Api(api)
        self._core = k8s.CoreV1Api(api)

    def close(self) -> None:
        self._untyped.close()

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        def run() -> T:
            try:
                return fn(*args, **kwargs)
            except _TRANSPORT_ERRORS as exc:
                raise _translate(exc) from exc

        if self._telemetry is None or not trace.get_current_span().is_recording():
            return await asyncio.to_thread(run)  # only child spans: no trace per poll
        name = getattr(fn, "__name__", "call")
        with self._telemetry.span(f"k8s {name}", kind=SpanKind.CLIENT):
            return await asyncio.to_thread(run)

    def _plain(self, obj: Any) -> dict[str, Any]:
        if isinstance(obj, dict):
            return obj
        return cast(dict[str, Any], self._untyped.sanitize_for_serialization(obj))

    async def _get(self, fn: Callable[..., Any], *args: Any) -> dict[str, Any] | None:
        try:
            obj = await self._call(fn, *args, _request_timeout=self._timeout)
        except NotFound:
            return None
        return self._plain(obj)

    # -- AgentRuns -------------------------------------------------------------------------

    async def get_agentrun(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get(
            self._custom.get_namespaced_custom_object,
            group.GROUP,
            group.VERSION,
            namespace,
            group.AGENTRUN_PLURAL,
            name,
        )

    async def replace_agentrun_status(
        self, namespace: str, name: str, resource_version: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Replace status via the status subresource, guarded by resourceVersion (409 on race)."""
        body = {
            "apiVersion": group.API_VERSION,
            "kind": group.AGENTRUN_KIND,
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": resource_version},
            "status": dict(status),
        }
        obj = await self._call(
            self._custom.replace_namespaced_custom_object_status,
            group.GROUP,
            group.VERSION,
            namespace,
            group.AGENTRUN_PLURAL,
            name,
            body,
            _request_timeout=self._timeout,
        )
        return self._plain(obj)

    # -- Tenants ---------------------------------------------------------------------------

    async def get_tenant(self, name: str) -> dict[str, Any] | None:
        return await self._get(
            self._custom.get_cluster_custom_object,
            group.GROUP,
            group.VERSION,
            group.TENANT_PLURAL,
            name,
        )

    async def patch_tenant_status(self, name: str, status: Mapping[str, Any]) -> dict[str, Any]:
        obj = await self._call(
            self._custom.patch_cluster_custom_object_status,
            group.GROUP,
            group.VERSION,
            group.TENANT_PLURAL,
            name,
            {"status": dict(status)},
            _request_timeout=self._timeout,
        )
        return self._plain(obj)

    # -- Namespaces ------------------------------------------------------------------------

    async def get_namespace(self, name: str) -> dict[str, Any] | None:
        return await self._get(self._core.read_namespace, name)

    async def create_namespace(self, body: Mapping[str, Any]) -> dict[str, Any]:
        obj = await self._call(
            self._core.create_namespace, dict(body), _request_timeout=self._timeout
        )
        return self._plain(obj)

    async def patch_namespace(self, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        obj = await self._call(
            self._core.patch_namespace, name, dict(patch), _request_timeout=self._timeout
        )
        return self._plain(obj)

    # -- Jobs, pods, secrets ---------------------------------------------------------------

    async def list_run_jobs(self, namespace: str, run_uid: str) -> list[dict[str, Any]]:
        result = await self._call(
            self._batch.list_namespaced_job,
            namespace,
            label_selector=f"{group.LABEL_RUN_UID}={run_uid}",
            _request_timeout=self._timeout,
        )
        return [self._plain(item) for item in result.items]

    async def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get(self._batch.read_namespaced_job, name, namespace)

    async def create_job(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        obj = await self._call(
            self._batch.create_namespaced_job, namespace, dict(body), _request_timeout=self._timeout
        )
        return self._plain(obj)

    async def delete_job(self, namespace: str, name: str) -> None:
        with contextlib.suppress(NotFound):
            await self._call(
                self._batch.delete_namespaced_job,
                name,
                namespace,
                propagation_policy="Background",
                _request_timeout=self._timeout,
            )

    async def list_job_pods(self, namespace: str, job_name: str) -> list[dict[str, Any]]:
        result = await self._call(
            self._core.list_namespaced_pod,
            namespace,
            label_selector=f"{JOB_NAME_LABEL}={job_name}",
            _request_timeout=self._timeout,
        )
        return [self._plain(item) for item in result.items]

    async def apply_owned_secret(
        self, namespace: str, body: Mapping[str, Any], owner_uid: str
    ) -> bool:
        """Create the Secret, or refresh its data when it exists and is ours (run-uid label).

        False when a Secret of that name exists but belongs to somebody else.
        """
        try:
            await self._call(
                self._core.create_namespaced_secret,
                namespace,
                dict(body),
                _request_timeout=self._timeout,
            )
            return True
        except Conflict:
            pass
        name = str(body["metadata"]["name"])
        existing = await self._get(self._core.read_namespaced_secret, name, namespace)
        if existing is None:
            raise Conflict(409, "Conflict", f"secret {namespace}/{name} vanished; retry")
        labels = (existing.get("metadata") or {}).get("labels") or {}
        if labels.get(group.LABEL_RUN_UID) != owner_uid:
            return False
        await self._call(
            self._core.patch_namespaced_secret,
            name,
            namespace,
            {"stringData": body.get("stringData", {})},
            _request_timeout=self._timeout,
        )
        return True

    async def delete_secret(self, namespace: str, name: str) -> None:
        with contextlib.suppress(NotFound):
            await self._call(
                self._core.delete_namespaced_secret, name, namespace, _request_timeout=self._timeout
            )

    # -- Tenant provisioning ---------------------------------------------------------------
    # Raw JSON in and out (`_preload_content=False`), so no field the client's models do
    # not know is lost when an object is read, compared and written back.

    def _tenant_api(self, kind: str) -> tuple[Any, str]:
        """(typed API, method suffix) of a namespaced kind a Tenant provisions."""
        apis: dict[str, tuple[Any, str]] = {
            "ResourceQuota": (self._core, "resource_quota"),
            "LimitRange": (self._core, "limit_range"),
            "ServiceAccount": (self._core, "service_account"),
            "NetworkPolicy": (k8s.NetworkingV1Api(self._api), "network_policy"),
            "RoleBinding": (k8s.RbacAuthorizationV1Api(self._api), "role_binding"),
        }
        if kind not in apis:
            raise ValueError(f"not a tenant-provisioned kind: {kind}")
        return apis[kind]

    async def _raw(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        response = await self._call(
            fn, *args, _preload_content=False, _request_timeout=self._timeout, **kwargs
        )
        data = response.data
        return cast(dict[str, Any], json.loads(data)) if data else {}

    async def list_tenant_objects(
        self, kind: str, namespace: str, label_selector: str
    ) -> list[dict[str, Any]]:
        """Objects of `kind` in `namespace` matching the selector; [] when the namespace is gone."""
        api, suffix = self._tenant_api(kind)
        try:
            result = await self._raw(
                getattr(api, f"list_namespaced_{suffix}"), namespace, label_selector=label_selector
            )
        except NotFound:
            return []
        items: list[dict[str, Any]] = result.get("items") or []
        api_version = str(result.get("apiVersion", ""))
        for item in items:  # list items carry no kind of their own
            item.setdefault("kind", kind)
            item.setdefault("apiVersion", api_version)
        return items

    async def get_tenant_object(
        self, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        api, suffix = self._tenant_api(kind)
        try:
            return await self._raw(getattr(api, f"read_namespaced_{suffix}"), name, namespace)
        except NotFound:
            return None

    async def create_tenant_object(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        api, suffix = self._tenant_api(str(body.get("kind")))
        return await self._raw(getattr(api, f"create_namespaced_{suffix}"), namespace, dict(body))

    async def replace_tenant_object(
        self, namespace: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Replace, guarded by the body's metadata.resourceVersion (409 on a race)."""
        api, suffix = self._tenant_api(str(body.get("kind")))
        name = str((body.get("metadata") or {}).get("name", ""))
        return await self._raw(
            getattr(api, f"replace_namespaced_{suffix}"), name, namespace, dict(body)
        )

    async def delete_tenant_object(self, kind: str, namespace: str, name: str) -> None:
        api, suffix = self._tenant_api(kind)
        with contextlib.suppress(NotFound):
            await self._raw(
                getattr(api, f"delete_namespaced_{suffix}"),
                name,
                namespace,
                propagation_policy="Background",
            )

    async def get_cluster_role(self, name: str) -> dict[str, Any] | None:
        rbac = k8s.RbacAuthorizationV1Api(self._api)
        try:
            return await self._raw(rbac.read_cluster_role, name)
        except NotFound:
            return None

    async def create_cluster_role(self, body: Mapping[str, Any]) -> dict[str, Any]:
        rbac = k8s.RbacAuthorizationV1Api(self._api)
        return await self._raw(rbac.create_cluster_role, dict(body))

    async def replace_cluster_role(self, body: Mapping[str, Any]) -> dict[str, Any]:
        rbac = k8s.RbacAuthorizationV1Api(self._api)
        name = str((body.get("metadata") or {}).get("name", ""))
        return await self._raw(rbac.replace_cluster_role, name, dict(body))

    async def delete_namespace(self, name: str) -> None:
        with contextlib.suppress(NotFound):
            await self._call(
                self._core.delete_namespace,
                name,
                propagation_policy="Background",
                _request_timeout=self._timeout,
            )

    async def _list_custom(self, namespace: str, plural: str) -> list[dict[str, Any]]:
        """Every object of one of our kinds in a namespace; none when it is gone."""
        try:
            result = await self._call(
                self._custom.list_namespaced_custom_object,
                group.GROUP,
                group.VERSION,
                namespace,
                plural,
                _request_timeout=self._timeout,
            )
        except NotFound:
            return []
        items: list[dict[str, Any]] = self._plain(result).get("items") or []
        return items

    async def list_agentruns(self, namespace: str) -> list[dict[str, Any]]:
        return await self._list_custom(namespace, group.AGENTRUN_PLURAL)

    async def delete_agentrun(self, namespace: str, name: str) -> None:
        """Delete a run; its Jobs follow through their owner references."""
        with contextlib.suppress(NotFound):
            await self._call(
                self._custom.delete_namespaced_custom_object,
                group.GROUP,
                group.VERSION,
                namespace,
                group.AGENTRUN_PLURAL,
                name,
                propagation_policy="Background",
                _request_timeout=self._timeout,
            )

    async def annotate_agentrun(
        self, namespace: str, name: str, annotations: Mapping[str, str]
    ) -> None:
        """Merge-patch annotations (a no-op patch when unchanged: no event follows)."""
        with contextlib.suppress(NotFound):
            await self._call(
                self._custom.patch_namespaced_custom_object,
                group.GROUP,
                group.VERSION,
                namespace,
                group.AGENTRUN_PLURAL,
                name,
                {"metadata": {"annotations": dict(annotations)}},
                _request_timeout=self._timeout,
            )

    # -- Tools ---------------------------------------------------------------------------

    async def list_user_tools(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(every ClusterTool, every Tool in every namespace): the catalog's first fill."""
        cluster = await self._call(
            self._custom.list_cluster_custom_object,
            group.GROUP,
            group.VERSION,
            group.CLUSTERTOOL_PLURAL,
            _request_timeout=self._timeout,
        )
        namespaced = await self._call(
            self._custom.list_cluster_custom_object,
            group.GROUP,
            group.VERSION,
            group.TOOL_PLURAL,
            _request_timeout=self._timeout,
        )
        return (
            list(self._plain(cluster).get("items") or []),
            list(self._plain(namespaced).get("items") or []),
        )

    async def patch_tool_status(
        self, namespace: str | None, name: str, status: Mapping[str, Any]
    ) -> None:
        """Write a Tool's (namespace given) or ClusterTool's verdict; a vanished one is ignored."""
        body = {"status": dict(status)}
        with contextlib.suppress(NotFound):
            if namespace:
                await self._call(
                    self._custom.patch_namespaced_custom_object_status,
                    group.GROUP,
                    group.VERSION,
                    namespace,
                    group.TOOL_PLURAL,
                    name,
                    body,
                    _request_timeout=self._timeout,
                )
            else:
                await self._call(
                    self._custom.patch_cluster_custom_object_status,
                    group.GROUP,
                    group.VERSION,
                    group.CLUSTERTOOL_PLURAL,
                    name,
                    body,
                    _request_timeout=self._timeout,
                )

    # -- Approvals -------------------------------------------------------------------------

    async def list_approvals(self, namespace: str) -> list[dict[str, Any]]:
        return await self._list_custom(namespace, group.APPROVAL_PLURAL)

    async def patch_approval_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None:
        """Write an Approval's outcome (status subresource); a vanished Approval is ignored."""
        with contextlib.suppress(NotFound):
            await self._call(
                self._custom.patch_namespaced_custom_object_status,
                group.GROUP,
                group.VERSION,
                namespace,
                group.APPROVAL_PLURAL,
                name,
                {"status": dict(status)},
                _request_timeout=self._timeout,
            )
