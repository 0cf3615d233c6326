"""Parameter and result models of the built-in tools.

Each tool's are defined in its own module under `sba_core.tools.builtin` (a tool step
loads its own tool's only); this module gathers them all for the API and the operator.
"""

from __future__ import annotations

from sba_core.tools.builtin.common import (
    MAX_URL_CHARS,
    HttpUrl,
    StepConfig,
    step_idempotency_key,
)
from sba_core.tools.builtin.crm_sync import (
    MAX_CRM_RECORDS,
    CrmContact,
    CrmDeal,
    CrmScope,
    CrmSyncCounts,
    CrmSyncMode,
    CrmSyncParams,
    CrmSyncResult,
)
from sba_core.tools.builtin.http_fetch import MIB, HttpFetchParams, HttpFetchResult
from sba_core.tools.builtin.knowledge_search import (
    KnowledgeHit,
    KnowledgeSearchParams,
    KnowledgeSearchResult,
)
from sba_core.tools.builtin.llm_generate import (
    MAX_GENERATED_CHARS,
    MAX_PROMPT_TEMPLATE_CHARS,
    LlmCitation,
    LlmGenerateParams,
    LlmGenerateResult,
    LlmToolCall,
    LlmUsage,
)
from sba_core.tools.builtin.render_document import (
    DocumentFormat,
    RenderDocumentParams,
    RenderDocumentResult,
)
from sba_core.tools.builtin.task_create import (
    TaskCreated,
    TaskCreateParams,
    TaskCreateResult,
    TaskFields,
)
from sba_core.tools.builtin.user_input import UserInputParams, UserInputResult

__all__ = [
    "MAX_CRM_RECORDS",
    "MAX_GENERATED_CHARS",
    "MAX_PROMPT_TEMPLATE_CHARS",
    "MAX_URL_CHARS",
    "MIB",
    "CrmContact",
    "CrmDeal",
    "CrmScope",
    "CrmSyncCounts",
    "CrmSyncMode",
    "CrmSyncParams",
    "CrmSyncResult",
    "DocumentFormat",
    "HttpFetchParams",
    "HttpFetchResult",
    "HttpUrl",
    "KnowledgeHit",
    "KnowledgeSearchParams",
    "KnowledgeSearchResult",
    "LlmCitation",
    "LlmGenerateParams",
    "LlmGenerateResult",
    "LlmToolCall",
    "LlmUsage",
    "RenderDocumentParams",
    "RenderDocumentResult",
    "StepConfig",
    "TaskCreateParams",
    "TaskCreateResult",
    "TaskCreated",
    "TaskFields",
    "UserInputParams",
    "UserInputResult",
    "step_idempotency_key",
]
