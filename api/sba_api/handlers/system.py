"""Health, metrics, the tool catalog and the API's own documentation."""

from __future__ import annotations

from aiohttp import web

from sba_api.handlers._common import json_response, parse_query, principal, services
from sba_api.keys import METRICS, OPENAPI
from sba_api.metrics import CONTENT_TYPE_LATEST
from sba_api.schemas import Health, ToolListQuery
from sba_api.services.access import scope_tenant

SWAGGER_UI_VERSION = "5.17.14"

_DOCS_HTML = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>SBA Agentic API</title>
  <link rel="stylesheet" href="https://unpkg.com/swagger-ui-dist@{version}/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="https://unpkg.com/swagger-ui-dist@{version}/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({{ url: "/openapi.json", dom_id: "#swagger-ui" }});
  </script>
</body>
</html>
"""


async def healthz(request: web.Request) -> web.Response:
    return json_response(Health(status="ok"))


async def readyz(request: web.Request) -> web.Response:
    health = await services(request).system.readiness()
    return json_response(health, status=200 if health.status == "ok" else 503)


async def metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].render()
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


async def tools(request: web.Request) -> web.Response:
    query = parse_query(request, ToolListQuery)
    tenant = scope_tenant(principal(request), query.tenant)
    return json_response(await services(request).system.catalog(tenant))


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI])


async def docs(request: web.Request) -> web.Response:
    return web.Response(
        text=_DOCS_HTML.format(version=SWAGGER_UI_VERSION), content_type="text/html"
    )
