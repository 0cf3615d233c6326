"""``render.document``: turn earlier step results into a Markdown or HTML document artifact.

Rendering is a pure function of the selected inputs, the params and the clock, so the
same attempt renders the same bytes. The document has a title, a generated-at line and
one section per source step: a knowledge.search result becomes its query as a heading
and one entry per hit (title, score, snippet); anything else is shown as JSON. Every hit's
document is listed once under "Sources" at the end.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from sba_core.tools.builtin.knowledge_search import KnowledgeSearchResult
from sba_core.tools.builtin.render_document import (
    DocumentFormat,
    RenderDocumentParams,
    RenderDocumentResult,
)
from sba_core.tools.registry import ToolContractError
from sba_tools.errors import StepFailure
from sba_tools.tools.base import ToolContext, ToolImplementation

CONTENT_TYPES = {
    DocumentFormat.MARKDOWN: "text/markdown; charset=utf-8",
    DocumentFormat.HTML: "text/html; charset=utf-8",
}

# --- choosing the inputs -------------------------------------------------------------


def select_sources(
    inputs: Mapping[str, Any], sources: Sequence[str] | None
) -> list[tuple[str, Any]]:
    """The (step id, result) pairs to render: the named ones in the order named, else all."""
    if sources is None:
        return list(inputs.items())
    missing = [s for s in sources if s not in inputs]
    if missing:
        available = ", ".join(sorted(inputs)) or "none"
        raise ToolContractError(
            f"render.document params invalid: sources {missing} are not inputs of this step "
            f"(available: {available})"
        )
    return [(s, inputs[s]) for s in dict.fromkeys(sources)]


# --- the document model --------------------------------------------------------------


@dataclass(frozen=True)
class _Hit:
    title: str
    snippet: str
    score: float
    source_number: int


@dataclass(frozen=True)
class _SearchSection:
    step_id: str
    query: str
    hits: list[_Hit]


@dataclass(frozen=True)
class _AnswerSection:
    """A model step's text (llm.generate), kept as written: paragraphs and citations."""

    step_id: str
    text: str


@dataclass(frozen=True)
class _RawSection:
    step_id: str
    value: Any


@dataclass(frozen=True)
class _Source:
    number: int
    document_id: str
    title: str


@dataclass(frozen=True)
class _Document:
    title: str
    generated_at: str
    locale: str
    sections: list[_SearchSection | _AnswerSection | _RawSection]
    sources: list[_Source]


def _build(
    title: str, generated_at: datetime, locale: str, selected: Sequence[tuple[str, Any]]
) -> _Document:
    sources: dict[str, _Source] = {}
    sections: list[_SearchSection | _AnswerSection | _RawSection] = []
    for step_id, value in selected:
        answer = _as_answer(value)
        if answer is not None:
            sections.append(_AnswerSection(step_id, answer))
            continue
        search = _as_search_result(value)
        if search is None:
            sections.append(_RawSection(step_id, value))
            continue
        hits = []
        for hit in search.hits:
            source = sources.get(hit.document_id)
            if source is None:
                source = _Source(len(sources) + 1, hit.document_id, hit.title)
                sources[hit.document_id] = source
            hits.append(_Hit(hit.title, hit.snippet, hit.score, source.number))
        sections.append(_SearchSection(step_id, search.query, hits))
    if generated_at.tzinfo is None:
        generated_at = generated_at.replace(tzinfo=UTC)
    stamp = generated_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return _Document(title, stamp, locale, sections, list(sources.values()))


def _as_answer(value: Any) -> str | None:
    """The text of an llm.generate result (text, model, provider), else None."""
    if not isinstance(value, dict) or not {"text", "model", "provider"} <= value.keys():
        return None
    text = value.get("text")
    return text if isinstance(text, str) and text.strip() else None


def _as_search_result(value: Any) -> KnowledgeSearchResult | None:
    if not isinstance(value, dict) or "query" not in value or "hits" not in value:
        return None
    try:
        return KnowledgeSearchResult.model_validate(value)
    except ValidationError:
        return None


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def _score(score: float) -> str:
    return f"{score:.3f}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# --- Markdown ------------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>#|~&])")
_MD_BLOCK_START = re.compile(r"^(?:([-+=])|(\d+)([.)]))")
_WHITESPACE = re.compile(r"\s+")


def md_inline(text: str) -> str:
    """One line of literal Markdown text: whitespace collapsed, markup characters escaped."""
    line = _MD_SPECIAL.sub(r"\\\1", _WHITESPACE.sub(" ", text).strip())
    # A line must not start a list, an ordered list or a setext heading by accident.
    return _MD_BLOCK_START.sub(lambda m: f"\\{m[1]}" if m[1] else f"{m[2]}\\{m[3]}", line, count=1)


def _md_quote(text: str) -> str:
    lines = [md_inline(line) for line in text.strip().splitlines()] or [""]
    return "\n".join(f"> {line}" if line else ">" for line in lines)


def render_markdown(doc: _Document) -> str:
    out = [f"# {md_inline(doc.title)}", "", f"_Generated at {doc.generated_at}_", ""]
    if not doc.sections:
        out += ["_No sources were selected._", ""]
    for section in doc.sections:
        if isinstance(section, _SearchSection):
            out += [
                f"## {md_inline(section.query)}",
                "",
                f"_From step {md_inline(section.step_id)}: {_plural(len(section.hits), 'result')}_",
                "",
            ]
            if not section.hits:
                out += ["No results.", ""]
            for rank, hit in enumerate(section.hits, start=1):
                out += [
                    f"### {rank}. {md_inline(hit.title)}",
                    "",
                    f"Score {_score(hit.score)} · source \\[{hit.source_number}\\]",
                    "",
                    _md_quote(hit.snippet),
                    "",
                ]
        elif isinstance(section, _AnswerSection):
            out += ["## Answer", ""]
            for paragraph in section.text.strip().split("\n\n"):
                out += ["\n".join(md_inline(line) for line in paragraph.splitlines()), ""]
        else:
            out += [
                f"## Step {md_inline(section.step_id)}",
                "",
                "```json",
                _json(section.value),
                "```",
                "",
            ]
    if doc.sources:
        out += ["## Sources", ""]
        out += [
            f"{s.number}. {md_inline(s.title)} (document {md_inline(s.document_id)})"
            for s in doc.sources
        ]
        out.append("")
    return "\n".join(out)


# --- HTML ----------------------------------------------------------------------------


def _h(text: str) -> str:
    return html.escape(text, quote=True)


def _h_multiline(text: str) -> str:
    return "<br>\n".join(_h(line) for line in text.strip().splitlines())


def render_html(doc: _Document) -> str:
    out = [
        "<!DOCTYPE html>",
        f'<html lang="{_h(doc.locale)}">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{_h(doc.title)}</title>",
        "</head>",
        "<body>",
        "<article>",
        f"<h1>{_h(doc.title)}</h1>",
        f'<p class="generated">Generated at <time datetime="{doc.generated_at}">'
        f"{doc.generated_at}</time></p>",
    ]
    if not doc.sections:
        out.append("<p><em>No sources were selected.</em></p>")
    for section in doc.sections:
        out.append(f'<section data-step="{_h(section.step_id)}">')
        if isinstance(section, _SearchSection):
            out += [
                f"<h2>{_h(section.query)}</h2>",
                f'<p class="meta">From step {_h(section.step_id)}: '
                f"{_plural(len(section.hits), 'result')}</p>",
            ]
            if not section.hits:
                out.append("<p>No results.</p>")
            for rank, hit in enumerate(section.hits, start=1):
                out += [
                    '<div class="hit">',
                    f"<h3>{rank}. {_h(hit.title)}</h3>",
                    f'<p class="score">Score {_score(hit.score)} · source '
                    f'<a href="#source-{hit.source_number}">[{hit.source_number}]</a></p>',
                    f"<blockquote>{_h_multiline(hit.snippet)}</blockquote>",
                    "</div>",
                ]
        elif isinstance(section, _AnswerSection):
            out.append("<h2>Answer</h2>")
            out += [f"<p>{_h_multiline(p)}</p>" for p in section.text.strip().split("\n\n")]
        else:
            out += [
                f"<h2>Step {_h(section.step_id)}</h2>",
                f"<pre><code>{_h(_json(section.value))}</code></pre>",
            ]
        out.append("</section>")
    if doc.sources:
        out += ['<section class="sources">', "<h2>Sources</h2>", "<ol>"]
        out += [
            f'<li id="source-{s.number}">{_h(s.title)} (document <code>{_h(s.document_id)}'
            "</code>)</li>"
            for s in doc.sources
        ]
        out += ["</ol>", "</section>"]
    out += ["</article>", "</body>", "</html>", ""]
    return "\n".join(out)


# --- the tool ------------------------------------------------------------------------


def render(
    params: RenderDocumentParams, inputs: Mapping[str, Any], generated_at: datetime
) -> tuple[bytes, str]:
    """The document's bytes and content type. Pure: same arguments, same bytes."""
    doc = _build(params.title, generated_at, params.locale, select_sources(inputs, params.sources))
    text = render_html(doc) if params.format is DocumentFormat.HTML else render_markdown(doc)
    return text.encode("utf-8"), CONTENT_TYPES[params.format]


def run(ctx: ToolContext, params: RenderDocumentParams) -> RenderDocumentResult:
    data, content_type = render(params, ctx.step.inputs, ctx.now())
    digest = hashlib.sha256(data).hexdigest()
    record = ctx.gateway.upload_artifact(data, content_type=content_type, title=params.title)
    if record.size_bytes != len(data) or record.sha256.lower() != digest:
        raise StepFailure(
            f"artifact {record.artifact_id} was stored as {record.size_bytes} bytes "
            f"sha256 {record.sha256}, expected {len(data)} bytes sha256 {digest}",
            retryable=True,
        )
    ctx.log.info(
        "render.document.done",
        artifactId=record.artifact_id,
        sizeBytes=record.size_bytes,
        format=str(params.format),
    )
    return RenderDocumentResult(
        artifact_id=record.artifact_id,
        title=record.title,
        content_type=record.content_type,
        size_bytes=record.size_bytes,
        sha256=record.sha256,
    )


def summarize(result: RenderDocumentResult) -> str:
    return f"artifact {result.artifact_id} ({result.content_type}, {result.size_bytes} bytes)"


IMPLEMENTATION = ToolImplementation(params_type=RenderDocumentParams, run=run, summarize=summarize)
