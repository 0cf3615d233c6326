"""The built-in tool implementations, keyed by the registry's tool names.

Each lives in its own module, imported when its tool is first asked for: a step loads
its own tool's implementation (and contract) only.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from sba_core.tools.names import ToolName
from sba_tools.tools.base import AnyImplementation, ToolContext, ToolImplementation

MODULES: Mapping[ToolName, str] = {
    ToolName.KNOWLEDGE_SEARCH: "sba_tools.tools.knowledge_search",
    ToolName.RENDER_DOCUMENT: "sba_tools.tools.render_document",
    ToolName.TASK_CREATE: "sba_tools.tools.task_create",
    ToolName.CRM_SYNC: "sba_tools.tools.crm_sync",
    ToolName.HTTP_FETCH: "sba_tools.tools.http_fetch",
    ToolName.LLM_GENERATE: "sba_tools.tools.llm_generate",
}
"""Where each tool's implementation lives (its module's `IMPLEMENTATION`)."""


class _Implementations(Mapping[ToolName, AnyImplementation]):
    """Tool name -> implementation, importing a tool's module on first access."""

    def __getitem__(self, name: ToolName) -> AnyImplementation:
        implementation: AnyImplementation = importlib.import_module(MODULES[name]).IMPLEMENTATION
        return implementation

    def __iter__(self) -> Iterator[ToolName]:
        return iter(MODULES)

    def __len__(self) -> int:
        return len(MODULES)


IMPLEMENTATIONS: Mapping[ToolName, AnyImplementation] = _Implementations()


def implementation_for(name: str) -> AnyImplementation | None:
    try:
        return IMPLEMENTATIONS.get(ToolName(name))
    except ValueError:
        return None


__all__ = ["IMPLEMENTATIONS", "MODULES", "ToolContext", "ToolImplementation", "implementation_for"]
