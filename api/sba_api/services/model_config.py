"""Which model a tenant's llm.generate steps use, and how many tokens it may spend a day.

The Tenant's `spec.model` (provider, base URL, model, fallback, the API key as a
Secret in the tenant's namespace) overrides the deployment's default (SBA_LLM_*).
Read through Kubernetes and cached briefly per replica; a stale value is served
when Kubernetes is briefly unreachable. The key stays in this process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from pydantic import ValidationError

from sba_api.errors import ApiError, ServiceUnavailable
from sba_api.settings import ModelSettings
from sba_core.group import tenant_namespace
from sba_core.models.tenant import ModelProviderKind, TenantModel, TenantQuotas
from sba_llm import BUILTIN_MODEL, ModelConfig, Provider

log = logging.getLogger(__name__)

TenantFetcher = Callable[[str], Awaitable[dict[str, Any] | None]]
SecretFetcher = Callable[[str, str, str], Awaitable[str | None]]
"""(namespace, name, key) -> the Secret's value, or None."""

_DEFAULT_QUOTAS: Final = TenantQuotas()
_MAX_CACHED: Final = 10_000


@dataclass(frozen=True)
class TenantModelTerms:
    config: ModelConfig
    tokens_per_day: int
    allowed_tools: tuple[str, ...] | None = None
    """spec.allowedTools: the only tools an agent turn is offered (None: all)."""


def default_config(settings: ModelSettings) -> ModelConfig:
    return ModelConfig(
        provider=Provider(settings.provider),
        model=settings.model,
        fallback_model=settings.fallback_model,
        base_url=settings.base_url,
        api_key=settings.api_key,
        timeout_seconds=settings.timeout_seconds,
        max_retries=settings.max_retries,
    )


class ModelConfigSource:
    def __init__(
        self,
        settings: ModelSettings,
        fetch_tenant: TenantFetcher | None,
        fetch_secret: SecretFetcher | None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._fetch_tenant = fetch_tenant
        self._fetch_secret = fetch_secret
        self._clock = clock
        self._cache: dict[str, tuple[float, TenantModelTerms]] = {}

    async def for_tenant(self, tenant: str) -> TenantModelTerms:
        now = self._clock()
        cached = self._cache.get(tenant)
        if cached is not None and now - cached[0] < self._settings.config_cache_seconds:
            return cached[1]
        try:
            terms = await self._load(tenant)
        except ApiError:
            if cached is None:
                raise
            log.warning("using a stale model configuration for tenant %s", tenant)
            return cached[1]
        if len(self._cache) >= _MAX_CACHED:
            self._cache.clear()
        self._cache[tenant] = (now, terms)
        return terms

    async def _load(self, tenant: str) -> TenantModelTerms:
        raw = await self._fetch_tenant(tenant) if self._fetch_tenant is not None else None
        spec = raw.get("spec") if isinstance(raw, dict) else None
        spec = spec if isinstance(spec, dict) else {}
        quota = _tokens_per_day(spec.get("quotas"))
        allowed_raw = spec.get("allowedTools")
        allowed = tuple(str(t) for t in allowed_raw) if isinstance(allowed_raw, list) else None
        model_raw = spec.get("model")
        if not isinstance(model_raw, dict):
            return TenantModelTerms(default_config(self._settings), quota, allowed)
        try:
            model = TenantModel.model_validate(model_raw)
        except ValidationError as exc:
            # Admission refuses such a spec; never fall back silently to another provider.
            raise ServiceUnavailable(
                f"tenant {tenant!r} has an unusable spec.model: {exc.errors()[0]['msg']}"
            ) from exc
        return TenantModelTerms(await self._tenant_config(tenant, model), quota, allowed)

    async def _tenant_config(self, tenant: str, model: TenantModel) -> ModelConfig:
        if model.provider is ModelProviderKind.BUILTIN:
            return ModelConfig(provider=Provider.BUILTIN, model=BUILTIN_MODEL)
        key: str | None = None
        ref = model.api_key_secret_ref
        if ref is not None and self._fetch_secret is not None:
            key = await self._fetch_secret(tenant_namespace(tenant), ref.name, ref.key)
            if key is None:
                raise ServiceUnavailable(
                    f"tenant {tenant!r}: Secret {ref.name!r} (key {ref.key!r}) named by"
                    " spec.model.apiKeySecretRef is missing"
                )
        return ModelConfig(
            provider=Provider.OPENAI,
            model=model.model,
            fallback_model=model.fallback_model,
            base_url=model.base_url or self._settings.base_url or "https://api.openai.com/v1",
            api_key=key,
            timeout_seconds=float(model.timeout_seconds),
            max_retries=self._settings.max_retries,
        )


def _tokens_per_day(raw: Any) -> int:
    if isinstance(raw, dict):
        value = raw.get("tokensPerDay")
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return _DEFAULT_QUOTAS.tokens_per_day
