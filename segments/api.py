"""Segments API: reads (list, members) and the management API (CRUD, preview)."""

from __future__ import annotations

import base64
import uuid
from typing import Any

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cdp.auth import HasSecretKey, request_actor
from cdp.errors import NotFound, ValidationFailed
from cdp.openapi import error_responses
from segments import services
from segments.compiler import matching_ids
from segments.models import Membership, Segment


class SegmentSerializer(serializers.ModelSerializer):
    condition = serializers.JSONField()

    class Meta:
        model = Segment
        fields = [
            "slug",
            "name",
            "description",
            "condition",
            "priority",
            "exclusive_group",
            "active",
            "refresh",
            "size",
            "computed_at",
        ]
        read_only_fields = ["size", "computed_at"]

    def validate_condition(self, value: Any) -> Any:
        return value  # validated by the service (names the node)


def _out(segment: Segment) -> dict[str, Any]:
    return SegmentSerializer(segment).data


def _get(slug: str) -> Segment:
    segment = Segment.objects.filter(slug=slug).first()
    if segment is None:
        raise NotFound(f"No segment {slug!r}.")
    return segment


class SegmentsApi(APIView):
    permission_classes = [HasSecretKey]

    @extend_schema(
        operation_id="segments_list",
        summary="Segments with their sizes",
        parameters=[
            OpenApiParameter(
                "active", str, description="true or false: only active / inactive ones"
            )
        ],
        responses={200: SegmentSerializer(many=True), **error_responses(400, 401, 403)},
        tags=["segments"],
    )
    def get(self, request: Request) -> Response:
        segments = Segment.objects.all()
        active = request.query_params.get("active")
        if active is not None:
            if active not in ("true", "false"):
                raise ValidationFailed(
                    "active: must be true or false", details={"active": ["true or false"]}
                )
            segments = segments.filter(active=active == "true")
        return Response([_out(s) for s in segments])

    @extend_schema(
        operation_id="segments_create",
        summary="Create a segment (validated, audited)",
        request=SegmentSerializer,
        responses={201: SegmentSerializer, **error_responses(400, 401, 403)},
        tags=["segments"],
    )
    def post(self, request: Request) -> Response:
        data = SegmentSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        segment = services.segment_save(
            segment=Segment(**data.validated_data), actor=request_actor(request)
        )
        return Response(_out(segment), status=status.HTTP_201_CREATED)


class SegmentDetailApi(APIView):
    permission_classes = [HasSecretKey]

    @extend_schema(
        operation_id="segments_retrieve",
        responses={200: SegmentSerializer, **error_responses(401, 403, 404)},
        tags=["segments"],
    )
    def get(self, request: Request, slug: str) -> Response:
        return Response(_out(_get(slug)))

    def _update(self, request: Request, slug: str, partial: bool) -> Response:
        segment = _get(slug)
        data = SegmentSerializer(segment, data=request.data, partial=partial)
        data.is_valid(raise_exception=True)
        for key, value in data.validated_data.items():
            setattr(segment, key, value)
        return Response(_out(services.segment_save(segment=segment, actor=request_actor(request))))

    @extend_schema(
        operation_id="segments_update",
        request=SegmentSerializer,
        responses={200: SegmentSerializer, **error_responses(400, 401, 403, 404)},
        tags=["segments"],
    )
    def put(self, request: Request, slug: str) -> Response:
        return self._update(request, slug, partial=False)

    @extend_schema(
        operation_id="segments_partial_update",
        request=SegmentSerializer,
        responses={200: SegmentSerializer, **error_responses(400, 401, 403, 404)},
        tags=["segments"],
    )
    def patch(self, request: Request, slug: str) -> Response:
        return self._update(request, slug, partial=True)

    @extend_schema(
        operation_id="segments_destroy",
        responses={204: None, **error_responses(400, 401, 403, 404)},
        tags=["segments"],
    )
    def delete(self, request: Request, slug: str) -> Response:
        services.segment_delete(segment=_get(slug), actor=request_actor(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


MembersOutput = inline_serializer(
    "SegmentMembers",
    {
        "results": serializers.ListField(child=serializers.UUIDField()),
        "next": serializers.CharField(allow_null=True),
    },
)


def _cursor_decode(raw: str | None) -> uuid.UUID | None:
    if not raw:
        return None
    try:
        return uuid.UUID(base64.urlsafe_b64decode(raw.encode() + b"==").decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationFailed(
            "cursor: not a cursor from a previous page", details={"cursor": ["invalid"]}
        ) from exc


class SegmentMembersApi(APIView):
    permission_classes = [HasSecretKey]

    @extend_schema(
        operation_id="segments_members",
        summary="Member profile ids, by cursor (stable under concurrent changes)",
        parameters=[
            OpenApiParameter("cursor", str),
            OpenApiParameter("limit", int, description="1..1000, default 100"),
        ],
        responses={200: MembersOutput, **error_responses(400, 401, 403, 404)},
        tags=["segments"],
    )
    def get(self, request: Request, slug: str) -> Response:
        segment = _get(slug)
        try:
            limit = int(request.query_params.get("limit", 100))
        except ValueError as exc:
            raise ValidationFailed(
                "limit: must be a number", details={"limit": ["not a number"]}
            ) from exc
        if not 1 <= limit <= 1000:
            raise ValidationFailed(
                "limit: must be between 1 and 1000", details={"limit": ["1..1000"]}
            )
        after = _cursor_decode(request.query_params.get("cursor"))
        qs = Membership.objects.filter(segment=segment).order_by("profile_id")
        if after is not None:
            qs = qs.filter(profile_id__gt=after)
        ids = list(qs.values_list("profile_id", flat=True)[: limit + 1])
        more = len(ids) > limit
        ids = ids[:limit]
        nxt = None
        if more:
            nxt = base64.urlsafe_b64encode(str(ids[-1]).encode()).decode().rstrip("=")
        return Response({"results": ids, "next": nxt})


class PreviewInput(serializers.Serializer):
    condition = serializers.JSONField()
    sample = serializers.IntegerField(default=10, min_value=0, max_value=100)


class SegmentPreviewApi(APIView):
    permission_classes = [HasSecretKey]

    @extend_schema(
        operation_id="segments_preview",
        summary="How many profiles a condition matches now, and a sample",
        request=PreviewInput,
        responses={
            200: inline_serializer(
                "SegmentPreview",
                {
                    "count": serializers.IntegerField(),
                    "sample": serializers.ListField(child=serializers.UUIDField()),
                },
            ),
            **error_responses(400, 401, 403),
        },
        tags=["segments"],
    )
    def post(self, request: Request) -> Response:
        data = PreviewInput(data=request.data)
        data.is_valid(raise_exception=True)
        condition = services.condition_check(data.validated_data["condition"])
        ids = matching_ids(condition, now=timezone.now())
        return Response({"count": len(ids), "sample": ids[: data.validated_data["sample"]]})
