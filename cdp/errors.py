"""Domain errors and the one place that turns any API error into DESIGN.md §4's shape:

{"error": {"code": "...", "message": "...", "details": ...}}
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import psycopg
import redis
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from kombu.exceptions import OperationalError as BrokerError
from rest_framework import exceptions, status
from rest_framework.response import Response

logger = logging.getLogger(__name__)

# Redis being away, as the cache (redis-py) and Celery's publishing (kombu) report it.
REDIS_ERRORS: tuple[type[Exception], ...] = (redis.RedisError, BrokerError)


class ApplicationError(Exception):
    """A domain error a client can act on. Services raise these; the API maps them."""

    status_code: int = status.HTTP_400_BAD_REQUEST
    code = "invalid"

    def __init__(self, message: str, *, details: Any = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if code:
            self.code = code


class ValidationFailed(ApplicationError):
    code = "invalid"


class NotFound(ApplicationError):
    status_code = status.HTTP_404_NOT_FOUND
    code = "not_found"


class Conflict(ApplicationError):
    status_code = status.HTTP_409_CONFLICT
    code = "conflict"


class PayloadTooLarge(ApplicationError):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    code = "payload_too_large"


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


_DRF_CODES: dict[type[exceptions.APIException], str] = {
    exceptions.ParseError: "malformed_json",
    exceptions.AuthenticationFailed: "invalid_key",
    exceptions.NotAuthenticated: "unauthenticated",
    exceptions.PermissionDenied: "forbidden",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "rate_limited",
}


# A database that is away or busy is the client's cue to try again, not a bug: a 503 with
# Retry-After. SQLSTATEs: connection exceptions (class 08), the server shutting down or
# not accepting connections yet (57P01-57P03), too many connections (53300); and the
# transient conflicts that outlived the service's own retries (deadlock, serialization).
DATABASE_RETRY_AFTER_SECONDS = 5
_UNAVAILABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03", "53300")
_BUSY_SQLSTATES = ("40P01", "40001", "55P03")


def database_error_code(exc: BaseException | None) -> str | None:
    """`database_unavailable` or `database_busy` when `exc` says the database cannot
    serve right now (a retry may succeed), None for anything else (a bad query is a bug).
    """
    if isinstance(exc, InterfaceError | psycopg.InterfaceError):
        return "database_unavailable"  # e.g. "connection already closed"
    if not isinstance(exc, OperationalError | psycopg.OperationalError):
        return None
    cause = exc if isinstance(exc, psycopg.Error) else exc.__cause__
    if isinstance(cause, psycopg.Error):
        code = cause.sqlstate
        if code is None or code.startswith(_UNAVAILABLE_SQLSTATES):
            return "database_unavailable"  # no SQLSTATE: the connection itself failed
        return "database_busy" if code in _BUSY_SQLSTATES else None
    return "database_busy" if "locked" in str(exc) else None  # SQLite's one writer


_DATABASE_MESSAGES = {
    "database_unavailable": "The database is unavailable; nothing was stored. Try again shortly.",
    "database_busy": "The database is busy; nothing was stored. Try again shortly.",
}


def database_error_response(exc: BaseException | None) -> JsonResponse | None:
    """The 503 for a database that cannot serve, or None when `exc` is something else."""
    code = database_error_code(exc)
    if code is None:
        return None
    # The type only: a database message can quote row values.
    logger.warning("%s: %s", code, type(exc).__name__)
    response = JsonResponse(error_body(code, _DATABASE_MESSAGES[code]), status=503)
    response["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
    return response


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's EXCEPTION_HANDLER. Returns None (a 500) only for genuine bugs."""
    if isinstance(exc, ApplicationError):
        return Response(error_body(exc.code, exc.message, exc.details), status=exc.status_code)
    if isinstance(exc, RequestDataTooBig):
        return Response(
            error_body("payload_too_large", "Request body is too large."),
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    code = database_error_code(exc)
    if code is not None:
        logger.warning("%s: %s", code, type(exc).__name__)
        return Response(
            error_body(code, _DATABASE_MESSAGES[code]),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
        )
    if not isinstance(exc, exceptions.APIException):
        return None
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        from cdp.throttles import refusal_count

        request = context.get("request")
        wait = refusal_count(request._request) if request is not None else None
        if wait is not None:
            exc = exceptions.Throttled(wait)

    headers: dict[str, str] = {}
    auth_header = getattr(exc, "auth_header", None)
    if auth_header:
        headers["WWW-Authenticate"] = auth_header
    wait = getattr(exc, "wait", None)
    if wait is not None:
        headers["Retry-After"] = str(int(wait) + 1)

    if isinstance(exc, exceptions.ValidationError):
        body = error_body("invalid", "The request is not valid; see details.", exc.detail)
    else:
        code = next((c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)), "error")
        body = error_body(code, str(exc.detail))
    return Response(body, status=exc.status_code, headers=headers)


def json_404(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse(error_body("not_found", "No such URL."), status=404)


def json_500(request: HttpRequest) -> JsonResponse:
    # Django calls handler500 inside its `except`: the exception is at hand.
    unavailable = database_error_response(sys.exc_info()[1])
    if unavailable is not None:
        return unavailable
    return JsonResponse(error_body("server_error", "Internal error."), status=500)


def page_503(request: HttpRequest) -> HttpResponse | None:
    """For pages (the admin, the demo shop): a plain 503 with Retry-After when the error
    being handled is the database's, else None (the usual 500 page)."""
    if database_error_code(sys.exc_info()[1]) is None:
        return None
    response = HttpResponse(
        "Service unavailable: the database cannot be reached. Try again shortly.\n",
        status=503,
        content_type="text/plain; charset=utf-8",
    )
    response["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
    return response
