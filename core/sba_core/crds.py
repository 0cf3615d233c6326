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
from sba_core.models.run import AgentRunSpec, AgentRunStatus
from sba_core.models.tenant import TenantSpec, TenantStatus

_IMMUTABLE_RUN_FIELDS = ("tenant", "prompt", "plan", "user")


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
    spec["x-kubernetes-validations"] = [
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
    ]
    return spec


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
        spec_schema=_default_empty_objects(structural_schema(TenantSpec)),
        status_schema=structural_schema(TenantStatus),
        columns=[
            {"name": "Display", "type": "string", "jsonPath": ".spec.displayName"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Namespace", "type": "string", "jsonPath": ".status.namespace"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
        description="A tenant: its namespace, quotas, allowed tools and policies.",
    )


def all_crds() -> dict[str, dict[str, Any]]:
    """File name → manifest."""
    return {"agentruns.yaml": agentrun_crd(), "tenants.yaml": tenant_crd()}


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
