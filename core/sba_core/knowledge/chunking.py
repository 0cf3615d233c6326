"""Split a document into bounded, overlapping chunks for retrieval.

Chunks follow the document's own structure (paragraphs, then sentences, then
words) so a hit reads as a coherent passage. Each chunk starts with the tail of
the previous one so a fact that straddles a boundary is still found whole.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_MAX_CHARS = 800
DEFAULT_OVERLAP = 100

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class _Unit:
    """A piece of text no longer than the unit budget."""

    text: str
    starts_paragraph: bool


def chunk_text(
    text: str, *, max_chars: int = DEFAULT_MAX_CHARS, overlap: int = DEFAULT_OVERLAP
) -> list[str]:
    """Return the chunks of `text`, each at most `max_chars` long.

    Deterministic: the same input always gives the same chunks.
    """
    if max_chars < 20:
        raise ValueError("max_chars must be at least 20")
    if not 0 <= overlap <= max_chars // 2:
        raise ValueError("overlap must be between 0 and max_chars // 2")
    # A unit must fit after an overlap prefix and its separator (at most 2 chars).
    unit_budget = max_chars - overlap - 2
    units = _units(text, unit_budget)
    chunks: list[str] = []
    current = ""
    for unit in units:
        separator = "\n\n" if unit.starts_paragraph else " "
        candidate = f"{current}{separator}{unit.text}" if current else unit.text
        if len(candidate) <= max_chars:
            current = candidate
            continue
        chunks.append(current)
        tail = _tail(current, overlap)
        current = f"{tail}{separator}{unit.text}" if tail else unit.text
    if current:
        chunks.append(current)
    return chunks


def _units(text: str, budget: int) -> list[_Unit]:
    """Paragraphs, split into sentences and then words when they exceed the budget."""
    units: list[_Unit] = []
    for paragraph in _PARAGRAPH_BREAK.split(text):
        clean = _WHITESPACE.sub(" ", paragraph).strip()
        if not clean:
            continue
        pieces = [clean] if len(clean) <= budget else _split_long(clean, budget)
        units.extend(_Unit(piece, index == 0) for index, piece in enumerate(pieces))
    return units


def _split_long(paragraph: str, budget: int) -> list[str]:
    """Pack a paragraph's sentences into pieces within the budget."""
    pieces: list[str] = []
    current = ""
    for sentence in _SENTENCE_END.split(paragraph):
        for part in [sentence] if len(sentence) <= budget else _split_words(sentence, budget):
            candidate = f"{current} {part}" if current else part
            if len(candidate) <= budget:
                current = candidate
            else:
                pieces.append(current)
                current = part
    if current:
        pieces.append(current)
    return pieces


def _split_words(sentence: str, budget: int) -> list[str]:
    """Pack words within the budget; a single over-long word is cut hard."""
    pieces: list[str] = []
    current = ""
    for word in sentence.split(" "):
        while len(word) > budget:
            if current:
                pieces.append(current)
                current = ""
            pieces.append(word[:budget])
            word = word[budget:]
        candidate = f"{current} {word}" if current else word
        if len(candidate) <= budget:
            current = candidate
        else:
            pieces.append(current)
            current = word
    if current:
        pieces.append(current)
    return pieces


def _tail(chunk: str, overlap: int) -> str:
    """The last `overlap` characters of a chunk, starting on a word boundary."""
    if overlap == 0 or len(chunk) <= overlap:
        return "" if overlap == 0 else chunk
    tail = chunk[-overlap:]
    space = tail.find(" ")
    # Drop the partial first word; if there is no space the tail is one word, keep it.
    return tail[space + 1 :].strip() if space != -1 else tail.strip()
