"""Response hardening (docs/operations.md "Security"): the Content-Security-Policy of the
HTML pages, the Permissions-Policy, and one body-size ceiling for every endpoint.

Django's SecurityMiddleware already sends X-Content-Type-Options, Referrer-Policy,
Cross-Origin-Opener-Policy and (in production) HSTS; XFrameOptionsMiddleware sends
X-Frame-Options. The policy itself is settings.CONTENT_SECURITY_POLICY (django-csp 4).
"""

from __future__ import annotations

from collections.abc import Callable

from csp.constants import SELF, UNSAFE_INLINE
from csp.middleware import CSPMiddleware, PolicyParts
from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse

from cdp.errors import error_body

ADMIN_PREFIX = "/admin/"


def _csp_skipped(request: HttpRequest) -> bool:
    policy = getattr(settings, "CONTENT_SECURITY_POLICY", None) or {}
    return request.path_info.startswith(tuple(policy.get("EXCLUDE_URL_PREFIXES", ())))


class ContentSecurityPolicyMiddleware(CSPMiddleware):
    """django-csp's middleware, with two changes:

    - the excluded prefixes (the JSON API) skip all of its work, not only the header: the
      API's hot path builds no policy it then throws away;
    - the admin may use style attributes (Django's own widgets, our charts and
      templates set them), so its style-src also allows 'unsafe-inline'. Scripts stay
      strict everywhere: files from 'self', inline blocks only with the request's nonce.
    """

    def process_request(self, request: HttpRequest) -> None:
        if _csp_skipped(request):
            return None
        return super().process_request(request)

    def process_response(
        self, request: HttpRequest, response: HttpResponseBase
    ) -> HttpResponseBase:
        if _csp_skipped(request):
            return response
        return super().process_response(request, response)

    def get_policy_parts(
        self, request: HttpRequest, response: HttpResponseBase, report_only: bool = False
    ) -> PolicyParts:
        parts = super().get_policy_parts(request, response, report_only)
        if request.path_info.startswith(ADMIN_PREFIX):
            parts.update = {**(parts.update or {}), "style-src": [SELF, UNSAFE_INLINE]}
        return parts


class SecurityHeadersMiddleware:
    """Headers Django has no setting for: Permissions-Policy (no page of ours uses the
    camera, microphone, location, payment or USB APIs, so no embedded script may)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        policy = settings.PERMISSIONS_POLICY
        if policy and "Permissions-Policy" not in response:
            response["Permissions-Policy"] = policy
        return response


class BodyLimitMiddleware:
    """413, before anything reads the body, for a request that declares more than any
    endpoint takes (DATA_UPLOAD_MAX_MEMORY_SIZE): the admin's forms, the browsable API
    and the JSON API alike. Endpoints with smaller limits (events, the Segment API, after
    decompression) apply their own in their parsers. Django reads no body without a
    Content-Length, so a chunked upload cannot get past this."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is not None:
            try:
                declared = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                declared = 0
            if declared > limit:
                return _too_large(declared, limit)
        return self.get_response(request)


def _too_large(declared: int, limit: int) -> HttpResponse:
    body = error_body(
        "payload_too_large",
        f"Request body is {declared} bytes; the limit is {limit}.",
        {"body": [f"at most {limit} bytes"]},
    )
    return JsonResponse(body, status=413)
