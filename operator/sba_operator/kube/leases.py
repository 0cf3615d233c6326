"""coordination.k8s.io/v1 Lease calls for operator membership, as raw JSON, run in threads.

Raw JSON both ways because the client's Lease model serializes `renewTime` without its
fractional seconds whenever they are zero, which the API server rejects as a MicroTime.
Errors come out as the `KubeError`s of `client`.

The calls run on this object's own small thread pool, not the default executor the rest
of the operator shares: a burst of reconcile calls must never delay a renewal past the
lease, or the replica would fence itself (or worse, be expired by its peers) under load.
Give it its own ApiClient too, for the same reason (urllib3's connection pool).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, cast

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from sba_operator.kube.client import _TRANSPORT_ERRORS, _translate

T = TypeVar("T")

_LEASES = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
_LEASE = _LEASES + "/{name}"
_JSON = "application/json"


class LeaseApi:
    """Lease calls in one namespace."""

    def __init__(self, api: k8s.ApiClient, namespace: str, request_timeout: float = 5.0) -> None:
        self._api: Any = api  # param_serialize and call_api are untyped
        self.namespace = namespace
        self._timeout = request_timeout
        # Two threads: a call left running by a timed-out await must not block the next.
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="sba-leases")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _call(self, fn: Callable[[], T]) -> T:
        def run() -> T:
            try:
                return fn()
            except _TRANSPORT_ERRORS as exc:
                raise _translate(exc) from exc

        return await asyncio.get_running_loop().run_in_executor(self._pool, run)

    def _request(
        self,
        method: str,
        path: str,
        name: str | None = None,
        body: Mapping[str, Any] | None = None,
        query: list[tuple[str, str]] | None = None,
    ) -> dict[str, Any]:
        path_params = {"namespace": self.namespace}
        if name is not None:
            path_params["name"] = name
        request = self._api.param_serialize(
            method=method,
            resource_path=path,
            path_params=path_params,
            query_params=query or [],
            header_params={"Accept": _JSON, "Content-Type": _JSON},
            body=dict(body) if body is not None else None,
            auth_settings=["BearerToken"],
        )
        response = self._api.call_api(*request, _request_timeout=self._timeout)
        response.read()
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(http_resp=response, body=None, data=None)
        data = response.data
        return cast(dict[str, Any], json.loads(data)) if data else {}

    async def list(self, label_selector: str) -> list[dict[str, Any]]:
        result = await self._call(
            lambda: self._request("GET", _LEASES, query=[("labelSelector", label_selector)])
        )
        items: list[dict[str, Any]] = result.get("items") or []
        return items

    async def create(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Conflict when a Lease of that name exists."""
        return await self._call(lambda: self._request("POST", _LEASES, body=body))

    async def replace(self, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Guarded by the body's metadata.resourceVersion: Conflict when it changed,
        NotFound when the Lease is gone."""
        return await self._call(lambda: self._request("PUT", _LEASE, name=name, body=body))

    async def delete(self, name: str, resource_version: str | None = None) -> None:
        """Delete; with `resource_version`, only that version of it (Conflict otherwise).
        NotFound when it is gone already."""
        options: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if resource_version is not None:
            options["preconditions"] = {"resourceVersion": resource_version}
        await self._call(lambda: self._request("DELETE", _LEASE, name=name, body=options))
