"""The builtin model: an extractive, cited answer composed from knowledge-search hits.

When a tenant has no language-model provider configured, a run's answer step still
has to say something useful, offline and reproducibly. This module picks the snippet
sentences that share the most terms with the question, cites each one ([1], [2] ...)
and lays them out in the run's language (Indonesian or English). It also renders the
answer step's prompt template and cuts text into the pieces the caller streams.

Everything here is pure and total: malformed input gives a plainer answer, never an
exception.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final


@dataclass(frozen=True)
class SourceHit:
    document_id: str
    chunk_id: str
    title: str
    snippet: str
    score: float


@dataclass(frozen=True)
class Citation:
    number: int  # 1-based, as it appears in the text: [1], [2] ...
    document_id: str
    chunk_id: str
    title: str


@dataclass(frozen=True)
class ComposedAnswer:
    text: str
    citations: tuple[Citation, ...]
    language: str  # "id" or "en": the language actually written


# Underscores are not words: "__bold__" or "snake_case" must not yield "_" terms.
_WORD: Final = re.compile(r"[^\W_]+")
_PIECE: Final = re.compile(r"[\W_]*[^\W_]+[\W_]*|[\W_]+")
# Function words carry no topic; left in, "what is our ..." would match every sentence.
# A question's language need not be the run's, so both sets always apply.
_STOP_WORDS_EN: Final = frozenset(
    "a about all also an and any are as at be been but by can could did do does for from get "
    "had has have how i if in into is it its me my no not of on or our please should so tell "
    "than that the their them then there these they this to us was we were what when where "
    "which who whom why will with would you your".split()
)
_STOP_WORDS_ID: Final = frozenset(
    "ada adalah akan anda apa apakah atau bagaimana bagi berapa bisa bisakah bukan dalam dan "
    "dapat dari dengan di dimana harus ialah ini itu jika juga kalau kami kapan ke kenapa kita "
    "mana mengapa mohon oleh pada saya sebagai siapa sudah tentang telah tidak tolong untuk "
    "yang".split()
)
_STOP_WORDS: Final = _STOP_WORDS_EN | _STOP_WORDS_ID
# Scores below are only ever compared, so the exact weights matter less than their order:
# an exact term beats another form of it ("refund" / "refunds"), and the best hit counts at
# most twice the weakest, so overlap leads and retrieval rank breaks near-ties. Sentences
# under half the best score are left out: four sentences are a ceiling, not a quota.
_EXACT: Final = 1.0
_RELATED: Final = 0.75
_MIN_STEM: Final = 3
# English and Indonesian endings, longest first; stripped for matching only.
_SUFFIXES: Final = ("able", "ible", "ment", "ing", "kan", "nya", "ed", "es", "ly", "an", "s")
_MIN_HIT_WEIGHT: Final = 0.5
_RELATIVE_FLOOR: Final = 0.5

_MIN_BODY_CHARS: Final = 20
_QUESTION_CHARS: Final = 120
_TITLE_CHARS: Final = 200
_ELLIPSIS: Final = "…"

_HEADING: Final = re.compile(r"^#{1,6}(?:\s+|$)")
_RULE_OR_FENCE: Final = re.compile(r"^(?:(?:[-*_=]\s*){3,}|```.*|~~~.*)$")
_LIST_ITEM: Final = re.compile(r"^(?:>\s*)*(?:[-*+•]|\d{1,3}[.)])\s+")
_QUOTE: Final = re.compile(r"^(?:>\s*)+")
# Neither part may hold a bracket, so a run of "[" costs linear time, not quadratic.
_LINK: Final = re.compile(r"!?\[([^\[\]\n]*)\]\([^()\s]*\)")
_EMPHASIS: Final = re.compile(r"\*\*|__|`")
# A snippet's own footnote numbers would read as our citations; they are dropped.
_BRACKETED_NUMBER: Final = re.compile(r" ?\[\^?\d+\]")
_SENTENCE_END: Final = re.compile(r"(?<=[.!?…])\s+")
_ENDS_SENTENCE: Final = re.compile(r"[.!?…]")
_PLACEHOLDER: Final = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")

_INTRO: Final = {"en": "Based on the knowledge base:", "id": "Berdasarkan basis pengetahuan:"}
_SOURCES: Final = {"en": "Sources:", "id": "Sumber:"}
_NOT_FOUND: Final = {
    "en": 'I could not find anything about "{question}" in the knowledge base.',
    "id": 'Saya tidak menemukan informasi tentang "{question}" di basis pengetahuan.',
}


@dataclass(frozen=True)
class _Candidate:
    score: float
    hit_index: int
    sentence_index: int
    text: str


def answer_language(locale: str) -> str:
    """'id' for Indonesian locales (id, in and their regions: id-ID, in_ID.UTF-8), else 'en'."""
    primary = re.split(r"[-_.@]", str(locale).strip().casefold(), maxsplit=1)[0]
    # "in" is Indonesian's withdrawn ISO 639 code, still sent by older Java/Android stacks.
    return "id" if primary in ("id", "in") else "en"


def _score_of(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        score = float(value)
    except OverflowError:
        return None
    return score if math.isfinite(score) else None


def _hit_of(item: Any) -> SourceHit | None:
    if not isinstance(item, Mapping):
        return None
    texts = [item.get(key) for key in ("documentId", "chunkId", "title", "snippet")]
    score = _score_of(item.get("score"))
    if score is None or not all(isinstance(text, str) for text in texts) or not all(texts[:2]):
        return None
    document_id, chunk_id, title, snippet = (str(text) for text in texts)
    return SourceHit(document_id, chunk_id, title, snippet, score)


def _knowledge_hits(result: Any) -> list[SourceHit] | None:
    """A knowledge.search result's well-formed hits in stored order; None if it is not one."""
    if not isinstance(result, Mapping) or not isinstance(result.get("hits"), list):
        return None
    return [hit for hit in map(_hit_of, result["hits"]) if hit is not None]


def hits_from_results(results: Mapping[str, Any]) -> list[SourceHit]:
    """Earlier steps' results by step id -> their knowledge hits, best score first.

    Malformed items are skipped; a chunk found twice keeps its higher score and the
    place of its first appearance among equal scores.
    """
    best: dict[str, tuple[int, SourceHit]] = {}
    for result in results.values():
        for hit in _knowledge_hits(result) or ():
            seen = best.get(hit.chunk_id)
            if seen is None:
                best[hit.chunk_id] = (len(best), hit)
            elif hit.score > seen[1].score:
                best[hit.chunk_id] = (seen[0], hit)
    ranked = sorted(best.values(), key=lambda entry: (-entry[1].score, entry[0]))
    return [hit for _, hit in ranked]


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _clip(text: str, limit: int) -> str:
    """`text` on one line, at most `limit` characters, cut on a word when one is near."""
    flat = _one_line(text)
    if len(flat) <= limit:
        return flat
    cut = flat[: max(limit - 1, 0)]
    space = cut.rfind(" ")
    if space > len(cut) // 2:
        cut = cut[:space]
    return cut.rstrip() + _ELLIPSIS


def _drop_number(match: re.Match[str]) -> str:
    # Deleting "[1]" from "[[1]2]" would glue a new "[2]" together; a space keeps it apart.
    return " " if match.string[match.start() - 1 : match.start()] in ("[", "^") else ""


def _clean_inline(text: str) -> str:
    text = _one_line(_EMPHASIS.sub("", _LINK.sub(r"\1", text)))
    return _one_line(_BRACKETED_NUMBER.sub(_drop_number, text))


def _blocks(snippet: str) -> list[str]:
    """Markdown paragraphs and list items as plain text; bare headings and rules dropped."""
    blocks: list[list[str]] = [[]]
    for raw in snippet.splitlines():
        line = raw.strip()
        if _HEADING.match(line):
            line = _HEADING.sub("", line)
            # A bare heading is the document's title or a section name, not an answer; a
            # heading flattened into its paragraph still carries sentences.
            if not _ENDS_SENTENCE.search(line):
                line = ""
        if not line or _RULE_OR_FENCE.match(line):
            blocks.append([])
            continue
        if _LIST_ITEM.match(line):
            blocks.append([])
            line = _LIST_ITEM.sub("", line)
        blocks[-1].append(_QUOTE.sub("", line))
    return [" ".join(lines) for lines in blocks if lines]


def _sentences(snippet: str) -> list[str]:
    sentences: list[str] = []
    for block in _blocks(snippet):
        parts = _SENTENCE_END.split(_clean_inline(block))
        sentences.extend(part.strip() for part in parts if _WORD.search(part))
    return sentences


def _terms(text: str) -> frozenset[str]:
    words = _WORD.findall(unicodedata.normalize("NFKC", text).casefold())
    return frozenset(word for word in words if word not in _STOP_WORDS)


def _stem(word: str) -> str:
    """A rough stem: enough to relate "refund", "refunds", "refunded" and "refundable"."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= _MIN_STEM:
            word = word[: -len(suffix)]
            # "shipping" -> "shipp" -> "ship"
            if len(word) > _MIN_STEM and word[-1] == word[-2] and word[-1] not in "aeiou":
                word = word[:-1]
            break
    # "store" and "stored" meet at "stor".
    return word.removesuffix("e") if len(word) > _MIN_STEM else word


def _related(a: str, b: str) -> bool:
    # Only a whole word may be the other's prefix ("ship" / "shipping"): a shared start
    # alone would relate "customs" and "customer".
    short, long = sorted((a, b), key=len)
    return (len(short) >= _MIN_STEM and long.startswith(short)) or _stem(a) == _stem(b)


def _overlap(question: frozenset[str], sentence: frozenset[str]) -> float:
    return sum(
        _EXACT
        if term in sentence
        else _RELATED
        if any(_related(term, w) for w in sentence)
        else 0.0
        for term in sorted(question)
    )


def _hit_weights(hits: Sequence[SourceHit]) -> list[float]:
    # Relative to the best hit, so cosine scores and rank-fusion scores weigh alike.
    scores = [max(_score_of(hit.score) or 0.0, 0.0) for hit in hits]
    top = max(scores, default=0.0)
    if top <= 0.0:
        return [1.0] * len(scores)
    return [_MIN_HIT_WEIGHT + (1.0 - _MIN_HIT_WEIGHT) * score / top for score in scores]


def _candidates(question: frozenset[str], hits: Sequence[SourceHit]) -> list[_Candidate]:
    """Every snippet sentence sharing a term with the question, best first."""
    candidates: list[_Candidate] = []
    for hit_index, (hit, weight) in enumerate(zip(hits, _hit_weights(hits), strict=True)):
        for sentence_index, sentence in enumerate(_sentences(hit.snippet)):
            overlap = _overlap(question, _terms(sentence))
            if overlap > 0.0:
                candidates.append(_Candidate(overlap * weight, hit_index, sentence_index, sentence))
    candidates.sort(key=lambda c: (-c.score, c.hit_index, c.sentence_index))
    return candidates


def _select(
    candidates: Sequence[_Candidate], max_sentences: int, max_chars: int, marker_width: int
) -> list[_Candidate]:
    """The best sentences within the budgets, in the order of their hits."""
    chosen: list[_Candidate] = []
    keys: list[str] = []
    used = 0
    floor = candidates[0].score * _RELATIVE_FLOOR if candidates else 0.0
    for candidate in candidates:
        if len(chosen) >= max_sentences or candidate.score < floor:
            break
        key = candidate.text.casefold()
        # Overlapping chunks repeat sentences, sometimes cut short: say each once.
        if any(key in kept or kept in key for kept in keys):
            continue
        cost = len(candidate.text) + marker_width + (1 if chosen else 0)
        if used + cost > max_chars:
            if chosen:
                continue
            # The best sentence alone is too long: a cut one beats no answer at all.
            candidate = replace(candidate, text=_clip(candidate.text, max_chars - marker_width))
            cost = len(candidate.text) + marker_width
        chosen.append(candidate)
        keys.append(key)
        used += cost
    return sorted(chosen, key=lambda c: (c.hit_index, c.sentence_index))


def _display_title(hit: SourceHit) -> str:
    title = _clean_inline(_HEADING.sub("", hit.title.strip()))
    return _clip(title or _clean_inline(hit.document_id) or "-", _TITLE_CHARS)


def _layout(
    chosen: Sequence[_Candidate], hits: Sequence[SourceHit], language: str
) -> ComposedAnswer:
    numbers: dict[int, int] = {}
    sentences: list[str] = []
    for candidate in chosen:
        number = numbers.setdefault(candidate.hit_index, len(numbers) + 1)
        sentences.append(f"{candidate.text} [{number}]")
    citations = tuple(
        Citation(number, hits[index].document_id, hits[index].chunk_id, hits[index].title)
        for index, number in numbers.items()
    )
    sources = "\n".join(f"[{numbers[i]}] {_display_title(hits[i])}" for i in numbers)
    text = f"{_INTRO[language]}\n\n{' '.join(sentences)}\n\n{_SOURCES[language]}\n{sources}"
    return ComposedAnswer(text, citations, language)


def compose_answer(
    question: str,
    hits: Sequence[SourceHit],
    locale: str,
    *,
    max_sentences: int = 4,
    max_chars: int = 1500,
) -> ComposedAnswer:
    """An extractive answer to `question` from `hits`, in the locale's language.

    `max_chars` bounds the answer's body (the cited sentences, markers and spaces; values
    below 20 count as 20), `max_sentences` the number of sentences (at least 1). Without a
    sentence sharing a term with the question the answer says nothing was found.
    """
    language = answer_language(locale)
    hit_list = list(hits)
    marker_width = len(f" [{max(min(max_sentences, len(hit_list)), 1)}]")
    chosen = _select(
        _candidates(_terms(question), hit_list),
        max(max_sentences, 1),
        max(max_chars, _MIN_BODY_CHARS),
        marker_width,
    )
    if not chosen:
        clipped = _clip(question, _QUESTION_CHARS)
        return ComposedAnswer(_NOT_FOUND[language].replace("{question}", clipped), (), language)
    return _layout(chosen, hit_list, language)


def stream_pieces(text: str) -> list[str]:
    """`text` as streamed pieces: each word with the spaces and punctuation after it.

    Leading non-word characters ride with the first word; `"".join(pieces) == text`.
    """
    return _PIECE.findall(text)


def _compact_json(value: Any) -> str:
    # Sorted keys keep a prompt reproducible; mixed key types cannot sort, so retry unsorted.
    for sort_keys in (True, False):
        try:
            return json.dumps(
                value, ensure_ascii=False, separators=(",", ":"), sort_keys=sort_keys, default=str
            )
        except (TypeError, ValueError, RecursionError):
            continue
    return f"<{type(value).__name__}>"


def _render_result(result: Any) -> str:
    hits = _knowledge_hits(result)
    if hits is not None:
        lines = [
            f"{n}. {_one_line(h.title)}: {_one_line(h.snippet)}" for n, h in enumerate(hits, 1)
        ]
        return "\n".join(lines) or "(no hits)"
    if isinstance(result, Mapping) and isinstance(result.get("text"), str):
        return str(result["text"])
    return _compact_json(result)


def render_prompt(template: str, *, goal: str, results: Mapping[str, Any]) -> str:
    """`template` with {goal}, {results} and {step.<id>} filled in and {{ }} as braces.

    Anything else in braces stays as written, so a template never fails to render.
    """
    rendered = {str(step_id): _render_result(result) for step_id, result in results.items()}

    def substitute(match: re.Match[str]) -> str:
        token, name = match.group(0), match.group(1)
        if token in ("{{", "}}"):
            return token[0]
        if name == "goal":
            return goal
        if name == "results":
            return "\n\n".join(f"[{step}]\n{text}" for step, text in sorted(rendered.items()))
        if name.startswith("step."):
            return rendered.get(name.removeprefix("step."), "")
        return token

    return _PLACEHOLDER.sub(substitute, template)
