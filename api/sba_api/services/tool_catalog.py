"""The tools a tenant's runs may use, as the API sees them: builtins and user tools.

With watch caches of ClusterTools and Tools (the API process's default) the catalog is
built from memory, again only when one of them changed. Without them (or while they are
not live) ClusterTools and the namespace's Tools are read from the API server and kept
for a few seconds per namespace (concurrent loads of one namespace share one read).
Either way a name the catalog does not know is looked up again at once, so a Tool
applied a moment ago is found (read-your-writes); the operator checks every run again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from sba_api.kube import KubeClient
from sba_api.watch_cache import WatchCache
from sba_core.tools.catalog import ToolCatalog
from sba_core.tools.registry import ToolRegistry

DEFAULT_TTL_SECONDS = 5.0


class ToolCatalogService:
    def __init__(
        self,
        kube: KubeClient | None,
        builtins: ToolRegistry,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        *,
        watched: tuple[WatchCache, WatchCache] | None = None,
    ) -> None:
        """`kube` None: the builtins only (a process without the tool CRDs, unit tests);
        `watched`: (ClusterTools, Tools) watch caches."""
        self._watched = watched
        self._from_watch: tuple[tuple[int, int], ToolCatalog] | None = None
        self._kube = kube
        self._builtins = builtins
        self._ttl = ttl_seconds
        self._cached: dict[str, tuple[float, ToolCatalog]] = {}
        self._loading: dict[str, asyncio.Future[ToolCatalog]] = {}

    @property
    def builtins(self) -> ToolRegistry:
        return self._builtins

    async def catalog_for(self, namespace: str, *, need: Iterable[str] = ()) -> ToolCatalog:
        """The namespace's catalog; re-read when stale or when it lacks a name in `need`."""
        watched = self._watched_catalog()
        if watched is not None:
            known = watched.definitions(namespace)
            if all(n in self._builtins or n in known for n in need):
                return watched
            return await self._load(namespace)  # perhaps not arrived yet: read it
        cached = self._cached.get(namespace)
        fresh = cached is not None and time.monotonic() - cached[0] < self._ttl
        if cached is not None and fresh:
            known = cached[1].definitions(namespace)
            if all(n in self._builtins or n in known for n in need):
                return cached[1]
        return await self._load(namespace)

    def _watched_catalog(self) -> ToolCatalog | None:
        if self._watched is None:
            return None
        cluster, namespaced = (cache.snapshot() for cache in self._watched)
        if cluster is None or namespaced is None:
            return None
        generations = (cluster[0], namespaced[0])
        if self._from_watch is not None and self._from_watch[0] == generations:
            return self._from_watch[1]
        catalog = ToolCatalog(self._builtins).load(cluster[1], namespaced[1])
        self._from_watch = (generations, catalog)
        return catalog

    async def registry_for(self, namespace: str, *, need: Iterable[str] = ()) -> ToolRegistry:
        catalog = await self.catalog_for(namespace, need=need)
        return catalog.registry_for(namespace)

    async def _load(self, namespace: str) -> ToolCatalog:
        pending = self._loading.get(namespace)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[ToolCatalog] = asyncio.get_running_loop().create_future()
        self._loading[namespace] = future
        try:
            cluster, namespaced = (
                await self._kube.list_user_tools(namespace) if self._kube else ([], [])
            )
            catalog = ToolCatalog(self._builtins).load(cluster, namespaced)
            self._cached[namespace] = (time.monotonic(), catalog)
            future.set_result(catalog)
            return catalog
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        finally:
            self._loading.pop(namespace, None)
