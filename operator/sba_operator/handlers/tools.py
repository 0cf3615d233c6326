"""User tools: the in-memory catalog of ClusterTools and Tools, fed by their watch events.

The catalog is filled by one LIST at start-up (before any run is reconciled, so no run
meets a half-known catalog) and then kept current by Kopf's watch events; a reconcile
never reads tools from the API server. Each definition's verdict (usable, or why not)
is written to its status, so `kubectl get tools` shows a broken contract at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import kopf

from sba_core import group
from sba_core.tools.catalog import Definition, ToolCatalog, UserKind, definition_of
from sba_operator.handlers.errors import to_kopf
from sba_operator.kube import Kube

log = logging.getLogger(__name__)


class ToolDriver:
    def __init__(self, kube: Kube, catalog: ToolCatalog) -> None:
        self.kube = kube
        self.catalog = catalog

    async def load(self) -> None:
        cluster, namespaced = await self.kube.list_user_tools()
        self.catalog.load(cluster, namespaced)
        log.info("tool catalog loaded: %d ClusterTools, %d Tools", len(cluster), len(namespaced))

    async def changed(
        self, kind: UserKind, event_type: str | None, body: Mapping[str, Any]
    ) -> None:
        meta = body.get("metadata") or {}
        name = str(meta.get("name", ""))
        namespace = meta.get("namespace") if kind == "Tool" else None
        if event_type == "DELETED":
            self.catalog.remove(kind, name, namespace)
            return
        definition = definition_of(kind, body)
        self.catalog.put(definition)
        await self._report(definition, body)

    async def _report(self, definition: Definition, body: Mapping[str, Any]) -> None:
        status = body.get("status") or {}
        generation = (body.get("metadata") or {}).get("generation")
        wanted = {
            "valid": definition.spec is not None,
            "message": definition.problem or "",
            "observedGeneration": generation,
        }
        if all(status.get(k) == v for k, v in wanted.items()):
            return  # our own status write coming back: nothing to do
        if definition.problem:
            log.warning("unusable tool definition: %s", definition.problem)
        await self.kube.patch_tool_status(definition.namespace, definition.name, wanted)


class _HasTools(Protocol):
    tools: ToolDriver


def register_tool_handlers(
    registry: kopf.OperatorRegistry, ctx_of: Callable[[kopf.Memo], _HasTools]
) -> None:
    """Watch handlers for ClusterTools and Tools on `registry`."""

    for kind, plural in (
        ("ClusterTool", group.CLUSTERTOOL_PLURAL),
        ("Tool", group.TOOL_PLURAL),
    ):

        def make(kind: UserKind) -> Callable[..., Any]:
            async def tool_event(
                event: Mapping[str, Any], body: kopf.Body, memo: kopf.Memo, **_: Any
            ) -> None:
                try:
                    await ctx_of(memo).tools.changed(kind, event.get("type"), body)
                except Exception as exc:
                    raise to_kopf(exc) from exc

            tool_event.__name__ = f"{kind.lower()}_event"
            return tool_event

        kopf.on.event(group.GROUP, group.VERSION, plural, registry=registry)(
            make(kind)  # type: ignore[arg-type]
        )
