"""Tool pods start fast: a step loads its own tool's contract and implementation only.

The registry names each builtin's contract without importing it; `StepRunner.prepare`
imports the step's tool and nothing of the others. Checked in fresh interpreters (what
is in `sys.modules` after a step is prepared) and, in process, on the registry itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from pydantic import BaseModel

import sba_core.tools.contracts as contracts
from sba_core.tools.contract import ModelContract
from sba_core.tools.registry import BUILTIN_CONTRACTS, builtin_registry
from sba_tools.tools import IMPLEMENTATIONS, MODULES

PARAMS: dict[str, dict[str, Any]] = {
    "knowledge.search": {"query": "refund policy"},
    "render.document": {"title": "Brief"},
    "task.create": {"title": "Call the customer back"},
    "crm.sync": {"scope": ["contacts"]},
    "http.fetch": {"url": "https://example.com/"},
    "llm.generate": {},
}
ALSO_NEEDS = {"render.document": {f"{BUILTIN_CONTRACTS}.knowledge_search"}}
"""Contract modules a tool's implementation reads besides its own (render.document
renders knowledge.search results)."""
NEVER = (
    "sba_core.tools.contracts",
    "sba_core.models.run",
    "sba_core.models.approval",
    "jsonschema",
)
"""The aggregate of every contract, the run models, and the user tools' schema checker."""

# Prepares one step (no gateway call happens), then does a whole knowledge.search step
# against an in-memory gateway, and prints the modules that got imported.
SCRIPT = """
import io, json, sys
from sba_tools.gateway import StepEnvelope
from sba_tools.jsonlog import JsonLogger
from sba_tools.runtime import StepRunner
from sba_tools.settings import RuntimeSettings

tool, params, full = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3] == "run"
step = StepEnvelope.model_validate(
    {"runId": "r1", "tenant": "t", "stepId": "s1", "attempt": 1, "tool": tool, "params": params}
)

class Gateway:
    posted = None
    def get_step(self):
        return step
    def search_knowledge(self, params):
        from sba_core.tools.builtin.knowledge_search import KnowledgeSearchResult
        return KnowledgeSearchResult(query=params.query, hits=[])
    def post_result(self, *, success, result, error):
        Gateway.posted = (success, result, error)
        return {"callId": "c1"}

settings = RuntimeSettings(
    gateway_url="http://127.0.0.1:9", step_token="x", run_id="r1", step_id="s1"
)
runner = StepRunner(settings, JsonLogger(io.StringIO()), Gateway())
if full:
    outcome = runner.run()
    assert outcome.code == 0 and Gateway.posted[0], (outcome.message, Gateway.posted)
else:
    runner.prepare(step)
print(json.dumps(sorted(sys.modules)))
"""


def _start(tool: str, *, full: bool = False) -> subprocess.Popen[str]:
    argv = [sys.executable, "-c", SCRIPT, tool, json.dumps(PARAMS[tool]), "run" if full else "prep"]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _modules(proc: subprocess.Popen[str]) -> set[str]:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return set(json.loads(out))


@pytest.fixture(scope="module")
def loaded() -> dict[str, set[str]]:
    """Per tool, the modules a fresh runtime holds once that tool's step is prepared."""
    procs = {tool: _start(tool) for tool in PARAMS}  # all at once: each takes a while
    return {tool: _modules(proc) for tool, proc in procs.items()}


def _contract_modules(tool: str) -> set[str]:
    spec = builtin_registry()[tool]
    refs = [c.ref for c in (spec.params, spec.result) if isinstance(c, ModelContract)]
    return {ref.partition(":")[0] for ref in refs}


def test_every_builtin_job_is_covered() -> None:
    runs_job = {name for name, spec in builtin_registry().items() if spec.runs_job}
    assert runs_job == set(PARAMS) == {str(name) for name in MODULES}


@pytest.mark.parametrize("tool", sorted(PARAMS))
def test_a_step_loads_its_own_tool_only(tool: str, loaded: dict[str, set[str]]) -> None:
    modules = loaded[tool]
    own_impl = MODULES[tool]  # type: ignore[index]
    assert own_impl in modules
    assert not {m for m in MODULES.values() if m != own_impl} & modules

    own_contracts = _contract_modules(tool)
    assert own_contracts <= modules
    builtin = {m for m in modules if m.startswith(BUILTIN_CONTRACTS + ".")}
    shared = {f"{BUILTIN_CONTRACTS}.common"}
    assert builtin - own_contracts - shared - ALSO_NEEDS.get(tool, set()) == set()

    assert not set(NEVER) & modules


def test_a_whole_step_stays_within_its_tool() -> None:
    modules = _modules(_start("knowledge.search", full=True))
    assert not {m for m in MODULES.values() if not m.endswith(".knowledge_search")} & modules
    assert {m for m in modules if m.startswith(BUILTIN_CONTRACTS + ".")} == {
        f"{BUILTIN_CONTRACTS}.common",
        f"{BUILTIN_CONTRACTS}.knowledge_search",
    }
    assert not set(NEVER) & modules


# --- the registry, in process -------------------------------------------------------------


def test_building_the_registry_loads_no_contract() -> None:
    registry = builtin_registry()
    contracts_of = [c for s in registry.values() for c in (s.params, s.result)]
    assert all(isinstance(c, ModelContract) and not c.loaded for c in contracts_of)

    registry["knowledge.search"].validate_params({"query": "q"})
    loaded = {
        (name, part)
        for name, spec in registry.items()
        for part, c in (("params", spec.params), ("result", spec.result))
        if isinstance(c, ModelContract) and c.loaded
    }
    assert loaded == {("knowledge.search", "params")}


def test_the_lazy_contracts_are_the_models_the_api_uses() -> None:
    """One definition per contract: the registry resolves to sba_core.tools.contracts'."""
    for spec in builtin_registry().values():
        for contract in (spec.params, spec.result):
            assert isinstance(contract, ModelContract)
            model = contract.model
            assert getattr(contracts, model.__name__) is model
            assert contract.ref == f"{model.__module__}:{model.__qualname__}"
            assert contract.schema() == model.model_json_schema(by_alias=True)


def test_every_implementation_checks_its_registry_contract() -> None:
    registry = builtin_registry()
    for name, implementation in IMPLEMENTATIONS.items():
        model = registry[name].params
        assert isinstance(model, ModelContract)
        assert implementation.params_type is model.model


def test_model_contract_references() -> None:
    given = ModelContract(contracts.UserInputParams)
    assert given.loaded
    assert given.ref == f"{BUILTIN_CONTRACTS}.user_input:UserInputParams"
    named = ModelContract(given.ref)
    assert not named.loaded
    assert named.model is contracts.UserInputParams
    assert named.loaded
    assert repr(named) == f"ModelContract({given.ref!r})"

    for bad in ("no_colon", "module:", ":Name", "module:not-a-name"):
        with pytest.raises(ValueError, match="not a model reference"):
            ModelContract(bad)
    with pytest.raises(TypeError, match="not a pydantic model"):
        _ = ModelContract(f"{BUILTIN_CONTRACTS}.http_fetch:MIB").model
    with pytest.raises(ModuleNotFoundError):
        _ = ModelContract(f"{BUILTIN_CONTRACTS}.no_such_tool:Params").model
    assert issubclass(ModelContract(f"{BUILTIN_CONTRACTS}.common:StepConfig").model, BaseModel)
