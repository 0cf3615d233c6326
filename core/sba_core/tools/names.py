"""Tool names: the builtins' fixed names, and the shape every tool name has."""

from enum import StrEnum
from typing import Annotated, Final

from pydantic import StringConstraints

TOOL_NAME_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
"""A Kubernetes object name (DNS subdomain): a user tool's name is its Tool's name."""

ToolRef = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=TOOL_NAME_PATTERN)]
"""A tool's name as runs and tenants name it: a builtin, a ClusterTool or a Tool."""


class ToolName(StrEnum):
    """The builtin tools (reserved: no Tool or ClusterTool may take these names)."""

    KNOWLEDGE_SEARCH = "knowledge.search"
    RENDER_DOCUMENT = "render.document"
    TASK_CREATE = "task.create"
    CRM_SYNC = "crm.sync"
    HTTP_FETCH = "http.fetch"
    USER_INPUT = "user.input"
    LLM_GENERATE = "llm.generate"
