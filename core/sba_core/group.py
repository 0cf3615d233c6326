"""Names of the Kubernetes API group that carries our custom resources."""

from typing import Final

GROUP: Final = "sba-agentic.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

AGENTRUN_KIND: Final = "AgentRun"
AGENTRUN_PLURAL: Final = "agentruns"
AGENTRUN_SINGULAR: Final = "agentrun"
AGENTRUN_SHORT_NAMES: Final = ("ar", "arun")

TENANT_KIND: Final = "Tenant"
TENANT_PLURAL: Final = "tenants"
TENANT_SINGULAR: Final = "tenant"
TENANT_SHORT_NAMES: Final = ("tn",)

APPROVAL_KIND: Final = "Approval"
APPROVAL_PLURAL: Final = "approvals"
APPROVAL_SINGULAR: Final = "approval"
APPROVAL_SHORT_NAMES: Final = ("apr",)

TOOL_KIND: Final = "Tool"
TOOL_PLURAL: Final = "tools"
TOOL_SINGULAR: Final = "tool"
TOOL_SHORT_NAMES: Final = ("tl",)

CLUSTERTOOL_KIND: Final = "ClusterTool"
CLUSTERTOOL_PLURAL: Final = "clustertools"
CLUSTERTOOL_SINGULAR: Final = "clustertool"
CLUSTERTOOL_SHORT_NAMES: Final = ("ctl",)

DELEGATING_APPROVERS_GROUP: Final = "sba-agentic:delegating-approvers"
"""Members (the API's identity) may create Approvals and cancel runs in another user's name."""

# Labels put on every child object so handlers can find their parent without
# listing everything.
LABEL_RUN_UID: Final = f"{GROUP}/run-uid"
LABEL_RUN_NAME: Final = f"{GROUP}/run"
LABEL_STEP: Final = f"{GROUP}/step"
LABEL_ATTEMPT: Final = f"{GROUP}/attempt"
LABEL_TENANT: Final = f"{GROUP}/tenant"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "sba-agentic"


def tenant_namespace(tenant: str) -> str:
    """The namespace a tenant's runs and tool Jobs live in."""
    return f"tenant-{tenant}"
