"""The operator's settings, grouped by concern and read once from the environment.

Nothing here opens a connection: `Settings.from_env()` is called by `main.run`,
and the result is handed to Kopf's startup handler through the memo.

| variable | default | what |
|---|---|---|
| SBA_WATCH_NAMESPACES | (all) | comma-separated namespaces (globs ok); empty = cluster-wide (*) |
| KUBECONFIG | (in-cluster, then ~/.kube/config) | kubeconfig for the operator's own client |
| SBA_OPERATOR_PEERING | (standalone) | Kopf peering name; empty runs standalone |
| SBA_OPERATOR_PRIORITY | (random) | peering priority; the highest active replica works |
| SBA_OPERATOR_LIVENESS | (off) | Kopf liveness endpoint, e.g. `http://0.0.0.0:8081/healthz` |
| DATABASE_URL | required | Postgres DSN |
| SBA_DB_POOL_MAX | 10 | asyncpg pool size |
| REDIS_URL | redis://localhost:6379/0 | run-event announcements |
| SBA_TOOL_IMAGE | sba-agentic/tool-runtime:0.1.0 | image of tool Jobs |
| SBA_GATEWAY_URL | http://sba-api.sba-system.svc:8080 | tool gateway base URL, as pods see it |
| SBA_STEP_TOKEN_SECRET | required | HS256 key shared with the API's gateway |
| SBA_STEP_TOKEN_TTL | 900 | step-token lifetime, seconds |
| SBA_JOB_ACTIVE_DEADLINE | 300 | Job activeDeadlineSeconds |
| SBA_JOB_BACKOFF_LIMIT | 0 | Job backoffLimit (pod retries inside one attempt) |
| SBA_JOB_TTL_AFTER_FINISHED | 3600 | Job ttlSecondsAfterFinished |
| SBA_JOB_TMP_SIZE | 64Mi | sizeLimit of the /tmp emptyDir |
| SBA_JOB_CPU_REQUEST | 50m | cpu request (limits come from the tool's spec) |
| SBA_JOB_MEMORY_REQUEST | 64Mi | memory request |
| SBA_JOB_EPHEMERAL_REQUEST | 16Mi | ephemeral-storage request |
| SBA_KOPF_SERVER_TIMEOUT / SBA_KOPF_CLIENT_TIMEOUT | 300 / 330 | watch timeouts, seconds |
| SBA_GATEWAY_NAMESPACE | sba-system | namespace of the tool gateway's pods (tenant NetworkPolicy) |
| SBA_GATEWAY_POD_LABELS | app.kubernetes.io/name=sba-agentic-api | their labels, `k=v,k2=v2` |
| SBA_PLANNER | builtin | `builtin` or `llm`; `llm` takes effect only when OPENAI_API_KEY is set |
| OPENAI_API_KEY | (none) | bearer key of the OpenAI-compatible chat-completions endpoint |
| SBA_LLM_BASE_URL | https://api.openai.com/v1 | its base URL (`{base}/chat/completions`) |
| SBA_LLM_MODEL | gpt-4o-mini | the planning model |
| SBA_LLM_FALLBACK_MODEL | (none) | tried when the model's answer is unusable |
| SBA_LLM_TIMEOUT | 30 | seconds per chat completion |
| SBA_LLM_MAX_TOKENS | 2000 | max_tokens of a planning answer |
| SBA_TOOL_CALLS_WINDOW_SECONDS | 60 | window of quotas.toolCallsPerMinute (the limit scales) |
| SBA_OPERATOR_METRICS_PORT | 9090 | Prometheus /metrics port; 0 disables |
| SBA_OPERATOR_METRICS_HOST | 0.0.0.0 | its bind address |
| OTEL_EXPORTER_OTLP_ENDPOINT | (none) | traces over OTLP; see `sba_telemetry.tracing` |
| SBA_OTEL_FILE_EXPORT | (none) | tests/dev: spans as JSON lines to this file |

(*) Kopf watches the cluster-scoped Tenants only while some listed namespace exists:
with `tenant-*`, also list one that always does (e.g. the operator's own).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from sba_telemetry import TelemetrySettings

DEFAULT_TOOL_IMAGE = "sba-agentic/tool-runtime:0.1.0"
DEFAULT_GATEWAY_URL = "http://sba-api.sba-system.svc:8080"
DEFAULT_GATEWAY_NAMESPACE = "sba-system"
DEFAULT_GATEWAY_POD_LABELS = "app.kubernetes.io/name=sba-agentic-api"


class SettingsError(ValueError):
    """The environment does not describe a runnable operator."""


@dataclass(frozen=True)
class KubernetesSettings:
    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty means cluster-wide."""
    kubeconfig: str | None = None
    peering: str | None = None
    """Kopf peering name; None runs standalone (one replica)."""
    priority: int = 0
    """Peering priority. Kopf pauses *every* replica when two share the highest
    priority, so replicas must differ: unset, each process draws a random one."""
    liveness_endpoint: str | None = None
    server_timeout: int = 300
    """Seconds the API server keeps a watch open (an integer on the wire)."""
    client_timeout: float = 330.0
    connect_timeout: float = 10.0
    request_timeout: float = 60.0

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces


@dataclass(frozen=True)
class DatabaseSettings:
    url: str
    pool_min: int = 1
    pool_max: int = 10


@dataclass(frozen=True)
class RedisSettings:
    url: str = "redis://localhost:6379/0"


@dataclass(frozen=True)
class JobDefaults:
    """What every tool Job gets unless the tool's spec says otherwise."""

    active_deadline_seconds: int = 300
    backoff_limit: int = 0
    ttl_seconds_after_finished: int = 3600
    tmp_size_limit: str = "64Mi"
    requests: Mapping[str, str] = field(
        default_factory=lambda: {"cpu": "50m", "memory": "64Mi", "ephemeral-storage": "16Mi"}
    )


@dataclass(frozen=True)
class ToolSettings:
    step_token_secret: str = field(repr=False)
    image: str = DEFAULT_TOOL_IMAGE
    gateway_url: str = DEFAULT_GATEWAY_URL
    step_token_ttl_seconds: int = 900
    job: JobDefaults = field(default_factory=JobDefaults)


@dataclass(frozen=True)
class TenantSettings:
    """What tenant provisioning needs to know about the platform around it."""

    gateway_namespace: str = DEFAULT_GATEWAY_NAMESPACE
    gateway_pod_labels: Mapping[str, str] = field(
        default_factory=lambda: parse_labels(DEFAULT_GATEWAY_POD_LABELS)
    )
    """Tool pods may reach pods with these labels in `gateway_namespace` (NetworkPolicy)."""


class PlannerKind(StrEnum):
    BUILTIN = "builtin"
    LLM = "llm"


DEFAULT_LLM_BASE_URL = "https://api.openai.com/v1"
DEFAULT_LLM_MODEL = "gpt-4o-mini"


@dataclass(frozen=True)
class PlannerSettings:
    """Which planner plans prompt-only runs (explicit plans are never sent to a model)."""

    requested: PlannerKind = PlannerKind.BUILTIN
    api_key: str | None = field(default=None, repr=False)
    base_url: str = DEFAULT_LLM_BASE_URL
    model: str = DEFAULT_LLM_MODEL
    fallback_model: str | None = None
    timeout_seconds: float = 30.0
    max_tokens: int = 2000

    @property
    def kind(self) -> PlannerKind:
        """`llm` only when asked for and a key is set; the builtin planner otherwise."""
        if self.requested is PlannerKind.LLM and self.api_key:
            return PlannerKind.LLM
        return PlannerKind.BUILTIN


@dataclass(frozen=True)
class QuotaSettings:
    tool_calls_window_seconds: float = 60.0
    """The sliding window of quotas.toolCallsPerMinute; the limit is scaled to it."""


@dataclass(frozen=True)
class MetricsSettings:
    port: int = 9090
    """0 disables the Prometheus endpoint."""
    host: str = "0.0.0.0"  # scraped from outside the pod


def parse_labels(text: str) -> dict[str, str]:
    """`k=v,k2=v2` -> {k: v, k2: v2}; SettingsError on anything else."""
    labels: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise SettingsError(f"expected key=value label pairs, got {part!r}")
        labels[key.strip()] = value.strip()
    return labels


@dataclass(frozen=True)
class AdmissionSettings:
    """The operator's validating webhook: AgentRuns naming unknown tools or breaking a
    tool's contract, and unusable Tool definitions, are refused at `kubectl apply`."""

    enabled: bool = False
    addr: str = "0.0.0.0"
    port: int = 9443
    host: str | None = None
    """The name the API server calls the webhook by (the Service's DNS name)."""
    certfile: str | None = None
    pkeyfile: str | None = None
    cafile: str | None = None
    """The CA the API server trusts the certificate by (the webhook's caBundle)."""
    configuration: str = "sba-agentic.io"
    """The ValidatingWebhookConfiguration Kopf keeps up to date."""


@dataclass(frozen=True)
class Settings:
    kubernetes: KubernetesSettings
    database: DatabaseSettings
    redis: RedisSettings
    tools: ToolSettings
    tenants: TenantSettings = field(default_factory=TenantSettings)
    admission: AdmissionSettings = field(default_factory=AdmissionSettings)
    planner: PlannerSettings = field(default_factory=PlannerSettings)
    quotas: QuotaSettings = field(default_factory=QuotaSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    telemetry: TelemetrySettings = field(
        default_factory=lambda: TelemetrySettings("sba-operator", exporter="none")
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def text(name: str, default: str = "") -> str:
            return env.get(name, "").strip() or default

        def required(name: str) -> str:
            value = text(name)
            if not value:
                raise SettingsError(f"{name} must be set")
            return value

        def number(name: str, default: int, minimum: int = 0) -> int:
            raw = text(name)
            if not raw:
                return default
            try:
                value = int(raw)
            except ValueError:
                raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
            if value < minimum:
                raise SettingsError(f"{name} must be at least {minimum}")
            return value

        def seconds(name: str, default: float) -> float:
            raw = text(name)
            try:
                value = float(raw) if raw else default
            except ValueError:
                raise SettingsError(f"{name} must be a number, got {raw!r}") from None
            if value <= 0:
                raise SettingsError(f"{name} must be positive")
            return value

        planner_raw = text("SBA_PLANNER", "builtin").lower()
        try:
            planner_kind = PlannerKind(planner_raw)
        except ValueError:
            raise SettingsError(
                f"SBA_PLANNER must be builtin or llm, got {planner_raw!r}"
            ) from None
        namespaces = tuple(
            ns.strip() for ns in text("SBA_WATCH_NAMESPACES").split(",") if ns.strip()
        )
        job = JobDefaults(
            active_deadline_seconds=number("SBA_JOB_ACTIVE_DEADLINE", 300, 1),
            backoff_limit=number("SBA_JOB_BACKOFF_LIMIT", 0, 0),
            ttl_seconds_after_finished=number("SBA_JOB_TTL_AFTER_FINISHED", 3600, 60),
            tmp_size_limit=text("SBA_JOB_TMP_SIZE", "64Mi"),
            requests={
                "cpu": text("SBA_JOB_CPU_REQUEST", "50m"),
                "memory": text("SBA_JOB_MEMORY_REQUEST", "64Mi"),
                "ephemeral-storage": text("SBA_JOB_EPHEMERAL_REQUEST", "16Mi"),
            },
        )
        return cls(
            kubernetes=KubernetesSettings(
                namespaces=namespaces,
                kubeconfig=text("KUBECONFIG") or None,
                peering=text("SBA_OPERATOR_PEERING") or None,
                priority=number("SBA_OPERATOR_PRIORITY", secrets.randbelow(32767) + 1, 0),
                liveness_endpoint=text("SBA_OPERATOR_LIVENESS") or None,
                server_timeout=number("SBA_KOPF_SERVER_TIMEOUT", 300, 1),
                client_timeout=seconds("SBA_KOPF_CLIENT_TIMEOUT", 330.0),
            ),
            database=DatabaseSettings(
                url=required("DATABASE_URL"),
                pool_max=number("SBA_DB_POOL_MAX", 10, 1),
            ),
            redis=RedisSettings(url=text("REDIS_URL", "redis://localhost:6379/0")),
            tools=ToolSettings(
                step_token_secret=required("SBA_STEP_TOKEN_SECRET"),
                image=text("SBA_TOOL_IMAGE", DEFAULT_TOOL_IMAGE),
                gateway_url=text("SBA_GATEWAY_URL", DEFAULT_GATEWAY_URL).rstrip("/"),
                step_token_ttl_seconds=number("SBA_STEP_TOKEN_TTL", 900, 30),
                job=job,
            ),
            tenants=TenantSettings(
                gateway_namespace=text("SBA_GATEWAY_NAMESPACE", DEFAULT_GATEWAY_NAMESPACE),
                gateway_pod_labels=parse_labels(
                    text("SBA_GATEWAY_POD_LABELS", DEFAULT_GATEWAY_POD_LABELS)
                ),
            ),
            admission=AdmissionSettings(
                enabled=text("SBA_ADMISSION_WEBHOOK", "off").lower() in ("1", "on", "true"),
                addr=text("SBA_ADMISSION_ADDR", "0.0.0.0"),
                port=number("SBA_ADMISSION_PORT", 9443, 1),
                host=text("SBA_ADMISSION_HOST") or None,
                certfile=text("SBA_ADMISSION_CERT") or None,
                pkeyfile=text("SBA_ADMISSION_KEY") or None,
                cafile=text("SBA_ADMISSION_CA") or None,
                configuration=text("SBA_ADMISSION_CONFIGURATION", "sba-agentic.io"),
            ),
            planner=PlannerSettings(
                requested=planner_kind,
                api_key=text("OPENAI_API_KEY") or None,
                base_url=text("SBA_LLM_BASE_URL", DEFAULT_LLM_BASE_URL).rstrip("/"),
                model=text("SBA_LLM_MODEL", DEFAULT_LLM_MODEL),
                fallback_model=text("SBA_LLM_FALLBACK_MODEL") or None,
                timeout_seconds=seconds("SBA_LLM_TIMEOUT", 30.0),
                max_tokens=number("SBA_LLM_MAX_TOKENS", 2000, 16),
            ),
            quotas=QuotaSettings(
                tool_calls_window_seconds=seconds("SBA_TOOL_CALLS_WINDOW_SECONDS", 60.0),
            ),
            metrics=MetricsSettings(
                port=number("SBA_OPERATOR_METRICS_PORT", 9090, 0),
                host=text("SBA_OPERATOR_METRICS_HOST", "0.0.0.0"),
            ),
            telemetry=TelemetrySettings.from_env("sba-operator", env),
        )
