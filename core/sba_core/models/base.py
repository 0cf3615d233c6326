"""Shared configuration of every wire model: camelCase on the wire, strict on input."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class WireModel(BaseModel):
    """A model that is read from and written to JSON in camelCase.

    Unknown fields are refused so a typo in a manifest or a request body is an
    error a person sees, not a setting silently ignored.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=False,
    )

    def wire(self) -> dict[str, Any]:
        """The JSON-ready form, in camelCase, without unset optional fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Condition(WireModel):
    """A Kubernetes-style condition."""

    type: str
    status: str = Field(description='"True", "False" or "Unknown".')
    reason: str = ""
    message: str = ""
    last_transition_time: datetime | None = None
