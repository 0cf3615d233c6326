"""The built-in tool implementations, keyed by the registry's tool names."""

from __future__ import annotations

from collections.abc import Mapping

from sba_core.tools.names import ToolName
from sba_tools.tools import knowledge_search, render_document
from sba_tools.tools.base import AnyImplementation, ToolContext, ToolImplementation

IMPLEMENTATIONS: Mapping[ToolName, AnyImplementation] = {
    ToolName.KNOWLEDGE_SEARCH: knowledge_search.IMPLEMENTATION,
    ToolName.RENDER_DOCUMENT: render_document.IMPLEMENTATION,
}


def implementation_for(name: str) -> AnyImplementation | None:
    try:
        return IMPLEMENTATIONS.get(ToolName(name))
    except ValueError:
        return None


__all__ = ["IMPLEMENTATIONS", "ToolContext", "ToolImplementation", "implementation_for"]
