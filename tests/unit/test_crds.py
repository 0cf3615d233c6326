"""crds/ is generated from the models; these tests keep the two in agreement."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from sba_core.crds import all_crds, render
from sba_core.models.run import AgentRunSpec
from sba_core.tools.names import ToolName

CRDS = Path(__file__).resolve().parents[2] / "crds"


def test_committed_crds_match_the_models() -> None:
    for name, manifest in all_crds().items():
        committed = (CRDS / name).read_text()
        assert committed == render(manifest), f"crds/{name} is stale: run `sba-agentic crds`"


def _spec_schema() -> dict:  # type: ignore[type-arg]
    crd = yaml.safe_load((CRDS / "agentruns.yaml").read_text())
    version = crd["spec"]["versions"][0]
    return version["schema"]["openAPIV3Schema"]["properties"]["spec"]  # type: ignore[no-any-return]


def test_required_fields_agree() -> None:
    required = {f.alias or n for n, f in AgentRunSpec.model_fields.items() if f.is_required()}
    assert set(_spec_schema()["required"]) == required


def test_tool_names_are_not_enumerated() -> None:
    # Users bring tools: the schema checks the name's shape; the catalog checks it exists.
    tool = _spec_schema()["properties"]["plan"]["items"]["properties"]["tool"]
    assert "enum" not in tool
    pattern = re.compile(tool["pattern"])
    assert pattern.match("word-stats")
    assert all(pattern.match(t.value) for t in ToolName)
    assert not pattern.match("Shell Exec!")


def test_status_subresource_and_printer_columns() -> None:
    crd = yaml.safe_load((CRDS / "agentruns.yaml").read_text())
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Phase"] == ".status.phase"
    assert columns["Step"] == ".status.currentStep"
    assert columns["Tenant"] == ".spec.tenant"


def test_no_refs_or_nullable_unions_left() -> None:
    text = (CRDS / "agentruns.yaml").read_text() + (CRDS / "tenants.yaml").read_text()
    assert "$ref" not in text
    assert "anyOf" not in text
