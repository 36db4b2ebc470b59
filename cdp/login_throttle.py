"""Brute-force protection of the admin login (docs/operations.md "Security").

Failed logins are counted in the shared cache per username and per client address
(Django's user_login_failed signal, so every authenticate() counts); once either count
reaches its limit within the window, the admin login answers 429 with a lockout message,
without checking the password, until the window (counted from the first failure) passes.
A successful login clears its username's count. Every failure is in the audit log.
"""

from __future__ import annotations

import hashlib
import hmac
import unicodedata
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.core.cache import cache
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.cache import add_never_cache_headers

from cdp.audit import audit_record
from cdp.throttles import client_ip


def _limits() -> tuple[int, int, int]:
    cdp = settings.CDP
    return (
        int(cdp.get("LOGIN_MAX_FAILURES", 5)),
        int(cdp.get("LOGIN_MAX_FAILURES_PER_IP", 20)),
        int(cdp.get("LOGIN_LOCKOUT_SECONDS", 15 * 60)),
    )


def _digest(value: str) -> str:
    # Counters and audit entries name no one: usernames and addresses are keyed hashes.
    key = settings.SECRET_KEY.encode()
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:32]


def _username_norm(username: str) -> str:
    # As Django's login form normalizes it (NFKC): "ｍarketer" logs in as "marketer", so
    # it must count against the same lock.
    return unicodedata.normalize("NFKC", username).strip().casefold()


def _user_key(username: str) -> str:
    return f"login-failures:user:{_digest(_username_norm(username))}"


def _ip_key(ip: str) -> str:
    return f"login-failures:ip:{_digest(ip)}"


def _count(key: str, window: int) -> int:
    if cache.add(key, 1, timeout=window):
        return 1
    try:
        return int(cache.incr(key))
    except ValueError:  # expired between add and incr
        cache.add(key, 1, timeout=window)
        return 1


def login_locked(*, username: str, ip: str | None) -> bool:
    """Whether logins for this username, or from this address, are locked out now."""
    per_user, per_ip, _ = _limits()
    if username and int(cache.get(_user_key(username)) or 0) >= per_user:
        return True
    return bool(ip) and int(cache.get(_ip_key(str(ip))) or 0) >= per_ip


@receiver(user_login_failed, dispatch_uid="cdp.login_throttle.failed")
def login_failure_record(
    sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any
) -> None:
    per_user, per_ip, window = _limits()
    username = str(credentials.get("username") or "")
    failures = _count(_user_key(username), window) if username else 0
    ip = client_ip(request) if request is not None else ""
    ip_failures = _count(_ip_key(ip), window) if ip else 0
    audit_record(
        actor="anonymous",
        action="admin.login.failed",
        object_type="auth.user",
        details={
            "username_hash": _digest(_username_norm(username)) if username else "",
            "ip_hash": _digest(ip) if ip else "",
            "failures": failures,
            "locked": failures >= per_user or ip_failures >= per_ip,
        },
    )


@receiver(user_logged_in, dispatch_uid="cdp.login_throttle.succeeded")
def login_success_reset(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    # Only the username's count: a valid account of the attacker's own must not clear
    # the address's count of guesses at others.
    cache.delete(_user_key(user.get_username()))


def admin_login(request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
    """The admin's login view, refusing attempts while their username or address is
    locked out (routed in cdp.urls before the admin's own URLs)."""
    if request.method == "POST":
        username = str(request.POST.get("username") or "")
        if login_locked(username=username, ip=client_ip(request)):
            _, _, window = _limits()
            minutes = max(1, window // 60)
            context = {
                **admin.site.each_context(request),
                "title": "Log in",
                "site_header": admin.site.site_header,
                "app_path": request.get_full_path(),
                "username": username,
                "lockout": True,
                "form": None,
                "error_message": (f"Too many failed logins. Try again in {minutes} minutes."),
            }
            response = TemplateResponse(request, "admin/login_locked.html", context, status=429)
            response["Retry-After"] = str(window)
            add_never_cache_headers(response)
            return response
    return admin.site.login(request, extra_context)


def login_unlock(*, username: str = "", ip: str = "") -> None:
    """Lift a lockout early: the username's count, the address's, or both."""
    if username:
        cache.delete(_user_key(username))
    if ip:
        cache.delete(_ip_key(ip))
