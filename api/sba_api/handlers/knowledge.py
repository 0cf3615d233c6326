"""/api/v1/knowledge: ingest documents and search them."""

from __future__ import annotations

from aiohttp import web

from sba_api.handlers._common import json_response, principal, read_json, services
from sba_api.schemas import KnowledgeDocumentIn, KnowledgeSearchIn
from sba_api.services.access import scope_tenant


async def ingest_document(request: web.Request) -> web.Response:
    who = principal(request)
    document = await read_json(request, KnowledgeDocumentIn, defaults={"tenant": who.tenant})
    scope_tenant(who, document.tenant)
    created = await services(request).knowledge.ingest(document)
    return json_response(created, status=201)


async def search(request: web.Request) -> web.Response:
    who = principal(request)
    query = await read_json(request, KnowledgeSearchIn, defaults={"tenant": who.tenant})
    scope_tenant(who, query.tenant)
    result = await services(request).knowledge.search(query.tenant, query.query, query.top_k)
    return json_response(result)
