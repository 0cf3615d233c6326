"""/api/v1/runs/{run_id}/artifacts: list and download a run's artifacts."""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

from aiohttp import web

from sba_api.handlers._common import json_response, principal, services

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_EXTENSIONS = {
    "text/markdown": ".md",
    "text/html": ".html",
    "text/plain": ".txt",
    "application/json": ".json",
    "application/pdf": ".pdf",
}


def safe_filename(title: str, content_type: str) -> str:
    """An ASCII file name made from the title (no paths, quotes or control characters)."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    stem = _UNSAFE.sub("-", ascii_title).strip("-.")[:100] or "artifact"
    extension = _EXTENSIONS.get(content_type.split(";")[0].strip().lower(), "")
    return stem if stem.lower().endswith(extension) else stem + extension


def content_disposition(title: str, content_type: str) -> str:
    fallback = safe_filename(title, content_type)
    extension = fallback[len(fallback.rsplit(".", 1)[0]) :] if "." in fallback else ""
    utf8 = quote(title.replace("/", "-").replace("\\", "-")[:150] + extension, safe="")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{utf8}"


async def list_artifacts(request: web.Request) -> web.Response:
    await services(request).runs.authorize(principal(request), request.match_info["run_id"])
    items = await services(request).artifacts.list_for_run(request.match_info["run_id"])
    return json_response(items)


async def download_artifact(request: web.Request) -> web.Response:
    await services(request).runs.authorize(principal(request), request.match_info["run_id"])
    found = await services(request).artifacts.download(
        request.match_info["run_id"], request.match_info["artifact_id"]
    )
    record = found.record
    etag = f'"{record.sha256}"'
    headers = {
        "ETag": etag,
        "Content-Disposition": content_disposition(record.title, record.content_type),
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, max-age=0, must-revalidate",
    }
    if etag in {t.strip() for t in request.headers.get("If-None-Match", "").split(",")}:
        return web.Response(status=304, headers=headers)
    response = web.Response(body=found.content, headers=headers)
    response.content_type = record.content_type.split(";")[0].strip() or "application/octet-stream"
    if "charset=" in record.content_type:
        response.charset = record.content_type.split("charset=", 1)[1].split(";")[0].strip()
    return response
