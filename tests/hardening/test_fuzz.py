"""Schemathesis fuzzing of every operation in the OpenAPI schema the app serves.

Each operation is called with no key, a write key and a secret key, in-process through
the WSGI application against the real stack (the test database, the configured cache;
no mocks). Every answer must be documented (status code, content type, headers, body),
never a 5xx, and every 4xx must carry the error envelope of DESIGN.md §4.

Two kinds of cases: schemathesis's fuzzing phase (random valid and invalid requests, half
of them aimed at objects that exist, see `_aim_at_known_objects`) and its coverage phase
(boundary values and missing or wrong-typed fields, one at a time). Both are
deterministic. Here: CDP_FUZZ_EXAMPLES (default 5) fuzzed cases per operation and
caller, and the coverage cases with the secret key; `make fuzz` sets
CDP_FUZZ_EXAMPLES=500 and runs the coverage cases for every caller (docs/operations.md,
"Fuzzing").
"""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import schemathesis
from django.core import signals
from django.db import close_old_connections
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from cdp.wsgi import application
from consent import services as consent_services
from consent.models import DataSubjectRequest, RequestStatus, RequestType, SubjectKind
from experiments.models import Experiment
from experiments.services import experiment_save, experiment_transition
from profiles.ingestion import IngestContext, events_ingest
from profiles.models import Profile
from profiles.services import SourceKeys, source_create
from rules import services as rules_services
from rules.models import Rule, Slot
from segments.models import Membership, Segment

EXAMPLES = int(os.environ.get("CDP_FUZZ_EXAMPLES", "5"))
# The long run (`make fuzz`) also runs the coverage cases without a key and with the write key.
LONG_RUN = "CDP_FUZZ_EXAMPLES" in os.environ
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same cases on every run: CI stays deterministic
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)

CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 20261203,
        # The test sends the Authorization header itself, per caller (no key / write / secret).
        "generation": {"with-security-parameters": False},
    }
)
schema = schemathesis.openapi.from_wsgi("/api/schema/", application, config=CONFIG)
# Schemathesis's coverage phase: boundary values, missing and wrong-typed fields, one at a
# time, deterministically. It cannot take the `pick` strategy below, so it is its own test.
COVERAGE_CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 20261203,
        "generation": {"with-security-parameters": False},
        "phases": {"examples": {"enabled": False}, "fuzzing": {"enabled": False}},
    }
)
coverage_schema = schemathesis.openapi.from_wsgi(
    "/api/schema/", application, config=COVERAGE_CONFIG
)

KNOWN_USER_ID = "u-fuzz"
KNOWN_ANONYMOUS_ID = "a-fuzz"
KNOWN_REQUEST_ID = uuid.UUID("00000000-0000-4000-8000-00000000f022")
KNOWN_SEGMENTS = ["fuzz-pro", "fuzz-buyers"]
KNOWN_SLOTS = ["fuzz_hero", "fuzz_experiment_slot"]
KNOWN_RULE = "fuzz-rule"
KNOWN_EXPERIMENTS = ["fuzz-draft", "fuzz-running"]
PRO = {"trait": "plan", "op": "eq", "value": "pro"}


@dataclass(frozen=True)
class World:
    """The objects fuzzing can aim at, so cases reach past the "not found" branches."""

    source: SourceKeys
    profile: Profile

    def path_values(self, path: str) -> dict[str, list[str]]:
        if path.startswith("/api/v1/experiments/"):
            key = KNOWN_EXPERIMENTS
        elif path.startswith("/api/v1/slots/"):
            key = KNOWN_SLOTS
        else:
            key = [KNOWN_RULE]
        return {
            "key": key,
            "slug": KNOWN_SEGMENTS,
            "profile_id": [str(self.profile.pk)],
            "request_id": [str(KNOWN_REQUEST_ID)],
            "write_key": [self.source.write_key],
        }


def _ingest(source: SourceKeys, payloads: list[dict[str, Any]]) -> None:
    ctx = IngestContext(
        source_id=source.source.pk,
        identity_secret=source.source.identity_secret,
        require_identity_verification=False,
        trusted=True,
        received_at=timezone.now(),
    )
    result = events_ingest(ctx=ctx, payloads=payloads)
    assert not result.rejected, result.rejected


@pytest.fixture
def in_process_requests() -> Iterator[None]:
    """Keep the test's database connection across in-process WSGI requests.

    The real handler closes "old" connections when a request starts and ends, which
    would drop the test transaction; Django's own test client unhooks it the same way.
    """
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


@pytest.fixture
def world(db: Any, privacy_export_dir: Any, in_process_requests: None) -> World:
    # Rate limits are not what is fuzzed here (tests/cdp/test_throttles.py); the suite's
    # own generous limits (tests/conftest.py) keep thousands of requests from one address
    # from turning into 429s.
    source = source_create(name="Fuzz shop", allowed_origins=["*"])
    # A shopper with history: identified, traits, a purchase.
    _ingest(
        source,
        [
            {"type": "page", "name": "Home", "anonymous_id": KNOWN_ANONYMOUS_ID},
            {
                "type": "track",
                "event": "add_to_cart",
                "anonymous_id": KNOWN_ANONYMOUS_ID,
                "properties": {"product_id": "sku-1", "price": 89},
            },
            {
                "type": "identify",
                "anonymous_id": KNOWN_ANONYMOUS_ID,
                "user_id": KNOWN_USER_ID,
                "traits": {"plan": "pro", "email": "fuzz@example.com"},
            },
            {
                "type": "track",
                "event": "purchase",
                "user_id": KNOWN_USER_ID,
                "properties": {"order_id": "o-1", "revenue": 89},
            },
        ],
    )
    profile = Profile.objects.get(identities__value=KNOWN_USER_ID)
    now = timezone.now()
    # A processed access request about them: its export bundle exists.
    DataSubjectRequest.objects.create(
        id=KNOWN_REQUEST_ID,
        type=RequestType.ACCESS,
        status=RequestStatus.VERIFIED,
        subject_kind=SubjectKind.USER_ID,
        subject_value=KNOWN_USER_ID,
        subject_hash="fuzz",
        received_at=now,
        due_at=now + timedelta(days=30),
        created_by="system",
    )
    consent_services.privacy_request_process(request_id=KNOWN_REQUEST_ID)
    # Segments, one of which uses the other; the shopper is a member of both.
    pro = Segment.objects.create(slug=KNOWN_SEGMENTS[0], name="Pro", condition=PRO)
    buyers = Segment.objects.create(
        slug=KNOWN_SEGMENTS[1],
        name="Pro buyers",
        condition={
            "all": [
                {"segment": KNOWN_SEGMENTS[0]},
                {"attr": "purchase_count", "op": "gte", "value": 1},
            ]
        },
    )
    for segment in (pro, buyers):
        Membership.objects.create(segment=segment, profile=profile, since=now)
    # A slot with a rule, and a slot with a draft and a running experiment.
    slot = rules_services.slot_save(
        slot=Slot(key=KNOWN_SLOTS[0]),
        actor="test",
        variants=[{"key": "base"}, {"key": "promo", "title": "Promo"}],
        default_variant="base",
    )
    rules_services.rule_save(
        rule=Rule(
            key=KNOWN_RULE,
            slot=slot,
            name="Pro promo",
            condition={"segment": KNOWN_SEGMENTS[0]},
            variant=slot.variants.get(key="promo"),
        ),
        actor="test",
    )
    experiment_slot = rules_services.slot_save(
        slot=Slot(key=KNOWN_SLOTS[1]),
        actor="test",
        variants=[{"key": "base"}, {"key": "promo", "title": "Promo"}],
        default_variant="base",
    )
    for key in KNOWN_EXPERIMENTS:
        experiment = experiment_save(
            experiment=Experiment(
                key=key,
                name=key,
                slot=experiment_slot if key == "fuzz-running" else None,
                namespace=key,
            ),
            actor="test",
            variants=[{"key": "base", "weight": 0.5}, {"key": "promo", "weight": 0.5}],
            goals=[{"event": "purchase", "kind": "conversion"}],
        )
    experiment_transition(experiment=experiment, move="start", actor="test")
    return World(source=source, profile=profile)


# --- the checks ------------------------------------------------------------------------


def error_envelope(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> None:
    """Every 4xx is {"error": {"code", "message", "details"}} (DESIGN.md §4, cdp/errors.py)."""
    if not 400 <= response.status_code < 500:
        return
    content_type = (response.headers.get("content-type") or [""])[0]
    assert content_type.startswith("application/json"), (
        f"{response.status_code} answered as {content_type!r}, not the JSON error envelope"
    )
    body = response.json()
    assert isinstance(body, dict), body
    assert set(body) == {"error"}, f"not the error envelope: {body!r}"
    error = body["error"]
    assert isinstance(error, dict), body
    assert set(error) == {"code", "message", "details"}, f"not the error envelope: {body!r}"
    assert isinstance(error["code"], str), body
    assert error["code"], body
    assert isinstance(error["message"], str), body
    assert error["message"], body


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    error_envelope,
]


# --- the test --------------------------------------------------------------------------


# A valid body per operation. An aimed case sends it whole, or with one of its fields
# swapped for the fuzzed one, so every field's validation is reached past the others'.
# "{path}" stands for the object the case aims at.
VALID_BODIES: dict[str, dict[str, Any]] = {
    "POST /api/v1/events": {
        "type": "track",
        "event": "add_to_cart",
        "anonymous_id": KNOWN_ANONYMOUS_ID,
        "properties": {"product_id": "sku-2", "price": 19},
    },
    "POST /api/v1/consent": {
        "anonymous_id": KNOWN_ANONYMOUS_ID,
        "purposes": {"analytics": True, "marketing": False},
        "policy_version": "v1",
        "source": "banner",
    },
    "POST /api/v1/decide": {
        "user_id": KNOWN_USER_ID,
        "slots": KNOWN_SLOTS,
        "flags": KNOWN_EXPERIMENTS,
        "context": {"device": "mobile", "page": "/", "hour": 3, "utm": {"source": "mail"}},
    },
    "POST /api/v1/privacy/requests": {"type": "access", "user_id": KNOWN_USER_ID},
    "POST /api/v1/segments": {"slug": "fuzz-new", "name": "New", "condition": PRO},
    "PUT /api/v1/segments/{slug}": {"slug": "{path}", "name": "Replaced", "condition": PRO},
    "PATCH /api/v1/segments/{slug}": {"name": "Renamed", "priority": 3},
    "POST /api/v1/segments/preview": {
        "condition": {"all": [PRO, {"event": "purchase", "within": "7d"}]},
        "sample": 3,
    },
    "POST /api/v1/slots": {
        "key": "fuzz_new",
        "variants": [{"key": "a", "content": {"title": "A", "cta": {"label": "Go", "url": "/"}}}],
        "default_variant": "a",
    },
    "PUT /api/v1/slots/{key}": {"key": "{path}", "strategy": "random", "control_percent": 5},
    "PATCH /api/v1/slots/{key}": {"description": "Hero", "strategy": "score_sorted"},
    "POST /api/v1/rules": {
        "key": "fuzz-new-rule",
        "slot": KNOWN_SLOTS[0],
        "name": "New",
        "condition": {"context": "device", "op": "eq", "value": "mobile"},
        "variant": "promo",
        "priority": 2,
        "frequency_cap": {"count": 2, "per": "day"},
        "scoring": [{"condition": PRO, "points": 2}],
    },
    "PUT /api/v1/rules/{key}": {
        "key": "{path}",
        "slot": KNOWN_SLOTS[0],
        "name": "Replaced",
        "condition": PRO,
        "variant": "promo",
    },
    "PATCH /api/v1/rules/{key}": {"priority": 5, "enabled": False},
    "POST /api/v1/experiments": {
        "key": "fuzz-new-experiment",
        "name": "New",
        "variants": [{"key": "a", "weight": 0.5}, {"key": "b", "weight": 0.5}],
        "goals": [{"event": "purchase", "kind": "conversion", "window": "1d"}],
    },
    "PUT /api/v1/experiments/{key}": {
        "key": "{path}",
        "name": "Replaced",
        "variants": [{"key": "base", "weight": 0.5}, {"key": "promo", "weight": 0.5}],
        "goals": [{"event": "purchase", "kind": "conversion"}],
    },
    "PATCH /api/v1/experiments/{key}": {"name": "Renamed", "traffic": 0.5},
    "POST /v1/track": {"userId": KNOWN_USER_ID, "event": "Viewed", "properties": {"a": 1}},
    "POST /v1/identify": {"userId": KNOWN_USER_ID, "traits": {"plan": "pro"}},
    "POST /v1/page": {"anonymousId": KNOWN_ANONYMOUS_ID, "name": "Home"},
    "POST /v1/screen": {"anonymousId": KNOWN_ANONYMOUS_ID, "name": "Home"},
    "POST /v1/alias": {"userId": "u-fuzz-new", "previousId": KNOWN_ANONYMOUS_ID},
    "POST /v1/group": {"userId": KNOWN_USER_ID, "groupId": "g-1", "traits": {"plan": "pro"}},
    "POST /v1/batch": {
        "batch": [{"type": "track", "userId": KNOWN_USER_ID, "event": "Viewed"}],
    },
}


def _aim_at_known_objects(case: schemathesis.Case, world: World, pick: int) -> None:
    """Swap fuzzed identifiers for ones that exist, and fuzzed bodies for a valid one with
    at most one fuzzed field (chosen by `pick`)."""
    values = world.path_values(case.operation.path)
    aimed_at = ""
    for name in list(case.path_parameters or {}):
        if name in values:
            options = values[name]
            case.path_parameters[name] = aimed_at = options[pick % len(options)]
    if isinstance(case.query, dict):
        for name, value in (("user_id", KNOWN_USER_ID), ("anonymous_id", KNOWN_ANONYMOUS_ID)):
            if name in case.query:
                case.query[name] = value
    valid = VALID_BODIES.get(case.operation.label)
    if valid is None or not isinstance(case.body, dict):
        return
    body = {name: aimed_at if value == "{path}" else value for name, value in valid.items()}
    fuzzed = sorted(case.body, key=str)
    if fuzzed and pick % 3:
        name = fuzzed[(pick // 3) % len(fuzzed)]
        body[name] = case.body[name]
    case.body = body


def _headers(caller: str, world: World, path: str) -> dict[str, str]:
    if caller == "none":
        return {}
    key = world.source.write_key if caller == "write" else world.source.secret_key
    if path.startswith("/v1/"):
        # Segment's way: the key as the basic-auth user name, no password.
        return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
    return {"Authorization": f"Bearer {key}"}


def _fuzz(case: schemathesis.Case, world: World, caller: str, pick: int | None) -> None:
    if pick is not None:
        _aim_at_known_objects(case, world, pick)
    case.call_and_validate(headers=_headers(caller, world, case.operation.path), checks=CHECKS)


# None: a fully fuzzed case; a number: aimed at known objects (which ones, which field).
PICK = st.none() | st.integers(min_value=0, max_value=47)


# One test per caller, so each (operation, caller) pair is its own pytest item with its own
# fresh database, and each caller gets its own cases.
@pytest.mark.django_db
@schema.parametrize()
@schema.given(pick=PICK)
@FUZZ_SETTINGS
def test_fuzz_without_key(case: schemathesis.Case, pick: int | None, world: World) -> None:
    _fuzz(case, world, "none", pick)


@pytest.mark.django_db
@schema.parametrize()
@schema.given(pick=PICK)
@FUZZ_SETTINGS
def test_fuzz_with_write_key(case: schemathesis.Case, pick: int | None, world: World) -> None:
    _fuzz(case, world, "write", pick)


@pytest.mark.django_db
@schema.parametrize()
@schema.given(pick=PICK)
@FUZZ_SETTINGS
def test_fuzz_with_secret_key(case: schemathesis.Case, pick: int | None, world: World) -> None:
    _fuzz(case, world, "secret", pick)


# Without a key and with the write key most of these stop at the 401/403 that the fuzzed
# cases already check, so the quick run spends its time on the secret key.
@pytest.mark.django_db
@pytest.mark.parametrize("caller", ["none", "write", "secret"] if LONG_RUN else ["secret"])
@coverage_schema.parametrize()
@FUZZ_SETTINGS
def test_coverage_cases(case: schemathesis.Case, caller: str, world: World) -> None:
    _fuzz(case, world, caller, None)
