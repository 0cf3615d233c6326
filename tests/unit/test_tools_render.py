"""render.document: Markdown and HTML rendering, escaping and source selection."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from sba_core.tools.contracts import DocumentFormat, RenderDocumentParams
from sba_core.tools.registry import ToolContractError, builtin_registry
from sba_tools.tools.render_document import md_inline, render, select_sources

NOW = datetime(2025, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)


def _search(query: str, *hits: tuple[str, str, str, float]) -> dict[str, Any]:
    return {
        "query": query,
        "hits": [
            {
                "documentId": doc,
                "chunkId": f"{doc}-c{i}",
                "title": title,
                "snippet": snippet,
                "score": score,
            }
            for i, (doc, title, snippet, score) in enumerate(hits)
        ],
    }


INPUTS: dict[str, Any] = {
    "search": _search(
        "How do tool Jobs authenticate?",
        ("doc-1", "Step tokens", "A short-lived JWT scoped to one attempt.", 0.91234),
        ("doc-2", "Gateway", "The API checks the bearer token.", 0.5),
        ("doc-1", "Step tokens", "Tokens expire after the Job's deadline.", 0.25),
    ),
    "notes": {"count": 2, "items": ["a", "b"]},
}


def _render(inputs: dict[str, Any] = INPUTS, **params: Any) -> str:
    p = RenderDocumentParams.model_validate({"title": "Weekly report", **params})
    data, _ = render(p, inputs, NOW)
    return data.decode("utf-8")


def test_params_go_through_the_registry_contract() -> None:
    spec = builtin_registry()["render.document"]
    params = spec.validate_params({"title": "T", "format": "html", "sources": ["search"]})
    assert isinstance(params, RenderDocumentParams)
    assert params.format is DocumentFormat.HTML
    with pytest.raises(ToolContractError):
        spec.validate_params({"title": "T", "format": "pdf"})


def test_markdown_document_structure() -> None:
    text = _render()
    lines = text.splitlines()
    assert lines[0] == "# Weekly report"
    assert "_Generated at 2025-03-04T05:06:07Z_" in lines
    assert "## How do tool Jobs authenticate?" in lines
    assert "_From step search: 3 results_" in lines
    assert "### 1. Step tokens" in lines
    assert "Score 0.912 · source \\[1\\]" in lines
    assert "> A short\\-lived JWT scoped to one attempt." not in lines  # '-' mid-line is plain
    assert "> A short-lived JWT scoped to one attempt." in lines
    assert "Score 0.500 · source \\[2\\]" in lines
    # The third hit cites the first document again: the Sources list names each once.
    assert "Score 0.250 · source \\[1\\]" in lines
    sources = text[text.index("## Sources") :].splitlines()
    assert sources[2:4] == ["1. Step tokens (document doc-1)", "2. Gateway (document doc-2)"]
    # A result that is not a search result is shown as JSON under its step id.
    assert "## Step notes" in lines
    assert '```json\n{\n  "count": 2,' in text
    assert text.endswith("\n")
    assert (
        text.index("## How do tool Jobs") < text.index("## Step notes") < text.index("## Sources")
    )


def test_markdown_escapes_markup() -> None:
    inputs = {
        "s": _search(
            "*bold* [link](http://x) <img src=x>",
            ("d", "# not_a heading", "line one <script>\n- not a list\n1. not ordered\n", 1.0),
        )
    }
    text = _render(inputs, title="A | B & `C`")
    assert text.startswith("# A \\| B \\& \\`C\\`\n")
    assert "## \\*bold\\* \\[link\\](http://x) \\<img src=x\\>" in text
    assert "### 1. \\# not\\_a heading" in text
    assert "> line one \\<script\\>\n> \\- not a list\n> 1\\. not ordered\n" in text
    assert "<script>" not in text
    assert md_inline("multi\nline\ttext") == "multi line text"
    assert md_inline("= setext") == "\\= setext"


def test_html_document_is_escaped() -> None:
    inputs = {
        "s": _search(
            '<script>alert("q")</script>',
            ("d&1", "Tom & Jerry's <b>", 'say "hi"\nsecond line', 0.75),
        ),
        "raw": {"html": "<i>x</i>"},
    }
    text = _render(inputs, title="<Report> & co", format="html", locale='en"><x')
    assert text.startswith("<!DOCTYPE html>\n")
    assert '<html lang="en&quot;&gt;&lt;x">' in text
    assert "<title>&lt;Report&gt; &amp; co</title>" in text
    assert "<h1>&lt;Report&gt; &amp; co</h1>" in text
    assert '<time datetime="2025-03-04T05:06:07Z">2025-03-04T05:06:07Z</time>' in text
    assert "<h2>&lt;script&gt;alert(&quot;q&quot;)&lt;/script&gt;</h2>" in text
    assert "<h3>1. Tom &amp; Jerry&#x27;s &lt;b&gt;</h3>" in text
    assert "<blockquote>say &quot;hi&quot;<br>\nsecond line</blockquote>" in text
    assert "Score 0.750" in text
    assert (
        '<li id="source-1">Tom &amp; Jerry&#x27;s &lt;b&gt; (document <code>d&amp;1</code>)' in text
    )
    assert "&lt;i&gt;x&lt;/i&gt;" in text
    for tag in ("<script", "<b>", "<i>", "<x"):
        assert tag not in text
    assert text.rstrip().endswith("</html>")


def test_content_types() -> None:
    p = RenderDocumentParams(title="T")
    assert render(p, {}, NOW)[1] == "text/markdown; charset=utf-8"
    p = RenderDocumentParams(title="T", format=DocumentFormat.HTML)
    assert render(p, {}, NOW)[1] == "text/html; charset=utf-8"


def test_source_selection_order_and_subset() -> None:
    assert [s for s, _ in select_sources(INPUTS, None)] == ["search", "notes"]
    assert [s for s, _ in select_sources(INPUTS, ["notes"])] == ["notes"]
    assert [s for s, _ in select_sources(INPUTS, ["notes", "search", "notes"])] == [
        "notes",
        "search",
    ]
    assert select_sources(INPUTS, []) == []
    only_notes = _render(sources=["notes"])
    assert "## Step notes" in only_notes
    assert "authenticate" not in only_notes
    assert "## Sources" not in only_notes
    nothing = _render(sources=[])
    assert "_No sources were selected._" in nothing


def test_unknown_source_is_a_contract_error() -> None:
    with pytest.raises(ToolContractError, match="missing") as info:
        select_sources(INPUTS, ["search", "missing"])
    assert "available: notes, search" in str(info.value)


def test_rendering_is_deterministic_given_inputs_and_clock() -> None:
    p = RenderDocumentParams(title="T", format=DocumentFormat.HTML)
    shuffled = {"search": INPUTS["search"], "notes": {"items": ["a", "b"], "count": 2}}
    assert render(p, INPUTS, NOW) == render(p, shuffled, NOW)
    # The same instant in another zone renders the same UTC stamp; another instant differs.
    other_zone = NOW.astimezone(timezone(timedelta(hours=2)))
    assert render(p, INPUTS, other_zone) == render(p, INPUTS, NOW)
    assert render(p, INPUTS, NOW + timedelta(seconds=1)) != render(p, INPUTS, NOW)


def test_empty_search_result() -> None:
    text = _render({"s": {"query": "nothing here", "hits": []}})
    assert "## nothing here" in text
    assert "_From step s: 0 results_" in text
    assert "No results." in text
