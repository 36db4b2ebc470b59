"""API authentication (`Authorization: Bearer <key>`) and permissions (DESIGN.md §4).

- write key: public, safe in a browser; may send events and ask for decisions for the
  visitor named in the call, never read profiles. Browser calls must come from one of
  the source's allowed origins.
- secret key: server side; everything.
- staff session: the admin and the browsable API; everything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from profiles.selectors import SourceCredential, source_credential, source_credential_cached

if TYPE_CHECKING:
    from rest_framework.views import APIView


def origin_allowed(cred: SourceCredential, request: HttpRequest) -> bool:
    origin = request.headers.get("Origin")
    if not origin:
        return True  # not a browser cross-origin call
    if "*" in cred.allowed_origins or origin.rstrip("/") in cred.allowed_origins:
        return True
    # The product's own pages (demo storefront) call it same-origin.
    return urlsplit(origin).netloc == request.get_host()


def credential_admit(
    cred: SourceCredential, django_request: HttpRequest
) -> tuple[AnonymousUser, SourceCredential]:
    """A valid key, admitted: a write key only from one of its source's origins (and
    then ApiCorsMiddleware may expose the answer to that origin)."""
    if cred.kind == "write":
        if not origin_allowed(cred, django_request):
            raise exceptions.PermissionDenied(
                "This origin is not allowed for the source's write key; add it to the "
                "source's allowed origins."
            )
        django_request.cdp_cors_allowed = True  # type: ignore[attr-defined]
    return AnonymousUser(), cred


def address_check(request: Request, raw_key: str) -> None:
    """Before a key is looked up: 429 for an address over its limit (cdp.throttles),
    unless the key is one this process already knows as valid; that call goes on to be
    refused by the throttle once admitted, with its CORS header, so the shop's SDK can
    read the 429 and its Retry-After."""
    from cdp.throttles import address_exhausted

    wait = address_exhausted(request._request)
    if wait is not None and source_credential_cached(raw_key=raw_key) is None:
        raise exceptions.Throttled(wait)


class SourceKeyAuthentication(BaseAuthentication):
    www_authenticate_realm = "api"

    def authenticate(self, request: Request) -> tuple[Any, SourceCredential] | None:
        header = get_authorization_header(request).split()
        if not header or header[0].lower() != b"bearer":
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Authorization header must be 'Bearer <key>'.")
        try:
            raw = header[1].decode("ascii")
        except UnicodeDecodeError as exc:
            raise exceptions.AuthenticationFailed("The key is not valid.") from exc
        address_check(request, raw)
        cred = source_credential(raw_key=raw)
        if cred is None:
            raise exceptions.AuthenticationFailed("The key is not valid or was revoked.")
        return credential_admit(cred, request._request)

    def authenticate_header(self, request: Request) -> str:
        return f'Bearer realm="{self.www_authenticate_realm}"'


def credential(request: Request) -> SourceCredential | None:
    return request.auth if isinstance(request.auth, SourceCredential) else None


def request_actor(request: Request) -> str:
    """Who made an API call, for the audit log: key:<source> or user:<name>."""
    from cdp.audit import actor_of

    cred = credential(request)
    return actor_of(request.user, source_slug=cred.source_slug if cred else None)


def _is_staff(request: Request) -> bool:
    user = request.user
    return bool(user and user.is_authenticated and user.is_active and user.is_staff)


class IsStaff(BasePermission):
    message = "Staff only."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return _is_staff(request)


class HasWriteKey(BasePermission):
    """A write key, a secret key, or a staff session."""

    message = "A write key, secret key or staff session is required."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return credential(request) is not None or _is_staff(request)


class HasSecretKey(BasePermission):
    """A secret key or a staff session; a write key is refused (403)."""

    message = "This endpoint needs a secret key; a write key cannot read profile data."

    def has_permission(self, request: Request, view: APIView) -> bool:
        cred = credential(request)
        return (cred is not None and cred.is_secret) or _is_staff(request)
