"""The tool registry: every tool's contract, side-effect flag, scopes and cost."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from sba_core.tools.contracts import (
    CrmSyncParams,
    CrmSyncResult,
    HttpFetchParams,
    HttpFetchResult,
    KnowledgeSearchParams,
    KnowledgeSearchResult,
    LlmGenerateParams,
    LlmGenerateResult,
    RenderDocumentParams,
    RenderDocumentResult,
    TaskCreateParams,
    TaskCreateResult,
    UserInputParams,
    UserInputResult,
)
from sba_core.tools.names import ToolName


class ToolContractError(ValueError):
    """Parameters or a result do not fit the tool's contract. Never worth retrying."""


@dataclass(frozen=True)
class ToolSpec:
    """Everything the orchestrator must know about a tool before running it."""

    name: ToolName
    version: str
    description: str
    params_model: type[BaseModel]
    result_model: type[BaseModel]
    side_effect: bool = False
    scopes: tuple[str, ...] = ()
    cost_estimate: int = 0
    """Estimated cost of one call, in micro-dollars."""
    egress: bool = False
    """The tool pod connects to hosts outside the cluster (the tenant's egress allowlist,
    or the deployment's CRM endpoint), so its NetworkPolicy must allow egress."""
    runs_job: bool = True
    """False for `user.input`: the operator settles the step itself, no Job runs."""
    image: str = "sba-agentic/tool-runtime"
    timeout_seconds: int = 120
    limits: Mapping[str, str] = field(
        default_factory=lambda: {"cpu": "500m", "memory": "256Mi", "ephemeral-storage": "64Mi"}
    )

    def validate_params(self, params: Mapping[str, Any]) -> BaseModel:
        try:
            return self.params_model.model_validate(dict(params))
        except ValidationError as exc:
            raise ToolContractError(_describe(self.name, "params", exc)) from exc

    def validate_result(self, result: Mapping[str, Any]) -> BaseModel:
        try:
            return self.result_model.model_validate(dict(result))
        except ValidationError as exc:
            raise ToolContractError(_describe(self.name, "result", exc)) from exc

    def params_schema(self) -> dict[str, Any]:
        """The params' JSON Schema, as a model (OpenAI `tools`) or a client reads it."""
        return self.params_model.model_json_schema(by_alias=True)

    def catalog_entry(self) -> dict[str, Any]:
        return {
            "name": str(self.name),
            "version": self.version,
            "description": self.description,
            "sideEffect": self.side_effect,
            "scopes": list(self.scopes),
            "costEstimate": self.cost_estimate,
            "paramsSchema": self.params_schema(),
            "resultSchema": self.result_model.model_json_schema(by_alias=True),
        }


def _describe(tool: str, what: str, exc: ValidationError) -> str:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()
    )
    return f"{tool} {what} invalid: {problems}"


class ToolRegistry(Mapping[str, ToolSpec]):
    """An immutable name → spec mapping."""

    def __init__(self, specs: list[ToolSpec]) -> None:
        self._specs = {str(spec.name): spec for spec in specs}

    def __getitem__(self, name: str) -> ToolSpec:
        return self._specs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)


def builtin_registry() -> ToolRegistry:
    return ToolRegistry(
        [
            ToolSpec(
                name=ToolName.KNOWLEDGE_SEARCH,
                version="1.0.0",
                description="Hybrid (vector + full-text) search over the tenant's knowledge base.",
                params_model=KnowledgeSearchParams,
                result_model=KnowledgeSearchResult,
                cost_estimate=50,
                scopes=("read:knowledge",),
            ),
            ToolSpec(
                name=ToolName.RENDER_DOCUMENT,
                version="1.0.0",
                description="Render earlier step results into a stored document artifact.",
                params_model=RenderDocumentParams,
                result_model=RenderDocumentResult,
                cost_estimate=200,
                scopes=("write:artifacts",),
            ),
            ToolSpec(
                name=ToolName.TASK_CREATE,
                version="1.0.0",
                description="Create a task in the tenant's task store, once per step "
                "(idempotent across attempts); optionally deliver it to an allowlisted webhook.",
                params_model=TaskCreateParams,
                result_model=TaskCreateResult,
                side_effect=True,
                cost_estimate=100,
                scopes=("write:tasks",),
                egress=True,
                timeout_seconds=60,
            ),
            ToolSpec(
                name=ToolName.CRM_SYNC,
                version="1.0.0",
                description="Upsert contacts and deals into the deployment's CRM, once per "
                "step (Idempotency-Key: <run-id>:<step-id>).",
                params_model=CrmSyncParams,
                result_model=CrmSyncResult,
                side_effect=True,
                cost_estimate=2000,
                scopes=("write:crm",),
                egress=True,
                timeout_seconds=120,
            ),
            ToolSpec(
                name=ToolName.HTTP_FETCH,
                version="1.0.0",
                description="GET a page from a host on the tenant's egress allowlist "
                "(public addresses only, redirects re-checked, size and time capped).",
                params_model=HttpFetchParams,
                result_model=HttpFetchResult,
                cost_estimate=100,
                scopes=("read:web",),
                egress=True,
                timeout_seconds=120,
            ),
            ToolSpec(
                name=ToolName.LLM_GENERATE,
                version="1.0.0",
                description="Ask the tenant's language model (through the API's model gateway)"
                " to write text from a prompt template over the run's goal and earlier steps'"
                " results; the text streams to clients as it is written and becomes the run's"
                " answer. Offline, a builtin model writes an extractive answer with citations.",
                params_model=LlmGenerateParams,
                result_model=LlmGenerateResult,
                cost_estimate=500,
                scopes=("use:model",),
                timeout_seconds=300,
            ),
            ToolSpec(
                name=ToolName.USER_INPUT,
                version="1.0.0",
                description="Wait for a person's input (spec.inputs[<step id>], or POST"
                " /api/v1/runs/{id}/continue); it becomes this step's result. Runs no Job.",
                params_model=UserInputParams,
                result_model=UserInputResult,
                runs_job=False,
            ),
        ]
    )
