"""The builtin model: extractive cited answers, streamed pieces and prompt rendering."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sba_core.answers import (
    Citation,
    ComposedAnswer,
    SourceHit,
    answer_language,
    compose_answer,
    hits_from_results,
    render_prompt,
    stream_pieces,
)

# Chunks as the store returns them for examples/knowledge (paragraphs joined by blank lines).
REFUND = SourceHit(
    document_id="refund-policy",
    chunk_id="refund-policy#0",
    title="Refund policy",
    snippet=(
        "# Refund policy\n\n"
        "Customers may return any product within 30 days of delivery for a full refund. "
        "Damaged goods are refunded in full, including the original shipping cost, when the "
        "customer reports the damage within 7 days and sends a photo of the damaged item. "
        "Refunds are paid to the original payment method within 5 business days after the "
        "returned item arrives at our warehouse. Digital products and gift cards are not "
        "refundable."
    ),
    score=0.82,
)
SHIPPING = SourceHit(
    document_id="shipping",
    chunk_id="shipping#0",
    title="Shipping",
    snippet=(
        "# Shipping\n\n"
        "Domestic orders ship within 1 business day and arrive in 2 to 4 business days. "
        "International shipping abroad takes 7 to 14 business days depending on customs; we "
        "ship to 40 countries with tracked delivery. Express international shipping takes 3 to "
        "5 days and costs a flat 25 EUR. Customs duties are paid by the recipient."
    ),
    score=0.7,
)
SECURITY = SourceHit(
    document_id="security",
    chunk_id="security#0",
    title="Security and data handling",
    snippet=(
        "# Security and data handling\n\n"
        "Customer data is stored in the EU, encrypted at rest and in transit. Access is "
        "role-based and every administrative change is recorded in an append-only audit log."
    ),
    score=0.9,
)
# The same documents as an Indonesian tenant would load them.
REFUND_ID = SourceHit(
    document_id="kebijakan-pengembalian",
    chunk_id="kebijakan-pengembalian#0",
    title="Kebijakan pengembalian dana",
    snippet=(
        "# Kebijakan pengembalian dana\n\n"
        "Pelanggan dapat mengembalikan produk apa pun dalam 30 hari setelah diterima untuk "
        "pengembalian dana penuh. Barang rusak diganti penuh, termasuk ongkos kirim awal, jika "
        "pelanggan melaporkan kerusakan dalam 7 hari. Kartu hadiah tidak dapat dikembalikan."
    ),
    score=0.4,
)
SHIPPING_ID = SourceHit(
    document_id="pengiriman",
    chunk_id="pengiriman#0",
    title="Pengiriman",
    snippet=(
        "# Pengiriman\n\n"
        "Pesanan domestik dikirim dalam 1 hari kerja dan tiba dalam 2 sampai 4 hari kerja. "
        "Pengiriman internasional memakan waktu 7 sampai 14 hari kerja tergantung bea cukai."
    ),
    score=0.8,
)

MARKER = re.compile(r"\[(\d+)\]")


def _body(answer: ComposedAnswer) -> str:
    intro, body, sources = answer.text.split("\n\n")
    assert intro.endswith(":")
    assert sources.startswith(("Sources:\n", "Sumber:\n"))
    return body


def _assert_citations_consistent(answer: ComposedAnswer, hits: list[SourceHit]) -> None:
    numbers = {int(n) for n in MARKER.findall(_body(answer))}
    assert numbers == set(range(1, len(answer.citations) + 1))
    assert [c.number for c in answer.citations] == list(range(1, len(answer.citations) + 1))
    by_chunk = {hit.chunk_id: hit for hit in hits}
    for citation in answer.citations:
        hit = by_chunk[citation.chunk_id]
        assert (citation.document_id, citation.title) == (hit.document_id, hit.title)
    source_lines = answer.text.split("\n\n")[2].splitlines()[1:]
    assert [line.split(" ", 1)[0] for line in source_lines] == [
        f"[{c.number}]" for c in answer.citations
    ]


# -- compose_answer: English and Indonesian ---------------------------------------------------


def test_english_answer_cites_the_matching_sentences() -> None:
    hits = [REFUND, SHIPPING]
    answer = compose_answer("How long does shipping take, and can I get a refund?", hits, "en")

    assert answer.language == "en"
    assert answer.text.startswith("Based on the knowledge base:\n\n")
    assert answer.text.endswith("\n\nSources:\n[1] Refund policy\n[2] Shipping")
    assert answer.citations == (
        Citation(1, "refund-policy", "refund-policy#0", "Refund policy"),
        Citation(2, "shipping", "shipping#0", "Shipping"),
    )
    refund = "Customers may return any product within 30 days of delivery for a full refund. [1]"
    shipping = (
        "International shipping abroad takes 7 to 14 business days depending on customs; we "
        "ship to 40 countries with tracked delivery. [2]"
    )
    assert refund in answer.text
    assert shipping in answer.text
    # Presented in the order of the hits they come from.
    assert answer.text.index(refund) < answer.text.index(shipping)
    # The default ceiling of four sentences.
    assert len(MARKER.findall(_body(answer))) == 4
    _assert_citations_consistent(answer, hits)


def test_only_the_best_matching_sentences_are_kept() -> None:
    answer = compose_answer("Where is customer data stored?", [SECURITY, REFUND], "en-GB")

    assert (
        _body(answer) == "Customer data is stored in the EU, encrypted at rest and in transit. [1]"
    )
    assert [c.chunk_id for c in answer.citations] == ["security#0"]


def test_numbers_follow_first_use_and_skip_unused_hits() -> None:
    # The best-scored hit says nothing about refunds, so the refund hit becomes [1].
    hits = [SECURITY, REFUND]
    answer = compose_answer("Are gift cards refundable?", hits, "en")

    assert _body(answer) == "Digital products and gift cards are not refundable. [1]"
    assert answer.citations == (Citation(1, "refund-policy", "refund-policy#0", "Refund policy"),)
    assert "Security and data handling" not in answer.text


def test_indonesian_answer_from_indonesian_hits() -> None:
    hits = [SHIPPING_ID, REFUND_ID]
    answer = compose_answer("Berapa lama pengiriman internasional?", hits, "id-ID")

    assert answer.language == "id"
    assert answer.text == (
        "Berdasarkan basis pengetahuan:\n\n"
        "Pengiriman internasional memakan waktu 7 sampai 14 hari kerja tergantung bea cukai. [1]"
        "\n\nSumber:\n[1] Pengiriman"
    )
    assert answer.citations == (Citation(1, "pengiriman", "pengiriman#0", "Pengiriman"),)


def test_indonesian_answer_over_two_documents() -> None:
    hits = [SHIPPING_ID, REFUND_ID]
    answer = compose_answer("Apakah kartu hadiah dan pengiriman internasional?", hits, "id")

    body = _body(answer)
    assert "Pengiriman internasional memakan waktu" in body
    assert "Kartu hadiah tidak dapat dikembalikan. [2]" in body
    assert answer.text.endswith("Sumber:\n[1] Pengiriman\n[2] Kebijakan pengembalian dana")
    _assert_citations_consistent(answer, hits)


def test_indonesian_locale_with_english_hits_writes_indonesian_frame() -> None:
    answer = compose_answer("refund", [REFUND], "in")

    assert answer.text.startswith("Berdasarkan basis pengetahuan:\n\n")
    assert "\n\nSumber:\n[1] Refund policy" in answer.text
    assert "for a full refund. [1]" in answer.text


def test_prefix_matching_relates_word_forms() -> None:
    answer = compose_answer("refunds", [REFUND], "en")

    # "refunds" finds "refund", "refunded" and "refundable".
    assert "for a full refund. [1]" in answer.text
    assert "are not refundable. [1]" in answer.text


def test_markdown_noise_and_foreign_footnotes_are_stripped() -> None:
    hit = SourceHit(
        "faq",
        "faq#2",
        "**FAQ**",
        "## Returns\n\n- **Refunds** are paid within 5 business days [3].\n"
        "> * Gift   cards are __not__ `refundable`.\n\n---",
        0.5,
    )
    answer = compose_answer("refunds refundable", [hit], "en")

    assert _body(answer) == (
        "Refunds are paid within 5 business days. [1] Gift cards are not refundable. [1]"
    )
    assert answer.text.endswith("Sources:\n[1] FAQ")
    assert answer.citations[0].title == "**FAQ**"


def test_repeated_sentences_from_overlapping_chunks_are_said_once() -> None:
    tail = SourceHit(
        "refund-policy",
        "refund-policy#1",
        "Refund policy",
        "within 5 business days after the returned item arrives at our warehouse. "
        "Digital products and gift cards are not refundable.",
        0.8,
    )
    answer = compose_answer("refundable warehouse", [REFUND, tail], "en")

    assert answer.text.count("Digital products and gift cards are not refundable.") == 1
    assert answer.text.count("arrives at our warehouse") == 1


# -- compose_answer: nothing found, bounds, totality -------------------------------------------


@pytest.mark.parametrize(
    ("question", "hits"),
    [
        ("What about quantum physics?", [REFUND, SHIPPING]),
        ("What about quantum physics?", []),
        ("What is it?", [REFUND]),  # stop words only
        ("", [REFUND]),
    ],
)
def test_no_usable_hit_in_english(question: str, hits: list[SourceHit]) -> None:
    answer = compose_answer(question, hits, "en-US")

    assert answer == ComposedAnswer(
        f'I could not find anything about "{question}" in the knowledge base.', (), "en"
    )


def test_no_usable_hit_in_indonesian() -> None:
    answer = compose_answer("Bagaimana cuaca besok?", [REFUND_ID, SHIPPING_ID], "id")

    assert answer == ComposedAnswer(
        'Saya tidak menemukan informasi tentang "Bagaimana cuaca besok?" di basis pengetahuan.',
        (),
        "id",
    )


def test_no_hit_message_clips_the_question() -> None:
    question = "quantum " * 40
    answer = compose_answer(question, [REFUND], "fr")

    quoted = answer.text.split('"')[1]
    assert len(quoted) <= 120
    assert quoted.startswith("quantum quantum")
    assert quoted.endswith("…")
    assert "\n" not in answer.text


@pytest.mark.parametrize("max_chars", [20, 60, 100, 200, 400])
def test_max_chars_bounds_the_body(max_chars: int) -> None:
    hits = [REFUND, SHIPPING]
    answer = compose_answer("refund shipping days", hits, "en", max_chars=max_chars)

    body = _body(answer)
    assert 0 < len(body) <= max_chars
    _assert_citations_consistent(answer, hits)


def test_an_over_long_best_sentence_is_clipped_not_dropped() -> None:
    long_hit = SourceHit("big", "big#0", "Big", "Refund " + "details " * 200 + "end.", 1.0)
    answer = compose_answer("refund", [long_hit], "en", max_chars=80)

    body = _body(answer)
    assert len(body) <= 80
    assert body.startswith("Refund details")
    assert body.endswith("… [1]")


def test_max_sentences_is_a_ceiling() -> None:
    answer = compose_answer("refund", [REFUND], "en", max_sentences=2)

    assert len(MARKER.findall(_body(answer))) == 2
    answer = compose_answer("refund", [REFUND], "en", max_sentences=0)
    assert len(MARKER.findall(_body(answer))) == 1


def test_composition_is_deterministic() -> None:
    hits = [SECURITY, REFUND, SHIPPING]
    question = "How are refunds paid and how is customer data stored?"
    first = compose_answer(question, hits, "en")

    assert all(compose_answer(question, list(hits), "en") == first for _ in range(5))
    assert len(first.citations) == 2


def test_odd_scores_never_break_composition() -> None:
    hits = [
        SourceHit("a", "a#0", "A", "Refunds take five days.", float("nan")),
        SourceHit("b", "b#0", "", "Refunds need a receipt.", -3.0),
        SourceHit("c", "c#0", "C", "", float("inf")),
    ]
    answer = compose_answer("refunds", hits, "en")

    assert "Refunds take five days. [1]" in answer.text
    assert "Refunds need a receipt. [2]" in answer.text
    # An empty title falls back to the document id.
    assert answer.text.endswith("Sources:\n[1] A\n[2] b")


VOCAB = ["refund", "refunds", "shipping", "customs", "data", "audit", "onboarding", "ship", "eu"]
NOISE = [
    "[1]",
    "[12]",
    "[[2]3]",
    "**",
    "#",
    "##",
    "\n",
    "\n\n",
    ".",
    "!",
    "- ",
    "> ",
    "…",
    "[",
    "]",
]
snippets = st.lists(st.sampled_from(VOCAB + NOISE) | st.text(max_size=8), max_size=40).map(" ".join)
source_hits = st.builds(
    SourceHit,
    document_id=st.text(max_size=10),
    chunk_id=st.text(max_size=10),
    title=st.sampled_from(["Refund policy", "[7] Shipping", "", "# Security"])
    | st.text(max_size=20),
    snippet=snippets,
    score=st.floats(allow_nan=True, allow_infinity=True),
)


@given(
    question=st.lists(st.sampled_from(VOCAB), min_size=1, max_size=4).map(" ".join),
    hits=st.lists(source_hits, max_size=6),
    max_chars=st.integers(min_value=20, max_value=600),
    max_sentences=st.integers(min_value=1, max_value=6),
)
def test_citations_always_match_markers(
    question: str, hits: list[SourceHit], max_chars: int, max_sentences: int
) -> None:
    # Distinct chunk ids so a citation names exactly one hit.
    hits = [
        SourceHit(h.document_id, f"c{i}", h.title, h.snippet, h.score) for i, h in enumerate(hits)
    ]
    answer = compose_answer(question, hits, "en", max_chars=max_chars, max_sentences=max_sentences)

    if not answer.citations:
        assert answer.text.startswith("I could not find anything about")
        return
    _assert_citations_consistent(answer, hits)
    body = _body(answer)
    assert len(body) <= max_chars
    assert len(MARKER.findall(body)) <= max_sentences


@given(question=st.text(), hits=st.lists(source_hits, max_size=4), locale=st.text(max_size=16))
def test_composition_never_raises(question: str, hits: list[SourceHit], locale: str) -> None:
    answer = compose_answer(question, hits, locale)

    assert answer.language in ("en", "id")
    assert answer.text
    assert answer == compose_answer(question, hits, locale)


# -- answer_language -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("locale", "language"),
    [
        ("id", "id"),
        ("id-ID", "id"),
        ("ID_id", "id"),
        ("in", "id"),
        ("in-ID", "id"),
        ("en", "en"),
        ("en-US", "en"),
        ("fr", "en"),
        ("ms-MY", "en"),
        ("ind", "en"),
        ("", "en"),
    ],
)
def test_answer_language(locale: str, language: str) -> None:
    assert answer_language(locale) == language


# -- hits_from_results ---------------------------------------------------------------------------


def _wire(hit: SourceHit) -> dict[str, Any]:
    return {
        "documentId": hit.document_id,
        "chunkId": hit.chunk_id,
        "title": hit.title,
        "snippet": hit.snippet,
        "score": hit.score,
    }


def test_hits_from_results_skips_malformed_data() -> None:
    good = _wire(REFUND)
    results: dict[str, Any] = {
        "search": {"query": "refund", "hits": [good, "nope", None, 3, {"chunkId": "x"}]},
        "render": {"artifactId": "a1", "title": "Report"},
        "answer": {"text": "hello", "hits": "not a list"},
        "weird": [1, 2, 3],
        "null": None,
        "bad-scores": {
            "hits": [
                {**_wire(SHIPPING), "score": True},
                {**_wire(SHIPPING), "score": "0.9"},
                {**_wire(SHIPPING), "score": float("nan")},
                {**_wire(SHIPPING), "score": 10**400},
                {**_wire(SHIPPING), "title": None},
                {**_wire(SHIPPING), "chunkId": ""},
                {**_wire(SHIPPING), "document_id": "snake", "documentId": 7},
            ]
        },
    }

    assert hits_from_results(results) == [REFUND]


def test_hits_from_results_deduplicates_and_orders_by_score() -> None:
    low_refund = _wire(REFUND) | {"score": 0.1}
    tie = _wire(SECURITY) | {"score": 0.7}  # ties SHIPPING, but comes later
    results = {
        "s1": {"hits": [low_refund, _wire(SHIPPING)]},
        "s2": {"hits": [_wire(REFUND), tie, _wire(SHIPPING) | {"score": 0.2}]},
    }

    hits = hits_from_results(results)

    assert [(h.chunk_id, h.score) for h in hits] == [
        ("refund-policy#0", 0.82),
        ("shipping#0", 0.7),
        ("security#0", 0.7),
    ]


def test_hits_from_results_of_nothing() -> None:
    assert hits_from_results({}) == []
    assert hits_from_results({"s": {"hits": []}}) == []


# -- stream_pieces -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "pieces"),
    [
        ("", []),
        ("   ", ["   "]),
        ("Hello, world!", ["Hello, ", "world!"]),
        ("  lead in", ["  lead ", "in"]),
        ("a [1]\n\nSources:", ["a [", "1]\n\n", "Sources:"]),
        ("Ini dana.\n", ["Ini ", "dana.\n"]),
    ],
)
def test_stream_pieces_examples(text: str, pieces: list[str]) -> None:
    assert stream_pieces(text) == pieces


@given(st.text() | st.text(alphabet=" \n\t.,;[]#*") | st.text(alphabet="ab \n"))
def test_stream_pieces_rebuild_the_text(text: str) -> None:
    pieces = stream_pieces(text)

    assert "".join(pieces) == text
    assert all(pieces)
    words = re.compile(r"[^\W_]+")
    assert all(len(words.findall(piece)) <= 1 for piece in pieces)
    # Every piece after the first begins with its word.
    assert all(words.match(piece) for piece in pieces[1:])


def test_a_composed_answer_streams_back_whole() -> None:
    answer = compose_answer("refund shipping", [REFUND, SHIPPING], "en")
    pieces = stream_pieces(answer.text)

    assert len(pieces) > 20
    assert "".join(pieces) == answer.text


# -- render_prompt -------------------------------------------------------------------------------

RESULTS: dict[str, Any] = {
    "search": {"query": "refund", "hits": [_wire(REFUND), _wire(SHIPPING)]},
    "draft": {"text": "An earlier\nanswer.", "model": "builtin"},
    "crm": {"synced": 3, "ids": ["a", "b"]},
}


def test_render_prompt_fills_goal_and_one_step() -> None:
    prompt = render_prompt(
        "Goal: {goal}\nDraft: {step.draft}\nMissing: [{step.nope}]",
        goal="Explain refunds",
        results=RESULTS,
    )

    assert prompt == "Goal: Explain refunds\nDraft: An earlier\nanswer.\nMissing: []"


def test_render_prompt_renders_every_result_in_step_order() -> None:
    prompt = render_prompt("{results}", goal="g", results=RESULTS)

    blocks = prompt.split("\n\n")
    assert blocks[0] == '[crm]\n{"ids":["a","b"],"synced":3}'
    assert blocks[1] == "[draft]\nAn earlier\nanswer."
    assert blocks[2].startswith(
        "[search]\n1. Refund policy: # Refund policy Customers may return any product"
    )
    assert "\n2. Shipping: # Shipping Domestic orders ship" in blocks[2]
    assert len(blocks) == 3
    assert render_prompt("{results}", goal="g", results={}) == ""
    assert render_prompt("{step.s}", goal="g", results={"s": {"hits": []}}) == "(no hits)"


def test_render_prompt_braces_and_unknown_placeholders() -> None:
    template = "{{goal}} {{{goal}}} {unknown} { goal } {step} {goal}} }{ {"

    assert (
        render_prompt(template, goal="G", results={})
        == "{goal} {G} {unknown} { goal } {step} G} }{ {"
    )


def test_render_prompt_does_not_expand_substituted_text() -> None:
    prompt = render_prompt(
        "{goal} / {step.draft}", goal="{results} {{x}}", results={"draft": {"text": "{goal}"}}
    )

    assert prompt == "{results} {{x}} / {goal}"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)


@given(
    template=st.text() | st.text(alphabet="{}ab.step goalresults"),
    goal=st.text(),
    results=st.dictionaries(st.text(max_size=6), json_values, max_size=4),
)
def test_render_prompt_never_raises(template: str, goal: str, results: dict[str, Any]) -> None:
    prompt = render_prompt(template, goal=goal, results=results)

    assert isinstance(prompt, str)
    if "{" not in template and "}" not in template:
        assert prompt == template


@given(text=st.text(), goal=st.text())
def test_escaped_braces_render_back_to_the_text(text: str, goal: str) -> None:
    escaped = text.replace("{", "{{").replace("}", "}}")

    assert render_prompt(escaped, goal=goal, results=RESULTS) == text
    assert render_prompt("{goal}", goal=goal, results=RESULTS) == goal


finite_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(["a", "b", "n"]), children, max_size=3)
    ),
    max_leaves=20,
)


@given(value=finite_json)
def test_other_results_render_as_compact_json(value: Any) -> None:
    # Anything that is neither a hit list nor a text reads back as the same JSON.
    rendered = render_prompt("{step.s}", goal="", results={"s": value})

    assert json.loads(rendered) == value
    assert "\n" not in rendered
    assert ", " not in rendered or ", " in json.dumps(value, ensure_ascii=False)
