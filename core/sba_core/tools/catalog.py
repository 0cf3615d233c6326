"""The tools a namespace may use: the builtins, the ClusterTools, and its own Tools.

Pure and in memory: the operator feeds it from watch events, the API from reads. A
namespaced Tool shadows a ClusterTool of the same name in its namespace (a tenant may
pin or replace a catalog tool); the builtins' names are reserved for the builtins.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from sba_core.models.tool import MAX_SCHEMA_BYTES, ToolDefinitionSpec
from sba_core.planning import PlannedStep, PlanningError, validate_steps
from sba_core.tools.contract import SchemaContract, SchemaProblem
from sba_core.tools.names import ToolName
from sba_core.tools.registry import DEFAULT_LIMITS, ContainerTool, ToolRegistry, ToolSpec

UserKind = Literal["ClusterTool", "Tool"]
_BUILTIN_NAMES = frozenset(str(name) for name in ToolName)


class ToolDefinitionError(ValueError):
    """A Tool or ClusterTool that cannot be used, with the reason a person can act on."""


@dataclass(frozen=True)
class Definition:
    """One Tool or ClusterTool as the catalog holds it: usable (`spec`) or not (`problem`)."""

    kind: UserKind
    name: str
    namespace: str | None
    spec: ToolSpec | None
    problem: str | None = None


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()
    )


def tool_spec_from(
    kind: UserKind,
    name: str,
    raw_spec: Mapping[str, Any],
    *,
    namespace: str | None = None,
    generation: int | None = None,
) -> ToolSpec:
    """The registry entry for one Tool/ClusterTool `spec`; ToolDefinitionError if unusable."""
    where = f"{kind} {namespace + '/' if namespace else ''}{name}"
    if name in _BUILTIN_NAMES:
        raise ToolDefinitionError(f"{where}: {name!r} is a builtin tool's name")
    try:
        spec = ToolDefinitionSpec.model_validate(dict(raw_spec))
    except ValidationError as exc:
        raise ToolDefinitionError(f"{where}: {_problems(exc)}") from None
    contracts = {}
    for part in ("params", "result"):
        schema = getattr(spec, part)
        if len(repr(schema)) > MAX_SCHEMA_BYTES:
            raise ToolDefinitionError(f"{where}: spec.{part} is larger than 64 KiB")
        contract = SchemaContract(schema)
        try:
            contract.check_schema()
        except SchemaProblem as exc:
            raise ToolDefinitionError(f"{where}: spec.{part} is {exc}") from None
        contracts[part] = contract
    return ToolSpec(
        name=name,
        version=spec.version,
        description=spec.description,
        params=contracts["params"],
        result=contracts["result"],
        side_effect=spec.side_effect,
        scopes=tuple(spec.scopes),
        cost_estimate=spec.cost_estimate,
        egress=spec.egress,
        timeout_seconds=spec.timeout_seconds,
        limits={**DEFAULT_LIMITS, **spec.resources.limits.as_dict()},
        container=ContainerTool(
            kind=kind,
            image=spec.image,
            command=tuple(spec.command),
            args=tuple(spec.args),
            env=tuple(e.wire() for e in spec.env),
            requests=spec.resources.requests.as_dict(),
            runtime_class_name=spec.runtime_class_name,
            retry=spec.retry,
            namespace=namespace,
            generation=generation,
        ),
    )


def definition_of(kind: UserKind, obj: Mapping[str, Any]) -> Definition:
    """A Tool/ClusterTool object (as the API server returns it) as the catalog holds it."""
    meta = obj.get("metadata") or {}
    name = str(meta.get("name", ""))
    namespace = meta.get("namespace") if kind == "Tool" else None
    try:
        spec = tool_spec_from(
            kind,
            name,
            obj.get("spec") or {},
            namespace=namespace,
            generation=meta.get("generation"),
        )
    except ToolDefinitionError as exc:
        return Definition(kind, name, namespace, None, str(exc))
    return Definition(kind, name, namespace, spec)


class ToolCatalog:
    """Builtins, ClusterTools and namespaced Tools; `registry_for(namespace)` merges them."""

    def __init__(self, builtins: ToolRegistry) -> None:
        self._builtins = builtins
        self._cluster: dict[str, Definition] = {}
        self._namespaced: dict[str, dict[str, Definition]] = {}
        self._cache: dict[str, ToolRegistry] = {}

    def put(self, definition: Definition) -> None:
        if definition.kind == "ClusterTool":
            self._cluster[definition.name] = definition
            self._cache.clear()
        else:
            namespace = definition.namespace or ""
            self._namespaced.setdefault(namespace, {})[definition.name] = definition
            self._cache.pop(namespace, None)

    def remove(self, kind: UserKind, name: str, namespace: str | None = None) -> None:
        if kind == "ClusterTool":
            if self._cluster.pop(name, None) is not None:
                self._cache.clear()
        else:
            if self._namespaced.get(namespace or "", {}).pop(name, None) is not None:
                self._cache.pop(namespace or "", None)

    def replace_all(self, kind: UserKind, definitions: list[Definition]) -> None:
        """Everything of `kind`, as a fresh list from the API server says."""
        if kind == "ClusterTool":
            self._cluster = {d.name: d for d in definitions}
        else:
            self._namespaced = {}
            for d in definitions:
                self._namespaced.setdefault(d.namespace or "", {})[d.name] = d
        self._cache.clear()

    def load(
        self, cluster_tools: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]]
    ) -> ToolCatalog:
        """Every ClusterTool and Tool as freshly listed objects say (replacing all)."""
        self.replace_all("ClusterTool", [definition_of("ClusterTool", o) for o in cluster_tools])
        self.replace_all("Tool", [definition_of("Tool", o) for o in tools])
        return self

    def definitions(self, namespace: str) -> dict[str, Definition]:
        """The user tools visible in `namespace`, usable or not, by name."""
        merged = dict(self._cluster)
        merged.update(self._namespaced.get(namespace, {}))
        return merged

    def registry_for(self, namespace: str) -> ToolRegistry:
        """The usable tools of `namespace` (invalid definitions left out)."""
        cached = self._cache.get(namespace)
        if cached is not None:
            return cached
        user = [d.spec for d in self.definitions(namespace).values() if d.spec is not None]
        registry = ToolRegistry([*self._builtins.values(), *user])
        self._cache[namespace] = registry
        return registry

    def problem(self, namespace: str, name: str) -> str | None:
        """Why the user tool `name` cannot be used in `namespace`, if it is defined but broken."""
        definition = self.definitions(namespace).get(name)
        return definition.problem if definition is not None else None


def validate_plan(
    catalog: ToolCatalog, namespace: str, steps: list[PlannedStep], max_steps: int
) -> tuple[PlannedStep, ...]:
    """`steps` checked against the tools of `namespace`: PlanningError names the first
    unknown or unusable tool, or params that break a tool's contract."""
    registry = catalog.registry_for(namespace)
    for step in steps:
        problem = catalog.problem(namespace, step.tool)
        if step.tool not in registry and problem:
            raise PlanningError(f"step {step.id!r}: tool {step.tool!r} cannot be used: {problem}")
    return validate_steps(steps, registry, max_steps)
