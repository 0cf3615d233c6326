"""Server-Sent Events framing (the `text/event-stream` wire format), no I/O."""

from __future__ import annotations

DEFAULT_RETRY_MS = 2000


def _field_lines(name: str, value: str) -> list[str]:
    # A newline inside a value would end the field early; the spec says to
    # split it into several lines of the same field, which clients re-join.
    return [f"{name}: {line}" for line in value.split("\n")]


def frame(data: str, *, event: str | None = None, event_id: str | None = None) -> bytes:
    """One SSE message: optional `id:` and `event:`, then `data:` lines, then a blank line."""
    lines: list[str] = []
    if event_id is not None:
        if "\n" in event_id or "\r" in event_id or "\0" in event_id:
            raise ValueError("an SSE id may not contain newlines or NUL")
        lines.append(f"id: {event_id}")
    if event is not None:
        if "\n" in event or "\r" in event:
            raise ValueError("an SSE event name may not contain newlines")
        lines.append(f"event: {event}")
    lines.extend(_field_lines("data", data.replace("\r\n", "\n").replace("\r", "\n")))
    return ("\n".join(lines) + "\n\n").encode()


def retry(milliseconds: int = DEFAULT_RETRY_MS) -> bytes:
    """Tell the client how long to wait before reconnecting."""
    return f"retry: {int(milliseconds)}\n\n".encode()


def comment(text: str = "") -> bytes:
    """A comment line: ignored by clients, keeps proxies from closing idle streams."""
    return f": {text}\n\n".encode()


def parse_last_event_id(value: str | None) -> int:
    """The sequence number to resume after; 0 (from the start) when absent or unusable.

    Accepts both a bare sequence number (`12`) and our event ids (`<run-id>:12`).
    """
    if not value:
        return 0
    tail = value.strip().rsplit(":", 1)[-1]
    if not tail.isdigit():
        return 0
    return int(tail)
