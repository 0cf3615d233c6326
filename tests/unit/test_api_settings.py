"""Settings are read from the environment once, with defaults and checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from sba_api.settings import EmbeddingProvider, Settings, SettingsError

BASE = {
    "DATABASE_URL": "postgresql://u@db/sba",
    "REDIS_URL": "redis://redis:6379/0",
    "SBA_STEP_TOKEN_SECRET": "s" * 32,
    "SBA_JWT_HS256_SECRET": "j" * 32,
}


def test_defaults() -> None:
    settings = Settings.from_env(BASE)
    assert settings.http.port == 8080
    assert settings.http.host == "0.0.0.0"
    assert settings.sse.heartbeat_seconds == 15
    assert settings.database.url == BASE["DATABASE_URL"]
    assert settings.redis.url == BASE["REDIS_URL"]
    assert settings.kubernetes.kubeconfig is None
    assert settings.embeddings.provider is EmbeddingProvider.HASHING


def test_overrides() -> None:
    settings = Settings.from_env(
        {
            **BASE,
            "SBA_API_HOST": "127.0.0.1",
            "SBA_API_PORT": "9090",
            "SBA_PUBLIC_URL": "https://sba.example/",
            "SBA_SSE_HEARTBEAT_SECONDS": "2.5",
            "KUBECONFIG": "/tmp/kc",
            "SBA_API_MAX_BODY_BYTES": "2048",
            "SBA_EMBEDDINGS_BASE_URL": "http://embed:8000/v1/",
            "OPENAI_API_KEY": "sk-1",
            "SBA_EMBEDDINGS_MODEL": "bge-small",
        }
    )
    assert (settings.http.host, settings.http.port) == ("127.0.0.1", 9090)
    assert settings.http.public_url == "https://sba.example"
    assert settings.http.max_body_bytes == 2048
    assert settings.sse.heartbeat_seconds == 2.5
    assert settings.kubernetes.kubeconfig == Path("/tmp/kc")
    assert settings.embeddings.provider is EmbeddingProvider.OPENAI
    assert settings.embeddings.base_url == "http://embed:8000/v1"
    assert settings.embeddings.api_key == "sk-1"
    assert settings.embeddings.model == "bge-small"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"DATABASE_URL": ""}, "DATABASE_URL"),
        ({"REDIS_URL": ""}, "REDIS_URL"),
        ({"SBA_STEP_TOKEN_SECRET": "short"}, "SBA_STEP_TOKEN_SECRET"),
        ({"SBA_API_PORT": "http"}, "SBA_API_PORT"),
        ({"SBA_SSE_HEARTBEAT_SECONDS": "0"}, "SBA_SSE_HEARTBEAT_SECONDS"),
        ({"SBA_EMBEDDINGS_PROVIDER": "magic"}, "SBA_EMBEDDINGS_PROVIDER"),
    ],
)
def test_bad_values_are_refused(change: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({**BASE, **change})
