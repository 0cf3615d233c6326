"""The tool registry: every tool's contract, side-effect flag, scopes and cost.

The builtins are fixed here; user tools (Tool, ClusterTool) join them per namespace in
`sba_core.tools.catalog`, as entries of the same kind. A builtin's contracts are named by
where they live (`sba_core.tools.builtin.<tool>`) and imported on first use: building the
registry imports no model, and a tool step loads its own tool's contract only.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from sba_core.tools.contract import Contract, ModelContract, ToolContractError
from sba_core.tools.names import ToolName

if TYPE_CHECKING:
    from pydantic import BaseModel

    from sba_core.models.run import RetryPolicy

__all__ = [
    "DEFAULT_LIMITS",
    "ContainerTool",
    "ToolContractError",
    "ToolRegistry",
    "ToolSpec",
    "builtin_registry",
]

ToolKind = Literal["builtin", "ClusterTool", "Tool"]
DEFAULT_LIMITS: Mapping[str, str] = {"cpu": "500m", "memory": "256Mi", "ephemeral-storage": "64Mi"}
BUILTIN_CONTRACTS = "sba_core.tools.builtin"
"""The package holding one module per builtin tool, with its params and result models."""


def _builtin(module: str, name: str) -> ModelContract:
    """The contract `name` of the builtin whose models live in `BUILTIN_CONTRACTS.module`."""
    return ModelContract(f"{BUILTIN_CONTRACTS}.{module}:{name}")


@dataclass(frozen=True)
class ContainerTool:
    """How a user tool runs: its own image and command, behind the platform's entrypoint."""

    kind: Literal["ClusterTool", "Tool"]
    image: str
    command: tuple[str, ...]
    args: tuple[str, ...] = ()
    env: tuple[Mapping[str, Any], ...] = ()
    """Kubernetes EnvVars: plain values, or secretKeyRefs resolved by the kubelet."""
    requests: Mapping[str, str] = field(default_factory=dict)
    runtime_class_name: str | None = None
    retry: RetryPolicy | None = None
    namespace: str | None = None
    """The Tool's namespace; None for a ClusterTool."""
    generation: int | None = None


@dataclass(frozen=True)
class ToolSpec:
    """Everything the orchestrator must know about a tool before running it."""

    name: str
    version: str
    description: str
    params: Contract
    result: Contract
    side_effect: bool = False
    scopes: tuple[str, ...] = ()
    cost_estimate: int = 0
    """Estimated cost of one call, in micro-dollars."""
    egress: bool = False
    """The tool pod connects to hosts outside the cluster (the tenant's egress allowlist,
    or the deployment's CRM endpoint), so its NetworkPolicy must allow egress."""
    runs_job: bool = True
    """False for `user.input`: the operator settles the step itself, no Job runs."""
    timeout_seconds: int = 120
    limits: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    container: ContainerTool | None = None
    """Set for a user tool; None for a builtin (run by the platform's tool runtime)."""

    @property
    def kind(self) -> ToolKind:
        return self.container.kind if self.container is not None else "builtin"

    def validate_params(self, params: Mapping[str, Any]) -> BaseModel:
        return self.params.validate(params, f"{self.name} params")

    def validate_result(self, result: Mapping[str, Any]) -> BaseModel:
        return self.result.validate(result, f"{self.name} result")

    def params_schema(self) -> dict[str, Any]:
        """The params' JSON Schema, as a model (OpenAI `tools`) or a client reads it."""
        return self.params.schema()

    def catalog_entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "kind": self.kind,
            "sideEffect": self.side_effect,
            "scopes": list(self.scopes),
            "costEstimate": self.cost_estimate,
            "timeoutSeconds": self.timeout_seconds,
            "paramsSchema": self.params_schema(),
            "resultSchema": self.result.schema(),
        }
        if self.container is not None:
            entry["image"] = self.container.image
        return entry


class ToolRegistry(Mapping[str, ToolSpec]):
    """An immutable name → spec mapping."""

    def __init__(self, specs: list[ToolSpec]) -> None:
        self._specs = {spec.name: spec for spec in specs}

    def __getitem__(self, name: str) -> ToolSpec:
        return self._specs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)


def builtin_registry() -> ToolRegistry:
    """The builtin tools. Cheap: each contract is imported when it is first used."""
    return ToolRegistry(
        [
            ToolSpec(
                name=ToolName.KNOWLEDGE_SEARCH.value,
                version="1.0.0",
                description="Hybrid (vector + full-text) search over the tenant's knowledge base.",
                params=_builtin("knowledge_search", "KnowledgeSearchParams"),
                result=_builtin("knowledge_search", "KnowledgeSearchResult"),
                cost_estimate=50,
                scopes=("read:knowledge",),
            ),
            ToolSpec(
                name=ToolName.RENDER_DOCUMENT.value,
                version="1.0.0",
                description="Render earlier step results into a stored document artifact.",
                params=_builtin("render_document", "RenderDocumentParams"),
                result=_builtin("render_document", "RenderDocumentResult"),
                cost_estimate=200,
                scopes=("write:artifacts",),
            ),
            ToolSpec(
                name=ToolName.TASK_CREATE.value,
                version="1.0.0",
                description="Create a task in the tenant's task store, once per step "
                "(idempotent across attempts); optionally deliver it to an allowlisted webhook.",
                params=_builtin("task_create", "TaskCreateParams"),
                result=_builtin("task_create", "TaskCreateResult"),
                side_effect=True,
                cost_estimate=100,
                scopes=("write:tasks",),
                egress=True,
                timeout_seconds=60,
            ),
            ToolSpec(
                name=ToolName.CRM_SYNC.value,
                version="1.0.0",
                description="Upsert contacts and deals into the deployment's CRM, once per "
                "step (Idempotency-Key: <run-id>:<step-id>).",
                params=_builtin("crm_sync", "CrmSyncParams"),
                result=_builtin("crm_sync", "CrmSyncResult"),
                side_effect=True,
                cost_estimate=2000,
                scopes=("write:crm",),
                egress=True,
                timeout_seconds=120,
            ),
            ToolSpec(
                name=ToolName.HTTP_FETCH.value,
                version="1.0.0",
                description="GET a page from a host on the tenant's egress allowlist "
                "(public addresses only, redirects re-checked, size and time capped).",
                params=_builtin("http_fetch", "HttpFetchParams"),
                result=_builtin("http_fetch", "HttpFetchResult"),
                cost_estimate=100,
                scopes=("read:web",),
                egress=True,
                timeout_seconds=120,
            ),
            ToolSpec(
                name=ToolName.LLM_GENERATE.value,
                version="1.0.0",
                description="Ask the tenant's language model (through the API's model gateway)"
                " to write text from a prompt template over the run's goal and earlier steps'"
                " results; the text streams to clients as it is written and becomes the run's"
                " answer. Offline, a builtin model writes an extractive answer with citations.",
                params=_builtin("llm_generate", "LlmGenerateParams"),
                result=_builtin("llm_generate", "LlmGenerateResult"),
                cost_estimate=500,
                scopes=("use:model",),
                timeout_seconds=300,
            ),
            ToolSpec(
                name=ToolName.USER_INPUT.value,
                version="1.0.0",
                description="Wait for a person's input (spec.inputs[<step id>], or POST"
                " /api/v1/runs/{id}/continue); it becomes this step's result. Runs no Job.",
                params=_builtin("user_input", "UserInputParams"),
                result=_builtin("user_input", "UserInputResult"),
                runs_job=False,
            ),
        ]
    )
