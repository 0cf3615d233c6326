"""Which model a tenant's steps use: Tenant.spec.model over the deployment default."""

from __future__ import annotations

from typing import Any

import pytest

from sba_api.errors import ServiceUnavailable
from sba_api.services.model_config import ModelConfigSource
from sba_api.settings import ModelSettings, Settings
from sba_llm import Provider

ENV = {
    "DATABASE_URL": "postgresql://x",
    "REDIS_URL": "redis://x",
    "SBA_STEP_TOKEN_SECRET": "s" * 20,
    "SBA_JWT_HS256_SECRET": "j" * 40,
}


def _source(
    tenant: dict[str, Any] | None,
    secrets: dict[tuple[str, str, str], str] | None = None,
    settings: ModelSettings | None = None,
) -> tuple[ModelConfigSource, list[str]]:
    asked: list[str] = []

    async def fetch_tenant(name: str) -> dict[str, Any] | None:
        asked.append(name)
        if tenant == {"raise": True}:
            raise ServiceUnavailable("kubernetes is down")
        return tenant

    async def fetch_secret(namespace: str, name: str, key: str) -> str | None:
        return (secrets or {}).get((namespace, name, key))

    clock = iter(range(0, 10_000, 100))
    source = ModelConfigSource(
        settings or ModelSettings(config_cache_seconds=30),
        fetch_tenant,
        fetch_secret,
        clock=lambda: float(next(clock)),
    )
    return source, asked


def test_the_deployment_default_is_the_offline_model() -> None:
    assert Settings.from_env(ENV).models.provider == "builtin"
    openai = Settings.from_env({**ENV, "OPENAI_API_KEY": "sk-1"}).models
    assert (openai.provider, openai.model, openai.base_url) == (
        "openai",
        "gpt-4o-mini",
        "https://api.openai.com/v1",
    )
    assert "sk-1" not in repr(openai)  # the key never shows up in logs


async def test_a_tenant_without_a_model_gets_the_default_and_its_quota() -> None:
    source, _ = _source({"spec": {"quotas": {"tokensPerDay": 1234}}})
    terms = await source.for_tenant("acme")
    assert terms.config.provider is Provider.BUILTIN
    assert terms.tokens_per_day == 1234


async def test_a_tenant_model_reads_its_key_from_the_tenants_namespace() -> None:
    spec = {
        "model": {
            "provider": "openai",
            "baseUrl": "http://vllm:8000/v1",
            "model": "llama",
            "fallbackModel": "qwen",
            "apiKeySecretRef": {"name": "llm-key", "key": "apiKey"},
        }
    }
    source, _ = _source({"spec": spec}, {("tenant-acme", "llm-key", "apiKey"): "sk-acme"})
    config = (await source.for_tenant("acme")).config
    assert config.provider is Provider.OPENAI
    assert (config.base_url, config.model, config.fallback_model) == (
        "http://vllm:8000/v1",
        "llama",
        "qwen",
    )
    assert config.api_key == "sk-acme"
    assert config.models() == ["llama", "qwen"]
    assert config.models("override") == ["override", "qwen"]
    assert "sk-acme" not in repr(config)


async def test_a_missing_key_secret_is_a_clear_503() -> None:
    spec = {"model": {"apiKeySecretRef": {"name": "gone", "key": "k"}}}
    source, _ = _source({"spec": spec})
    with pytest.raises(ServiceUnavailable, match="Secret 'gone'"):
        await source.for_tenant("acme")


async def test_a_cached_config_is_served_while_kubernetes_is_away() -> None:
    tenant: dict[str, Any] = {"spec": {"quotas": {"tokensPerDay": 7}}}
    source, asked = _source(tenant, settings=ModelSettings(config_cache_seconds=150))
    assert (await source.for_tenant("acme")).tokens_per_day == 7
    assert (await source.for_tenant("acme")).tokens_per_day == 7  # cached: 100 s later
    assert asked == ["acme"]
    tenant.clear()
    tenant["raise"] = True
    assert (await source.for_tenant("acme")).tokens_per_day == 7  # stale, not an error
    assert asked == ["acme", "acme"]
