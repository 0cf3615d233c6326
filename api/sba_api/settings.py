"""The API's settings: one object, grouped by concern, built from the environment once.

Nothing reads the environment after start-up; `create_app(settings)` gets
everything it needs from this object.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from sba_core.tools.egress import parse_allowlist
from sba_telemetry import TelemetrySettings

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
    watch_cache: bool = True
    """Serve AgentRun reads from a watch-fed copy in memory (SBA_API_WATCH_CACHE)."""


@dataclass(frozen=True)
class GatewaySettings:
    step_token_secret: str = ""


@dataclass(frozen=True)
class SseSettings:
    heartbeat_seconds: float = 15.0
    retry_ms: int = 2000
    batch_size: int = 100
    """Most events read from Postgres (and so buffered) per write round."""
    write_timeout_seconds: float = 10.0
    """A write to a client's socket that has not finished by then cuts the stream; the
    client resumes with Last-Event-ID (SBA_SSE_WRITE_TIMEOUT_SECONDS)."""
    tail_events: int = 256
    """Recent events kept in memory per run with open streams in this process, shared by
    all of them (SBA_SSE_TAIL_EVENTS); a stream further behind reads Postgres itself."""
    tail_bytes: int = 512 * 1024
    """The same bound in encoded bytes (SBA_SSE_TAIL_BYTES)."""


@dataclass(frozen=True)
class LimitsSettings:
    runs_page_default: int = 20
    runs_page_max: int = 100
    knowledge_top_k_max: int = 50


@dataclass(frozen=True)
class AuthSettings:
    """Bearer-token authentication of /api/v1 (see sba_api.auth)."""

    hs256_secret: str | None = None
    """Shared secret for HS256 tokens (development; `sba-agentic token` mints them)."""
    jwks_url: str | None = None
    """JWKS of an OIDC provider: RS256/ES256 tokens are verified against its keys."""
    jwks_file: Path | None = None
    """A local JWKS file, instead of (or as well as) the URL."""
    issuer: str = "sba-agentic"
    audience: str = "sba-agentic-api"
    tenant_claim: str = "tenant"
    roles_claim: str = "roles"
    groups_claim: str = "groups"
    """Optional claim listing the caller's groups (for approvers named by group)."""
    leeway_seconds: float = 30.0
    jwks_cache_seconds: float = 300.0
    jwks_min_refresh_seconds: float = 10.0
    """An unknown `kid` refetches the JWKS, but no more often than this."""
    stream_token_secret: str = ""
    """Signs run-scoped SSE stream tokens; derived from the step-token secret when unset."""
    stream_token_ttl_seconds: int = 60

    @property
    def configured(self) -> bool:
        return bool(self.hs256_secret or self.jwks_url or self.jwks_file)


@dataclass(frozen=True)
class RateLimitSettings:
    """Sliding-window request limits in Redis, shared by every API replica."""

    enabled: bool = True
    window_seconds: float = 60.0
    tenant_requests: int = 1200
    """Requests per window per tenant (a Tenant's spec.quotas.apiRequestsPerMinute overrides)."""
    principal_requests: int = 600
    """Requests per window per user of a tenant."""
    sse_streams_per_tenant: int = 100
    sse_lease_seconds: float = 30.0
    """An open stream's slot expires this long after its replica last renewed it."""
    tenant_quota_cache_seconds: float = 30.0


@dataclass(frozen=True)
class ToolSettings:
    """What the gateway hands tool pods in their step envelope (`config`)."""

    crm_url: str | None = None
    """The CRM endpoint crm.sync posts to (SBA_CRM_URL); crm.sync fails when unset."""
    default_egress_allowlist: tuple[str, ...] = ()
    """Hosts a tenant may reach when its Tenant has no spec.egressAllowlist."""
    egress_cache_seconds: float = 30.0
    """How long a Tenant's egress allowlist read from Kubernetes is reused."""


@dataclass(frozen=True)
class ModelSettings:
    """The model gateway (llm.generate steps): the deployment's default model, batching."""

    provider: str = "builtin"
    """`builtin` (offline, extractive) or `openai` (SBA_LLM_PROVIDER; `openai` by default
    when OPENAI_API_KEY or SBA_LLM_BASE_URL is set). A Tenant's spec.model overrides it."""
    base_url: str | None = None
    model: str = "sba-extractive"
    fallback_model: str | None = None
    api_key: str | None = field(default=None, repr=False)
    timeout_seconds: float = 60.0
    max_retries: int = 2
    token_flush_seconds: float = 0.05
    """Streamed text is written as one `token` event at most this often (while it flows)."""
    builtin_piece_delay_seconds: float = 0.01
    """The builtin model's pace per piece, so its answer visibly streams."""
    breaker_threshold: int = 3
    breaker_cooldown_seconds: float = 30.0
    config_cache_seconds: float = 30.0
    """How long a Tenant's model configuration (and its Secret) is reused."""


@dataclass(frozen=True)
class IdempotencySettings:
    """`Idempotency-Key` on the POST routes that change things (sba_api.idempotency)."""

    ttl_seconds: float = 24 * 3600.0
    """How long a key's first response is replayed; afterwards the key is free again."""
    wait_seconds: float = 10.0
    """A duplicate arriving while the first request is in flight waits this long for its
    answer, then gets 409 idempotency_request_in_progress (Retry-After)."""
    in_flight_timeout_seconds: float = 60.0
    """An in-flight key older than this (its API process died) may be taken over by a retry
    with the same body."""


@dataclass(frozen=True)
class RunActionSettings:
    """Approve, cancel and continue through the API."""

    approval_wait_seconds: float = 5.0
    """How long `POST /runs/{id}/approvals` waits for the operator's verdict before 202."""


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
    auth: AuthSettings = field(default_factory=AuthSettings)
    rate_limits: RateLimitSettings = field(default_factory=RateLimitSettings)
    tools: ToolSettings = field(default_factory=ToolSettings)
    idempotency: IdempotencySettings = field(default_factory=IdempotencySettings)
    run_actions: RunActionSettings = field(default_factory=RunActionSettings)
    models: ModelSettings = field(default_factory=ModelSettings)
    telemetry: TelemetrySettings = field(default_factory=lambda: TelemetrySettings("sba-api"))

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

        auth = _auth_settings(e, number, secret)
        rate_limits = RateLimitSettings(
            enabled=e.get("SBA_RATE_LIMIT_ENABLED", "true").strip().lower()
            not in ("0", "false", "no", "off"),
            window_seconds=number("SBA_RATE_LIMIT_WINDOW_SECONDS", 60.0, minimum=1),
            tenant_requests=int(number("SBA_RATE_LIMIT_TENANT_REQUESTS", 1200, minimum=1)),
            principal_requests=int(number("SBA_RATE_LIMIT_PRINCIPAL_REQUESTS", 600, minimum=1)),
            sse_streams_per_tenant=int(number("SBA_SSE_MAX_STREAMS_PER_TENANT", 100, minimum=1)),
            sse_lease_seconds=number("SBA_SSE_LEASE_SECONDS", 30.0, minimum=3),
            tenant_quota_cache_seconds=number("SBA_TENANT_QUOTA_CACHE_SECONDS", 30.0, minimum=0),
        )

        return cls(
            telemetry=TelemetrySettings.from_env("sba-api", e),
            idempotency=IdempotencySettings(
                ttl_seconds=number("SBA_IDEMPOTENCY_TTL_SECONDS", 24 * 3600.0, minimum=1),
                wait_seconds=number("SBA_IDEMPOTENCY_WAIT_SECONDS", 10.0, minimum=0),
                in_flight_timeout_seconds=number(
                    "SBA_IDEMPOTENCY_IN_FLIGHT_TIMEOUT_SECONDS", 60.0, minimum=1
                ),
            ),
            run_actions=RunActionSettings(
                approval_wait_seconds=number("SBA_APPROVAL_WAIT_SECONDS", 5.0, minimum=0),
            ),
            tools=_tool_settings(e, number),
            models=_model_settings(e, number),
            auth=auth,
            rate_limits=rate_limits,
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
                watch_cache=e.get("SBA_API_WATCH_CACHE", "on").strip().lower()
                not in ("0", "off", "false", "no"),
            ),
            gateway=GatewaySettings(step_token_secret=secret),
            sse=SseSettings(
                heartbeat_seconds=number("SBA_SSE_HEARTBEAT_SECONDS", 15.0, minimum=0.05),
                retry_ms=int(number("SBA_SSE_RETRY_MS", 2000, minimum=0)),
                batch_size=int(number("SBA_SSE_BATCH_SIZE", 100, minimum=1)),
                write_timeout_seconds=number("SBA_SSE_WRITE_TIMEOUT_SECONDS", 10.0, minimum=0.1),
                tail_events=int(number("SBA_SSE_TAIL_EVENTS", 256, minimum=1)),
                tail_bytes=int(number("SBA_SSE_TAIL_BYTES", 512 * 1024, minimum=1024)),
            ),
            embeddings=EmbeddingSettings(
                provider=provider,
                base_url=(base_url or EmbeddingSettings.base_url).rstrip("/"),
                api_key=e.get("OPENAI_API_KEY", "").strip() or None,
                model=get("SBA_EMBEDDINGS_MODEL", EmbeddingSettings.model),
            ),
        )


def _auth_settings(
    e: Mapping[str, str], number: Callable[..., float], step_secret: str
) -> AuthSettings:
    hs256 = e.get("SBA_JWT_HS256_SECRET", "").strip() or None
    if hs256 is not None and len(hs256) < 32:
        raise SettingsError("SBA_JWT_HS256_SECRET must be at least 32 characters")
    jwks_url = e.get("SBA_JWT_JWKS_URL", "").strip() or None
    if jwks_url is not None and not jwks_url.startswith(("https://", "http://")):
        raise SettingsError("SBA_JWT_JWKS_URL must be an http(s) URL")
    jwks_file_raw = e.get("SBA_JWT_JWKS_FILE", "").strip()
    if not (hs256 or jwks_url or jwks_file_raw):
        raise SettingsError(
            "no way to verify bearer tokens: set SBA_JWT_HS256_SECRET (development) "
            "or SBA_JWT_JWKS_URL / SBA_JWT_JWKS_FILE (OIDC)"
        )
    stream_secret = e.get("SBA_STREAM_TOKEN_SECRET", "").strip()
    if stream_secret and len(stream_secret) < 32:
        raise SettingsError("SBA_STREAM_TOKEN_SECRET must be at least 32 characters")
    if not stream_secret:
        # Every replica derives the same key from the shared step-token secret, and a
        # token of one kind can never verify as the other.
        stream_secret = hmac.new(
            step_secret.encode(), b"sba-agentic stream tokens", hashlib.sha256
        ).hexdigest()
    return AuthSettings(
        hs256_secret=hs256,
        jwks_url=jwks_url,
        jwks_file=Path(jwks_file_raw) if jwks_file_raw else None,
        issuer=e.get("SBA_JWT_ISSUER", "").strip() or AuthSettings.issuer,
        audience=e.get("SBA_JWT_AUDIENCE", "").strip() or AuthSettings.audience,
        tenant_claim=e.get("SBA_JWT_TENANT_CLAIM", "").strip() or AuthSettings.tenant_claim,
        roles_claim=e.get("SBA_JWT_ROLES_CLAIM", "").strip() or AuthSettings.roles_claim,
        groups_claim=e.get("SBA_JWT_GROUPS_CLAIM", "").strip() or AuthSettings.groups_claim,
        leeway_seconds=number("SBA_JWT_LEEWAY_SECONDS", 30.0, minimum=0),
        jwks_cache_seconds=number("SBA_JWT_JWKS_CACHE_SECONDS", 300.0, minimum=1),
        jwks_min_refresh_seconds=number("SBA_JWT_JWKS_MIN_REFRESH_SECONDS", 10.0, minimum=0),
        stream_token_secret=stream_secret,
        stream_token_ttl_seconds=int(number("SBA_STREAM_TOKEN_TTL_SECONDS", 60, minimum=5)),
    )


def _tool_settings(e: Mapping[str, str], number: Callable[..., float]) -> ToolSettings:
    crm_url = e.get("SBA_CRM_URL", "").strip() or None
    if crm_url is not None and not crm_url.startswith(("https://", "http://")):
        raise SettingsError("SBA_CRM_URL must be an http(s) URL")
    try:
        allowlist = parse_allowlist(e.get("SBA_DEFAULT_EGRESS_ALLOWLIST", "").split(","))
    except ValueError as err:
        raise SettingsError(f"SBA_DEFAULT_EGRESS_ALLOWLIST: {err}") from err
    return ToolSettings(
        crm_url=crm_url,
        default_egress_allowlist=allowlist,
        egress_cache_seconds=number("SBA_EGRESS_ALLOWLIST_CACHE_SECONDS", 30.0, minimum=0),
    )


def _model_settings(e: Mapping[str, str], number: Callable[..., float]) -> ModelSettings:
    api_key = e.get("OPENAI_API_KEY", "").strip() or None
    base_url = e.get("SBA_LLM_BASE_URL", "").strip().rstrip("/") or None
    if base_url is not None and not base_url.startswith(("https://", "http://")):
        raise SettingsError("SBA_LLM_BASE_URL must be an http(s) URL")
    provider = e.get("SBA_LLM_PROVIDER", "").strip() or (
        "openai" if api_key or base_url else "builtin"
    )
    if provider not in ("builtin", "openai"):
        raise SettingsError("SBA_LLM_PROVIDER must be builtin or openai")
    default_model = "gpt-4o-mini" if provider == "openai" else ModelSettings.model
    return ModelSettings(
        provider=provider,
        base_url=base_url or ("https://api.openai.com/v1" if provider == "openai" else None),
        model=e.get("SBA_LLM_MODEL", "").strip() or default_model,
        fallback_model=e.get("SBA_LLM_FALLBACK_MODEL", "").strip() or None,
        api_key=api_key,
        timeout_seconds=number("SBA_LLM_TIMEOUT", 60.0, minimum=1),
        max_retries=int(number("SBA_LLM_MAX_RETRIES", 2, minimum=0)),
        token_flush_seconds=number("SBA_TOKEN_FLUSH_SECONDS", 0.05, minimum=0),
        builtin_piece_delay_seconds=number("SBA_BUILTIN_MODEL_PIECE_DELAY", 0.01, minimum=0),
        breaker_threshold=int(number("SBA_LLM_BREAKER_THRESHOLD", 3, minimum=1)),
        breaker_cooldown_seconds=number("SBA_LLM_BREAKER_COOLDOWN_SECONDS", 30.0, minimum=0),
        config_cache_seconds=number("SBA_MODEL_CONFIG_CACHE_SECONDS", 30.0, minimum=0),
    )
