"""Parameter and result models of the built-in tools."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)
from pydantic.alias_generators import to_camel

from sba_core.models.base import WireModel


class KnowledgeSearchParams(WireModel):
    query: Annotated[str, StringConstraints(min_length=1, max_length=2000)]
    top_k: int = Field(default=5, ge=1, le=50)


class KnowledgeHit(WireModel):
    document_id: str
    chunk_id: str
    title: str
    snippet: str
    score: float


class KnowledgeSearchResult(WireModel):
    query: str
    hits: list[KnowledgeHit] = Field(default_factory=list)


class DocumentFormat(StrEnum):
    MARKDOWN = "markdown"
    HTML = "html"


class RenderDocumentParams(WireModel):
    title: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    format: DocumentFormat = DocumentFormat.MARKDOWN
    sources: list[str] | None = Field(
        default=None,
        description="Ids of earlier steps whose results go into the document; all when absent.",
    )
    locale: Annotated[str, StringConstraints(min_length=2, max_length=16)] = "en"


class RenderDocumentResult(WireModel):
    artifact_id: str
    title: str
    content_type: str
    size_bytes: int
    sha256: str


# --- the step envelope's shared parts -----------------------------------------------


def step_idempotency_key(run_id: str, step_id: str) -> str:
    """The idempotency key of a step's side effect: the same for every attempt of the step,
    so a retried step never repeats what an earlier attempt already did."""
    return f"{run_id}:{step_id}"


class StepConfig(BaseModel):
    """Per-step configuration the gateway hands to the tool pod with its step.

    Lenient on input (unknown keys ignored) so an older tool image keeps working
    against a newer API.
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    egress_allowlist: list[str] = Field(
        default_factory=list,
        description="Hosts the step may reach: exact names or *.domain wildcards.",
    )
    crm_url: str | None = Field(
        default=None, description="The CRM endpoint crm.sync posts to (deployment setting)."
    )


# --- task.create --------------------------------------------------------------------

MAX_URL_CHARS = 2048


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials")
    try:
        _ = parts.port
    except ValueError as exc:
        raise ValueError("has an invalid port") from exc
    return value


HttpUrl = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_URL_CHARS),
    AfterValidator(_http_url),
]


class TaskCreateParams(WireModel):
    title: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
        | None
    ) = Field(default=None, description="The task's title (or give titleFrom).")
    title_from: (
        Annotated[
            str,
            StringConstraints(
                min_length=1, max_length=40, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
            ),
        ]
        | None
    ) = Field(
        default=None,
        description="An earlier user.input step whose answer is the title (the planner asks"
        " for a title it could not find in the prompt).",
    )
    description: Annotated[str, StringConstraints(max_length=10_000)] | None = None
    due_date: date | None = None
    assignee: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    webhook_url: HttpUrl | None = Field(
        default=None,
        description="Deliver the created task here (POST, JSON); must be on the tenant's "
        "egress allowlist.",
    )

    @model_validator(mode="after")
    def _one_title(self) -> TaskCreateParams:
        if (self.title is None) == (self.title_from is None):
            raise ValueError("give exactly one of title and titleFrom")
        return self


class TaskFields(WireModel):
    """The task itself, as the tool posts it to the gateway (no delivery options)."""

    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    description: Annotated[str, StringConstraints(max_length=10_000)] | None = None
    due_date: date | None = None
    assignee: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None

    @classmethod
    def of(cls, params: TaskCreateParams, title: str | None = None) -> TaskFields:
        """The task to create; `title` is the resolved one when params name `titleFrom`."""
        return cls(
            title=title or params.title or "",
            description=params.description,
            due_date=params.due_date,
            assignee=params.assignee,
        )


class TaskCreated(WireModel):
    """The gateway's answer to POST /internal/v1/tasks (201 created, 200 replay)."""

    task_id: str
    created: bool
    idempotency_key: str
    run_id: str
    step_id: str
    title: str
    description: str | None = None
    due_date: date | None = None
    assignee: str | None = None
    created_at: datetime


class TaskCreateResult(WireModel):
    task_id: str
    created: bool = Field(description="False when an earlier attempt already created it.")
    delivered: bool = Field(description="Whether the task was delivered to webhookUrl.")


# --- crm.sync -----------------------------------------------------------------------

MAX_CRM_RECORDS = 500


class CrmContact(WireModel):
    email: Annotated[
        str,
        StringConstraints(
            strip_whitespace=True, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
        ),
    ]
    name: Annotated[str, StringConstraints(max_length=200)] | None = None
    company: Annotated[str, StringConstraints(max_length=200)] | None = None


class CrmDeal(WireModel):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    amount: float = Field(ge=0, allow_inf_nan=False)
    stage: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=80)]


class CrmSyncMode(StrEnum):
    UPSERT = "upsert"


class CrmScope(StrEnum):
    CONTACTS = "contacts"
    DEALS = "deals"


class CrmSyncParams(WireModel):
    contacts: list[CrmContact] = Field(default_factory=list, max_length=MAX_CRM_RECORDS)
    deals: list[CrmDeal] = Field(default_factory=list, max_length=MAX_CRM_RECORDS)
    scope: Annotated[list[CrmScope], Field(min_length=1, max_length=2)] | None = Field(
        default=None,
        description="Record kinds to sync. Without explicit contacts or deals, the CRM"
        " connector syncs the tenant's records of these kinds changed since the last sync.",
    )
    mode: CrmSyncMode = CrmSyncMode.UPSERT

    @model_validator(mode="after")
    def _something_to_sync(self) -> CrmSyncParams:
        if not self.contacts and not self.deals and not self.scope:
            raise ValueError("give at least one contact or deal, or a scope")
        return self


class CrmSyncCounts(WireModel):
    contacts: int = Field(ge=0)
    deals: int = Field(ge=0)


class CrmSyncResult(WireModel):
    synced: CrmSyncCounts
    remote_id: Annotated[str, StringConstraints(max_length=200)] | None = None


# --- http.fetch ---------------------------------------------------------------------

MIB = 1024 * 1024


class HttpFetchParams(WireModel):
    url: HttpUrl
    max_bytes: int = Field(default=256 * 1024, ge=1, le=MIB)
    timeout_seconds: float = Field(default=10.0, gt=0, le=60)


class HttpFetchResult(WireModel):
    url: str
    final_url: str
    status: int = Field(ge=100, le=599)
    content_type: str | None = None
    text: str = Field(description="The body decoded as text (empty for non-text media types).")
    truncated: bool = Field(description="The body or the text was cut short.")
    byte_count: int = Field(alias="bytes", ge=0, description="Body bytes read.")


class UserInputParams(WireModel):
    """`user.input`: a step that runs no Job; it waits for `spec.inputs[<step id>]`."""

    prompt: Annotated[str, StringConstraints(min_length=1, max_length=2000)] = Field(
        description="What the person is asked."
    )


class UserInputResult(WireModel):
    value: str


# --- llm.generate -------------------------------------------------------------------

MAX_PROMPT_TEMPLATE_CHARS = 8000
MAX_GENERATED_CHARS = 64_000


class LlmGenerateParams(WireModel):
    """A model step: a prompt template over the run's goal and earlier steps' results.

    The template's placeholders are `{goal}` (the run's prompt), `{results}` (every earlier
    result offered, as readable text) and `{step.<id>}` (one step's); `{{`/`}}` are braces.
    The call goes through the API's model gateway, which holds the tenant's model
    configuration; the step's pod never sees a provider credential.
    """

    prompt: Annotated[
        str, StringConstraints(min_length=1, max_length=MAX_PROMPT_TEMPLATE_CHARS)
    ] = Field(default="{goal}", description="The user message's template.")
    system: Annotated[str, StringConstraints(max_length=MAX_PROMPT_TEMPLATE_CHARS)] | None = Field(
        default=None, description="A system message template (the gateway's default when absent)."
    )
    sources: list[str] | None = Field(
        default=None,
        description="Ids of earlier steps whose results the model sees; all when absent.",
    )
    model: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = Field(
        default=None, description="The model to ask; the tenant's configured model when absent."
    )
    temperature: float = Field(default=0.2, ge=0, le=2, allow_inf_nan=False)
    max_tokens: int = Field(default=800, ge=1, le=16_384)
    locale: Annotated[str, StringConstraints(min_length=2, max_length=16)] = Field(
        default="en", description="The language to answer in (BCP 47)."
    )
    agent: bool = Field(
        default=False,
        description="An agent-loop turn: the model is offered the run's tools and either calls"
        " them (each call becomes the run's next step) or answers.",
    )


class LlmToolCall(WireModel):
    """A call a model proposed in an agent-loop turn, checked against the tool's contract."""

    id: Annotated[str, StringConstraints(max_length=200)]
    name: str = Field(description="The registered tool (e.g. `knowledge.search`).")
    arguments: dict[str, Any] = Field(default_factory=dict)


class LlmCitation(WireModel):
    number: int = Field(ge=1, description="As it appears in the text: [1], [2] ...")
    document_id: str
    chunk_id: str
    title: str


class LlmUsage(WireModel):
    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)


class LlmGenerateResult(WireModel):
    text: Annotated[str, StringConstraints(max_length=MAX_GENERATED_CHARS)]
    model: str = Field(description="The model that wrote the text.")
    provider: str = Field(description="`builtin` (offline, extractive) or `openai` (compatible).")
    finish_reason: str | None = None
    usage: LlmUsage = Field(default_factory=LlmUsage)
    citations: list[LlmCitation] = Field(default_factory=list)
    fallback_reasons: list[str] = Field(
        default_factory=list, description="Why earlier models were passed over, in order."
    )
    tool_calls: list[LlmToolCall] = Field(
        default_factory=list,
        description="An agent turn's proposed calls (empty: the text is the answer).",
    )
