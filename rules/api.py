"""`POST /decide` and the management API for slots and rules. Thin: validate, call the
decider or one service."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Prefetch
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cdp.auth import HasSecretKey, HasWriteKey, request_actor
from cdp.errors import NotFound, ValidationFailed
from cdp.openapi import error_responses
from profiles import keys
from profiles.api import ingest_context
from profiles.ingestion import IngestContext
from profiles.models import IdentityKind
from profiles.validation import Id, errors_by_field
from rules import decide as decider
from rules import services
from rules.models import ContentVariant, Rule, Slot, Strategy, link_validate

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
Text = Field(default=None, min_length=1, max_length=2000)


class UtmIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str | None = Field(default=None, max_length=200)
    medium: str | None = Field(default=None, max_length=200)
    campaign: str | None = Field(default=None, max_length=200)
    term: str | None = Field(default=None, max_length=200)
    content: str | None = Field(default=None, max_length=200)


class ContextIn(BaseModel):
    """The request's context. `hour` and `weekday` default to the visitor's local time
    when `timezone` is given, else UTC."""

    model_config = ConfigDict(extra="forbid")
    page: str | None = Text
    item: str | None = Field(default=None, min_length=1, max_length=200)
    category: str | None = Field(default=None, min_length=1, max_length=200)
    device: Literal["mobile", "tablet", "desktop"] | None = None
    locale: str | None = Field(default=None, min_length=2, max_length=35)
    referrer: str | None = Text
    utm: UtmIn | None = None
    hour: int | None = Field(default=None, ge=0, le=23)
    weekday: Literal[WEEKDAYS] | None = None  # type: ignore[valid-type]
    timezone: str | None = Field(default=None, max_length=64)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError("unknown time zone (use an IANA name such as Europe/Paris)") from exc
        return value


class DecideIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: Id | None = None
    anonymous_id: Id | None = None
    user_hash: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    slots: list[str] = Field(default_factory=list, max_length=20)
    flags: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        default_factory=list, max_length=20
    )
    context: ContextIn = Field(default_factory=ContextIn)


def _device(user_agent: str) -> str:
    ua = user_agent.lower()
    if "ipad" in ua or "tablet" in ua or ("android" in ua and "mobile" not in ua):
        return "tablet"
    if "mobi" in ua or "iphone" in ua or "android" in ua:
        return "mobile"
    return "desktop"


def context_facts(ctx: ContextIn, *, user_agent: str, now: datetime) -> dict[str, Any]:
    """The context keys conditions read (docs/conditions.md)."""
    local = now.astimezone(ZoneInfo(ctx.timezone)) if ctx.timezone else now.astimezone(UTC)
    out: dict[str, Any] = {
        "hour": ctx.hour if ctx.hour is not None else local.hour,
        "weekday": ctx.weekday or WEEKDAYS[local.weekday()],
        "device": ctx.device or (_device(user_agent) if user_agent else None),
    }
    for name in ("page", "item", "category", "locale", "referrer"):
        out[name] = getattr(ctx, name)
    if ctx.utm is not None:
        for name in ("source", "medium", "campaign", "term", "content"):
            out[f"utm_{name}"] = getattr(ctx.utm, name)
    return {k: v for k, v in out.items() if v is not None}


def visitor_identity(
    ctx: IngestContext, user_id: str | None, anonymous_id: str | None, user_hash: str | None
) -> list[tuple[str, str]]:
    """The identifiers a request may use, strongest first. Where the source verifies
    identities, a write key's user_id counts only with a matching user_hash (without
    one, the anonymous_id answers; with neither, 400)."""
    identity: list[tuple[str, str]] = []
    if user_id is not None:
        if ctx.trusted or not ctx.require_identity_verification:
            identity.append((IdentityKind.USER_ID.value, user_id))
        elif user_hash is not None:
            if not keys.user_hash_valid(ctx.identity_secret, user_id, user_hash):
                raise ValidationFailed(
                    "user_hash: does not match user_id",
                    details={"user_hash": ["does not match user_id"]},
                )
            identity.append((IdentityKind.USER_ID.value, user_id))
        elif anonymous_id is None:
            raise ValidationFailed(
                "user_hash: required: this source verifies user_id with user_hash",
                details={"user_hash": ["required"]},
            )
    if anonymous_id is not None:
        identity.append((IdentityKind.ANONYMOUS_ID.value, anonymous_id))
    return identity


DecideRequest = inline_serializer(
    "DecideRequest",
    {
        "user_id": serializers.CharField(required=False),
        "anonymous_id": serializers.CharField(required=False),
        "user_hash": serializers.CharField(required=False),
        "slots": serializers.ListField(child=serializers.CharField(), required=False),
        "flags": serializers.ListField(
            child=serializers.CharField(),
            required=False,
            help_text="Experiments without a slot (feature flags), by key.",
        ),
        "context": serializers.DictField(required=False),
    },
)


class SlotDecision(serializers.Serializer):
    variant = serializers.CharField(allow_null=True)
    content = serializers.DictField()
    # named for the answer's "source" (it shadows DRF's Field.source attribute on the class)
    source = serializers.ChoiceField(  # type: ignore[assignment]
        choices=["rule", "experiment", "recommendation", "default"]
    )
    rule = serializers.CharField(required=False)
    experiment = serializers.DictField(required=False)
    reason = serializers.CharField()
    decision_id = serializers.UUIDField()


DecideResponse = inline_serializer(
    "DecideResponse",
    {
        "profile_id": serializers.UUIDField(allow_null=True),
        "decisions": serializers.DictField(child=SlotDecision()),
        "flags": serializers.DictField(
            child=SlotDecision(),
            required=False,
            help_text="Only when flags were asked for: variant null when the visitor is "
            "not in a running experiment of that key.",
        ),
    },
)


class DecideApi(APIView):
    permission_classes = [HasWriteKey]
    max_body_bytes = 16 * 1024

    @extend_schema(
        operation_id="decide",
        summary="What to show this visitor in these slots, with the reason",
        request=DecideRequest,
        responses={200: DecideResponse, **error_responses(400, 401, 403, 413)},
        tags=["decide"],
    )
    def post(self, request: Request) -> Response:
        try:
            data = DecideIn.model_validate(request.data)
        except ValidationError as exc:
            raise ValidationFailed(
                "invalid decide request: "
                + "; ".join(f"{k}: {v[0]}" for k, v in errors_by_field(exc).items()),
                details=errors_by_field(exc),
            ) from exc
        if not data.slots and not data.flags:
            raise ValidationFailed(
                "slots: ask for at least one slot or flag",
                details={"slots": ["ask for at least one slot (or flag)"]},
            )
        if data.user_id is None and data.anonymous_id is None:
            raise ValidationFailed(
                "user_id: give user_id or anonymous_id (or both)",
                details={"user_id": ["give user_id or anonymous_id (or both)"]},
            )
        ctx = ingest_context(request)
        identity = visitor_identity(ctx, data.user_id, data.anonymous_id, data.user_hash)
        slots = list(dict.fromkeys(data.slots))
        flags = list(dict.fromkeys(data.flags))
        context = context_facts(
            data.context, user_agent=request.headers.get("User-Agent", ""), now=ctx.received_at
        )
        try:
            profile_id, decisions, ids = decider.decide(
                identity_keys=identity,
                slots=slots,
                context=context,
                source_id=ctx.source_id,
                now=ctx.received_at,
                flags=flags,
            )
        except decider.UnknownSlots as exc:
            raise ValidationFailed(
                f"slots: unknown slot(s) {', '.join(exc.unknown)}",
                details={"slots": [f"unknown: {', '.join(exc.unknown)}"], "known_slots": exc.known},
                code="unknown_slot",
            ) from exc
        body: dict[str, Any] = {
            "profile_id": profile_id,
            "decisions": {k: decisions[k].as_json(ids[k]) for k in slots},
        }
        if flags:
            body["flags"] = {}
            for flag in flags:
                key = decider.flag_slot_key(flag)
                answer = decisions[key].as_json(ids[key])
                if answer["source"] == "default" and decisions[key].experiment is None:
                    answer["reason"] = (
                        answer["reason"]
                        if "consent" in answer["reason"]
                        else f"not in a running experiment '{flag}' (unknown key, not "
                        "running, or outside its audience or traffic)"
                    )
                body["flags"][flag] = answer
        return Response(body)


# --- Management API --------------------------------------------------------------------------


class WholeSerializer(serializers.Serializer):
    """A nested object that a PATCH cannot make partial.

    DRF applies the root's `partial` at every depth, which would let a PATCH through with
    a variant or scoring item missing its required fields; nested ones come whole.
    """

    def to_internal_value(self, data: Any) -> Any:
        if not getattr(self.root, "partial", False):
            return super().to_internal_value(data)
        whole = type(self)(data=data)
        whole.is_valid(raise_exception=True)
        return whole.validated_data


class VariantSerializer(WholeSerializer):
    key = serializers.SlugField(max_length=100)
    content = serializers.DictField(required=False, default=dict)

    def validate_content(self, value: dict[str, Any]) -> dict[str, Any]:
        allowed = {"title", "body", "image_url", "cta", "data", "html"}
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise serializers.ValidationError(
                f"unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}"
            )
        for name in ("title", "body", "image_url", "html"):
            if name in value and not isinstance(value[name], str):
                raise serializers.ValidationError(f"{name}: must be a string")
        cta = value.get("cta", {})
        if (
            not isinstance(cta, dict)
            or set(cta) - {"label", "url"}
            or not all(isinstance(v, str) for v in cta.values())
        ):
            raise serializers.ValidationError('cta: must be {"label": "…", "url": "…"}')
        for name, raw in (
            ("image_url", value.get("image_url", "")),
            ("cta.url", cta.get("url", "")),
        ):
            if not raw:
                continue
            try:
                link_validate(raw)
            except DjangoValidationError as exc:
                raise serializers.ValidationError(
                    f"{name}: must be an http(s) URL or a path starting with /"
                ) from exc
        if "data" in value and not isinstance(value["data"], dict):
            raise serializers.ValidationError("data: must be an object")
        return value


def _variant_fields(content: dict[str, Any]) -> dict[str, Any]:
    cta = content.get("cta") or {}
    return {
        "title": content.get("title", ""),
        "body": content.get("body", ""),
        "image_url": content.get("image_url", ""),
        "cta_label": cta.get("label", ""),
        "cta_url": cta.get("url", ""),
        "data": content.get("data", {}),
        "html": content.get("html", ""),
    }


class SlotSerializer(serializers.Serializer):
    key = serializers.SlugField(max_length=100)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    strategy = serializers.ChoiceField(choices=Strategy.values, default="first_match")
    recommendation = serializers.DictField(
        required=False,
        default=dict,
        help_text='Recommendations slots: {"strategy", "limit", "diversity", "per_category", '
        '"same_category"} (docs/recommendations.md).',
    )
    control_percent = serializers.FloatField(
        required=False, default=0.0, min_value=0.0, max_value=100.0
    )
    default_variant = serializers.CharField(required=False, allow_blank=True, allow_null=True)
    variants = VariantSerializer(many=True, required=False)


def _slot_out(slot: Slot) -> dict[str, Any]:
    return {
        "key": slot.key,
        "description": slot.description,
        "strategy": slot.strategy,
        "recommendation": slot.recommendation,
        "control_percent": slot.control_percent,
        "default_variant": slot.default_variant.key if slot.default_variant else None,
        "variants": [{"key": v.key, "content": v.content()} for v in slot.variants.all()],
        "rules": [r.key for r in slot.rules.all()],  # prefetched in priority order
    }


def _slots() -> Any:
    return Slot.objects.select_related("default_variant").prefetch_related(
        "variants", Prefetch("rules", queryset=Rule.objects.order_by("-priority", "key"))
    )


def _slot_get(key: str) -> Slot:
    slot = _slots().filter(key=key).first()
    if slot is None:
        raise NotFound(f"No slot {key!r}.")
    return slot


def _slot_write(request: Request, slot: Slot | None, partial: bool) -> Slot:
    data = SlotSerializer(data=request.data, partial=partial)
    data.is_valid(raise_exception=True)
    v = data.validated_data
    if slot is None:
        if Slot.objects.filter(key=v["key"]).exists():
            raise ValidationFailed(
                f"key: a slot {v['key']!r} exists", details={"key": ["already exists"]}
            )
        slot = Slot(key=v["key"])
    elif "key" in v and v["key"] != slot.key:
        raise ValidationFailed("key: cannot be changed", details={"key": ["cannot be changed"]})
    for name in ("description", "strategy", "control_percent", "recommendation"):
        if name in v and (not partial or name in request.data):
            setattr(slot, name, v[name])
    variants = None
    if "variants" in v:
        variants = [
            {"key": x["key"], **_variant_fields(x.get("content") or {})} for x in v["variants"]
        ]
    # None leaves the default as it is; "" (or null) clears it.
    default = (v.get("default_variant") or "") if "default_variant" in request.data else None
    return services.slot_save(
        slot=slot, actor=request_actor(request), variants=variants, default_variant=default
    )


class SlotOut(serializers.Serializer):
    key = serializers.CharField()
    description = serializers.CharField()
    strategy = serializers.CharField()
    recommendation = serializers.DictField()
    control_percent = serializers.FloatField()
    default_variant = serializers.CharField(allow_null=True)
    variants = VariantSerializer(many=True)
    rules = serializers.ListField(
        child=serializers.CharField(), help_text="rule keys in the order they are tried"
    )


class SlotsApi(APIView):
    permission_classes = [HasSecretKey]

    @extend_schema(
        operation_id="slots_list",
        parameters=[OpenApiParameter("strategy", str, description="only slots with this strategy")],
        responses={200: SlotOut(many=True), **error_responses(400, 401, 403)},
        tags=["slots"],
    )
    def get(self, request: Request) -> Response:
        slots = _slots()
        strategy = request.query_params.get("strategy")
        if strategy is not None:
            if strategy not in Strategy.values:
                raise ValidationFailed(
                    f"strategy: must be one of {', '.join(Strategy.values)}",
                    details={"strategy": [f"one of {', '.join(Strategy.values)}"]},
                )
            slots = slots.filter(strategy=strategy)
        return Response([_slot_out(s) for s in slots])

    @extend_schema(
        operation_id="slots_create",
        request=SlotSerializer,
        responses={201: SlotOut, **error_responses(400, 401, 403)},
        tags=["slots"],
    )
    def post(self, request: Request) -> Response:
        return Response(
            _slot_out(_slot_get(_slot_write(request, None, False).key)),
            status=status.HTTP_201_CREATED,
        )


class SlotDetailApi(APIView):
    permission_classes = [HasSecretKey]

    @extend_schema(
        operation_id="slots_retrieve",
        responses={200: SlotOut, **error_responses(401, 403, 404)},
        tags=["slots"],
    )
    def get(self, request: Request, key: str) -> Response:
        return Response(_slot_out(_slot_get(key)))

    @extend_schema(
        operation_id="slots_update",
        request=SlotSerializer,
        responses={200: SlotOut, **error_responses(400, 401, 403, 404)},
        tags=["slots"],
    )
    def put(self, request: Request, key: str) -> Response:
        return Response(_slot_out(_slot_get(_slot_write(request, _slot_get(key), False).key)))

    @extend_schema(
        operation_id="slots_partial_update",
        request=SlotSerializer,
        responses={200: SlotOut, **error_responses(400, 401, 403, 404)},
        tags=["slots"],
    )
    def patch(self, request: Request, key: str) -> Response:
        return Response(_slot_out(_slot_get(_slot_write(request, _slot_get(key), True).key)))

    @extend_schema(
        operation_id="slots_destroy",
        responses={204: None, **error_responses(401, 403, 404, 409)},
        tags=["slots"],
    )
    def delete(self, request: Request, key: str) -> Response:
        services.slot_delete(slot=_slot_get(key), actor=request_actor(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class FrequencyCapSerializer(WholeSerializer):
    count = serializers.IntegerField(min_value=1)
    per = serializers.ChoiceField(choices=["day", "week", "session"])


class ScoringItemSerializer(WholeSerializer):
    condition = serializers.JSONField()
    points = serializers.FloatField()


class RuleSerializer(serializers.Serializer):
    key = serializers.SlugField(max_length=100)
    slot = serializers.SlugField(max_length=100)
    name = serializers.CharField(max_length=200)
    condition = serializers.JSONField()
    variant = serializers.SlugField(max_length=100)
    priority = serializers.IntegerField(default=0)
    enabled = serializers.BooleanField(default=True)
    starts_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
    ends_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
    frequency_cap = FrequencyCapSerializer(required=False, allow_null=True, default=None)
    scoring = ScoringItemSerializer(many=True, required=False, default=list)
    weight = serializers.FloatField(required=False, default=1.0, min_value=0.0)


def _rule_out(rule: Rule) -> dict[str, Any]:
    return {
        "key": rule.key,
        "slot": rule.slot.key,
        "name": rule.name,
        "condition": rule.condition,
        "variant": rule.variant.key,
        "priority": rule.priority,
        "enabled": rule.enabled,
        "starts_at": rule.starts_at,
        "ends_at": rule.ends_at,
        "frequency_cap": {"count": rule.frequency_cap_count, "per": rule.frequency_cap_per}
        if rule.frequency_cap_per
        else None,
        "scoring": rule.scoring,
        "weight": rule.weight,
    }


def _rule_get(key: str) -> Rule:
    rule = Rule.objects.select_related("slot", "variant").filter(key=key).first()
    if rule is None:
        raise NotFound(f"No rule {key!r}.")
    return rule


def _rule_write(request: Request, rule: Rule | None, partial: bool) -> Rule:
    data = RuleSerializer(data=request.data, partial=partial)
    data.is_valid(raise_exception=True)
    v = {k: val for k, val in data.validated_data.items() if not partial or k in request.data}
    if rule is None:
        if Rule.objects.filter(key=v["key"]).exists():
            raise ValidationFailed(
                f"key: a rule {v['key']!r} exists", details={"key": ["already exists"]}
            )
        rule = Rule(key=v["key"])
    elif "key" in v and v["key"] != rule.key:
        raise ValidationFailed("key: cannot be changed", details={"key": ["cannot be changed"]})
    if "slot" in v:
        slot = Slot.objects.filter(key=v["slot"]).first()
        if slot is None:
            raise ValidationFailed(
                f"slot: no slot {v['slot']!r}", details={"slot": [f"no slot {v['slot']!r}"]}
            )
        rule.slot = slot
    if "variant" in v:
        variant = ContentVariant.objects.filter(slot=rule.slot, key=v["variant"]).first()
        if variant is None:
            raise ValidationFailed(
                f"variant: slot {rule.slot.key} has no variant {v['variant']!r}",
                details={"variant": [f"no variant {v['variant']!r} in slot {rule.slot.key}"]},
            )
        rule.variant = variant
    for name in ("name", "condition", "priority", "enabled", "starts_at", "ends_at", "weight"):
        if name in v:
            setattr(rule, name, v[name])
    if "scoring" in v:
        rule.scoring = [{"condition": s["condition"], "points": s["points"]} for s in v["scoring"]]
    if "frequency_cap" in v:
        cap = v["frequency_cap"]
        rule.frequency_cap_count = cap["count"] if cap else None
        rule.frequency_cap_per = cap["per"] if cap else ""
    return services.rule_save(rule=rule, actor=request_actor(request))


class RuleOut(RuleSerializer):
    """A rule as the API returns it (the same fields it takes)."""


class RulesApi(APIView):
    permission_classes = [HasSecretKey]

    @extend_schema(
        operation_id="rules_list",
        summary="Rules, per slot in the order they are tried",
        parameters=[OpenApiParameter("slot", str, description="only this slot's rules")],
        responses={200: RuleOut(many=True), **error_responses(400, 401, 403)},
        tags=["rules"],
    )
    def get(self, request: Request) -> Response:
        rules = Rule.objects.select_related("slot", "variant").order_by(
            "slot__key", "-priority", "key"
        )
        slot = request.query_params.get("slot")
        if slot is not None:
            if not Slot.objects.filter(key=slot).exists():
                raise ValidationFailed(
                    f"slot: no slot {slot!r}", details={"slot": [f"no slot {slot!r}"]}
                )
            rules = rules.filter(slot__key=slot)
        return Response([_rule_out(r) for r in rules])

    @extend_schema(
        operation_id="rules_create",
        request=RuleSerializer,
        responses={201: RuleOut, **error_responses(400, 401, 403)},
        tags=["rules"],
    )
    def post(self, request: Request) -> Response:
        return Response(
            _rule_out(_rule_write(request, None, False)), status=status.HTTP_201_CREATED
        )


class RuleDetailApi(APIView):
    permission_classes = [HasSecretKey]

    @extend_schema(
        operation_id="rules_retrieve",
        responses={200: RuleOut, **error_responses(401, 403, 404)},
        tags=["rules"],
    )
    def get(self, request: Request, key: str) -> Response:
        return Response(_rule_out(_rule_get(key)))

    @extend_schema(
        operation_id="rules_update",
        request=RuleSerializer,
        responses={200: RuleOut, **error_responses(400, 401, 403, 404)},
        tags=["rules"],
    )
    def put(self, request: Request, key: str) -> Response:
        return Response(_rule_out(_rule_write(request, _rule_get(key), False)))

    @extend_schema(
        operation_id="rules_partial_update",
        request=RuleSerializer,
        responses={200: RuleOut, **error_responses(400, 401, 403, 404)},
        tags=["rules"],
    )
    def patch(self, request: Request, key: str) -> Response:
        return Response(_rule_out(_rule_write(request, _rule_get(key), True)))

    @extend_schema(
        operation_id="rules_destroy",
        responses={204: None, **error_responses(401, 403, 404)},
        tags=["rules"],
    )
    def delete(self, request: Request, key: str) -> Response:
        services.rule_delete(rule=_rule_get(key), actor=request_actor(request))
        return Response(status=status.HTTP_204_NO_CONTENT)
