"""CORS for the public API. Preflights are answered for any origin (they carry no key);
the real call is checked against the source's allowed origins by the authentication, and
only an allowed call gets Access-Control-Allow-Origin, so a browser on another site can
neither send with nor read through someone else's write key."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

CORS_PREFIXES = ("/api/v1/", "/v1/")


class ApiCorsMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        origin = request.headers.get("Origin")
        is_api = request.path.startswith(CORS_PREFIXES)
        if (
            is_api
            and origin
            and request.method == "OPTIONS"
            and "Access-Control-Request-Method" in request.headers
        ):
            response = HttpResponse(status=204)
            response["Access-Control-Allow-Origin"] = origin
            response["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
            # analytics.js adds X-Retry-Count when it resends.
            response["Access-Control-Allow-Headers"] = "Authorization, Content-Type, X-Retry-Count"
            response["Access-Control-Max-Age"] = "86400"
            response["Vary"] = "Origin"
            return response
        response = self.get_response(request)
        if is_api and origin and getattr(request, "cdp_cors_allowed", False):
            response["Access-Control-Allow-Origin"] = origin
            # The SDKs wait as long as a 429 (or 503) says; a browser hides the header
            # from a cross-origin script unless it is exposed.
            response["Access-Control-Expose-Headers"] = "Retry-After"
            response["Vary"] = "Origin"
        return response
