"""The Tenant resource (cluster-scoped): who may run what, within which limits.

The operator provisions everything a tenant needs from this one object (its
namespace, quota, limit range, network policies, tool service account and the
members' role bindings), so GitOps, kubectl and the admin API all go through it.
"""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum
from typing import Annotated, Final

from pydantic import AfterValidator, Field, StringConstraints, model_validator

from sba_core.models.approval import ApprovalPolicy
from sba_core.models.base import WireModel
from sba_core.models.run import Condition
from sba_core.tools.names import ToolRef

MAX_EGRESS_ENTRIES: Final = 256
MAX_MEMBERS: Final = 500

Quantity = Annotated[
    str,
    StringConstraints(
        min_length=1,
        max_length=32,
        pattern=r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$",
    ),
]
"""A Kubernetes resource quantity such as `500m`, `2`, `8Gi`."""

_HOST_LABEL: Final = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def _check_egress_entry(value: str) -> str:
    """A host name (optionally `*.`-prefixed), an IP address, or a CIDR; normalised."""
    text = value.strip().lower()
    try:
        if "/" in text:
            return str(ipaddress.ip_network(text, strict=False))
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    host = text[2:] if text.startswith("*.") else text
    labels = host.rstrip(".").split(".")
    if len(host) > 253 or not all(_HOST_LABEL.match(label) for label in labels):
        raise ValueError(f"{value!r} is neither a host name (optionally '*.'-prefixed) nor a CIDR")
    return ("*." if text.startswith("*.") else "") + host.rstrip(".")


EgressEntry = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=256, pattern=r"^(\*\.)?[a-zA-Z0-9.:-]+(/[0-9]{1,3})?$"
    ),
    AfterValidator(_check_egress_entry),
]


class TenantPhase(StrEnum):
    PENDING = "pending"
    READY = "ready"
    FAILED = "failed"
    TERMINATING = "terminating"


class ComputeQuota(WireModel):
    """The namespace's ResourceQuota: what all of the tenant's tool pods may use together."""

    pods: int = Field(default=20, ge=1, le=10_000, description="Pods running at once.")
    cpu: Quantity = Field(default="4", description="requests.cpu and limits.cpu.")
    memory: Quantity = Field(default="8Gi", description="requests.memory and limits.memory.")
    ephemeral_storage: Quantity = Field(
        default="10Gi", description="requests and limits of ephemeral-storage."
    )
    jobs: int = Field(
        default=200,
        ge=1,
        le=100_000,
        description="count/jobs.batch; finished Jobs count until their TTL removes them.",
    )


class TenantQuotas(WireModel):
    max_concurrent_runs: int = Field(default=5, ge=1, le=1000)
    tokens_per_day: int = Field(default=1_000_000, ge=0)
    tool_calls_per_minute: int = Field(default=120, ge=1, le=100_000)
    api_requests_per_minute: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description="API requests per minute for the whole tenant; the API's default when absent.",
    )
    compute: ComputeQuota = Field(default_factory=ComputeQuota)


class MemberKind(StrEnum):
    USER = "User"
    GROUP = "Group"


class MemberRole(StrEnum):
    """The tenant roles of sba_core.auth.permissions (platform-admin is not a tenant role)."""

    VIEWER = "viewer"
    MEMBER = "member"
    APPROVER = "approver"
    TENANT_ADMIN = "tenant-admin"


class TenantMember(WireModel):
    """A Kubernetes user or group and its role in the tenant (a RoleBinding in its namespace)."""

    kind: MemberKind = Field(default=MemberKind.USER)
    name: Annotated[str, StringConstraints(min_length=1, max_length=253)]
    role: MemberRole = Field(default=MemberRole.VIEWER)


class ModelProviderKind(StrEnum):
    BUILTIN = "builtin"
    """The offline extractive model: answers from the run's knowledge hits, no provider."""
    OPENAI = "openai"
    """Any OpenAI-compatible server (OpenAI, vLLM, Ollama, llama.cpp, LiteLLM)."""


class SecretKeyRef(WireModel):
    """One key of a Secret in the tenant's namespace."""

    name: Annotated[
        str,
        StringConstraints(
            min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
        ),
    ]
    key: Annotated[
        str, StringConstraints(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")
    ]


class TenantModel(WireModel):
    """The tenant's language model, used by the API's model gateway for llm.generate steps.

    The API key is read from a Secret in the tenant's namespace by the gateway only; it
    never reaches a tool pod, a run's spec or the database.
    """

    provider: ModelProviderKind = ModelProviderKind.OPENAI
    base_url: (
        Annotated[
            str, StringConstraints(min_length=1, max_length=2048, pattern=r"^https?://[^\s]+$")
        ]
        | None
    ) = Field(default=None, description="The provider's base URL (…/v1).")
    model: Annotated[str, StringConstraints(min_length=1, max_length=200)] = "gpt-4o-mini"
    fallback_model: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = Field(
        default=None, description="Tried when the model fails or its circuit is open."
    )
    api_key_secret_ref: SecretKeyRef | None = Field(
        default=None, description="The provider's API key: a Secret in the tenant's namespace."
    )
    timeout_seconds: int = Field(default=60, ge=1, le=600)


class TenantSpec(WireModel):
    display_name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    plan: Annotated[str, StringConstraints(max_length=40)] = "free"
    quotas: TenantQuotas = Field(default_factory=TenantQuotas)
    allowed_tools: list[ToolRef] | None = Field(
        default=None, description="Tools runs may use; all registered tools when absent."
    )
    suspended: bool = False
    model: TenantModel | None = Field(
        default=None,
        description="The tenant's language model; the deployment's default when absent.",
    )
    approval_policy: ApprovalPolicy | None = Field(
        default=None, description="Which steps of the tenant's runs need a person's approval."
    )
    egress_allowlist: Annotated[list[EgressEntry], Field(max_length=MAX_EGRESS_ENTRIES)] = Field(
        default_factory=list,
        description="Hosts (`api.example.com`, `*.example.com`) tools may reach, enforced by"
        " the tools; CIDRs (`203.0.113.0/24`) are also opened in the NetworkPolicy.",
    )
    members: Annotated[list[TenantMember], Field(max_length=MAX_MEMBERS)] = Field(
        default_factory=list,
        description="Users and groups with a role in the tenant's namespace.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["kind", "name"],
        },
    )

    @model_validator(mode="after")
    def _members_unique(self) -> TenantSpec:
        seen: set[tuple[str, str]] = set()
        for member in self.members:
            key = (member.kind.value, member.name)
            if key in seen:
                raise ValueError(f"member {member.kind.value} {member.name!r} is listed twice")
            seen.add(key)
        return self


class ProvisionedObject(WireModel):
    """One object the operator keeps in shape for the tenant."""

    kind: str
    name: str
    namespace: str | None = None


class TenantStatus(WireModel):
    phase: TenantPhase = TenantPhase.PENDING
    namespace: str | None = None
    conditions: list[Condition] = Field(default_factory=list)
    provisioned: list[ProvisionedObject] = Field(default_factory=list)
    observed_generation: int | None = None
