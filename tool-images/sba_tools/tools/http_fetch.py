"""``http.fetch``: GET a page from a host on the tenant's egress allowlist.

Everything about where it may connect lives in ``sba_tools.egress`` (allowlist, public
addresses only, pinned connections, redirects re-checked at every hop, at most
``MAX_REDIRECTS``). This module decides what the result holds: the status of the final
response, whatever it is (a 404 page is still what the URL serves), and the body decoded as
text for textual media types (an empty text otherwise), cut so the result stays well
inside the gateway's request limit.
"""

from __future__ import annotations

import codecs
import json
from email.message import Message
from typing import Final

from sba_core.tools.builtin.http_fetch import HttpFetchParams, HttpFetchResult
from sba_tools.tools.base import ToolContext, ToolImplementation

MAX_REDIRECTS: Final = 3
MAX_TEXT_JSON_BYTES: Final = 512 * 1024
"""The text's size once JSON-encoded (as the runtime posts it); the API takes 1 MiB."""
ACCEPT: Final = "text/html, text/plain;q=0.9, application/json;q=0.9, */*;q=0.5"
_TEXTUAL_APPLICATION: Final = frozenset(
    {
        "application/json",
        "application/xml",
        "application/xhtml+xml",
        "application/javascript",
        "application/ecmascript",
        "application/x-www-form-urlencoded",
        "application/ld+json",
        "application/rss+xml",
        "application/atom+xml",
        "application/yaml",
        "application/x-yaml",
        "application/toml",
        "application/csv",
    }
)


def _media(content_type: str | None) -> tuple[str, str | None]:
    """(media type, charset) of a Content-Type header; text/plain when absent."""
    message = Message()
    message["content-type"] = content_type or "application/octet-stream"
    charset = message.get_content_charset()
    return message.get_content_type(), charset


def is_textual(media_type: str) -> bool:
    return (
        media_type.startswith("text/")
        or media_type in _TEXTUAL_APPLICATION
        or media_type.endswith(("+json", "+xml"))
    )


def decode_body(body: bytes, content_type: str | None) -> str:
    """The body as text: its declared charset (UTF-8 otherwise); "" for non-text types."""
    media, charset = _media(content_type)
    if not is_textual(media):
        return ""
    encoding = "utf-8"
    if charset:
        try:
            encoding = codecs.lookup(charset).name
        except LookupError:
            encoding = "utf-8"
    return body.decode(encoding, "replace")


def clip_for_json(text: str, limit: int = MAX_TEXT_JSON_BYTES) -> tuple[str, bool]:
    """The longest prefix of ``text`` whose JSON encoding fits ``limit`` bytes; clipped?"""

    def size(value: str) -> int:
        return len(json.dumps(value))

    if size(text) <= limit:
        return text, False
    low, high = 0, min(len(text), limit)
    while low < high:
        mid = (low + high + 1) // 2
        if size(text[:mid]) <= limit:
            low = mid
        else:
            high = mid - 1
    return text[:low], True


def run(ctx: ToolContext, params: HttpFetchParams) -> HttpFetchResult:
    response = ctx.http.request(
        "GET",
        params.url,
        allowlist=ctx.step.config.egress_allowlist,
        max_bytes=params.max_bytes,
        timeout=params.timeout_seconds,
        headers={"Accept": ACCEPT},
        max_redirects=MAX_REDIRECTS,
    )
    text, clipped = clip_for_json(decode_body(response.body, response.content_type))
    ctx.log.info(
        "http.fetch.done",
        status=response.status,
        redirects=len(response.redirects),
        bytes=len(response.body),
        truncated=response.truncated or clipped,
    )
    return HttpFetchResult(
        url=params.url,
        final_url=response.url,
        status=response.status,
        content_type=response.content_type,
        text=text,
        truncated=response.truncated or clipped,
        byte_count=len(response.body),
    )


def summarize(result: HttpFetchResult) -> str:
    cut = ", truncated" if result.truncated else ""
    kind = result.content_type or "no content type"
    return f"HTTP {result.status} from {result.final_url} ({result.byte_count} bytes, {kind}{cut})"


IMPLEMENTATION = ToolImplementation(params_type=HttpFetchParams, run=run, summarize=summarize)
