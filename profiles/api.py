"""Profiles API: event ingestion and profile reads. Thin: parse, call one service/selector."""

from __future__ import annotations

import uuid
from typing import Any

import drf_spectacular.contrib.pydantic  # noqa: F401  (registers the pydantic schema extension)
from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from pydantic import BaseModel, Field, RootModel
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cdp.auth import HasSecretKey, HasWriteKey, credential
from cdp.errors import NotFound, PayloadTooLarge, ValidationFailed
from cdp.openapi import error_responses
from cdp.parsers import FastJSONParser, PlainJSONParser
from profiles import selectors
from profiles.ingestion import IngestContext, events_ingest
from profiles.models import IdentityKind
from profiles.services import source_console_ensure
from profiles.validation import EventIn, utcnow


class EventBatchIn(BaseModel):
    batch: list[EventIn] = Field(min_length=1, max_length=500)


class Events(RootModel[EventIn | EventBatchIn]):
    """One event, or {"batch": [event, …]} (≤ 500 events, ≤ 500 KB)."""


IngestOutput = inline_serializer(
    "IngestResult",
    {
        "accepted": serializers.IntegerField(),
        "duplicates": serializers.IntegerField(),
        "dropped": serializers.IntegerField(
            help_text="Valid events not stored on purpose: the visitor has not consented to "
            "tracking, or the identity was erased."
        ),
        "rejected": inline_serializer(
            "RejectedEvent",
            {"index": serializers.IntegerField(), "errors": serializers.DictField()},
            many=True,
        ),
    },
)


def ingest_context(request: Request, *, browser_user_agent: bool = False) -> IngestContext:
    """Who is sending, as the ingestion services need it: the key's source (secret keys
    are trusted with user ids) or, for staff sessions, the console source."""
    cred = credential(request)
    ua = (
        request.headers.get("User-Agent")
        if browser_user_agent and request.headers.get("Origin")
        else None
    )
    if cred is not None:
        return IngestContext(
            source_id=cred.source_id,
            identity_secret=cred.identity_secret,
            require_identity_verification=cred.require_identity_verification,
            trusted=cred.is_secret,
            received_at=utcnow(),
            browser_user_agent=ua,
        )
    console = source_console_ensure()
    return IngestContext(
        source_id=console.pk,
        identity_secret=console.identity_secret,
        require_identity_verification=False,
        trusted=True,
        received_at=utcnow(),
        browser_user_agent=ua,
    )


class EventsApi(APIView):
    permission_classes = [HasWriteKey]
    parser_classes = [FastJSONParser, PlainJSONParser]
    max_body_bytes = settings.CDP["MAX_BATCH_BYTES"]

    @extend_schema(
        operation_id="events_create",
        summary="Send one event or a batch",
        description=(
            "Valid events of a batch are stored even when others are rejected; each rejected "
            "event is listed with its index and the fields at fault. A `message_id` already "
            "stored for this source is counted in `duplicates` and not stored again. "
            "400 only when no event is valid."
        ),
        request=Events,
        responses={202: IngestOutput, **error_responses(400, 401, 403, 413)},
        tags=["events"],
    )
    def post(self, request: Request) -> Response:
        body: Any = request.data
        body_bytes = int(getattr(request._request, "cdp_body_bytes", 0))
        has_nul = bool(getattr(request._request, "cdp_body_has_nul", True))
        cdp = settings.CDP
        if isinstance(body, dict) and "batch" in body:
            payloads = body["batch"]
            if not isinstance(payloads, list):
                raise ValidationFailed(
                    "batch: must be a list of events", details={"batch": ["must be a list"]}
                )
            if not payloads:
                raise ValidationFailed(
                    "batch: is empty", details={"batch": ["must hold at least one event"]}
                )
            if len(payloads) > cdp["MAX_BATCH_EVENTS"]:
                raise PayloadTooLarge(
                    f"batch: {len(payloads)} events; the limit is {cdp['MAX_BATCH_EVENTS']}",
                    details={"batch": [f"at most {cdp['MAX_BATCH_EVENTS']} events"]},
                )
            screen = body_bytes > cdp["MAX_EVENT_BYTES"] or has_nul
        else:
            if body_bytes > cdp["MAX_EVENT_BYTES"]:
                raise PayloadTooLarge(f"An event may be at most {cdp['MAX_EVENT_BYTES']} bytes.")
            payloads = [body]
            screen = has_nul

        ctx = ingest_context(request, browser_user_agent=True)
        result = events_ingest(ctx=ctx, payloads=payloads, screen=screen)
        answer = {
            "accepted": result.accepted,
            "duplicates": result.duplicates,
            "rejected": result.rejected,
            "dropped": sum(result.dropped.values()),
        }
        if result.accepted == 0 and result.duplicates == 0 and not result.dropped:
            if len(payloads) == 1:
                errors = result.rejected[0]["errors"]
                first = next(iter(errors.items()))
                message = f"{first[0]}: {first[1][0]}"
                raise ValidationFailed(message, details=errors)
            raise ValidationFailed("No event in the batch is valid; see details.", details=answer)
        return Response(answer, status=status.HTTP_202_ACCEPTED)


ProfileOutput = inline_serializer(
    "Profile",
    {
        "id": serializers.UUIDField(),
        "traits": serializers.DictField(),
        "computed": serializers.DictField(),
        "identities": inline_serializer(
            "ProfileIdentity",
            {
                "kind": serializers.CharField(),
                "value": serializers.CharField(),
                "created_at": serializers.DateTimeField(),
            },
            many=True,
        ),
        "merged_from": serializers.ListField(child=serializers.UUIDField()),
        "segments": inline_serializer(
            "ProfileSegment",
            {
                "slug": serializers.CharField(),
                "name": serializers.CharField(),
                "since": serializers.DateTimeField(),
            },
            many=True,
        ),
        "scores": inline_serializer(
            "ProfileModelScore",
            {
                "model": serializers.CharField(),
                "score": serializers.FloatField(),
                "computed_at": serializers.DateTimeField(),
            },
            many=True,
        ),
        "created_at": serializers.DateTimeField(),
    },
)


class ProfileDetailApi(APIView):
    permission_classes = [HasSecretKey]

    @extend_schema(
        operation_id="profiles_retrieve",
        summary="A profile by id (a merged-away id answers with the surviving profile)",
        responses={200: ProfileOutput, **error_responses(401, 403, 404)},
        tags=["profiles"],
    )
    def get(self, request: Request, profile_id: uuid.UUID) -> Response:
        profile = selectors.profile_live(profile_id=profile_id)
        if profile is None:
            raise NotFound(f"No profile {profile_id}.")
        return Response(selectors.profile_detail(profile=profile))


class ProfileLookupApi(APIView):
    permission_classes = [HasSecretKey]

    @extend_schema(
        operation_id="profiles_lookup",
        summary="Find a profile by any identity",
        parameters=[
            OpenApiParameter("user_id", str),
            OpenApiParameter("anonymous_id", str),
            OpenApiParameter("email", str),
        ],
        responses={200: ProfileOutput, **error_responses(400, 401, 403, 404)},
        tags=["profiles"],
    )
    def get(self, request: Request) -> Response:
        given = [
            (kind, request.query_params[kind])
            for kind in (IdentityKind.USER_ID, IdentityKind.ANONYMOUS_ID, IdentityKind.EMAIL)
            if request.query_params.get(kind)
        ]
        if len(given) != 1:
            raise ValidationFailed(
                "Give exactly one of user_id, anonymous_id or email.",
                details={"query": ["exactly one of user_id, anonymous_id, email"]},
            )
        kind, value = given[0]
        if "\x00" in value:
            raise ValidationFailed(
                f"{kind}: contains a NUL character", details={kind: ["contains a NUL character"]}
            )
        profile = selectors.profile_by_identity(kind=kind, value=value)
        if profile is None:
            raise NotFound(f"No profile with {kind} {value!r}.")
        return Response(selectors.profile_detail(profile=profile))
