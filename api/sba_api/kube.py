"""The API's Kubernetes adapter: AgentRuns, Approvals and Tenants over the REST API.

Requests go out on aiohttp (`sba_api.kube_http`), never on a worker thread, each with a
total timeout. `KubeStatusError` and `KubeUnreachable` never leave this module: they
become `TenantNotFound`, `AgentRunNotFound`, `UpstreamError` or `ServiceUnavailable`.
The synchronous `kubernetes` client only loads the connection details
(`build_api_client`) and feeds the watch caches (background threads, not requests).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client, config
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from sba_api.errors import (
    ApiError,
    BadRequest,
    ErrorItem,
    NotFound,
    ServiceUnavailable,
    UpstreamError,
)
from sba_api.kube_http import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_TIMEOUT_SECONDS,
    MERGE_PATCH,
    KubeHttp,
    KubeStatusError,
    KubeUnreachable,
    core_path,
    custom_path,
)
from sba_api.settings import KubernetesSettings
from sba_api.watch_cache import WatchCache
from sba_core.group import (
    AGENTRUN_PLURAL,
    APPROVAL_PLURAL,
    CLUSTERTOOL_PLURAL,
    GROUP,
    TENANT_PLURAL,
    TOOL_PLURAL,
    VERSION,
)
from sba_telemetry import Telemetry

log = logging.getLogger(__name__)

T = TypeVar("T")


class TenantNotFound(NotFound):
    code = "tenant_not_found"


class SpecRejected(BadRequest):
    code = "validation_error"


class AgentRunNotFound(NotFound):
    code = "run_not_found"


class PatchConflict(Exception):
    """The object changed since it was read (409), or a rule refused the change (422).

    Not an ApiError: the run-actions service re-reads the run and decides what to answer.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _translate(exc: Exception, what: str) -> ApiError:
    if isinstance(exc, KubeStatusError):
        message = exc.message
        if exc.status in (401, 403):
            return UpstreamError(f"Kubernetes refused to {what}: {message}")
        if exc.status == 422:
            return UpstreamError(
                f"Kubernetes rejected the object while trying to {what}: {message}"
            )
        if exc.status >= 500:
            return ServiceUnavailable(f"Kubernetes failed to {what}: {message}")
        return UpstreamError(f"Kubernetes answered {exc.status} while trying to {what}: {message}")
    if isinstance(exc, KubeUnreachable) and exc.timed_out:
        return ServiceUnavailable(
            f"Kubernetes did not answer in time while trying to {what}: {exc}"
        )
    return ServiceUnavailable(f"Kubernetes is unreachable while trying to {what}: {exc}")


MAX_TRACKED_WRITES = 10_000


def _version(value: object) -> int | None:
    # Opaque to clients by contract, but etcd revisions in every real API server; when
    # one is not a number the cached copy is simply not trusted over our own write.
    try:
        return int(str(value))
    except ValueError:
        return None


def custom_object_cache(api_client: Any, plural: str) -> WatchCache:
    """Every object of one of our kinds in the cluster, kept by a watch (`WatchCache`)."""
    custom = client.CustomObjectsApi(api_client)
    return WatchCache(
        functools.partial(custom.list_cluster_custom_object, GROUP, VERSION, plural),
        name=plural,
    )


def agentrun_cache(api_client: Any) -> WatchCache:
    return custom_object_cache(api_client, AGENTRUN_PLURAL)


def build_api_client(settings: KubernetesSettings) -> Any:
    """An ApiClient from the kubeconfig path, the in-cluster config, or ~/.kube/config."""
    if settings.kubeconfig is not None:
        return config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(settings.kubeconfig)
        )
    if settings.in_cluster:
        configuration = client.Configuration()
        config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration
        )
        return client.ApiClient(configuration)
    default = Path.home() / ".kube" / "config"
    return config.new_client_from_config(config_file=str(default))  # type: ignore[no-untyped-call]


class KubeClient:
    """AgentRun operations the API needs; nothing else."""

    def __init__(
        self,
        api_client: Any,
        telemetry: Telemetry | None = None,
        *,
        runs_cache: WatchCache | None = None,
        tenants_cache: WatchCache | None = None,
        request_timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        self._runs_cache = runs_cache
        self._tenants_cache = tenants_cache
        self._written: dict[tuple[str, str], int] = {}
        """resourceVersions of AgentRuns this process wrote, until the cache has them."""
        self._api_client = api_client
        self._http = KubeHttp(
            api_client.configuration,
            timeout_seconds=request_timeout_seconds,
            max_connections=max_connections,
        )
        self._closing: asyncio.Task[None] | None = None
        self._telemetry = telemetry

    async def aclose(self) -> None:
        """Close the HTTP session (and the `kubernetes` ApiClient it was configured from)."""
        await self._http.close()
        self._api_client.close()

    def close(self) -> None:
        """`aclose` for callers that cannot await: the session closes in a task on the
        running loop (with no loop running there is nothing left to close it on)."""
        self._api_client.close()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._closing = loop.create_task(self._http.close())

    async def _call(self, what: str, func: Callable[[], Awaitable[T]]) -> T:
        if self._telemetry is None or not trace.get_current_span().is_recording():
            return await self._call_untraced(what, func)
        with self._telemetry.span(f"k8s {what}", kind=SpanKind.CLIENT):
            return await self._call_untraced(what, func)

    async def _call_untraced(self, what: str, func: Callable[[], Awaitable[T]]) -> T:
        try:
            return await func()
        except (KubeStatusError, KubeUnreachable) as exc:
            raise _translate(exc, what) from exc

    async def create_agent_run(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create an AgentRun; a missing namespace is `TenantNotFound`."""
        path = custom_path(GROUP, VERSION, AGENTRUN_PLURAL, namespace=namespace)

        async def call() -> dict[str, Any]:
            try:
                return await self._http.request("POST", path, body=body)
            except KubeStatusError as exc:
                if exc.status == 422:
                    # The cluster's schema and CEL rules refused the client's spec: a 400.
                    raise SpecRejected(
                        f"the run spec is invalid: {exc.message}",
                        details=[ErrorItem(loc="", msg=exc.message[:500])],
                    ) from exc
                if exc.status == 404:
                    if exc.details.get("kind") == "namespaces" or not await self._namespace_exists(
                        namespace
                    ):
                        raise TenantNotFound(
                            f"tenant namespace {namespace!r} does not exist"
                        ) from exc
                    raise UpstreamError(
                        "the AgentRun resource is not installed in the cluster (apply crds/)"
                    ) from exc
                raise

        created = await self._call("create the AgentRun", call)
        self._wrote(created)
        return created

    async def _namespace_exists(self, namespace: str) -> bool:
        try:
            await self._http.request("GET", core_path("namespaces", name=namespace))
        except KubeStatusError as exc:
            # Anything but 404 (e.g. no RBAC to read namespaces): assume it exists.
            return exc.status != 404
        return True

    async def _object_or_none(
        self, what: str, absent: int, method: str, path: str, body: Any = None
    ) -> dict[str, Any] | None:
        """The answer to `method path` as a plain dict; None when it is status `absent`."""

        async def call() -> dict[str, Any] | None:
            try:
                return await self._http.request(method, path, body=body)
            except KubeStatusError as exc:
                if exc.status == absent:
                    return None
                raise

        return await self._call(what, call)

    async def get_agent_run(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The AgentRun, or None when it does not exist (any more)."""
        path = custom_path(GROUP, VERSION, AGENTRUN_PLURAL, namespace=namespace, name=name)
        return await self._object_or_none("read the AgentRun", 404, "GET", path)

    async def read_agent_run(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The AgentRun for display: from the watch cache when it holds it, else read.

        Possibly a few milliseconds behind the API server (never behind this process's
        own create: a name the cache lacks is read directly). Decisions that act on a
        run's state use `get_agent_run`.
        """
        if self._runs_cache is not None:
            cached = self._runs_cache.get(namespace, name)
            if cached is not None and self._caught_up(namespace, name, cached):
                return cached
        return await self.get_agent_run(namespace, name)

    def _wrote(self, obj: dict[str, Any]) -> None:
        if self._runs_cache is None:
            return
        meta = obj.get("metadata") or {}
        version = _version(meta.get("resourceVersion"))
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        if version is not None and key[1]:
            if len(self._written) >= MAX_TRACKED_WRITES:
                self._written.pop(next(iter(self._written)))
            self._written[key] = version

    def _caught_up(self, namespace: str, name: str, cached: dict[str, Any]) -> bool:
        """Read-your-writes: the cached copy is at least as new as our own last write."""
        wrote = self._written.get((namespace, name))
        if wrote is None:
            return True
        have = _version((cached.get("metadata") or {}).get("resourceVersion"))
        if have is None or have < wrote:
            return False
        self._written.pop((namespace, name), None)
        return True

    async def delete_agent_run(self, namespace: str, name: str) -> None:
        """Delete an AgentRun (compensation when recording it failed); absent is fine."""
        path = custom_path(GROUP, VERSION, AGENTRUN_PLURAL, namespace=namespace, name=name)
        await self._object_or_none("delete the AgentRun", 404, "DELETE", path)

    async def patch_agent_run(
        self, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Merge-patch an AgentRun's spec; None when it is gone.

        Put `metadata.resourceVersion` in `patch` for optimistic concurrency: a 409
        (changed since read) or 422 (a CEL rule refused) raises `PatchConflict`.
        """
        path = custom_path(GROUP, VERSION, AGENTRUN_PLURAL, namespace=namespace, name=name)

        async def call() -> dict[str, Any] | None:
            try:
                return await self._http.request("PATCH", path, body=patch, content_type=MERGE_PATCH)
            except KubeStatusError as exc:
                if exc.status == 404:
                    return None
                if exc.status in (409, 422):
                    raise PatchConflict(exc.status, exc.message) from exc
                raise

        patched = await self._call("patch the AgentRun", call)
        if patched is not None:
            self._wrote(patched)
        return patched

    async def create_approval(
        self, namespace: str, body: dict[str, Any]
    ) -> tuple[dict[str, Any], bool]:
        """Create an Approval; (object, created). One of that name already there: (it, False)."""
        path = custom_path(GROUP, VERSION, APPROVAL_PLURAL, namespace=namespace)

        async def call() -> tuple[dict[str, Any], bool]:
            try:
                return await self._http.request("POST", path, body=body), True
            except KubeStatusError as exc:
                if exc.status != 409:
                    raise
            name = str(body["metadata"]["name"])
            existing = custom_path(GROUP, VERSION, APPROVAL_PLURAL, namespace=namespace, name=name)
            return await self._http.request("GET", existing), False

        return await self._call("create the Approval", call)

    async def get_approval(self, namespace: str, name: str) -> dict[str, Any] | None:
        path = custom_path(GROUP, VERSION, APPROVAL_PLURAL, namespace=namespace, name=name)
        return await self._object_or_none("read the Approval", 404, "GET", path)

    async def get_tenant(self, name: str) -> dict[str, Any] | None:
        """The (cluster-scoped) Tenant resource, or None."""
        path = custom_path(GROUP, VERSION, TENANT_PLURAL, name=name)
        return await self._object_or_none("read the Tenant", 404, "GET", path)

    async def list_user_tools(
        self, namespace: str
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(every ClusterTool, the Tools of `namespace`); none of a kind not installed."""

        async def items(path: str) -> list[dict[str, Any]]:
            try:
                listed = await self._http.request("GET", path)
            except KubeStatusError as exc:
                if exc.status == 404:
                    return []
                raise
            return list(listed.get("items") or [])

        async def call() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
            cluster = await items(custom_path(GROUP, VERSION, CLUSTERTOOL_PLURAL))
            namespaced = await items(custom_path(GROUP, VERSION, TOOL_PLURAL, namespace=namespace))
            return cluster, namespaced

        return await self._call("list the tools", call)

    async def read_tenant(self, name: str) -> dict[str, Any] | None:
        """The Tenant for display (the tool catalog): from the watch cache when it holds
        it, else read. Checks that gate an action (quotas, models) use `get_tenant`."""
        if self._tenants_cache is not None:
            cached = self._tenants_cache.get("", name)
            if cached is not None:
                return cached
        return await self.get_tenant(name)

    async def get_secret_value(self, namespace: str, name: str, key: str) -> str | None:
        """One key of a Secret (decoded), or None when the Secret or the key is absent."""
        path = core_path("secrets", namespace=namespace, name=name)
        secret = await self._object_or_none("read the model Secret", 404, "GET", path)
        raw = (secret.get("data") or {}).get(key) if secret is not None else None
        if raw is None:
            return None
        return base64.b64decode(raw).decode("utf-8").strip()

    async def create_tenant(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """Create a Tenant; None when one of that name already exists."""
        path = custom_path(GROUP, VERSION, TENANT_PLURAL)
        return await self._object_or_none("create the Tenant", 409, "POST", path, body)

    async def delete_tenant(self, name: str) -> bool:
        """Delete a Tenant (the operator tears its namespace down); False when absent."""
        path = custom_path(GROUP, VERSION, TENANT_PLURAL, name=name)
        return await self._object_or_none("delete the Tenant", 404, "DELETE", path) is not None

    async def ping(self) -> None:
        """Cheap reachability check (the API server's /version)."""
        await self._call("reach the API server", lambda: self._http.request("GET", "/version"))
