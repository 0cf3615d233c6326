"""``llm.generate``: a model step. The model call itself happens in the API's model gateway.

The pod holds no provider credential: it asks the gateway to run the step's call
(the gateway reads the step's params, the run's goal and earlier results, the
tenant's model configuration and quota, streams the tokens to the run's clients)
and gets the finished text back, which becomes the step's result.
"""

from __future__ import annotations

from sba_core.tools.builtin.llm_generate import LlmGenerateParams, LlmGenerateResult
from sba_tools.tools.base import ToolContext, ToolImplementation


def run(ctx: ToolContext, params: LlmGenerateParams) -> LlmGenerateResult:
    result = ctx.gateway.generate()
    ctx.log.info(
        "llm.generate.done",
        model=result.model,
        provider=result.provider,
        chars=len(result.text),
        promptTokens=result.usage.prompt_tokens,
        completionTokens=result.usage.completion_tokens,
        fallbacks=len(result.fallback_reasons),
    )
    return result


def summarize(result: LlmGenerateResult) -> str:
    return f"{result.model} wrote {len(result.text)} chars"


IMPLEMENTATION = ToolImplementation(params_type=LlmGenerateParams, run=run, summarize=summarize)
