"""llm.generate: params, result and their parts."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, StringConstraints

from sba_core.models.base import WireModel

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
