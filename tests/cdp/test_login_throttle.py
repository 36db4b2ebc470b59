"""Admin login brute force: after 5 wrong passwords for one username (or 20 from one
address) within 15 minutes, the login answers 429 until the window passes."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.management import call_command
from django.test import Client

from cdp.models import AuditEvent

LOGIN = "/admin/login/?next=/admin/"
PASSWORD = "pw-marketer-123"


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    # Each attempt hashes a password; the real hasher would make these tests slow.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def marketer(db: Any) -> Any:
    return get_user_model().objects.create_user("marketer", password=PASSWORD, is_staff=True)


def attempt(password: str, *, username: str = "marketer", ip: str = "203.0.113.50") -> Any:
    return Client(REMOTE_ADDR=ip).post(LOGIN, {"username": username, "password": password})


def logged_in(response: Any) -> bool:
    return response.status_code == 302 and response["Location"] == "/admin/"


def test_five_wrong_passwords_lock_the_username_out(marketer):
    # Given five wrong passwords for the marketer's account
    answers = [attempt("wrong").status_code for _ in range(5)]

    # When the right password is tried next
    locked = attempt(PASSWORD)

    # Then the wrong tries were ordinary failures, and now the login is locked: 429 with a
    # message, and the password is not even checked
    assert answers == [200] * 5
    assert locked.status_code == 429
    assert "Too many failed logins" in locked.content.decode()
    assert int(locked["Retry-After"]) == 15 * 60
    # … from any address
    assert attempt(PASSWORD, ip="198.51.100.9").status_code == 429


def test_a_differently_written_username_is_the_same_lock(marketer):
    # Given the marketer's account locked out
    for _ in range(5):
        attempt("wrong")

    # When the attacker writes the name another way Django's login still accepts
    # ("ｍarketer", a full-width m, is "marketer" once normalized; so is "MARKETER ")
    for other in ("\uff4darketer", "MARKETER "):
        # Then it is locked too, from any address, even with the right password
        assert attempt(PASSWORD, username=other, ip="198.51.100.77").status_code == 429


def test_the_lockout_ends_when_the_window_passes(marketer):
    # Given a locked-out username
    for _ in range(5):
        attempt("wrong")
    assert attempt(PASSWORD).status_code == 429

    # When the 15 minutes are over (the counters expire with the window)
    cache.clear()

    # Then the right password works again
    assert logged_in(attempt(PASSWORD))


def test_a_successful_login_resets_the_count(marketer):
    # Given four wrong passwords and then the right one
    for _ in range(4):
        attempt("wrong")
    assert logged_in(attempt(PASSWORD))

    # When the marketer mistypes four more times
    answers = [attempt("wrong").status_code for _ in range(4)]

    # Then they are not locked out: the successful login started the count afresh
    assert answers == [200] * 4
    assert logged_in(attempt(PASSWORD))


def test_one_address_guessing_many_usernames_is_locked_out(marketer):
    # Given an address that tries 20 different usernames
    for n in range(20):
        attempt("wrong", username=f"guess-{n}", ip="192.0.2.66")

    # Then it cannot log in even with real credentials, while others still can
    assert attempt(PASSWORD, ip="192.0.2.66").status_code == 429
    assert logged_in(attempt(PASSWORD, ip="198.51.100.1"))


def test_failed_logins_are_in_the_audit_log_without_names(marketer):
    # Given two wrong passwords
    attempt("wrong")
    attempt("wrong")

    # Then each is an audit entry that names neither the username nor the address
    entries = list(AuditEvent.objects.filter(action="admin.login.failed").order_by("id"))
    assert [e.details["failures"] for e in entries] == [1, 2]
    assert all("marketer" not in str(e.details) for e in entries)
    assert all("203.0.113.50" not in str(e.details) for e in entries)
    assert entries[0].details["username_hash"] == entries[1].details["username_hash"]


def test_limits_are_settings(marketer, settings):
    # Given a deployment that locks after 2 failures
    settings.CDP = {**settings.CDP, "LOGIN_MAX_FAILURES": 2}

    # When two wrong passwords are tried / Then the third attempt is refused
    attempt("wrong")
    attempt("wrong")
    assert attempt(PASSWORD).status_code == 429


def test_the_test_client_login_helpers_still_work(marketer):
    # Given the helpers the suite uses everywhere
    client = Client()

    # Then login() and force_login() work as before
    assert client.login(username="marketer", password=PASSWORD)
    client.force_login(marketer)
    assert client.get("/admin/").status_code == 200


def test_an_operator_can_lift_a_lockout(marketer):
    # Given the marketer locked out
    for _ in range(5):
        attempt("wrong")
    assert attempt(PASSWORD).status_code == 429

    # When the operator lifts it
    call_command("unlock_admin_login", "--username", "marketer", stdout=io.StringIO())

    # Then the right password logs in again, and the unlock is audited
    assert logged_in(attempt(PASSWORD))
    assert AuditEvent.objects.filter(action="admin.login.unlocked").exists()
