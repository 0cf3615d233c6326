"""What the builtins share: the step's configuration and the http(s) URL type."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel

# --- the step envelope's shared parts -----------------------------------------------


def step_idempotency_key(run_id: str, step_id: str) -> str:
    """The idempotency key of a step's side effect: the same for every attempt of the step,
    so a retried step never repeats what an earlier attempt already did."""
    return f"{run_id}:{step_id}"


class StepConfig(BaseModel):
    """Per-step configuration the gateway hands to the tool pod with its step.

    Lenient on input (unknown keys ignored) so an older tool image keeps working
    against a newer API.
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    egress_allowlist: list[str] = Field(
        default_factory=list,
        description="Hosts the step may reach: exact names or *.domain wildcards.",
    )
    crm_url: str | None = Field(
        default=None, description="The CRM endpoint crm.sync posts to (deployment setting)."
    )


# --- an http(s) URL (task.create's webhook, http.fetch's page) ---------------------

MAX_URL_CHARS = 2048


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials")
    try:
        _ = parts.port
    except ValueError as exc:
        raise ValueError("has an invalid port") from exc
    return value


HttpUrl = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_URL_CHARS),
    AfterValidator(_http_url),
]
