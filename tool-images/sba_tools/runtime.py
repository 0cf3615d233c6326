"""``sba-tool``: the entrypoint of every tool Job's container.

It fetches its step from the tool gateway, checks the params against the tool's
contract, runs the tool, checks the result and posts it back, then leaves a short JSON
termination message for the operator. Identical under the local node agent and in a
real pod: everything comes from the environment and nothing is written except the
termination message.

Exit codes:
  0  the result was recorded by the gateway;
  1  transient failure (gateway unreachable, 5xx, 408, 429): the Job may retry;
  2  permanent failure (bad environment, unknown tool, params or result breaking the
     contract, any other 4xx): retrying the same attempt cannot help.

Start-up is part of every step's cost, so the runtime loads only what its step needs:
the registry names each builtin's contract without importing it, and `prepare` imports
the step's own tool (its contract and implementation module) and no other.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn

from sba_core.tools.registry import ToolContractError, ToolSpec, builtin_registry
from sba_tools.egress import SafeHttpClient
from sba_tools.errors import GatewayError, StepFailure
from sba_tools.gateway import GatewayClient, StepEnvelope
from sba_tools.jsonlog import JsonLogger
from sba_tools.settings import RuntimeSettings, trace_ids
from sba_tools.tools import ToolContext, implementation_for
from sba_tools.tools.base import AnyImplementation

if TYPE_CHECKING:
    from pydantic import BaseModel

EXIT_OK = 0
EXIT_TRANSIENT = 1
EXIT_PERMANENT = 2

TERMINATION_MESSAGE_LIMIT = 1024
"""Bytes; Kubernetes keeps at most 4 KiB, the operator expects at most 1 KiB."""
_ERROR_LIMIT = 4000


def _now() -> datetime:
    return datetime.now(UTC)


def write_termination_message(path: str, message: Mapping[str, Any]) -> None:
    """Write ``message`` as compact JSON of at most 1 KiB; a failure to write is ignored."""
    data = _fit(dict(message))
    try:
        with open(path, "wb") as fh:
            fh.write(data)
    except OSError:
        pass


def _fit(message: dict[str, Any]) -> bytes:
    """Compact JSON of at most 1 KiB, shortening ``summary`` or ``error`` when needed."""

    def encode(m: dict[str, Any]) -> bytes:
        return json.dumps(m, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    data = encode(message)
    for key in ("summary", "error"):
        value = message.get(key)
        if len(data) <= TERMINATION_MESSAGE_LIMIT or not isinstance(value, str):
            continue
        # The longest prefix (plus an ellipsis) that fits: a binary search over its length.
        low, high = 0, len(value)
        best = encode({**message, key: ""})
        while low <= high:
            mid = (low + high) // 2
            candidate = encode({**message, key: value[:mid] + "…"})
            if len(candidate) <= TERMINATION_MESSAGE_LIMIT:
                best, low = candidate, mid + 1
            else:
                high = mid - 1
        message[key] = json.loads(best)[key]
        data = best
    if len(data) > TERMINATION_MESSAGE_LIMIT:
        data = encode({"ok": message.get("ok", False), "error": "termination message too long"})
    return data


class _Outcome(Exception):
    """Internal: stop the run with this exit code and termination message."""

    def __init__(self, code: int, message: dict[str, Any]) -> None:
        super().__init__(message.get("error") or message.get("summary") or "")
        self.code = code
        self.message = message


def _fail(error: str, *, retryable: bool, **extra: Any) -> _Outcome:
    code = EXIT_TRANSIENT if retryable else EXIT_PERMANENT
    return _Outcome(code, {"ok": False, "error": error, "retryable": retryable, **extra})


class StepRunner:
    def __init__(
        self,
        settings: RuntimeSettings,
        log: JsonLogger,
        gateway: GatewayClient,
        *,
        http: SafeHttpClient | None = None,
    ) -> None:
        self.settings = settings
        self.log = log
        self.gateway = gateway
        # The production client (public addresses only) unless a test injects another.
        self.http = http if http is not None else SafeHttpClient()

    def run(self) -> _Outcome:
        try:
            self._run()
        except _Outcome as outcome:
            return outcome
        raise AssertionError("a step always ends with an outcome")  # pragma: no cover

    def _run(self) -> None:
        try:
            step = self.gateway.get_step()
        except StepFailure as exc:
            raise _fail(f"fetching the step failed: {exc}", retryable=exc.retryable) from exc
        self.log = self.log.bind(
            runId=step.run_id, stepId=step.step_id, attempt=step.attempt, tool=step.tool
        )
        self._check_identity(step)
        self.log.info("step.fetched", inputs=sorted(step.inputs))

        spec, impl, params = self.prepare(step)

        ctx = ToolContext(gateway=self.gateway, step=step, now=_now, log=self.log, http=self.http)
        try:
            produced = impl.invoke(ctx, params)
            result = spec.validate_result(produced.model_dump(mode="json", by_alias=True))
        except ToolContractError as exc:
            self._report_permanent(step, str(exc))
        except StepFailure as exc:
            if exc.retryable:
                raise _fail(str(exc), retryable=True, tool=step.tool) from exc
            self._report_permanent(step, str(exc))
        except Exception as exc:  # a bug in the tool: the same input would fail again
            self.log.error("tool.crashed", error=f"{type(exc).__name__}: {exc}")
            self._report_permanent(step, f"{step.tool} crashed: {type(exc).__name__}: {exc}")

        wire = result.model_dump(mode="json", by_alias=True, exclude_none=True)
        try:
            receipt = self.gateway.post_result(success=True, result=wire, error=None)
        except GatewayError as exc:
            if exc.retryable:
                raise _fail(f"posting the result failed: {exc}", retryable=True) from exc
            # The gateway refused the result (422: it breaks the contract as the API sees it).
            # Record the refusal as the step's failure so the operator need not wait.
            self._report_permanent(step, f"the gateway refused the result: {exc}")
        summary = f"{step.tool}: {impl.summarize(result)}"
        self.log.info("step.succeeded", callId=receipt.get("callId"), summary=summary)
        raise _Outcome(
            EXIT_OK,
            {"ok": True, "callId": receipt.get("callId"), "tool": step.tool, "summary": summary},
        )

    def prepare(self, step: StepEnvelope) -> tuple[ToolSpec, AnyImplementation, BaseModel]:
        """The step's tool and its params checked against the tool's contract. Imports that
        tool's contract and implementation only; an unknown tool or params breaking the
        contract are recorded as the step's failure (exit 2)."""
        spec = builtin_registry().get(step.tool)
        impl = implementation_for(step.tool)
        if spec is None or impl is None:
            self._report_permanent(step, f"unknown tool {step.tool!r}")
        try:
            params = spec.validate_params(step.params)
        except ToolContractError as exc:
            self._report_permanent(step, str(exc))
        return spec, impl, params

    def _check_identity(self, step: StepEnvelope) -> None:
        expected = {"runId": self.settings.run_id, "stepId": self.settings.step_id}
        actual = {"runId": step.run_id, "stepId": step.step_id}
        wrong = [k for k, v in expected.items() if v is not None and v != actual[k]]
        if wrong:
            detail = ", ".join(f"{k} {actual[k]!r} != env {expected[k]!r}" for k in wrong)
            self.log.error("step.mismatch", detail=detail)
            raise _fail(f"the gateway served a different step: {detail}", retryable=False)

    def _report_permanent(self, step: StepEnvelope, error: str) -> NoReturn:
        """Record ``error`` as the step's failed result, then stop with exit code 2."""
        error = error[:_ERROR_LIMIT]
        self.log.error("step.failed", error=error)
        extra: dict[str, Any] = {"tool": step.tool}
        try:
            receipt = self.gateway.post_result(success=False, result=None, error=error)
            extra["callId"] = receipt.get("callId")
        except GatewayError as exc:
            self.log.warning("step.failure_not_recorded", error=str(exc))
            if exc.retryable:
                # The failure is final but was not recorded: let the Job try again.
                raise _fail(error, retryable=True, **extra) from exc
        raise _fail(error, retryable=False, **extra)


def main() -> int:
    log = JsonLogger()
    termination_log = RuntimeSettings.termination_log_from_env()
    try:
        settings = RuntimeSettings.from_env()
    except StepFailure as exc:
        log.error("config.invalid", error=str(exc))
        write_termination_message(termination_log, {"ok": False, "error": str(exc)})
        return EXIT_PERMANENT
    log.add_secret(settings.step_token)
    log = log.bind(
        runId=settings.run_id,
        stepId=settings.step_id,
        run_id=settings.run_id,
        tenant_id=os.environ.get("SBA_TENANT") or None,
        **trace_ids(settings.traceparent),
    )
    gateway = GatewayClient(
        settings.gateway_url,
        settings.step_token,
        timeout_seconds=settings.timeout_seconds,
        log=log,
        traceparent=settings.traceparent,
    )
    log.info("step.start", gateway=settings.gateway_url)
    outcome = StepRunner(settings, log, gateway).run()
    if outcome.code != EXIT_OK:
        log.error("step.exit", exitCode=outcome.code, error=outcome.message.get("error"))
    write_termination_message(
        settings.termination_log, {k: v for k, v in outcome.message.items() if v is not None}
    )
    return outcome.code


if __name__ == "__main__":
    sys.exit(main())
