"""The API's settings: one object, grouped by concern, built from the environment once.

Nothing reads the environment after start-up; `create_app(settings)` gets
everything it needs from this object.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

MIB = 1024 * 1024


class SettingsError(ValueError):
    """An environment variable is missing or unusable."""


@dataclass(frozen=True)
class HttpSettings:
    host: str = "0.0.0.0"
    port: int = 8080
    public_url: str = "http://localhost:8080"
    """Base URL clients reach the API at (used for absolute links)."""
    max_body_bytes: int = 1 * MIB
    """Largest JSON request body."""
    max_artifact_bytes: int = 10 * MIB
    """Largest artifact a tool may upload through the gateway."""


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = "postgresql://localhost:5432/sba"
    min_pool_size: int = 1
    max_pool_size: int = 10


@dataclass(frozen=True)
class RedisSettings:
    url: str = "redis://localhost:6379/0"


@dataclass(frozen=True)
class KubernetesSettings:
    kubeconfig: Path | None = None
    """Path of a kubeconfig; None means in-cluster config (or ~/.kube/config outside a pod)."""
    in_cluster: bool = False


@dataclass(frozen=True)
class GatewaySettings:
    step_token_secret: str = ""


@dataclass(frozen=True)
class SseSettings:
    heartbeat_seconds: float = 15.0
    retry_ms: int = 2000
    batch_size: int = 100
    """Most events read from Postgres (and so buffered) per write round."""


@dataclass(frozen=True)
class LimitsSettings:
    runs_page_default: int = 20
    runs_page_max: int = 100
    knowledge_top_k_max: int = 50


class EmbeddingProvider(StrEnum):
    HASHING = "hashing"
    OPENAI = "openai"


@dataclass(frozen=True)
class EmbeddingSettings:
    provider: EmbeddingProvider = EmbeddingProvider.HASHING
    base_url: str = "https://api.openai.com/v1"
    api_key: str | None = None
    model: str = "text-embedding-3-small"
    timeout_seconds: float = 30.0
    batch_size: int = 64


@dataclass(frozen=True)
class Settings:
    http: HttpSettings = field(default_factory=HttpSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    kubernetes: KubernetesSettings = field(default_factory=KubernetesSettings)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    sse: SseSettings = field(default_factory=SseSettings)
    limits: LimitsSettings = field(default_factory=LimitsSettings)
    embeddings: EmbeddingSettings = field(default_factory=EmbeddingSettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from `env` (default: os.environ)."""
        e = os.environ if env is None else env

        def get(name: str, default: str) -> str:
            value = e.get(name, "").strip()
            return value or default

        def number(name: str, default: float, *, minimum: float = 0) -> float:
            raw = e.get(name, "").strip()
            if not raw:
                return default
            try:
                value = float(raw)
            except ValueError as err:
                raise SettingsError(f"{name} must be a number, got {raw!r}") from err
            if value < minimum:
                raise SettingsError(f"{name} must be at least {minimum}, got {raw!r}")
            return value

        database_url = e.get("DATABASE_URL", "").strip()
        if not database_url:
            raise SettingsError("DATABASE_URL is not set (postgresql://...)")
        redis_url = e.get("REDIS_URL", "").strip()
        if not redis_url:
            raise SettingsError("REDIS_URL is not set (redis://...)")
        secret = e.get("SBA_STEP_TOKEN_SECRET", "").strip()
        if len(secret) < 16:
            raise SettingsError("SBA_STEP_TOKEN_SECRET must be set (at least 16 characters)")

        port = int(number("SBA_API_PORT", 8080, minimum=0))
        host = get("SBA_API_HOST", "0.0.0.0")
        kubeconfig_env = e.get("KUBECONFIG", "").strip()
        in_cluster = bool(e.get("KUBERNETES_SERVICE_HOST")) and not kubeconfig_env
        base_url = e.get("SBA_EMBEDDINGS_BASE_URL", "").strip()
        provider_raw = get(
            "SBA_EMBEDDINGS_PROVIDER",
            EmbeddingProvider.OPENAI if base_url else EmbeddingProvider.HASHING,
        )
        try:
            provider = EmbeddingProvider(provider_raw)
        except ValueError as err:
            raise SettingsError(
                f"SBA_EMBEDDINGS_PROVIDER must be one of {[p.value for p in EmbeddingProvider]}"
            ) from err

        return cls(
            http=HttpSettings(
                host=host,
                port=port,
                public_url=get("SBA_PUBLIC_URL", f"http://localhost:{port}").rstrip("/"),
                max_body_bytes=int(number("SBA_API_MAX_BODY_BYTES", MIB, minimum=1024)),
                max_artifact_bytes=int(
                    number("SBA_API_MAX_ARTIFACT_BYTES", 10 * MIB, minimum=1024)
                ),
            ),
            database=DatabaseSettings(
                url=database_url,
                min_pool_size=int(number("SBA_DB_POOL_MIN", 1, minimum=0)),
                max_pool_size=int(number("SBA_DB_POOL_MAX", 10, minimum=1)),
            ),
            redis=RedisSettings(url=redis_url),
            kubernetes=KubernetesSettings(
                kubeconfig=Path(kubeconfig_env.split(os.pathsep)[0]) if kubeconfig_env else None,
                in_cluster=in_cluster,
            ),
            gateway=GatewaySettings(step_token_secret=secret),
            sse=SseSettings(
                heartbeat_seconds=number("SBA_SSE_HEARTBEAT_SECONDS", 15.0, minimum=0.05),
                retry_ms=int(number("SBA_SSE_RETRY_MS", 2000, minimum=0)),
                batch_size=int(number("SBA_SSE_BATCH_SIZE", 100, minimum=1)),
            ),
            embeddings=EmbeddingSettings(
                provider=provider,
                base_url=(base_url or EmbeddingSettings.base_url).rstrip("/"),
                api_key=e.get("OPENAI_API_KEY", "").strip() or None,
                model=get("SBA_EMBEDDINGS_MODEL", EmbeddingSettings.model),
            ),
        )
