"""render.document: params and result."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints

from sba_core.models.base import WireModel


class DocumentFormat(StrEnum):
    MARKDOWN = "markdown"
    HTML = "html"


class RenderDocumentParams(WireModel):
    title: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    format: DocumentFormat = DocumentFormat.MARKDOWN
    sources: list[str] | None = Field(
        default=None,
        description="Ids of earlier steps whose results go into the document; all when absent.",
    )
    locale: Annotated[str, StringConstraints(min_length=2, max_length=16)] = "en"


class RenderDocumentResult(WireModel):
    artifact_id: str
    title: str
    content_type: str
    size_bytes: int
    sha256: str
