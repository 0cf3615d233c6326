"""user.input: params and result (the step runs no Job)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from sba_core.models.base import WireModel


class UserInputParams(WireModel):
    """`user.input`: a step that runs no Job; it waits for `spec.inputs[<step id>]`."""

    prompt: Annotated[str, StringConstraints(min_length=1, max_length=2000)] = Field(
        description="What the person is asked."
    )


class UserInputResult(WireModel):
    value: str
