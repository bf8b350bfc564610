"""Exceptions: every error the API answers becomes an :class:`ApiError` carrying its code.

The API answers errors as ``{"error": {"code", "message"}}`` with a stable ``code`` (the
OpenAPI document's ``ErrorCode``); each code has a subclass here, so callers catch what they
mean (``except NotFound``) and can still read ``status``, ``code`` and ``message``.
"""

from __future__ import annotations

from typing import Any

import httpx

__all__ = [
    "MisterSmithError",
    "TransportError",
    "ConnectionLost",
    "WaitTimeout",
    "ProtocolError",
    "ApiError",
    "InvalidArgument",
    "Unauthenticated",
    "PermissionDenied",
    "NotFound",
    "MethodNotAllowed",
    "Conflict",
    "TooLarge",
    "UnsupportedMediaType",
    "Unprocessable",
    "RateLimited",
    "InternalError",
    "Unavailable",
    "InsufficientStorage",
    "BadRequest",
    "Unauthorized",
    "Forbidden",
    "ValidationError",
    "QuotaExceeded",
    "error_from_response",
]


class MisterSmithError(Exception):
    """Base of every exception this package raises."""


class TransportError(MisterSmithError):
    """The request did not get an answer: connection refused or reset, a timeout, TLS."""


class ConnectionLost(TransportError):
    """An event stream could not be resumed within the client's ``reconnect_timeout``."""


class WaitTimeout(MisterSmithError, TimeoutError):
    """:meth:`Client.wait` ran out of time before the task finished."""


class ProtocolError(MisterSmithError):
    """The server's answer was not what the API document says (a missing field, bad JSON)."""


class ApiError(MisterSmithError):
    """An error answer of the API.

    Attributes:
        status: The HTTP status.
        code: The API's stable error code (``not_found``, ``unprocessable``…), or ``None``
            when the body was not an API error (a proxy's page, say).
        message: The server's message, which names the offending field or value.
        retry_after: Seconds from the ``Retry-After`` header (429 and 503), else ``None``.
        body: The decoded body, as received.
    """

    #: The code this class stands for (``None`` on the base class).
    error_code: str | None = None

    def __init__(
        self,
        status: int,
        code: str | None,
        message: str,
        *,
        retry_after: float | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(f"{status} {code or 'error'}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.body = body


class InvalidArgument(ApiError):
    """400: a malformed request (id, query, JSON, resume point)."""

    error_code = "invalid_argument"


class Unauthenticated(ApiError):
    """401: a missing, unknown, revoked or expired credential."""

    error_code = "unauthenticated"


class PermissionDenied(ApiError):
    """403: the credential lacks the scope the route needs, or a foreign origin."""

    error_code = "permission_denied"


class NotFound(ApiError):
    """404: no such object in the caller's tenant (another tenant's reads as missing)."""

    error_code = "not_found"


class MethodNotAllowed(ApiError):
    """405: the route does not take this method."""

    error_code = "method_not_allowed"


class Conflict(ApiError):
    """409: the request conflicts with the current state (``conflict``, or ``fenced``)."""

    error_code = "conflict"


class TooLarge(ApiError):
    """413: the body (or the stored object asked for) is larger than allowed."""

    error_code = "too_large"


class UnsupportedMediaType(ApiError):
    """415: a body not declared ``application/json``."""

    error_code = "unsupported_media_type"


class Unprocessable(ApiError):
    """422: valid JSON with an unacceptable value; nothing was changed."""

    error_code = "unprocessable"


class RateLimited(ApiError):
    """429: a tenant quota refused the request; ``retry_after`` says when to try again."""

    error_code = "rate_limited"


class InternalError(ApiError):
    """500: the server failed."""

    error_code = "internal"


class Unavailable(ApiError):
    """503: the store (or artifact storage) is unavailable right now; retry."""

    error_code = "unavailable"


class InsufficientStorage(ApiError):
    """507: the store is over its size limit; new work is refused."""

    error_code = "insufficient_storage"


# Names people reach for first.
BadRequest = InvalidArgument
Unauthorized = Unauthenticated
Forbidden = PermissionDenied
ValidationError = Unprocessable
QuotaExceeded = RateLimited

_BY_CODE: dict[str, type[ApiError]] = {
    cls.error_code: cls
    for cls in (
        InvalidArgument,
        Unauthenticated,
        PermissionDenied,
        NotFound,
        MethodNotAllowed,
        Conflict,
        TooLarge,
        UnsupportedMediaType,
        Unprocessable,
        RateLimited,
        InternalError,
        Unavailable,
        InsufficientStorage,
    )
    if cls.error_code is not None
}
_BY_CODE["fenced"] = Conflict
_BY_STATUS: dict[int, type[ApiError]] = {
    400: InvalidArgument,
    401: Unauthenticated,
    403: PermissionDenied,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    413: TooLarge,
    415: UnsupportedMediaType,
    422: Unprocessable,
    429: RateLimited,
    500: InternalError,
    503: Unavailable,
    507: InsufficientStorage,
}


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def error_from_response(response: httpx.Response) -> ApiError:
    """The :class:`ApiError` subclass for an error answer whose body has been read.

    The class is chosen by the body's ``error.code`` (stable across versions), falling back to
    the HTTP status for an answer that is not an API error body.
    """
    body: Any = None
    code: str | None = None
    message = response.reason_phrase or "error"
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        if text:
            message = text[:500]
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        if isinstance(err.get("code"), str):
            code = err["code"]
        if isinstance(err.get("message"), str):
            message = err["message"]
    cls = _BY_CODE.get(code or "") or _BY_STATUS.get(response.status_code, ApiError)
    return cls(response.status_code, code, message, retry_after=_retry_after(response), body=body)
