"""`GET /recommendations`: thin — validate the query, resolve the visitor as `/decide`
does, answer from serving."""

from __future__ import annotations

from typing import Any, Literal

from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cdp.auth import HasWriteKey
from cdp.errors import ValidationFailed
from cdp.openapi import error_responses
from profiles.api import ingest_context
from profiles.validation import Id, errors_by_field
from recommendations import serving
from recommendations.selectors import catalog_current
from rules import decide as decider
from rules.api import visitor_identity

ItemId = Field(default=None, min_length=1, max_length=200)


class RecommendationsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: Id | None = None
    anonymous_id: Id | None = None
    user_hash: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    strategy: Literal["personal", "similar", "bought_together", "next", "trending"] = "personal"
    limit: int = Field(default=10, ge=1, le=serving.MAX_LIMIT)
    item: str | None = ItemId
    category: str | None = ItemId
    diversity: float | None = Field(default=None, ge=0.0, le=1.0)
    per_category: int | None = Field(default=None, ge=1, le=serving.MAX_LIMIT)
    exclude: list[str] = Field(default_factory=list, max_length=100)

    @field_validator("exclude", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [v for v in (p.strip() for p in value.split(",")) if v]
        return value

    @field_validator("exclude")
    @classmethod
    def _short(cls, value: list[str]) -> list[str]:
        for v in value:
            if len(v) > 200:
                raise ValueError("item ids are at most 200 characters")
        return value


ITEM = inline_serializer(
    "RecommendedItem",
    {
        "item_id": serializers.CharField(),
        "score": serializers.FloatField(),
        "reason": serializers.CharField(help_text='Why it is here, e.g. "viewed together with X".'),
        "source": serializers.ChoiceField(
            choices=["item_item", "svd", "bought_together", "next_item", "trending"]
        ),
        "because": serializers.CharField(
            required=False, help_text="The item (seen by the visitor, or asked about) it follows."
        ),
        "title": serializers.CharField(required=False),
        "category": serializers.CharField(required=False),
        "price": serializers.FloatField(required=False),
        "image_url": serializers.CharField(required=False),
        "url": serializers.CharField(required=False),
    },
)

RecommendationsResponse = inline_serializer(
    "RecommendationsResponse",
    {
        "items": serializers.ListField(child=ITEM),
        "strategy": serializers.CharField(
            help_text="The strategy that answered (personal falls back to trending)."
        ),
        "reason": serializers.CharField(),
        "model_version": serializers.IntegerField(allow_null=True),
        "profile_id": serializers.UUIDField(allow_null=True),
    },
)


def _param(name: str, kind: type, about: str, enum: list[str] | None = None) -> OpenApiParameter:
    return OpenApiParameter(name, kind, required=False, description=about, enum=enum)


class RecommendationsApi(APIView):
    permission_classes = [HasWriteKey]

    @extend_schema(
        operation_id="recommendations",
        summary="Items to show this visitor, each with the reason",
        parameters=[
            _param("user_id", str, "The visitor's user id (with user_hash where verified)."),
            _param("anonymous_id", str, "The visitor's anonymous id."),
            _param("user_hash", str, "HMAC-SHA256(identity secret, user_id), hex."),
            _param(
                "strategy",
                str,
                "personal (default), similar, bought_together, next or trending.",
                list(serving.STRATEGIES),
            ),
            _param("limit", int, f"How many items, 1 to {serving.MAX_LIMIT} (default 10)."),
            _param("item", str, "The item on screen: required by similar and bought_together."),
            _param("category", str, "Only items of this category."),
            _param("diversity", float, "0 (relevance only) to 1 (spread across categories)."),
            _param("per_category", int, "At most this many items of one category."),
            _param("exclude", str, "Item ids to leave out, comma-separated (the cart)."),
        ],
        responses={200: RecommendationsResponse, **error_responses(400, 401, 403)},
        tags=["recommendations"],
    )
    def get(self, request: Request) -> Response:
        raw: dict[str, Any] = {k: request.query_params.get(k) for k in request.query_params}
        if "exclude" in raw:  # exclude=a,b or exclude=a&exclude=b
            raw["exclude"] = ",".join(request.query_params.getlist("exclude"))
        try:
            ask = RecommendationsIn.model_validate(raw)
        except ValidationError as exc:
            problems = errors_by_field(exc)
            raise ValidationFailed(
                "invalid recommendations request: "
                + "; ".join(f"{k}: {v[0]}" for k, v in problems.items()),
                details=problems,
            ) from exc
        if ask.strategy in serving.NEEDS_ITEM and ask.item is None:
            raise ValidationFailed(
                f"item: required for strategy {ask.strategy}",
                details={"item": [f"required for strategy {ask.strategy}"]},
            )
        ctx = ingest_context(request)
        identity = visitor_identity(ctx, ask.user_id, ask.anonymous_id, ask.user_hash)
        snapshot, config = None, None
        if identity:
            _, snapshot, config = decider.visitor_snapshot(
                identity_keys=identity, now=ctx.received_at
            )
        else:
            config = decider.config_current()
        models = config.extensions.get("recommendations")
        personal = snapshot.personalization if snapshot else config.personalization_default
        data = snapshot.extra.get("recommendations") if snapshot else None
        answer = serving.recommend(
            models,
            serving.Ask(
                strategy=ask.strategy,
                limit=ask.limit,
                item=ask.item,
                category=ask.category,
                diversity=ask.diversity,
                per_category=ask.per_category,
                exclude=frozenset(ask.exclude),
            ),
            data=data,
            personal=personal,
        )
        catalog = catalog_current()
        return Response(
            {
                "items": [r.as_json(catalog) for r in answer.items],
                "strategy": answer.strategy,
                "reason": answer.reason,
                "model_version": answer.version,
                "profile_id": snapshot.profile_id if snapshot else None,
            }
        )
