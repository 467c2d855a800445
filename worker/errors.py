"""One error hierarchy for the whole worker, rendered as OpenAI or Anthropic error bodies.

Handlers raise `GatewayError` subclasses; the middleware in `worker.app` renders them in the format of the
route the client called (`/v1/messages` speaks Anthropic, everything else OpenAI).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import msgspec

ErrorFormat = Literal["openai", "anthropic"]

_encoder = msgspec.json.Encoder()


class GatewayError(Exception):
    """Base of every error a client can see. Subclasses fix status and the two formats' type names."""

    status: int = 500
    openai_type: str = "server_error"
    anthropic_type: str = "api_error"
    default_code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.param = param
        self.headers = dict(headers or {})
        if status is not None:
            self.status = status
            if status == 504 and self.anthropic_type == "api_error":
                self.anthropic_type = "timeout_error"  # Anthropic's name for a request that timed out

    def body(self, fmt: ErrorFormat, request_id: str | None = None) -> bytes:
        """The JSON error body in the client's format."""
        if fmt == "anthropic":
            doc: dict[str, object] = {
                "type": "error",
                "error": {"type": self.anthropic_type, "message": self.message},
            }
            if request_id:
                doc["request_id"] = request_id
            return _encoder.encode(doc)
        return _encoder.encode(
            {
                "error": {
                    "message": self.message,
                    "type": self.openai_type,
                    "code": self.code,
                    "param": self.param,
                }
            }
        )


class InvalidRequestError(GatewayError):
    """400: the request is malformed or has an invalid field."""

    status = 400
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"
    default_code = "invalid_request"


class AuthenticationError(GatewayError):
    """401: missing, unknown or unusable credentials."""

    status = 401
    openai_type = "invalid_request_error"
    anthropic_type = "authentication_error"
    default_code = "invalid_api_key"


class PaymentRequiredError(GatewayError):
    """402: the key's balance cannot cover the request."""

    status = 402
    openai_type = "insufficient_quota"
    anthropic_type = "billing_error"
    default_code = "insufficient_balance"


class PermissionDeniedError(GatewayError):
    """403: authenticated, but not allowed to do this."""

    status = 403
    openai_type = "permission_error"
    anthropic_type = "permission_error"
    default_code = "permission_denied"


class NotFoundError(GatewayError):
    """404: no such route or resource."""

    status = 404
    openai_type = "invalid_request_error"
    anthropic_type = "not_found_error"
    default_code = "not_found"


class UnknownRouteError(NotFoundError):
    """404: no route has this path (see `unknown_route`)."""


_ANTHROPIC_APIS = (
    ("/v1/messages/batches", "Message Batches API"),
    ("/v1/files", "Files API"),
    ("/v1/skills", "Skills API"),
    ("/v1/complete", "Text Completions API"),
    ("/v1/organizations", "Admin API"),
)
"""Anthropic's APIs the gateway does not serve, by path: what a 404 for an Anthropic client names."""


def unknown_route(method: str, path: str, headers: Mapping[str, str]) -> UnknownRouteError:
    """The 404 for a path no route has. An Anthropic client (on `/v1/messages…`, or sending
    `anthropic-version` under `/v1/`) is told which of Anthropic's APIs it asked for and what is served."""
    if _anthropic_client(path, headers):
        api = next((name for prefix, name in _ANTHROPIC_APIS if path.startswith(prefix)), None)
        return UnknownRouteError(
            f"{method} {path}: this gateway does not serve {f'the {api}' if api else 'this API'}; of "
            "Anthropic's APIs it serves Messages (POST /v1/messages, POST /v1/messages/count_tokens) and "
            "Models (GET /v1/models)."
        )
    return UnknownRouteError(f"Unknown route: {method} {path}")


def _anthropic_client(path: str, headers: Mapping[str, str] | None) -> bool:
    return path.startswith("/v1/messages") or (
        headers is not None and path.startswith("/v1/") and "anthropic-version" in headers
    )


class MethodNotAllowedError(GatewayError):
    """405: the route exists but not for this method."""

    status = 405
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"
    default_code = "method_not_allowed"


class RequestTimeoutError(GatewayError):
    """408: the client did not send its request in time."""

    status = 408
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"
    default_code = "request_timeout"


class ConflictError(GatewayError):
    """409: the change conflicts with the resource's current state."""

    status = 409
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"
    default_code = "conflict"


class PayloadTooLargeError(GatewayError):
    """413: the body is larger than MAX_BODY_BYTES."""

    status = 413
    openai_type = "invalid_request_error"
    anthropic_type = "request_too_large"
    default_code = "request_too_large"


class RateLimitError(GatewayError):
    """429: a rate limit or quota was hit; carries Retry-After."""

    status = 429
    openai_type = "rate_limit_error"
    anthropic_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class InternalError(GatewayError):
    """500: an unexpected failure inside the worker. The message never carries internals."""

    status = 500
    openai_type = "server_error"
    anthropic_type = "api_error"
    default_code = "internal_error"


class UpstreamError(GatewayError):
    """An upstream failure passed on to the client with the upstream's status."""

    status = 502
    openai_type = "upstream_error"
    anthropic_type = "api_error"
    default_code = "upstream_error"


class ServiceUnavailableError(GatewayError):
    """503: a dependency (KV, every upstream) is unavailable."""

    status = 503
    openai_type = "server_error"
    anthropic_type = "overloaded_error"
    default_code = "service_unavailable"


def error_format_for(
    path: str, headers: Mapping[str, str] | None = None, *, unknown_route: bool = False
) -> ErrorFormat:
    """Anthropic error bodies on the Messages API, and for the Anthropic SDK (it sends `anthropic-version`) on
    the models routes and on any `/v1/` path no route has (`unknown_route`: its Files API, Message Batches
    …); OpenAI everywhere else."""
    if unknown_route:
        return "anthropic" if _anthropic_client(path, headers) else "openai"
    if path.startswith("/v1/messages"):
        return "anthropic"
    if headers is not None and path.startswith("/v1/models") and "anthropic-version" in headers:
        return "anthropic"
    return "openai"
