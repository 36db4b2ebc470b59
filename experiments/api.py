"""The experiments management API (DESIGN.md §4): CRUD and the lifecycle moves. Thin:
the serializers check the shape, every rule lives in `experiments.services`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db import IntegrityError
from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from cdp.auth import HasSecretKey, request_actor
from cdp.errors import NotFound, ValidationFailed
from cdp.openapi import error_responses
from experiments import services
from experiments.models import Experiment, GoalKind, Status
from experiments.tasks import results_for_display
from rules.models import Slot
from segments.conditions import ConditionError, window_seconds

WINDOW_UNITS = (("d", 86400), ("h", 3600), ("m", 60))
WINDOW_HELP = 'A duration as in the condition language\'s `within`: "30m", "24h", "7d", "4w".'


def window_text(seconds: int) -> str | None:
    """A goal window as `within` writes it ("7d", "36h", "90m"); None when it is not a
    whole number of minutes (the grammar has no seconds)."""
    for unit, size in WINDOW_UNITS:
        if seconds > 0 and seconds % size == 0 and seconds // size < 10**6:
            return f"{seconds // size}{unit}"
    return None


class Number(serializers.FloatField):
    """A JSON number: true and "0.5" are mistakes here, not 1.0 and 0.5."""

    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictSerializer(serializers.Serializer):
    """Refuses fields it does not know: a typo in configuration kept in git must not be
    ignored silently. Read-only fields are accepted (and ignored), so a `GET` body can be
    sent back as it is."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            unknown = sorted(str(name) for name in set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["unknown field"] for name in unknown})
        return super().to_internal_value(data)


class ExperimentNamespaceSerializer(StrictSerializer):
    """A slice [start, end) of a namespace; experiments in one namespace never overlap."""

    name = serializers.SlugField(max_length=100)
    start = Number(min_value=0.0, max_value=1.0, default=0.0)
    end = Number(min_value=0.0, max_value=1.0, default=1.0)


class ExperimentFactorSerializer(StrictSerializer):
    """A multivariate factor and its levels."""

    name = serializers.CharField(max_length=100)
    levels = serializers.ListField(
        child=serializers.CharField(max_length=100), min_length=2, max_length=50
    )


class ExperimentVariantSerializer(StrictSerializer):
    """A variant: its key, its share of the entering traffic, its content."""

    key = serializers.SlugField(max_length=100)
    weight = Number(min_value=0.0, max_value=1.0)
    content = serializers.DictField(
        required=False,
        default=dict,
        help_text="What `/decide` answers for it; empty: the slot variant of the same key.",
    )


class ExperimentGoalSerializer(StrictSerializer):
    """A metric: a conversion (did the event happen) or revenue (sum of a property)."""

    event = serializers.CharField(max_length=200)
    kind = serializers.ChoiceField(choices=GoalKind.values, default=GoalKind.CONVERSION)
    property = serializers.CharField(
        max_length=200,
        required=False,
        allow_blank=True,
        default="",
        help_text="Revenue goals: the numeric event property summed.",
    )
    where = serializers.ListField(
        child=serializers.DictField(),
        required=False,
        default=list,
        max_length=20,
        help_text='Only events whose properties match: [{"property", "op", "value"}].',
    )
    window = serializers.CharField(
        required=False,
        allow_null=True,
        max_length=10,
        help_text=WINDOW_HELP + " Conversions count this long after the first exposure (7d).",
    )
    window_seconds = serializers.IntegerField(
        required=False,
        min_value=60,
        max_value=services.MAX_WINDOW_SECONDS,
        help_text="The window in seconds (whole minutes); either this or `window`.",
    )
    primary = serializers.BooleanField(
        required=False, default=False, help_text="Default: the first goal."
    )

    def validate_window(self, value: str | None) -> int | None:
        if value is None:
            return None
        try:
            seconds = window_seconds(value)
        except ConditionError as exc:
            raise serializers.ValidationError(exc.reason) from exc
        if not 60 <= seconds <= services.MAX_WINDOW_SECONDS:
            raise serializers.ValidationError("from 1m to 365d")
        return seconds

    def validate(self, attrs: Any) -> Any:
        from_text = attrs.pop("window", None)
        seconds = attrs.get("window_seconds")
        if from_text is not None and seconds is not None and from_text != seconds:
            raise serializers.ValidationError(
                {"window": [f"{window_text(from_text)} disagrees with window_seconds {seconds}"]}
            )
        attrs["window_seconds"] = (
            from_text or seconds or services.DEFAULT_WINDOW_SECONDS
        )  # both None: the default
        return attrs


class ExperimentSerializer(StrictSerializer):
    """An experiment as the API returns it and takes it (read-only fields are ignored)."""

    key = serializers.SlugField(max_length=100)
    name = serializers.CharField(max_length=200)
    hypothesis = serializers.CharField(required=False, allow_blank=True, default="")
    slot = serializers.SlugField(
        max_length=100,
        required=False,
        allow_null=True,
        default=None,
        help_text="The slot it runs on (a slot key); null: a flag, or the holdout.",
    )
    status = serializers.ChoiceField(choices=Status.values, read_only=True)
    traffic = Number(
        min_value=0.0,
        max_value=1.0,
        default=1.0,
        help_text="Share of the audience that enters (0..1).",
    )
    audience = serializers.JSONField(
        required=False,
        allow_null=True,
        default=None,
        help_text="Who may enter: a condition (docs/conditions.md), context nodes allowed.",
    )
    seed = serializers.CharField(
        max_length=100,
        required=False,
        allow_blank=True,
        allow_null=True,
        default="",
        help_text="Hash seed; empty: the key.",
    )
    namespace = ExperimentNamespaceSerializer(
        required=False,
        allow_null=True,
        default=None,
        help_text="Experiments in one namespace with disjoint [start, end) never share a visitor.",
    )
    factors: serializers.ListSerializer[Any] = serializers.ListSerializer(
        child=ExperimentFactorSerializer(),
        required=False,
        default=list,
        max_length=10,
        help_text="Multivariate: without `variants`, every combination of levels is one.",
    )
    holdout = serializers.BooleanField(
        required=False,
        default=False,
        help_text='The global personalization holdout: no slot, variants "holdout" and '
        '"personalized".',
    )
    confidence = Number(min_value=0.5, max_value=0.999, default=0.95)
    minimum_detectable_effect = Number(
        min_value=0.001, max_value=10.0, default=0.05, help_text="Relative lift (0.05 = 5%)."
    )
    variants: serializers.ListSerializer[Any] = serializers.ListSerializer(
        child=ExperimentVariantSerializer(),
        required=False,
        max_length=services.MAX_VARIANTS,
        help_text="The first is the control; weights sum to 1.",
    )
    goals: serializers.ListSerializer[Any] = serializers.ListSerializer(
        child=ExperimentGoalSerializer(), max_length=20, help_text="The primary goal first."
    )
    started_at = serializers.DateTimeField(read_only=True, allow_null=True)
    stopped_at = serializers.DateTimeField(read_only=True, allow_null=True)
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)

    def validate(self, attrs: Any) -> Any:
        if "variants" not in attrs and not attrs.get("factors"):
            raise serializers.ValidationError({"variants": ["required (or give factors)"]})
        return attrs


def _goal_out(goal: Any) -> dict[str, Any]:
    return {
        "event": goal.event,
        "kind": goal.kind,
        "property": goal.property,
        "where": goal.where,
        "window": window_text(goal.window_seconds),
        "window_seconds": goal.window_seconds,
        "primary": goal.primary,
    }


def _out(exp: Experiment) -> dict[str, Any]:
    return {
        "key": exp.key,
        "name": exp.name,
        "hypothesis": exp.hypothesis,
        "slot": exp.slot.key if exp.slot else None,
        "status": exp.status,
        "traffic": exp.traffic,
        "audience": exp.audience,
        "seed": exp.seed,
        "namespace": {
            "name": exp.namespace,
            "start": exp.namespace_start,
            "end": exp.namespace_end,
        }
        if exp.namespace
        else None,
        "factors": exp.factors,
        "holdout": exp.holdout,
        "confidence": exp.confidence,
        "minimum_detectable_effect": exp.minimum_detectable_effect,
        "variants": [
            {"key": v.key, "weight": v.weight, "content": v.content} for v in exp.variants.all()
        ],
        "goals": [_goal_out(g) for g in exp.goals.all()],
        "started_at": exp.started_at,
        "stopped_at": exp.stopped_at,
        "created_at": exp.created_at,
        "updated_at": exp.updated_at,
    }


def _experiments() -> QuerySet[Experiment]:
    return Experiment.objects.select_related("slot").prefetch_related("variants", "goals")


def _get(key: str) -> Experiment:
    exp = _experiments().filter(key=key).first()
    if exp is None:
        raise NotFound(f"No experiment {key!r}.")
    return exp


def _path(prefix: str, name: Any) -> str:
    if name == api_settings.NON_FIELD_ERRORS_KEY:
        return prefix or str(name)
    if isinstance(name, int):
        return f"{prefix}[{name}]"
    return f"{prefix}.{name}" if prefix else str(name)


def errors_by_path(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested errors as {"goals[0].window": ["…"]}: the paths the service uses."""
    out: dict[str, list[str]] = {}
    if isinstance(detail, Mapping):
        parts = [errors_by_path(sub, _path(prefix, name)) for name, sub in detail.items()]
    elif isinstance(detail, list) and not all(isinstance(x, str) for x in detail):
        parts = [errors_by_path(sub, f"{prefix}[{i}]") for i, sub in enumerate(detail)]
    else:
        messages = detail if isinstance(detail, list) else [detail]
        parts = [{prefix or api_settings.NON_FIELD_ERRORS_KEY: [str(m) for m in messages]}]
    for part in parts:
        for path, messages in part.items():
            out.setdefault(path, []).extend(messages)
    return out


def _validated(data: Any) -> dict[str, Any]:
    body = ExperimentSerializer(data=data)
    if not body.is_valid():
        details = errors_by_path(body.errors)
        raise ValidationFailed(
            "; ".join(f"{path}: {messages[0]}" for path, messages in details.items()),
            details=details,
        )
    return dict(body.validated_data)


def _write(
    request: Request, experiment: Experiment | None, data: Any, changed: set[str]
) -> Experiment:
    """Validate `data` (a whole body) and save it; `changed` names the fields the caller
    sent (variants and goals are replaced only when sent)."""
    v = _validated(data)
    if experiment is None:
        if Experiment.objects.filter(key=v["key"]).exists():
            raise ValidationFailed(
                f"key: an experiment {v['key']!r} exists", details={"key": ["already exists"]}
            )
        exp = Experiment(key=v["key"])
    elif v["key"] != experiment.key:
        raise ValidationFailed("key: cannot be changed", details={"key": ["cannot be changed"]})
    else:
        exp = experiment
    slot = None
    if v["slot"] is not None:
        slot = Slot.objects.filter(key=v["slot"]).first()
        if slot is None:
            raise ValidationFailed(
                f"slot: no slot {v['slot']!r}", details={"slot": [f"no slot {v['slot']!r}"]}
            )
    exp.slot = slot
    for name in (
        "name",
        "hypothesis",
        "traffic",
        "audience",
        "holdout",
        "confidence",
        "minimum_detectable_effect",
    ):
        setattr(exp, name, v[name])
    exp.seed = v["seed"] or ""
    namespace = v["namespace"]
    exp.namespace = namespace["name"] if namespace else ""
    exp.namespace_start = namespace["start"] if namespace else 0.0
    exp.namespace_end = namespace["end"] if namespace else 1.0
    exp.factors = [{"name": f["name"], "levels": list(f["levels"])} for f in v["factors"]]
    variants = None
    if "variants" in changed and "variants" in v:
        variants = [
            {"key": x["key"], "weight": x["weight"], "content": dict(x["content"])}
            for x in v["variants"]
        ]
    goals = None
    if "goals" in changed:
        goals = [
            {
                "event": g["event"],
                "kind": g["kind"],
                "property": g["property"],
                "where": [dict(w) for w in g["where"]],
                "window_seconds": g["window_seconds"],
                "primary": g["primary"],
            }
            for g in v["goals"]
        ]
    try:
        saved = services.experiment_save(
            experiment=exp, actor=request_actor(request), variants=variants, goals=goals
        )
    except IntegrityError:
        # Two creates of one key at once: the loser is told the same as a later one.
        if experiment is None and Experiment.objects.filter(key=exp.key).exists():
            raise ValidationFailed(
                f"key: an experiment {exp.key!r} exists", details={"key": ["already exists"]}
            ) from None
        raise
    return _get(saved.key)


def _body(request: Request) -> Mapping[str, Any]:
    if not isinstance(request.data, Mapping):
        raise ValidationFailed(
            "the body must be a JSON object",
            details={api_settings.NON_FIELD_ERRORS_KEY: ["the body must be a JSON object"]},
        )
    return request.data


TAGS = ["experiments"]


class ExperimentsApi(APIView):
    permission_classes = [HasSecretKey]

    @extend_schema(
        operation_id="experiments_list",
        summary="Experiments with their variants and goals",
        parameters=[
            OpenApiParameter("status", str, description="only experiments in this status"),
            OpenApiParameter("slot", str, description="only experiments on this slot"),
        ],
        responses={200: ExperimentSerializer(many=True), **error_responses(400, 401, 403)},
        tags=TAGS,
    )
    def get(self, request: Request) -> Response:
        experiments = _experiments().order_by("key")
        wanted = request.query_params.get("status")
        if wanted is not None:
            if wanted not in Status.values:
                raise ValidationFailed(
                    f"status: must be one of {', '.join(Status.values)}",
                    details={"status": [f"one of {', '.join(Status.values)}"]},
                )
            experiments = experiments.filter(status=wanted)
        slot = request.query_params.get("slot")
        if slot is not None:
            if not Slot.objects.filter(key=slot).exists():
                raise ValidationFailed(
                    f"slot: no slot {slot!r}", details={"slot": [f"no slot {slot!r}"]}
                )
            experiments = experiments.filter(slot__key=slot)
        return Response([_out(e) for e in experiments])

    @extend_schema(
        operation_id="experiments_create",
        summary="Create an experiment (a draft: validated, audited)",
        request=ExperimentSerializer,
        responses={201: ExperimentSerializer, **error_responses(400, 401, 403, 409)},
        tags=TAGS,
    )
    def post(self, request: Request) -> Response:
        body = _body(request)
        exp = _write(request, None, body, set(body))
        return Response(_out(exp), status=status.HTTP_201_CREATED)


class ExperimentDetailApi(APIView):
    permission_classes = [HasSecretKey]

    @extend_schema(
        operation_id="experiments_retrieve",
        responses={200: ExperimentSerializer, **error_responses(401, 403, 404)},
        tags=TAGS,
    )
    def get(self, request: Request, key: str) -> Response:
        return Response(_out(_get(key)))

    @extend_schema(
        operation_id="experiments_update",
        summary="Replace an experiment (a started one keeps its variant keys, in order)",
        request=ExperimentSerializer,
        responses={200: ExperimentSerializer, **error_responses(400, 401, 403, 404, 409)},
        tags=TAGS,
    )
    def put(self, request: Request, key: str) -> Response:
        exp = _get(key)
        body = _body(request)
        # Variants stay as they are when a multivariate body leaves them out.
        return Response(_out(_write(request, exp, body, set(body))))

    @extend_schema(
        operation_id="experiments_partial_update",
        summary="Change some fields of an experiment",
        request=ExperimentSerializer,
        responses={200: ExperimentSerializer, **error_responses(400, 401, 403, 404, 409)},
        tags=TAGS,
    )
    def patch(self, request: Request, key: str) -> Response:
        exp = _get(key)
        patch = _body(request)
        # The patch over the current body, validated as a whole (nested lists are
        # replaced, not merged): the same checks as a PUT.
        merged = {**_out(exp), **patch}
        if patch.get("factors") and "variants" not in patch:
            merged.pop("variants")  # new factors make new variants
        return Response(_out(_write(request, exp, merged, set(patch))))

    @extend_schema(
        operation_id="experiments_destroy",
        summary="Delete a draft or stopped experiment with its exposures and results",
        responses={204: None, **error_responses(401, 403, 404, 409)},
        tags=TAGS,
    )
    def delete(self, request: Request, key: str) -> Response:
        services.experiment_delete(experiment=_get(key), actor=request_actor(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class _ExperimentMoveApi(APIView):
    permission_classes = [HasSecretKey]
    move = ""

    def _move(self, request: Request, key: str) -> Response:
        exp = services.experiment_transition(
            experiment=_get(key), move=self.move, actor=request_actor(request)
        )
        return Response(_out(exp))


MOVE_ERRORS = error_responses(400, 401, 403, 404, 409)


class ExperimentStartApi(_ExperimentMoveApi):
    move = "start"

    @extend_schema(
        operation_id="experiments_start",
        summary="Start (a draft or paused experiment): `/decide` serves it",
        request=None,
        responses={200: ExperimentSerializer, **MOVE_ERRORS},
        tags=TAGS,
    )
    def post(self, request: Request, key: str) -> Response:
        return self._move(request, key)


class ExperimentPauseApi(_ExperimentMoveApi):
    move = "pause"

    @extend_schema(
        operation_id="experiments_pause",
        summary="Pause (a running experiment): no new visitors enter, exposed ones keep "
        "their variant when it resumes",
        request=None,
        responses={200: ExperimentSerializer, **MOVE_ERRORS},
        tags=TAGS,
    )
    def post(self, request: Request, key: str) -> Response:
        return self._move(request, key)


class ExperimentStopApi(_ExperimentMoveApi):
    move = "stop"

    @extend_schema(
        operation_id="experiments_stop",
        summary="Stop (final): `/decide` no longer serves it; its results stay",
        request=None,
        responses={200: ExperimentSerializer, **MOVE_ERRORS},
        tags=TAGS,
    )
    def post(self, request: Request, key: str) -> Response:
        return self._move(request, key)


ResultsOut = inline_serializer(
    "ExperimentResults",
    {
        "experiment": serializers.CharField(),
        "status": serializers.CharField(),
        "computed_at": serializers.DateTimeField(),
        "confidence": serializers.FloatField(),
        "minimum_detectable_effect": serializers.FloatField(),
        "control": serializers.CharField(allow_null=True),
        "exposures": serializers.DictField(child=serializers.IntegerField()),
        "exposures_total": serializers.IntegerField(),
        "srm": serializers.DictField(
            allow_null=True, help_text="Sample-ratio-mismatch check: p_value, mismatch, …"
        ),
        "warnings": serializers.ListField(
            child=inline_serializer(
                "ExperimentWarning",
                {
                    "code": serializers.ChoiceField(
                        choices=["sample_ratio_mismatch", "not_enough_data"]
                    ),
                    "message": serializers.CharField(),
                },
            )
        ),
        "goals": serializers.ListField(
            child=serializers.DictField(),
            help_text="Per goal: the goal, per-variant figures (n, conversions, rate or "
            "mean, interval, and vs_control: p_value, p_value_adjusted, lift with "
            "intervals, chance_to_beat_control, expected_loss, sequential, cuped), "
            "chi_square, sample_size and the cumulative series. docs/experiments.md.",
        ),
    },
)


class ExperimentResultsApi(APIView):
    permission_classes = [HasSecretKey]

    @extend_schema(
        operation_id="experiments_results",
        summary="The experiment's newest results",
        description="Computed on the spot when there are none since the experiment last "
        "changed, for up to 200,000 exposures; a larger experiment's are computed on a "
        "worker: the answer is then the previous results with `computing: true`, or a "
        '`202 {"computing": true}` while there are none yet.',
        responses={200: ResultsOut, 202: None, **error_responses(401, 403, 404)},
        tags=TAGS,
    )
    def get(self, request: Request, key: str) -> Response:
        snapshot, computing = results_for_display(_get(key))
        if snapshot is None:
            return Response({"computing": True}, status=status.HTTP_202_ACCEPTED)
        return Response({**snapshot.payload, "computing": computing})
