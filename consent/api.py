"""Consent and privacy-request API. Thin: validate, call one service or selector."""

from __future__ import annotations

import uuid
from typing import Any

from django.http import FileResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cdp.auth import HasSecretKey, HasWriteKey, request_actor
from cdp.errors import Conflict, NotFound
from cdp.openapi import error_responses
from consent import selectors, services
from consent.models import ConsentSource, DataSubjectRequest, RequestStatus, RequestType
from profiles.api import ingest_context
from profiles.ingestion import IdentityErased, visitor_profile
from profiles.models import Profile


class VisitorSerializer(serializers.Serializer):
    user_id = serializers.CharField(required=False, max_length=255)
    anonymous_id = serializers.CharField(required=False, max_length=255)
    user_hash = serializers.RegexField(r"^[0-9a-fA-F]{64}$", required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs.get("user_id") and not attrs.get("anonymous_id"):
            raise serializers.ValidationError(
                {"user_id": ["give user_id or anonymous_id (or both)"]}
            )
        for name in ("user_id", "anonymous_id"):
            if "\x00" in attrs.get(name, ""):
                raise serializers.ValidationError({name: ["contains a NUL character"]})
        return attrs


class ConsentInput(VisitorSerializer):
    # Not BooleanField: it would turn 1, "true" or "on" into a grant. Only JSON true/false.
    purposes = serializers.DictField(child=serializers.JSONField())
    policy_version = serializers.CharField(max_length=100)
    expires_at = serializers.DateTimeField(required=False)

    def get_fields(self) -> dict[str, serializers.Field]:
        # "source" is the payload's key, but also an attribute of every DRF field.
        fields = super().get_fields()
        fields["source"] = serializers.ChoiceField(
            choices=[ConsentSource.BANNER, ConsentSource.API, ConsentSource.IMPORT],
            default=ConsentSource.BANNER,
        )
        return fields

    def validate_purposes(self, value: dict[str, bool]) -> dict[str, bool]:
        problems = services.purposes_validate(value)
        if problems:
            raise serializers.ValidationError([f"{k}: {v[0]}" for k, v in problems.items()])
        return value


PurposeStateOutput = inline_serializer(
    "PurposeState",
    {
        "granted": serializers.BooleanField(),
        "basis": serializers.ChoiceField(choices=["recorded", "default"]),
        "recorded_at": serializers.DateTimeField(allow_null=True),
        "policy_version": serializers.CharField(allow_null=True),
        "source": serializers.CharField(allow_null=True),
        "expires_at": serializers.DateTimeField(allow_null=True),
    },
)
ConsentOutput = inline_serializer(
    "ConsentState",
    {
        "profile_id": serializers.UUIDField(allow_null=True),
        "purposes": serializers.DictField(child=PurposeStateOutput),
    },
)


def _state(profile: Profile | None) -> dict[str, Any]:
    states = selectors.consent_state(profile_id=profile.pk if profile else None)
    return {
        "profile_id": profile.pk if profile else None,
        "purposes": {
            code: {
                "granted": s.granted,
                "basis": s.basis,
                "recorded_at": s.recorded_at,
                "policy_version": s.policy_version,
                "source": s.source,
                "expires_at": s.expires_at,
            }
            for code, s in states.items()
        },
    }


class ConsentApi(APIView):
    permission_classes = [HasWriteKey]

    @extend_schema(
        operation_id="consent_record",
        summary="Record the visitor's consent choices (append-only history)",
        request=ConsentInput,
        responses={201: ConsentOutput, **error_responses(400, 401, 403, 409)},
        tags=["consent"],
    )
    def post(self, request: Request) -> Response:
        data = ConsentInput(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        try:
            profile = visitor_profile(
                ctx=ingest_context(request),
                anonymous_id=v.get("anonymous_id"),
                user_id=v.get("user_id"),
                user_hash=v.get("user_hash"),
                create=True,
            )
        except IdentityErased as exc:
            raise Conflict(
                "This identity was erased; start a new anonymous_id.", code="identity_erased"
            ) from exc
        assert profile is not None
        services.consent_record(
            profile=profile,
            purposes=v["purposes"],
            source=v["source"],
            policy_version=v["policy_version"],
            expires_at=v.get("expires_at"),
            evidence=services.consent_evidence(
                ip=request.META.get("REMOTE_ADDR"),
                user_agent=request.headers.get("User-Agent"),
                via=request_actor(request),
            ),
        )
        return Response(_state(profile), status=status.HTTP_201_CREATED)

    @extend_schema(
        operation_id="consent_retrieve",
        summary="The visitor's current consent per purpose (defaults where they chose nothing)",
        parameters=[
            OpenApiParameter("user_id", str),
            OpenApiParameter("anonymous_id", str),
            OpenApiParameter("user_hash", str),
        ],
        responses={200: ConsentOutput, **error_responses(400, 401, 403)},
        tags=["consent"],
    )
    def get(self, request: Request) -> Response:
        data = VisitorSerializer(data=request.query_params)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        try:
            profile = visitor_profile(
                ctx=ingest_context(request),
                anonymous_id=v.get("anonymous_id"),
                user_id=v.get("user_id"),
                user_hash=v.get("user_hash"),
                create=False,
            )
        except IdentityErased:
            profile = None
        return Response(_state(profile))


class PrivacyRequestInput(serializers.Serializer):
    type = serializers.ChoiceField(choices=RequestType.values)
    user_id = serializers.CharField(required=False, max_length=255)
    email = serializers.EmailField(required=False, max_length=255)
    anonymous_id = serializers.CharField(required=False, max_length=255)
    phone = serializers.CharField(required=False, max_length=50)
    verified = serializers.BooleanField(
        default=False, help_text="The caller has verified the requester's identity: process now."
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        given = [k for k in ("user_id", "email", "anonymous_id", "phone") if attrs.get(k)]
        if len(given) != 1:
            raise serializers.ValidationError(
                {"subject": ["give exactly one of user_id, email, anonymous_id, phone"]}
            )
        if "\x00" in attrs[given[0]]:
            raise serializers.ValidationError({given[0]: ["contains a NUL character"]})
        attrs["subject_kind"] = given[0]
        return attrs


RequestOutput = inline_serializer(
    "PrivacyRequest",
    {
        "id": serializers.UUIDField(),
        "type": serializers.CharField(),
        "status": serializers.ChoiceField(choices=RequestStatus.values),
        "received_at": serializers.DateTimeField(),
        "due_at": serializers.DateTimeField(),
        "completed_at": serializers.DateTimeField(allow_null=True),
        "result": serializers.DictField(),
        "export_url": serializers.CharField(allow_null=True),
    },
)


def _request_out(request: Request, dsr: DataSubjectRequest) -> dict[str, Any]:
    url = None
    if dsr.type == RequestType.ACCESS and services.export_path(request=dsr) is not None:
        url = request.build_absolute_uri(f"/api/v1/privacy/requests/{dsr.pk}/export")
    return {
        "id": dsr.pk,
        "type": dsr.type,
        "status": dsr.status,
        "received_at": dsr.received_at,
        "due_at": dsr.due_at,
        "completed_at": dsr.completed_at,
        "result": dsr.result,
        "export_url": url,
    }


class PrivacyRequestsApi(APIView):
    permission_classes = [HasSecretKey]

    @extend_schema(
        operation_id="privacy_requests_create",
        summary="Open an access or erasure request",
        request=PrivacyRequestInput,
        responses={202: RequestOutput, **error_responses(400, 401, 403)},
        tags=["privacy"],
    )
    def post(self, request: Request) -> Response:
        data = PrivacyRequestInput(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        dsr = services.privacy_request_create(
            type=v["type"],
            subject_kind=v["subject_kind"],
            subject_value=v[v["subject_kind"]],
            actor=request_actor(request),
            verified=v["verified"],
        )
        dsr.refresh_from_db()
        return Response(_request_out(request, dsr), status=status.HTTP_202_ACCEPTED)


def _dsr(request_id: uuid.UUID) -> DataSubjectRequest:
    dsr = DataSubjectRequest.objects.filter(pk=request_id).first()
    if dsr is None:
        raise NotFound(f"No privacy request {request_id}.")
    return dsr


class PrivacyRequestDetailApi(APIView):
    permission_classes = [HasSecretKey]

    @extend_schema(
        operation_id="privacy_requests_retrieve",
        summary="A request's status (and, for a completed access request, its export link)",
        responses={200: RequestOutput, **error_responses(401, 403, 404)},
        tags=["privacy"],
    )
    def get(self, request: Request, request_id: uuid.UUID) -> Response:
        return Response(_request_out(request, _dsr(request_id)))


class PrivacyRequestExportApi(APIView):
    permission_classes = [HasSecretKey]

    @extend_schema(
        operation_id="privacy_requests_export",
        summary="Download the access export bundle (JSON)",
        responses={
            (200, "application/json"): inline_serializer(
                "PrivacyExport",
                {
                    "request": serializers.UUIDField(),
                    "generated_at": serializers.DateTimeField(),
                    "found": serializers.BooleanField(),
                    "sections": serializers.DictField(
                        child=serializers.ListField(child=serializers.DictField()),
                        help_text="Every record held about the person, by table.",
                    ),
                },
            ),
            **error_responses(401, 403, 404),
        },
        tags=["privacy"],
    )
    def get(self, request: Request, request_id: uuid.UUID) -> FileResponse:
        dsr = _dsr(request_id)
        path = services.export_path(request=dsr)
        if path is None:
            raise NotFound(
                "No export for this request (not an access request, not ready, or expired)."
            )
        return FileResponse(
            path.open("rb"),
            as_attachment=True,
            filename=f"privacy-export-{dsr.pk}.json",
            content_type="application/json",
        )
