"""The Tool and ClusterTool resources: tools that users bring, run from their own images.

A `ClusterTool` is the platform's catalog (cluster-scoped); a `Tool` is private to the
tenant whose namespace holds it, and shadows a ClusterTool of the same name there. The
builtins' names are reserved. A tool is a program that reads its params as one JSON
object on stdin and writes its result as one JSON object on stdout; the platform's
entrypoint (`sba-step`, copied into the pod by an init container) does the rest.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from pydantic import Field, StringConstraints, model_validator

from sba_core.models.base import WireModel
from sba_core.models.run import RetryPolicy

RESERVED_ENV_PREFIXES: Final = ("SBA_", "OTEL_")
RESERVED_ENV_NAMES: Final = frozenset({"TRACEPARENT", "HOME", "PATH"})
MAX_ENV: Final = 50
MAX_SCHEMA_BYTES: Final = 64 * 1024

EnvName = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
]
K8sName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"),
]
Quantity = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=32, pattern=r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$"
    ),
]
Word = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class SecretKeySelector(WireModel):
    """A key of a Secret in the namespace the tool runs in (the tenant's)."""

    name: K8sName
    key: Annotated[
        str, StringConstraints(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")
    ]
    optional: bool = False


class EnvSource(WireModel):
    secret_key_ref: SecretKeySelector


class ToolEnvVar(WireModel):
    """A plain value, or a Secret's key that Kubernetes itself puts into the pod: a tool's
    credentials never pass through the API or the database."""

    name: EnvName
    value: Annotated[str, StringConstraints(max_length=4096)] | None = None
    value_from: EnvSource | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ToolEnvVar:
        if (self.value is None) == (self.value_from is None):
            raise ValueError(f"env {self.name}: give exactly one of value and valueFrom")
        if self.name.startswith(RESERVED_ENV_PREFIXES) or self.name in RESERVED_ENV_NAMES:
            raise ValueError(f"env {self.name}: the platform sets this variable itself")
        return self


class ToolResourceList(WireModel):
    cpu: Quantity | None = None
    memory: Quantity | None = None
    ephemeral_storage: Quantity | None = Field(default=None, alias="ephemeral-storage")

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in self.model_dump(by_alias=True).items() if v is not None}


class ToolResources(WireModel):
    requests: ToolResourceList = Field(default_factory=ToolResourceList)
    limits: ToolResourceList = Field(default_factory=ToolResourceList)


class ToolDefinitionSpec(WireModel):
    """What a tool author declares: how to run the tool, what it may do, its contracts."""

    version: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        description="The tool's version (e.g. semver), shown in the catalog and the audit."
    )
    description: Annotated[str, StringConstraints(min_length=1, max_length=2000)] = Field(
        description="What the tool does: planners and models choose tools by it."
    )
    image: Annotated[str, StringConstraints(min_length=1, max_length=512)] = Field(
        description="The container image the tool runs in."
    )
    command: Annotated[
        list[Annotated[str, StringConstraints(max_length=4096)]], Field(min_length=1, max_length=64)
    ] = Field(
        description="The program to run (the image's entrypoint is not used): it reads the"
        " params as JSON on stdin and writes the result as JSON on stdout."
    )
    args: Annotated[
        list[Annotated[str, StringConstraints(max_length=4096)]], Field(max_length=64)
    ] = Field(default_factory=list)
    env: Annotated[list[ToolEnvVar], Field(max_length=MAX_ENV)] = Field(default_factory=list)
    resources: ToolResources = Field(default_factory=ToolResources)
    timeout_seconds: int = Field(
        default=120, ge=1, le=86400, description="Each attempt's deadline (Job activeDeadline)."
    )
    retry: RetryPolicy | None = Field(
        default=None, description="Default retries of the tool's steps (a run's own win)."
    )
    side_effect: bool = Field(
        default=False, description="Changes the world: the tenant's approval policy applies."
    )
    scopes: Annotated[list[Word], Field(max_length=20)] = Field(
        default_factory=list, description="What the tool needs, e.g. write:tickets."
    )
    cost_estimate: int = Field(
        default=0, ge=0, le=10**12, description="Estimated cost of one call, in micro-dollars."
    )
    egress: bool = Field(
        default=False,
        description="Connects outside the cluster: the tenant's egress NetworkPolicy applies.",
    )
    params: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object"},
        description="JSON Schema (2020-12) the params must satisfy.",
    )
    result: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object"},
        description="JSON Schema (2020-12) the result must satisfy.",
    )
    runtime_class_name: K8sName | None = Field(
        default=None, description="A RuntimeClass (gVisor, Kata) for stronger isolation."
    )


class ToolStatus(WireModel):
    """Set by the operator: whether the definition is usable, and why not."""

    valid: bool | None = None
    message: str = ""
    observed_generation: int | None = None
