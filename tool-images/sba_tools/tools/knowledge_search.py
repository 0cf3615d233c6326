"""``knowledge.search``: hybrid search over the tenant's knowledge base, via the gateway.

The tenant is never sent: the gateway takes it from the step token.
"""

from __future__ import annotations

from sba_core.tools.builtin.knowledge_search import KnowledgeSearchParams, KnowledgeSearchResult
from sba_tools.tools.base import ToolContext, ToolImplementation


def run(ctx: ToolContext, params: KnowledgeSearchParams) -> KnowledgeSearchResult:
    result = ctx.gateway.search_knowledge(params)
    ctx.log.info("knowledge.search.done", hits=len(result.hits), topK=params.top_k)
    return result


def summarize(result: KnowledgeSearchResult) -> str:
    return f"{len(result.hits)} hit(s) for {result.query!r}"


IMPLEMENTATION = ToolImplementation(params_type=KnowledgeSearchParams, run=run, summarize=summarize)
