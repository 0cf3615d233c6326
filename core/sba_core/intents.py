"""What a prompt asks the builtin planner to *do*, in Indonesian or English.

Offline and deterministic: a prompt that asks to sync the CRM ("sinkronisasi CRM
untuk kontak dan deal", "sync contacts to the CRM") becomes a `crm.sync` step with
the record kinds it names as its `scope`; one that asks for a task ("buat tugas
untuk menelepon Budi", "create a task to call Budi") becomes `task.create` with the
title it gives — and when it gives none, a `user.input` step asks for it first
rather than the planner guessing. A prompt naming a registered tool outright
(`invoice.check`) gets that tool when its contract needs no params. Anything else
is a question for the knowledge base (see `sba_core.planning`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Final

from sba_core.tools.names import ToolName
from sba_core.tools.registry import ToolRegistry

_WORD: Final = re.compile(r"[\w.]+", re.UNICODE)
_NAME: Final = re.compile(r"[\w.-]+", re.UNICODE)
"""A tool's name as a prompt may spell it: `invoice.check`, `word-stats`."""

_SYNC_WORDS: Final = frozenset(
    "sync synchronize synchronise synchronization synchronisation resync"
    " sinkron sinkronkan sinkronisasi sinkronisasikan selaraskan".split()
)
_CONTACT_WORDS: Final = frozenset("contact contacts kontak pelanggan customer customers".split())
_DEAL_WORDS: Final = frozenset("deal deals kesepakatan transaksi opportunity opportunities".split())

_TASK_PHRASE: Final = re.compile(
    r"\b(?:(?:create|add|make|open|new)\s+(?:a\s+|an\s+|the\s+)?(?:task|to-?do|reminder)"
    r"|(?:buat(?:kan)?|tambah(?:kan)?|bikin(?:kan)?)\s+(?:sebuah\s+|satu\s+)?(?:tugas|pengingat))"
    r"\b\s*(?::|-|\u2013|\bto\b|\bfor\b|\buntuk\b|\bagar\b|\bsupaya\b)?\s*",
    re.IGNORECASE,
)
_TITLE_END: Final = re.compile(r"\s*(?:[.;!?]\s|[.;!?]$|\n).*", re.DOTALL)
_MAX_TITLE: Final = 200
_QUOTES: Final = " \"'\u201c\u201d\u2018\u2019"

ASK_TITLE: Final = {
    "id": "Apa judul tugas yang harus dibuat?",
    "en": "What should the task be called?",
}


@dataclass(frozen=True)
class IntentStep:
    id: str
    tool: str
    params: dict[str, Any] = field(default_factory=dict)


def _words(text: str) -> list[str]:
    return [w.lower().strip(".") for w in _WORD.findall(text)]


def _language(locale: str) -> str:
    return "id" if locale.lower().split("-")[0] in ("id", "in") else "en"


def crm_sync(prompt: str) -> IntentStep | None:
    words = set(_words(prompt))
    if "crm" not in words or not words & _SYNC_WORDS:
        return None
    scope = [
        kind
        for kind, vocabulary in (("contacts", _CONTACT_WORDS), ("deals", _DEAL_WORDS))
        if words & vocabulary
    ] or ["contacts", "deals"]
    return IntentStep("crm-sync", str(ToolName.CRM_SYNC), {"scope": scope})


def task_title(prompt: str) -> str | None:
    """The title the prompt gives its task, or None ('' after the phrase: None)."""
    match = _TASK_PHRASE.search(prompt)
    if match is None:
        return None
    rest = _TITLE_END.sub("", prompt[match.end() :]).strip(_QUOTES)
    return rest[:_MAX_TITLE].rstrip() or ""


def task_create(prompt: str, locale: str) -> list[IntentStep]:
    title = task_title(prompt)
    if title is None:
        return []
    if title:
        return [IntentStep("task", str(ToolName.TASK_CREATE), {"title": title})]
    ask = IntentStep(
        "task-title", str(ToolName.USER_INPUT), {"prompt": ASK_TITLE[_language(locale)]}
    )
    return [ask, IntentStep("task", str(ToolName.TASK_CREATE), {"titleFrom": ask.id})]


def named_tools(prompt: str, registry: ToolRegistry) -> list[IntentStep]:
    """Registered tools the prompt names outright (`invoice.check`) that need no params."""
    found: list[IntentStep] = []
    words = {w.lower().strip(".-") for w in _NAME.findall(prompt)}
    for name, spec in sorted(registry.items()):
        # Only distinctive names (`invoice.check`, `word-stats`): a plain word is prose.
        if not ("." in name or "-" in name) or name not in words or not spec.runs_job:
            continue
        if name in (ToolName.CRM_SYNC, ToolName.TASK_CREATE, ToolName.KNOWLEDGE_SEARCH):
            continue  # planned from what the prompt says, above
        try:
            spec.validate_params({})
        except ValueError:
            continue  # its params cannot be guessed
        found.append(IntentStep(name.replace(".", "-")[:40], name, {}))
    return found


def actions(prompt: str, registry: ToolRegistry, locale: str) -> list[IntentStep]:
    """The side-effecting or named actions the prompt asks for, in a stable order."""
    steps: list[IntentStep] = []
    if ToolName.CRM_SYNC in registry and (sync := crm_sync(prompt)) is not None:
        steps.append(sync)
    if ToolName.TASK_CREATE in registry:
        steps.extend(task_create(prompt, locale))
    steps.extend(named_tools(prompt, registry))
    return steps
