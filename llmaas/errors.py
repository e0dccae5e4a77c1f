"""The one error vocabulary of llmaas. Each class carries its HTTP status and OpenAI error `type`/`code`.

Code anywhere raises these; only `llmaas.api.errors` turns them into HTTP responses. Messages are shown to clients,
so they never carry paths, stack traces or secrets.
"""

from __future__ import annotations


class LlmaasError(Exception):
    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.retry_after = retry_after
        self.headers = headers or {}


class InvalidRequest(LlmaasError):
    status, type = 400, "invalid_request_error"
    code: str | None = None


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class RequestTooLarge(InvalidRequest):
    """The request alone reserves more tokens than a tokens-per-minute limit allows: no retry can help (not a 429)."""

    code = "request_too_large"


class Unauthenticated(LlmaasError):
    status, type, code = 401, "invalid_request_error", "invalid_api_key"


class PermissionDenied(LlmaasError):
    status, type, code = 403, "invalid_request_error", "insufficient_permissions"


class NotFound(LlmaasError):
    status, type, code = 404, "invalid_request_error", "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class Conflict(LlmaasError):
    status, type, code = 409, "invalid_request_error", "conflict"


class PayloadTooLarge(LlmaasError):
    status, type, code = 413, "invalid_request_error", "payload_too_large"


class RateLimited(LlmaasError):
    status, type, code = 429, "rate_limit_exceeded", "rate_limit_exceeded"


class QuotaExceeded(LlmaasError):
    status, type, code = 429, "insufficient_quota", "insufficient_quota"


class Overloaded(LlmaasError):
    """The engine's waiting queue is full (backpressure)."""

    status, type, code = 429, "server_overloaded", "server_overloaded"


class EngineError(LlmaasError):
    """One sequence failed inside the engine; the engine itself goes on."""

    status, type, code = 500, "server_error", "engine_error"


class Unavailable(LlmaasError):
    status, type, code = 503, "server_error", "service_unavailable"
