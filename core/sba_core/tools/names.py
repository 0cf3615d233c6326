"""The names of the registered tools, as the CRD schema and API accept them."""

from enum import StrEnum


class ToolName(StrEnum):
    KNOWLEDGE_SEARCH = "knowledge.search"
    RENDER_DOCUMENT = "render.document"
