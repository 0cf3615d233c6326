"""The names of the registered tools, as the CRD schema and API accept them."""

from enum import StrEnum


class ToolName(StrEnum):
    KNOWLEDGE_SEARCH = "knowledge.search"
    RENDER_DOCUMENT = "render.document"
    TASK_CREATE = "task.create"
    CRM_SYNC = "crm.sync"
    HTTP_FETCH = "http.fetch"
    USER_INPUT = "user.input"
    LLM_GENERATE = "llm.generate"
