"""http.fetch: params and result."""

from __future__ import annotations

from pydantic import Field

from sba_core.models.base import WireModel
from sba_core.tools.builtin.common import HttpUrl

MIB = 1024 * 1024


class HttpFetchParams(WireModel):
    url: HttpUrl
    max_bytes: int = Field(default=256 * 1024, ge=1, le=MIB)
    timeout_seconds: float = Field(default=10.0, gt=0, le=60)


class HttpFetchResult(WireModel):
    url: str
    final_url: str
    status: int = Field(ge=100, le=599)
    content_type: str | None = None
    text: str = Field(description="The body decoded as text (empty for non-text media types).")
    truncated: bool = Field(description="The body or the text was cut short.")
    byte_count: int = Field(alias="bytes", ge=0, description="Body bytes read.")
