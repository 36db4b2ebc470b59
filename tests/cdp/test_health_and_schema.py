"""Health probes, the OpenAPI document, the Swagger UI, and a clean `check --deploy`."""

from __future__ import annotations

import os
import secrets
import string
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings
from drf_spectacular.validation import validate_schema
from jsonschema import Draft202012Validator

BASE_DIR = Path(__file__).resolve().parents[2]
HTTP_METHODS = {"get", "post", "put", "patch", "delete"}


def test_healthz_is_200(anon_client):
    response = anon_client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_reports_each_dependency_ok(anon_client):
    # Given a running database (and Redis when configured)
    # When the orchestrator asks whether the web process is ready
    response = anon_client.get("/readyz")

    # Then every dependency answers
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"] == "ok"
    if settings.REDIS_URL:
        assert body["checks"]["redis"] == "ok"
    else:
        assert "redis" not in body["checks"]
    # a broker on the cache's Redis is covered by the cache check
    assert "broker" not in body["checks"]


# Nothing listens here: a dead Redis, without touching the shared one.
CLOSED_REDIS = "redis://127.0.0.1:6399/0"
DEAD_CACHE = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": CLOSED_REDIS,
        "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
    }
}


@pytest.mark.django_db
def test_readyz_stays_ready_but_says_degraded_when_redis_is_unreachable(anon_client):
    # Given the cache pointed at a Redis that does not answer
    with override_settings(REDIS_URL=CLOSED_REDIS, CACHES=DEAD_CACHE):
        # When the orchestrator asks
        response = anon_client.get("/readyz")

    # Then the process stays in rotation (it still stores events and decides from the
    # database; failing every process at once would stop collection), and says why
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"].startswith("error: ")


@pytest.mark.django_db
def test_readyz_reports_a_separate_broker_that_is_down(anon_client):
    # Given a Celery broker on a Redis of its own, which is down
    with override_settings(CELERY_BROKER_URL="redis://127.0.0.1:6399/1"):
        response = anon_client.get("/readyz")

    # Then the report names the broker alone, and the process stays ready
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "degraded"
    checks = body["checks"]
    assert checks["broker"].startswith("error: ")
    assert checks["database"] == "ok"
    assert all(v == "ok" for k, v in checks.items() if k != "broker")


@pytest.fixture
def openapi(anon_client: Any, db: Any) -> dict[str, Any]:
    response = anon_client.get("/api/schema/?format=json")
    assert response.status_code == 200, response.content
    return response.json()


def test_schema_is_valid_openapi(openapi):
    # The document validates against the OpenAPI meta-schema of its declared version
    validate_schema(openapi)
    assert openapi["info"]["title"]


def test_schema_components_are_valid_json_schema(openapi):
    # OAS 3.1 is set on purpose (pydantic emits JSON Schema 2020-12), so components are
    # JSON Schema 2020-12 documents.
    assert openapi["openapi"].startswith("3.1")
    for name, schema in openapi["components"]["schemas"].items():
        try:
            Draft202012Validator.check_schema(schema)
        except Exception as exc:  # pragma: no cover - the message names the component
            pytest.fail(f"component {name}: {exc}")


def test_schema_lists_the_public_endpoints(openapi):
    paths = openapi["paths"]

    assert "post" in paths["/api/v1/events"]
    assert "get" in paths["/api/v1/profiles"]
    assert "get" in paths["/api/v1/profiles/{profile_id}"]


def api_operations(openapi: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, op)
        for path, item in openapi["paths"].items()
        if path.startswith("/api/v1/")
        for method, op in item.items()
        if method in HTTP_METHODS
    ]


def test_every_api_operation_documents_its_4xx_answers(openapi):
    # A client generator needs the error answers, not only the happy path
    operations = api_operations(openapi)
    assert operations
    for path, method, op in operations:
        codes = set(op["responses"])
        assert {"401", "403"} <= codes, (path, method, codes)
        assert any(c.startswith("4") for c in codes - {"401", "403"}), (path, method, codes)


def test_every_throttled_operation_documents_429_and_503_with_retry_after(openapi):
    # Any keyed call may be rate limited or meet a database outage: a client must know
    # both answers and how long to wait, whatever the endpoint
    for path, ops in openapi["paths"].items():
        for method, op in ops.items():
            if "operations" in op.get("tags", []):  # the health probes: never throttled
                continue
            for code in ("429", "503"):
                answer = op["responses"].get(code)
                assert answer is not None, (method, path, code)
                assert "Retry-After" in answer["headers"], (method, path, code)
                schema = answer["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, (method, path)


def test_error_answers_use_the_error_envelope(openapi):
    components = openapi["components"]["schemas"]
    for path, method, op in api_operations(openapi):
        for code, answer in op["responses"].items():
            if not code.startswith("4"):
                continue
            ref = answer["content"]["application/json"]["schema"]["$ref"]
            schema = components[ref.rsplit("/", 1)[1]]
            assert "error" in schema["properties"], (path, method, code)


def test_every_api_operation_declares_bearer_auth(openapi):
    # Swagger UI shows its "Authorize" button only when the key scheme is described
    schemes = openapi["components"].get("securitySchemes", {})
    bearer = [n for n, s in schemes.items() if s.get("type") == "http" and s["scheme"] == "bearer"]
    assert bearer, schemes
    for path, method, op in api_operations(openapi):
        names = {name for requirement in op.get("security", []) for name in requirement}
        assert names & set(bearer), (path, method, op.get("security"))


def test_events_operation_documents_413(openapi):
    assert "413" in openapi["paths"]["/api/v1/events"]["post"]["responses"]


def test_schema_generation_emits_no_warnings():
    # Given the schema generator run the way `manage.py spectacular` runs it
    result = subprocess.run(
        [sys.executable, "manage.py", "spectacular", "--fail-on-warn", "--file", os.devnull],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "cdp.settings"},
    )

    # Then it is clean: every view's schema is what was meant, nothing guessed
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.django_db
def test_swagger_ui_is_served(anon_client):
    response = anon_client.get("/api/docs/")

    assert response.status_code == 200
    assert b"swagger" in response.content.lower()


def test_check_deploy_is_clean_with_production_variables():
    # Given the variables an operator sets in production
    alphabet = string.ascii_letters + string.digits + "!@#%^&*(-_=+)"
    env = {
        **os.environ,
        "DEBUG": "false",
        "SECRET_KEY": "".join(secrets.choice(alphabet) for _ in range(60)),
        "ALLOWED_HOSTS": "cdp.example",
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)  # set by the browser tests, in this process only

    # When Django's deployment checklist runs
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )

    # Then it has nothing to say
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "no issues" in output, output
    assert "WARNINGS" not in output, output


@pytest.mark.django_db
def test_unknown_api_url_is_a_json_404(anon_client):
    response = anon_client.get("/api/v1/no-such-thing")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def documented_body(openapi: dict[str, Any], path: str, method: str, status: int) -> Any:
    """A validator for the JSON body the schema documents for this answer."""
    media = openapi["paths"][path][method]["responses"][str(status)]["content"]
    # The document itself is the schema: "$ref" resolves into its components.
    return Draft202012Validator({**openapi, **media["application/json"]["schema"]})


@pytest.mark.django_db
def test_an_error_without_details_matches_its_documented_schema(openapi, anon_client):
    # Given an error answer whose details are null (found by tests/hardening/test_fuzz.py:
    # the nullable was written as oneOf[{}, null], which null matches twice, so never)
    response = anon_client.get("/api/v1/consent?anonymous_id=a-1")
    assert response.status_code == 401
    assert response.json()["error"]["details"] is None

    # Then the documented 401 body accepts it
    documented_body(openapi, "/api/v1/consent", "get", 401).validate(response.json())


def test_no_nullable_is_written_as_one_of(openapi):
    def walk(node: Any) -> None:
        if isinstance(node, dict):
            assert {"type": "null"} not in node.get("oneOf", []), node
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(openapi)
