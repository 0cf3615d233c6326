"""The CustomResourceDefinitions, generated from the pydantic models.

`crds/*.yaml` is the output of `write_crds`; a unit test fails when the two
drift apart, so the models stay the single source of truth.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from sba_core import group
from sba_core.crd_schema import structural_schema
from sba_core.models.approval import ApprovalSpec, ApprovalStatus
from sba_core.models.run import (
    MAX_INPUT_CHARS,
    MAX_PLAN_STEPS,
    AgentRunSpec,
    AgentRunStatus,
)
from sba_core.models.tenant import TenantSpec, TenantStatus
from sba_core.models.tool import ToolDefinitionSpec, ToolStatus
from sba_core.tools.names import ToolName

_IMMUTABLE_RUN_FIELDS = ("tenant", "prompt", "plan", "user")


def _tenant_spec_schema() -> dict[str, Any]:
    spec = _default_empty_objects(structural_schema(TenantSpec))
    # Absent means "the deployment's model": a {} default would pick OpenAI for everyone.
    spec["properties"]["model"].pop("default", None)
    return spec


def _default_empty_objects(schema: dict[str, Any]) -> dict[str, Any]:
    """Give optional sub-objects whose fields all have defaults a `{}` default.

    Without it the API server leaves `spec.options` absent when omitted, and
    neither its field defaults nor the CEL rules that read them apply.
    """
    for prop in schema.get("properties", {}).values():
        if prop.get("type") == "object" and "properties" in prop:
            _default_empty_objects(prop)
            if not prop.get("required") and "default" not in prop:
                prop["default"] = {}
    return schema


def _agentrun_spec_schema() -> dict[str, Any]:
    spec = _default_empty_objects(structural_schema(AgentRunSpec))
    for name in _IMMUTABLE_RUN_FIELDS:
        spec["properties"][name]["x-kubernetes-validations"] = [
            {
                "rule": "self == oldSelf",
                "message": f"spec.{name} cannot be changed once the run exists",
            }
        ]
    plan = spec["properties"]["plan"]
    plan["x-kubernetes-list-type"] = "atomic"
    for name in ("cancel", "approvalPolicy"):  # absent means "not asked for": no {} default
        spec["properties"][name].pop("default", None)
    # A map of step id -> text; Kubernetes' dialect has no propertyNames/patternProperties.
    spec["properties"]["inputs"] = {
        "type": "object",
        "description": spec["properties"]["inputs"].get("description", ""),
        "maxProperties": MAX_PLAN_STEPS,
        "additionalProperties": {"type": "string", "maxLength": MAX_INPUT_CHARS},
        "default": {},
    }
    spec["x-kubernetes-validations"] = [
        *_run_transition_rules(),
        {
            "rule": "!has(self.plan) || size(self.plan) <= self.options.maxSteps",
            "message": "spec.plan has more steps than spec.options.maxSteps allows",
        },
        {
            "rule": "!has(self.plan) || self.plan.all(s, !has(s.id) || "
            "self.plan.filter(t, has(t.id) && t.id == s.id).size() == 1)",
            "message": "spec.plan step ids must be unique",
        },
        {
            "rule": "!has(self.plan) || size(self.plan) > 0",
            "message": "spec.plan, when given, needs at least one step",
        },
        {
            "rule": "!has(self.mode) || self.mode != 'loop' || !has(self.plan)",
            "message": "spec.mode loop lets the model choose the steps: give no spec.plan",
        },
    ]
    return spec


def _run_transition_rules() -> list[dict[str, Any]]:
    """Update rules: cancel is set once, inputs are only added, the run's terms are fixed."""
    rules: list[dict[str, Any]] = [
        {
            "rule": "!has(oldSelf.cancel) || (has(self.cancel) && self.cancel == oldSelf.cancel)",
            "message": "spec.cancel cannot be changed or removed once set",
        },
        {
            "rule": "!has(oldSelf.inputs) || oldSelf.inputs.all(k, has(self.inputs)"
            " && k in self.inputs && self.inputs[k] == oldSelf.inputs[k])",
            "message": "spec.inputs entries can be added, never changed or removed",
        },
    ]
    for name in ("retry", "deadlineSeconds", "approvalPolicy"):
        rules.append(
            {
                "rule": f"has(self.{name}) == has(oldSelf.{name})"
                f" && (!has(self.{name}) || self.{name} == oldSelf.{name})",
                "message": f"spec.{name} cannot be changed once the run exists",
            }
        )
    return rules


def _crd(
    *,
    kind: str,
    plural: str,
    singular: str,
    short_names: tuple[str, ...],
    scope: str,
    spec_schema: dict[str, Any],
    status_schema: dict[str, Any],
    columns: list[dict[str, Any]],
    description: str,
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{group.GROUP}",
            "labels": {group.LABEL_MANAGED_BY: group.MANAGED_BY},
        },
        "spec": {
            "group": group.GROUP,
            "scope": scope,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": singular,
                "shortNames": list(short_names),
                "categories": ["sba-agentic"],
            },
            "versions": [
                {
                    "name": group.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def agentrun_crd() -> dict[str, Any]:
    return _crd(
        kind=group.AGENTRUN_KIND,
        plural=group.AGENTRUN_PLURAL,
        singular=group.AGENTRUN_SINGULAR,
        short_names=group.AGENTRUN_SHORT_NAMES,
        scope="Namespaced",
        spec_schema=_agentrun_spec_schema(),
        status_schema=structural_schema(AgentRunStatus),
        columns=[
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Step", "type": "string", "jsonPath": ".status.currentStep"},
            {"name": "Tenant", "type": "string", "jsonPath": ".spec.tenant"},
            {"name": "Reason", "type": "string", "jsonPath": ".status.reason", "priority": 1},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
        description="A run of an AI agent: a goal planned into sandboxed tool steps.",
    )


def tenant_crd() -> dict[str, Any]:
    return _crd(
        kind=group.TENANT_KIND,
        plural=group.TENANT_PLURAL,
        singular=group.TENANT_SINGULAR,
        short_names=group.TENANT_SHORT_NAMES,
        scope="Cluster",
        spec_schema=_tenant_spec_schema(),
        status_schema=structural_schema(TenantStatus),
        columns=[
            {"name": "Display", "type": "string", "jsonPath": ".spec.displayName"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Namespace", "type": "string", "jsonPath": ".status.namespace"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
        description="A tenant: its namespace, quotas, allowed tools and policies.",
    )


def approval_crd() -> dict[str, Any]:
    spec = structural_schema(ApprovalSpec)
    spec["x-kubernetes-validations"] = [
        {"rule": "self == oldSelf", "message": "an Approval cannot be changed once created"}
    ]
    return _crd(
        kind=group.APPROVAL_KIND,
        plural=group.APPROVAL_PLURAL,
        singular=group.APPROVAL_SINGULAR,
        short_names=group.APPROVAL_SHORT_NAMES,
        scope="Namespaced",
        spec_schema=spec,
        status_schema=structural_schema(ApprovalStatus),
        columns=[
            {"name": "Run", "type": "string", "jsonPath": ".spec.run"},
            {"name": "Step", "type": "string", "jsonPath": ".spec.stepId"},
            {"name": "Decision", "type": "string", "jsonPath": ".spec.decision"},
            {"name": "Approver", "type": "string", "jsonPath": ".spec.approver"},
            {"name": "Outcome", "type": "string", "jsonPath": ".status.outcome"},
            {"name": "Reason", "type": "string", "jsonPath": ".status.reason", "priority": 1},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
        description="A person's answer (approved or denied) to a run step's approval request.",
    )


def _tool_spec_schema() -> dict[str, Any]:
    spec = _default_empty_objects(structural_schema(ToolDefinitionSpec))
    spec["properties"]["retry"].pop("default", None)  # absent: the run's own policy
    for part in ("params", "result"):
        # A JSON Schema, kept as written (the operator checks it is one).
        spec["properties"][part] = {
            "type": "object",
            "description": spec["properties"][part].get("description", ""),
            "x-kubernetes-preserve-unknown-fields": True,
            "default": {"type": "object"},
        }
    env_item = spec["properties"]["env"]["items"]
    env_item["x-kubernetes-validations"] = [
        {
            "rule": "has(self.value) != has(self.valueFrom)",
            "message": "give exactly one of value and valueFrom",
        },
        {
            "rule": "!self.name.startsWith('SBA_') && !self.name.startsWith('OTEL_')"
            " && !(self.name in ['TRACEPARENT', 'HOME', 'PATH'])",
            "message": "the platform sets SBA_*, OTEL_*, TRACEPARENT, HOME and PATH itself",
        },
    ]
    return spec


_BUILTIN_NAMES_RULE = (
    "!(self.metadata.name in ["
    + ", ".join(f"'{n}'" for n in sorted(str(t) for t in ToolName))
    + "])"
)


def _tool_crd(
    kind: str, plural: str, singular: str, short: tuple[str, ...], scope: str
) -> dict[str, Any]:
    crd = _crd(
        kind=kind,
        plural=plural,
        singular=singular,
        short_names=short,
        scope=scope,
        spec_schema=_tool_spec_schema(),
        status_schema=structural_schema(ToolStatus),
        columns=[
            {"name": "Version", "type": "string", "jsonPath": ".spec.version"},
            {"name": "Image", "type": "string", "jsonPath": ".spec.image"},
            {"name": "Side-Effect", "type": "boolean", "jsonPath": ".spec.sideEffect"},
            {"name": "Cost", "type": "integer", "jsonPath": ".spec.costEstimate"},
            {"name": "Valid", "type": "boolean", "jsonPath": ".status.valid"},
            {"name": "Scopes", "type": "string", "jsonPath": ".spec.scopes", "priority": 1},
            {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
        description=(
            "A tool the platform's catalog offers every tenant: any image whose program reads"
            " its params as JSON on stdin and writes its result as JSON on stdout."
            if scope == "Cluster"
            else "A tool private to the tenant whose namespace holds it (shadows a"
            " ClusterTool of the same name): any image whose program reads its params as"
            " JSON on stdin and writes its result as JSON on stdout."
        ),
    )
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    schema["x-kubernetes-validations"] = [
        {"rule": _BUILTIN_NAMES_RULE, "message": "this name is reserved for a builtin tool"}
    ]
    return crd


def tool_crd() -> dict[str, Any]:
    return _tool_crd(
        group.TOOL_KIND,
        group.TOOL_PLURAL,
        group.TOOL_SINGULAR,
        group.TOOL_SHORT_NAMES,
        "Namespaced",
    )


def clustertool_crd() -> dict[str, Any]:
    return _tool_crd(
        group.CLUSTERTOOL_KIND,
        group.CLUSTERTOOL_PLURAL,
        group.CLUSTERTOOL_SINGULAR,
        group.CLUSTERTOOL_SHORT_NAMES,
        "Cluster",
    )


_DELEGATING = f"'{group.DELEGATING_APPROVERS_GROUP}' in request.userInfo.groups"


def _policy(name: str, resource: str, validations: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name, "labels": {group.LABEL_MANAGED_BY: group.MANAGED_BY}},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [group.GROUP],
                        "apiVersions": ["*"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": [resource],
                    }
                ]
            },
            "variables": [{"name": "delegating", "expression": _DELEGATING}],
            "validations": validations,
        },
    }


def _binding(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name, "labels": {group.LABEL_MANAGED_BY: group.MANAGED_BY}},
        "spec": {"policyName": name, "validationActions": ["Deny"]},
    }


APPROVAL_POLICY = f"approvals.{group.GROUP}"
CANCEL_POLICY = f"agentrun-cancel.{group.GROUP}"


def approval_admission_policy() -> dict[str, Any]:
    """An Approval speaks for the user who creates it; nobody edits one afterwards."""
    return _policy(
        APPROVAL_POLICY,
        group.APPROVAL_PLURAL,
        [
            {
                "expression": "request.operation != 'CREATE' || variables.delegating"
                " || object.spec.approver == request.userInfo.username",
                "messageExpression": "'spec.approver must be your own user name ('"
                " + request.userInfo.username + ')'",
                "reason": "Forbidden",
            },
            {
                "expression": "request.operation != 'CREATE' || variables.delegating"
                " || !has(object.spec.groups)"
                " || object.spec.groups.all(g, g in request.userInfo.groups)",
                "message": "spec.groups may only name groups you belong to",
                "reason": "Forbidden",
            },
            {
                "expression": "request.operation != 'UPDATE' || object.spec == oldObject.spec",
                "message": "an Approval's spec cannot be changed",
                "reason": "Forbidden",
            },
        ],
    )


def cancel_admission_policy() -> dict[str, Any]:
    """spec.cancel.requestedBy names the user who sets spec.cancel."""
    return _policy(
        CANCEL_POLICY,
        group.AGENTRUN_PLURAL,
        [
            {
                "expression": "!has(object.spec.cancel)"
                " || (oldObject != null && has(oldObject.spec.cancel))"
                " || variables.delegating"
                " || (has(object.spec.cancel.requestedBy)"
                " && object.spec.cancel.requestedBy == request.userInfo.username)",
                "messageExpression": "'spec.cancel.requestedBy must be your own user name ('"
                " + request.userInfo.username + ')'",
                "reason": "Forbidden",
            }
        ],
    )


def all_crds() -> dict[str, dict[str, Any]]:
    """File name → manifest (CRDs, then the admission policies that guard them)."""
    return {
        "agentruns.yaml": agentrun_crd(),
        "tenants.yaml": tenant_crd(),
        "approvals.yaml": approval_crd(),
        "tools.yaml": tool_crd(),
        "clustertools.yaml": clustertool_crd(),
        "admission-approvals.yaml": approval_admission_policy(),
        "admission-approvals-binding.yaml": _binding(APPROVAL_POLICY),
        "admission-agentrun-cancel.yaml": cancel_admission_policy(),
        "admission-agentrun-cancel-binding.yaml": _binding(CANCEL_POLICY),
    }


def render(manifest: dict[str, Any]) -> str:
    header = "# Generated from sba_core models by `sba-agentic crds`. Do not edit.\n"
    return header + yaml.safe_dump(manifest, sort_keys=False, width=100)


def write_crds(out_dir: str | Path) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, manifest in all_crds().items():
        path = out / name
        path.write_text(render(manifest))
        written.append(path)
    return written
