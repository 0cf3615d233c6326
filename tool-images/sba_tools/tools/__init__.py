"""The built-in tool implementations, keyed by the registry's tool names."""

from __future__ import annotations

from collections.abc import Mapping

from sba_core.tools.names import ToolName
from sba_tools.tools import (
    crm_sync,
    http_fetch,
    knowledge_search,
    llm_generate,
    render_document,
    task_create,
)
from sba_tools.tools.base import AnyImplementation, ToolContext, ToolImplementation

IMPLEMENTATIONS: Mapping[ToolName, AnyImplementation] = {
    ToolName.KNOWLEDGE_SEARCH: knowledge_search.IMPLEMENTATION,
    ToolName.RENDER_DOCUMENT: render_document.IMPLEMENTATION,
    ToolName.TASK_CREATE: task_create.IMPLEMENTATION,
    ToolName.CRM_SYNC: crm_sync.IMPLEMENTATION,
    ToolName.HTTP_FETCH: http_fetch.IMPLEMENTATION,
    ToolName.LLM_GENERATE: llm_generate.IMPLEMENTATION,
}


def implementation_for(name: str) -> AnyImplementation | None:
    try:
        return IMPLEMENTATIONS.get(ToolName(name))
    except ValueError:
        return None


__all__ = ["IMPLEMENTATIONS", "ToolContext", "ToolImplementation", "implementation_for"]
