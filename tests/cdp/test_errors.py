"""A database that cannot serve is a 503 with Retry-After in the API's error shape; a bad
query stays a 500 (a bug). The real outages are injected in tests/hardening/test_faults.py
(PostgreSQL); these run everywhere."""

from __future__ import annotations

import psycopg
import pytest
from django.db import InterfaceError, OperationalError
from django.test import Client

from cdp.errors import database_error_code


def _wrapped(cause: Exception) -> OperationalError:
    """As Django raises it: its own class, psycopg's error as the cause."""
    exc = OperationalError(str(cause))
    exc.__cause__ = cause
    return exc


class _Lost(psycopg.OperationalError):
    sqlstate = None  # no SQLSTATE: the connection itself failed


class _Shutdown(psycopg.OperationalError):
    sqlstate = "57P01"  # admin_shutdown


class _Deadlock(psycopg.OperationalError):
    sqlstate = "40P01"


class _Canceled(psycopg.OperationalError):
    sqlstate = "57014"  # a statement timeout: a slow query, not an outage


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (_wrapped(_Lost("server closed the connection unexpectedly")), "database_unavailable"),
        (_Lost("connection refused"), "database_unavailable"),  # raw, from a psycopg cursor
        (_wrapped(_Shutdown("terminating connection")), "database_unavailable"),
        (InterfaceError("connection already closed"), "database_unavailable"),
        (_wrapped(_Deadlock("deadlock detected")), "database_busy"),
        (OperationalError("database is locked"), "database_busy"),  # SQLite
        (_wrapped(_Canceled("canceling statement due to statement timeout")), None),
        (OperationalError("no such column: x"), None),  # a bug
        (ValueError("boom"), None),
    ],
)
def test_which_database_errors_mean_try_again(exc, code):
    assert database_error_code(exc) == code


@pytest.mark.django_db
def test_an_api_call_while_the_database_is_away_is_a_503_with_retry_after(
    write_client, monkeypatch
):
    # Given a database connection that is lost under the ingestion service
    def lost(**kwargs):
        raise _wrapped(_Lost("server closed the connection unexpectedly"))

    monkeypatch.setattr("profiles.api.events_ingest", lost)
    # When a storefront sends an event
    response = write_client.post(
        "/api/v1/events", {"type": "page", "anonymous_id": "a1"}, format="json"
    )
    # Then it is told to come back, in the API's error shape
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert response.json()["error"]["code"] == "database_unavailable"
    assert set(response.json()["error"]) == {"code", "message", "details"}


@pytest.mark.django_db
def test_a_page_while_the_database_is_away_is_a_plain_503(monkeypatch):
    # Given a database connection that is lost under the admin's login
    def lost(*args, **kwargs):
        raise _wrapped(_Lost("server closed the connection unexpectedly"))

    monkeypatch.setattr("django.contrib.auth.authenticate", lost)
    monkeypatch.setattr("django.contrib.auth.forms.authenticate", lost)
    client = Client(raise_request_exception=False)
    # When a marketer logs in
    response = client.post("/admin/login/", {"username": "ann", "password": "pw-ann-123"})
    # Then the page says the service is unavailable, and when to try again
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert b"unavailable" in response.content
