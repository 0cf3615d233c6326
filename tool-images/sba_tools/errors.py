"""How a tool step can fail, and whether a retry could help."""

from __future__ import annotations


class StepFailure(Exception):
    """A step cannot complete in this attempt.

    ``retryable`` decides the exit code: a retryable failure (network trouble, an
    overloaded gateway) exits 1 so the Job's backoff tries again; any other exits 2.
    """

    retryable: bool = False

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable


class ConfigurationError(StepFailure):
    """The container's environment is incomplete or malformed."""


class GatewayError(StepFailure):
    """The tool gateway answered with an error, or could not be reached."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None,
        code: str | None = None,
        request_id: str | None = None,
        retryable: bool,
    ) -> None:
        super().__init__(message, retryable=retryable)
        self.status = status
        self.code = code
        self.request_id = request_id


def status_is_retryable(status: int) -> bool:
    """5xx, 429 (rate limited) and 408 (request timeout) are worth another attempt."""
    return status >= 500 or status in (408, 429)
