"""One-line, human-readable summaries of tool results, for AgentRun status.

Status stays small: a step's full result lives in Postgres (`tool_calls`), and
status carries only what a person reading `kubectl get ar -o yaml` needs. Every
function here is pure and total: a malformed result gives a generic summary,
never an exception.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from sba_core.models.run import MAX_SUMMARY_CHARS
from sba_core.tools.contracts import (
    CrmSyncResult,
    KnowledgeSearchResult,
    LlmGenerateResult,
    RenderDocumentResult,
)
from sba_core.tools.names import ToolName

_ELLIPSIS = "…"
_QUERY_CHARS = 80
_TITLE_CHARS = 60
_TITLES_SHOWN = 3


def clip(text: str, limit: int = MAX_SUMMARY_CHARS) -> str:
    """`text` on one line, at most `limit` characters (an ellipsis marks a cut)."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    return flat[: max(limit - 1, 0)].rstrip() + _ELLIPSIS


def _size(size_bytes: int) -> str:
    if size_bytes < 1024:
        return f"{size_bytes} B"
    if size_bytes < 1024 * 1024:
        return f"{size_bytes / 1024:.1f} KiB"
    return f"{size_bytes / (1024 * 1024):.1f} MiB"


def _search(result: Any) -> str | None:
    try:
        parsed = KnowledgeSearchResult.model_validate(result)
    except ValidationError:
        return None
    query = clip(parsed.query, _QUERY_CHARS)
    count = len(parsed.hits)
    noun = "hit" if count == 1 else "hits"
    if not count:
        return f"0 hits for {query!r}"
    titles = ", ".join(
        f"{clip(hit.title, _TITLE_CHARS)} ({hit.score:.2f})" for hit in parsed.hits[:_TITLES_SHOWN]
    )
    more = f" and {count - _TITLES_SHOWN} more" if count > _TITLES_SHOWN else ""
    return f"{count} {noun} for {query!r}: {titles}{more}"


def _render(result: Any) -> str | None:
    try:
        parsed = RenderDocumentResult.model_validate(result)
    except ValidationError:
        return None
    title = clip(parsed.title, _TITLE_CHARS * 2)
    return (
        f"rendered {title!r} ({parsed.content_type}, {_size(parsed.size_bytes)});"
        f" artifact {parsed.artifact_id}"
    )


def _generated(result: Any) -> str | None:
    try:
        parsed = LlmGenerateResult.model_validate(result)
    except ValidationError:
        return None
    cited = len(parsed.citations)
    sources = f", {cited} citation{'s' if cited != 1 else ''}" if cited else ""
    return (
        f"{parsed.model} ({parsed.provider}) wrote {len(parsed.text)} chars{sources}:"
        f" {clip(parsed.text, 160)}"
    )


def _crm(result: Any) -> str | None:
    try:
        parsed = CrmSyncResult.model_validate(result)
    except ValidationError:
        return None
    remote = f" (remote {parsed.remote_id})" if parsed.remote_id else ""
    return f"synced {parsed.synced.contacts} contact(s) and {parsed.synced.deals} deal(s){remote}"


def answer_of(tool: str, result: Any) -> str | None:
    """The text a model step wrote, if this is one."""
    if tool != ToolName.LLM_GENERATE or not isinstance(result, dict):
        return None
    text = result.get("text")
    return text if isinstance(text, str) and text else None


def _generic(result: Any) -> str:
    if result is None:
        return "no result"
    try:
        text = json.dumps(result, sort_keys=True, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(result)
    return f"result: {text}"


def summarize_result(tool: str, result: Any) -> str:
    """A short (≤ MAX_SUMMARY_CHARS) description of one tool call's result."""
    summary: str | None = None
    if tool == ToolName.KNOWLEDGE_SEARCH:
        summary = _search(result)
    elif tool == ToolName.RENDER_DOCUMENT:
        summary = _render(result)
    elif tool == ToolName.LLM_GENERATE:
        summary = _generated(result)
    elif tool == ToolName.CRM_SYNC:
        summary = _crm(result)
    return clip(summary if summary is not None else _generic(result))


def artifact_id_of(tool: str, result: Any) -> str | None:
    """The artifact a tool call produced, if it produced one."""
    if tool != ToolName.RENDER_DOCUMENT or not isinstance(result, dict):
        return None
    value = result.get("artifactId", result.get("artifact_id"))
    return str(value) if value else None
