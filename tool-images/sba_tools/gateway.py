"""A small client for the API's internal tool gateway, on the standard library alone.

Every call carries ``Authorization: Bearer <step token>`` and, when the Job was given
one, the W3C ``traceparent`` the operator passed in ``TRACEPARENT`` (a pass-through:
the gateway's server spans join the run's trace; no tracing SDK in the tool image).
Connection failures get a
couple of quick retries; HTTP errors are classified, never retried here (the Job's
backoff retries the whole attempt when that is worth it).
"""

from __future__ import annotations

import http.client
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from sba_core.tools.builtin.common import StepConfig
from sba_tools.errors import GatewayError, status_is_retryable
from sba_tools.jsonlog import JsonLogger

if TYPE_CHECKING:
    # A tool's own models are imported by the call that needs them: a step loads its
    # own tool's contract only.
    from sba_core.tools.builtin.knowledge_search import (
        KnowledgeSearchParams,
        KnowledgeSearchResult,
    )
    from sba_core.tools.builtin.llm_generate import LlmGenerateResult
    from sba_core.tools.builtin.task_create import TaskFields

STEP_PATH = "/internal/v1/step"
SEARCH_PATH = "/internal/v1/knowledge/search"
ARTIFACTS_PATH = "/internal/v1/artifacts"
RESULT_PATH = "/internal/v1/step/result"
TASKS_PATH = "/internal/v1/tasks"
GENERATE_PATH = "/internal/v1/model/generate"
GENERATE_TIMEOUT_SECONDS = 600.0
"""A model may write for minutes; the step's own deadline bounds it anyway."""
GENERATE_RETRY_DELAYS: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)
"""Longer than other calls': an API replica that died mid-answer is replaced (or another
takes the request) and the same attempt resumes where the text stopped."""

USER_AGENT = "sba-tool/0.1"
TRACEPARENT_HEADER = "traceparent"
DEFAULT_RETRY_DELAYS: tuple[float, ...] = (0.2, 0.6)
_MAX_ERROR_TEXT = 300
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]+")


class StepEnvelope(BaseModel):
    """What ``GET /internal/v1/step`` returns: the step to run and its inputs."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    run_id: str
    tenant: str
    step_id: str
    attempt: int = Field(ge=1)
    tool: str
    params: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str | None = None
    """<run-id>:<step-id>: the same for every attempt; side effects carry it."""
    config: StepConfig = Field(default_factory=StepConfig)

    @property
    def step_key(self) -> str:
        """The idempotency key, derived when an older gateway did not send one."""
        return self.idempotency_key or f"{self.run_id}:{self.step_id}"


class ArtifactRecord(BaseModel):
    """What ``POST /internal/v1/artifacts`` returns."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    artifact_id: str
    title: str
    content_type: str
    size_bytes: int
    sha256: str


class TaskReceipt(BaseModel):
    """What ``POST /internal/v1/tasks`` returns (the fields the tool needs)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    task_id: str
    created: bool
    idempotency_key: str
    title: str
    description: str | None = None
    due_date: str | None = None
    assignee: str | None = None


M = TypeVar("M", bound=BaseModel)


def _parsed(model: type[M], body: Any, what: str) -> M:
    """The gateway's answer as `model`; a malformed one is a permanent GatewayError."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise GatewayError(
            f"malformed {what} from gateway: {_shorten(str(exc))}", status=None, retryable=False
        ) from exc


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Never follow a redirect: it could carry the bearer token somewhere else."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        return None


def _header_value(text: str) -> str:
    """A header value that goes on the wire as UTF-8 (http.client encodes str as latin-1)."""
    cleaned = _CONTROL_CHARS.sub(" ", text).strip()
    return cleaned.encode("utf-8").decode("latin-1")


def _shorten(text: str, limit: int = _MAX_ERROR_TEXT) -> str:
    text = _CONTROL_CHARS.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


class GatewayClient:
    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout_seconds: float,
        log: JsonLogger,
        retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
        sleep: Callable[[float], None] = time.sleep,
        traceparent: str | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._traceparent = traceparent
        self._token = token
        self._timeout = timeout_seconds
        self._log = log
        self._retry_delays = tuple(retry_delays)
        self._sleep = sleep
        # No proxies from the environment (the gateway is in-cluster or local), no redirects.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects())

    # -- the gateway's operations -------------------------------------------------------

    def get_step(self) -> StepEnvelope:
        body = self._call_json("GET", STEP_PATH, idempotent=True)
        return _parsed(StepEnvelope, body, "step")

    def search_knowledge(self, params: KnowledgeSearchParams) -> KnowledgeSearchResult:
        from sba_core.tools.builtin.knowledge_search import KnowledgeSearchResult

        body = self._call_json("POST", SEARCH_PATH, payload=params.wire(), idempotent=True)
        return _parsed(KnowledgeSearchResult, body, "search result")

    def upload_artifact(self, data: bytes, *, content_type: str, title: str) -> ArtifactRecord:
        body = self._call_json(
            "POST",
            ARTIFACTS_PATH,
            data=data,
            headers={"Content-Type": content_type, "X-Artifact-Title": _header_value(title)},
            idempotent=False,
        )
        return _parsed(ArtifactRecord, body, "artifact record")

    def create_task(self, fields: TaskFields) -> TaskReceipt:
        """Create the step's task; a replay (any later attempt) returns the same task."""
        # Idempotent server-side (keyed on the step), so a retry after a lost answer is safe.
        body = self._call_json("POST", TASKS_PATH, payload=fields.wire(), idempotent=True)
        return _parsed(TaskReceipt, body, "task")

    def generate(self) -> LlmGenerateResult:
        """Ask the gateway to run this llm.generate step's model call (it streams the tokens
        to the run's clients) and return the finished text. Safe to repeat: the gateway
        never streams a token twice for the same attempt."""
        from sba_core.tools.builtin.llm_generate import LlmGenerateResult

        body = self._call_json(
            "POST",
            GENERATE_PATH,
            payload={},
            idempotent=True,
            timeout=GENERATE_TIMEOUT_SECONDS,
            retry_delays=GENERATE_RETRY_DELAYS,
        )
        return _parsed(LlmGenerateResult, body, "model answer")

    def post_result(
        self, *, success: bool, result: Mapping[str, Any] | None, error: str | None
    ) -> dict[str, Any]:
        payload = {
            "success": success,
            "result": dict(result) if result is not None else None,
            "error": error,
        }
        body = self._call_json("POST", RESULT_PATH, payload=payload, idempotent=False)
        if not isinstance(body, dict):
            raise GatewayError(
                "malformed result receipt from gateway", status=None, retryable=False
            )
        return body

    # -- plumbing -----------------------------------------------------------------------

    def _call_json(
        self,
        method: str,
        path: str,
        *,
        payload: Any = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool,
        timeout: float | None = None,
        retry_delays: Sequence[float] | None = None,
    ) -> Any:
        all_headers = {
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
            **(headers or {}),
            "Authorization": f"Bearer {self._token}",
        }
        if self._traceparent:
            all_headers[TRACEPARENT_HEADER] = self._traceparent
        if payload is not None:
            data = json.dumps(payload, separators=(",", ":")).encode("utf-8")
            all_headers["Content-Type"] = "application/json"
        status, raw = self._send(
            method,
            path,
            data,
            all_headers,
            idempotent=idempotent,
            timeout=timeout,
            retry_delays=retry_delays,
        )
        try:
            return json.loads(raw) if raw else None
        except ValueError as exc:
            raise GatewayError(
                f"{method} {path}: gateway sent a non-JSON body (HTTP {status})",
                status=status,
                retryable=False,
            ) from exc

    def _send(
        self,
        method: str,
        path: str,
        data: bytes | None,
        headers: dict[str, str],
        *,
        idempotent: bool,
        timeout: float | None = None,
        retry_delays: Sequence[float] | None = None,
    ) -> tuple[int, bytes]:
        url = self._base_url + path
        delays = tuple(retry_delays) if retry_delays is not None else self._retry_delays
        attempts = len(delays) + 1
        for attempt in range(1, attempts + 1):
            request = urllib.request.Request(url, data=data, headers=headers, method=method)
            started = time.monotonic()
            try:
                with self._opener.open(request, timeout=timeout or self._timeout) as response:
                    status = int(response.status)
                    raw = response.read()
            except urllib.error.HTTPError as exc:
                raw = exc.read() if exc.fp is not None else b""
                self._log_call(method, path, exc.code, started, attempt)
                raise self._http_error(method, path, exc.code, raw) from None
            except urllib.error.URLError as exc:
                # Raised while connecting or sending: the gateway never got the request.
                reason = exc.reason
                failure = f"{type(reason).__name__}: {reason}" if reason else str(exc)
                retry_ok = True
            except (TimeoutError, ConnectionError, http.client.HTTPException) as exc:
                # Raised while waiting for or reading the answer: the request may have landed.
                failure = f"{type(exc).__name__}: {exc}"
                retry_ok = idempotent
            else:
                self._log_call(method, path, status, started, attempt)
                return status, raw
            self._log.warning(
                "gateway.unreachable",
                method=method,
                path=path,
                attempt=attempt,
                error=_shorten(failure),
            )
            if not retry_ok or attempt == attempts:
                raise GatewayError(
                    f"{method} {path}: gateway unreachable ({_shorten(failure)})",
                    status=None,
                    retryable=True,
                )
            self._sleep(delays[attempt - 1])
        raise AssertionError("unreachable")  # pragma: no cover

    def _log_call(self, method: str, path: str, status: int, started: float, attempt: int) -> None:
        self._log.info(
            "gateway.call",
            method=method,
            path=path,
            status=status,
            attempt=attempt,
            durationMs=round((time.monotonic() - started) * 1000, 1),
        )

    @staticmethod
    def _http_error(method: str, path: str, status: int, raw: bytes) -> GatewayError:
        code: str | None = None
        message = ""
        request_id: str | None = None
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            err = body["error"]
            code = str(err["code"]) if err.get("code") is not None else None
            message = str(err.get("message") or "")
            request_id = str(err["request_id"]) if err.get("request_id") is not None else None
        elif raw:
            message = raw.decode("utf-8", "replace")
        text = f"{method} {path}: HTTP {status}"
        if code:
            text += f" {code}"
        if message:
            text += f": {_shorten(message)}"
        if request_id:
            text += f" (request_id {request_id})"
        return GatewayError(
            text,
            status=status,
            code=code,
            request_id=request_id,
            retryable=status_is_retryable(status),
        )
