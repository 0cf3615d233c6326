"""A tool's contracts for its params and its result.

A builtin's are pydantic models, named by where they live and imported on first use (a
tool step loads its own tool's models only); a user tool's are JSON Schema (2020-12),
checked with the `jsonschema` library, imported lazily too: the builtins' tool runtime
never needs it, and its start-up counts.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

MAX_PROBLEMS = 5


class ToolContractError(ValueError):
    """Parameters or a result do not fit the tool's contract. Never worth retrying.

    `problems`: (dotted location in the checked object, what is wrong), for error details.
    """

    def __init__(self, message: str, problems: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.problems = tuple(problems)


class Contract(Protocol):
    def schema(self) -> dict[str, Any]:
        """The JSON Schema, as a model (OpenAI `tools`) or a client reads it."""
        ...

    def validate(self, data: Mapping[str, Any], what: str) -> BaseModel:
        """`data` checked (defaults filled in where the contract has them), or
        ToolContractError naming `what` and each problem."""
        ...


class ModelContract:
    """A builtin's contract: a pydantic model.

    Given as the class, or as where it lives (`"package.module:Name"`): then the module is
    imported when the contract is first used (`model`, `schema`, `validate`), so building a
    registry costs nothing and a tool step loads its own tool's models only.
    """

    def __init__(self, model: type[BaseModel] | str) -> None:
        if isinstance(model, str):
            module, _, name = model.partition(":")
            if not module or not name.isidentifier():
                raise ValueError(f"not a model reference ('package.module:Name'): {model!r}")
            self.ref = model
            self._model: type[BaseModel] | None = None
        else:
            self.ref = f"{model.__module__}:{model.__qualname__}"
            self._model = model

    @property
    def loaded(self) -> bool:
        """Whether the model has been imported (always, when the class was given)."""
        return self._model is not None

    @property
    def model(self) -> type[BaseModel]:
        model = self._model
        if model is None:
            module, _, name = self.ref.partition(":")
            found = getattr(importlib.import_module(module), name, None)
            if not (isinstance(found, type) and issubclass(found, BaseModel)):
                raise TypeError(f"{self.ref} is not a pydantic model")
            self._model = model = found
        return model

    def __repr__(self) -> str:
        return f"ModelContract({self.ref!r})"

    def schema(self) -> dict[str, Any]:
        return self.model.model_json_schema(by_alias=True)

    def validate(self, data: Mapping[str, Any], what: str) -> BaseModel:
        try:
            return self.model.model_validate(dict(data))
        except ValidationError as exc:
            found = [(".".join(str(p) for p in err["loc"]), err["msg"]) for err in exc.errors()]
            text = "; ".join(f"{loc or '(root)'}: {msg}" for loc, msg in found)
            raise ToolContractError(f"{what} invalid: {text}", found) from exc


class JsonObject(BaseModel):
    """Params or a result of a user tool: the object as given, once its schema accepts it."""

    model_config = ConfigDict(extra="allow")


class SchemaProblem(ValueError):
    """The schema itself is not valid JSON Schema."""


class SchemaContract:
    """A user tool's contract: one JSON Schema."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self._schema = json.loads(json.dumps(dict(schema)))

    def schema(self) -> dict[str, Any]:
        copied: dict[str, Any] = json.loads(json.dumps(self._schema))  # callers may edit it
        return copied

    @cached_property
    def _validator(self) -> Validator:
        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import SchemaError

        try:
            Draft202012Validator.check_schema(self._schema)
        except SchemaError as exc:
            where = "/".join(str(p) for p in exc.path) or "(root)"
            raise SchemaProblem(f"not a valid JSON Schema at {where}: {exc.message}") from None
        if self._schema.get("type", "object") != "object":
            raise SchemaProblem('the schema must describe an object ("type": "object")')
        validator: Validator = Draft202012Validator(
            self._schema, format_checker=Draft202012Validator.FORMAT_CHECKER
        )
        return validator

    def check_schema(self) -> None:
        """Raise SchemaProblem when the schema cannot be used."""
        _ = self._validator

    def problems(self, data: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Why `data` breaks the schema, as (location, reason), at most a few; empty: fits."""
        errors = sorted(self._validator.iter_errors(dict(data)), key=lambda e: list(e.path))
        return [
            (".".join(str(p) for p in error.absolute_path), error.message)
            for error in errors[:MAX_PROBLEMS]
        ]

    def validate(self, data: Mapping[str, Any], what: str) -> BaseModel:
        try:
            problems = self.problems(data)
        except SchemaProblem as exc:
            raise ToolContractError(f"{what} cannot be checked: {exc}") from None
        if problems:
            text = "; ".join(f"{loc or '(root)'}: {msg}" for loc, msg in problems)
            raise ToolContractError(f"{what} invalid: {text}", problems)
        return JsonObject.model_validate(dict(data))
