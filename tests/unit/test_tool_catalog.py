"""User tools: definitions → registry entries, per-namespace catalogs, their Jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sba_core.intents import actions
from sba_core.tools.catalog import (
    ToolCatalog,
    ToolDefinitionError,
    definition_of,
    tool_spec_from,
)
from sba_core.tools.registry import ToolContractError, builtin_registry
from sba_operator.handlers.webhooks import run_refusal, tool_refusal
from sba_operator.reconcile.jobs import ENTRYPOINT, ENTRYPOINT_CONTAINER, RunRef, build_job
from sba_operator.settings import ToolSettings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "tools"


def _spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "version": "1.0.0",
        "description": "Count words.",
        "image": "ghcr.io/acme/word-stats:1.0.0",
        "command": ["word-stats"],
        "params": {
            "type": "object",
            "required": ["text"],
            "additionalProperties": False,
            "properties": {"text": {"type": "string", "minLength": 1}},
        },
        "result": {"type": "object", "required": ["words"]},
    }
    spec.update(overrides)
    return spec


def _obj(kind: str, name: str, spec: dict[str, Any], namespace: str | None = None) -> Any:
    meta: dict[str, Any] = {"name": name, "generation": 1}
    if namespace:
        meta["namespace"] = namespace
    return {"kind": kind, "metadata": meta, "spec": spec}


def test_a_definition_becomes_a_registry_entry_with_a_json_schema_contract() -> None:
    spec = tool_spec_from("ClusterTool", "word-stats", _spec(sideEffect=True, costEstimate=7))
    assert spec.kind == "ClusterTool"
    assert spec.side_effect
    assert spec.cost_estimate == 7
    assert spec.validate_params({"text": "hello"}).model_dump() == {"text": "hello"}
    with pytest.raises(ToolContractError, match=r"text.*required"):
        spec.validate_params({})
    with pytest.raises(ToolContractError, match="Additional properties"):
        spec.validate_params({"text": "x", "shell": "rm -rf /"})
    with pytest.raises(ToolContractError, match="words"):
        spec.validate_result({"count": 3})
    assert spec.catalog_entry()["image"] == "ghcr.io/acme/word-stats:1.0.0"
    assert spec.catalog_entry()["paramsSchema"]["required"] == ["text"]


@pytest.mark.parametrize(
    ("name", "spec", "message"),
    [
        ("crm.sync", _spec(), "builtin tool's name"),
        ("x", _spec(params={"type": "objekt"}), "not a valid JSON Schema"),
        ("x", _spec(params={"type": "array"}), "must describe an object"),
        ("x", _spec(command=[]), "command"),
        ("x", _spec(env=[{"name": "SBA_STEP_TOKEN", "value": "mine"}]), "sets this variable"),
        ("x", _spec(env=[{"name": "A"}]), "exactly one of value and valueFrom"),
        ("x", _spec(resources={"limits": {"cpu": "lots"}}), "cpu"),
    ],
)
def test_unusable_definitions_are_refused_with_a_reason(
    name: str, spec: dict[str, Any], message: str
) -> None:
    with pytest.raises(ToolDefinitionError, match=message):
        tool_spec_from("Tool", name, spec, namespace="tenant-acme")
    held = definition_of("Tool", _obj("Tool", name, spec, "tenant-acme"))
    assert held.spec is None
    assert held.problem
    assert message in held.problem


def test_a_namespace_sees_the_builtins_the_cluster_tools_and_only_its_own_tools() -> None:
    catalog = ToolCatalog(builtin_registry())
    catalog.put(definition_of("ClusterTool", _obj("ClusterTool", "word-stats", _spec())))
    private = _spec(description="Acme's own word counter.", image="acme/wc:2")
    catalog.put(definition_of("Tool", _obj("Tool", "word-stats", private, "tenant-acme")))
    catalog.put(definition_of("Tool", _obj("Tool", "acme-only", _spec(), "tenant-acme")))

    acme = catalog.registry_for("tenant-acme")
    other = catalog.registry_for("tenant-globex")
    assert "knowledge.search" in acme
    assert "knowledge.search" in other
    # The tenant's Tool shadows the catalog's in its own namespace, and only there.
    assert acme["word-stats"].container
    assert acme["word-stats"].container.image == "acme/wc:2"
    assert other["word-stats"].container
    assert other["word-stats"].container.image == "ghcr.io/acme/word-stats:1.0.0"
    assert "acme-only" in acme
    assert "acme-only" not in other

    catalog.remove("Tool", "word-stats", "tenant-acme")
    assert catalog.registry_for("tenant-acme")["word-stats"].kind == "ClusterTool"
    catalog.remove("ClusterTool", "word-stats")
    assert "word-stats" not in catalog.registry_for("tenant-acme")

    broken = definition_of("Tool", _obj("Tool", "broken", _spec(command=[]), "tenant-acme"))
    catalog.put(broken)
    assert "broken" not in catalog.registry_for("tenant-acme")
    assert "command" in (catalog.problem("tenant-acme", "broken") or "")


def test_the_examples_are_usable_definitions() -> None:
    for path in sorted(EXAMPLES.glob("*/tool.yaml")):
        obj = yaml.safe_load(path.read_text())
        held = definition_of(
            obj["kind"], {**obj, "metadata": {**obj["metadata"], "namespace": "t"}}
        )
        assert held.spec is not None, f"{path}: {held.problem}"
    assert len(list(EXAMPLES.glob("*/tool.yaml"))) >= 2


def test_a_user_tool_runs_its_own_image_behind_the_copied_entrypoint() -> None:
    env = [
        {"name": "PLAIN", "value": "1"},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "hook", "key": "token"}}},
    ]
    spec = tool_spec_from(
        "Tool",
        "notify",
        _spec(
            command=["notify", "--fast"],
            args=["x"],
            env=env,
            runtimeClassName="gvisor",
            resources={"limits": {"memory": "64Mi"}, "requests": {"cpu": "50m"}},
        ),
        namespace="tenant-acme",
    )
    tools = ToolSettings(step_token_secret="s", image="sba-agentic/tool-runtime:dev")
    run = RunRef(uid="u-1", name="run-1", namespace="tenant-acme", tenant="acme")
    job = build_job(run=run, step_id="s1", attempt=1, spec=spec, tools=tools)
    pod = job["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["name"] == ENTRYPOINT_CONTAINER
    assert init["image"] == tools.image
    assert init["command"] == ["sba-step", "install", ENTRYPOINT]
    (main,) = pod["containers"]
    assert main["image"] == "ghcr.io/acme/word-stats:1.0.0"
    assert main["command"] == [ENTRYPOINT, "--", "notify", "--fast"]
    assert main["args"] == ["x"]
    names = [e["name"] for e in main["env"]]
    assert names[:2] == ["PLAIN", "TOKEN"]
    assert "SBA_STEP_TOKEN" in names
    token = next(e for e in main["env"] if e["name"] == "TOKEN")
    assert token["valueFrom"]["secretKeyRef"] == {"name": "hook", "key": "token", "optional": False}
    assert main["resources"]["limits"]["memory"] == "64Mi"
    assert main["resources"]["limits"]["cpu"] == "500m"  # the platform's default stays
    assert main["resources"]["requests"]["cpu"] == "50m"
    assert main["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["runtimeClassName"] == "gvisor"
    assert {v["name"] for v in pod["volumes"]} == {"tmp", "sba-bin"}

    builtin = build_job(
        run=run, step_id="s2", attempt=1, spec=builtin_registry()["knowledge.search"], tools=tools
    )
    builtin_pod = builtin["spec"]["template"]["spec"]
    assert "initContainers" not in builtin_pod
    assert "runtimeClassName" not in builtin_pod
    assert builtin_pod["containers"][0]["command"] == ["sba-tool"]


def test_the_webhook_refuses_what_the_reconcile_would_fail() -> None:
    catalog = ToolCatalog(builtin_registry())
    catalog.put(definition_of("ClusterTool", _obj("ClusterTool", "word-stats", _spec())))
    broken = definition_of("Tool", _obj("Tool", "broken", _spec(command=[]), "tenant-acme"))
    catalog.put(broken)

    def spec(*steps: dict[str, Any]) -> dict[str, Any]:
        return {"tenant": "acme", "prompt": "p", "plan": list(steps)}

    ns = "tenant-acme"
    assert run_refusal(spec({"tool": "word-stats", "params": {"text": "x"}}), ns, catalog) is None
    assert run_refusal({"tenant": "acme", "prompt": "no plan: planned later"}, ns, catalog) is None
    unknown = run_refusal(spec({"tool": "nope"}), ns, catalog)
    assert unknown is not None
    assert "unknown tool 'nope'" in unknown
    bad = run_refusal(spec({"tool": "word-stats", "params": {}}), ns, catalog)
    assert bad is not None
    assert "'text' is a required property" in bad
    unusable = run_refusal(spec({"tool": "broken"}), ns, catalog)
    assert unusable is not None
    assert "cannot be used" in unusable
    assert tool_refusal("Tool", _obj("Tool", "x", _spec(params={"type": 3}), ns))
    assert tool_refusal("ClusterTool", _obj("ClusterTool", "x", _spec())) is None


def test_the_builtin_planner_picks_user_tools_a_prompt_names() -> None:
    catalog = ToolCatalog(builtin_registry())
    free = _spec(params={"type": "object", "properties": {"top": {"type": "integer"}}})
    catalog.put(definition_of("ClusterTool", _obj("ClusterTool", "ticket-count", free)))
    catalog.put(definition_of("ClusterTool", _obj("ClusterTool", "word-stats", _spec())))
    registry = catalog.registry_for("tenant-acme")
    steps = actions("Please run ticket-count and word-stats now.", registry, "en")
    # ticket-count needs nothing; word-stats needs a text the planner must not guess.
    assert [(s.id, s.tool) for s in steps] == [("ticket-count", "ticket-count")]
    assert actions("count the tickets", registry, "en") == []
