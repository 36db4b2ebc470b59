"""The marketer's experiment screens: experiments with their variants and goals, saved
through `experiment_save` (its errors shown on the field they name), start / pause /
stop, and the results page (tables, interval and cumulative charts, CSV export)."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, replace
from datetime import datetime
from html import escape
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import construct_change_message
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Count, IntegerField, OuterRef, Prefetch, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.forms.models import BaseInlineFormSet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe
from django.utils.text import slugify
from django.views.decorators.http import require_POST

from cdp.admin import AuditedAdminMixin
from cdp.audit import actor_of
from cdp.errors import ApplicationError
from experiments import charts, services
from experiments.models import Experiment, Exposure, Goal, ResultSnapshot, Status, Variant
from experiments.selectors import results_latest
from experiments.tasks import experiment_results_refresh, results_for_display

# Up to this many exposures, a results page without a snapshot computes one while the
# marketer waits; beyond, the first computation goes to a worker.
DOCS_FILE = settings.BASE_DIR / "docs" / "experiments.md"

# The moves the change page offers in each status (the service decides what is legal).
MOVES_OFFERED = {
    Status.DRAFT: [("start", "Start")],
    Status.RUNNING: [("pause", "Pause"), ("stop", "Stop")],
    Status.PAUSED: [("start", "Resume"), ("stop", "Stop")],
    Status.STOPPED: [],
}
MOVES = ("start", "pause", "stop")


# --- the change form ------------------------------------------------------------------------


def _when(at: datetime | None) -> str:
    return "—" if at is None else f"{timezone.localtime(at):%Y-%m-%d}"


class PrettyJSONField(forms.JSONField):
    """A JSON textarea that shows its value indented (a condition is a tree); empty
    for none."""

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        return "" if value is None else json.dumps(value, indent=2, ensure_ascii=False)


@dataclass(frozen=True)
class Refusal:
    """`experiment_save` refused the form's content: where its error goes on the page.
    `form_index` is the inline row of `variants[i]` / `goals[i]` (None: the whole
    inline, or a field of the experiment)."""

    target: str  # "experiment", "variants" or "goals"
    field: str | None
    form_index: int | None
    message: str


_INLINE_PATH = re.compile(r"^(variants|goals)(?:\[(\d+)\])?(?:\.(\w+))?")


def refusal_of(
    error: ApplicationError, rows: dict[str, list[int]], experiment_fields: set[str]
) -> Refusal:
    """Place a service error: `goals[2].event` on that goal row's event field,
    `variants` above the variants, `namespace` on the experiment's namespace field."""
    name = next(iter(error.details or {}), "") if isinstance(error.details, dict) else ""
    name = str(name or error.message.split(":", 1)[0])
    found = _INLINE_PATH.match(name)
    if found:
        target, index, field = found.group(1), found.group(2), found.group(3)
        forms_of = rows.get(target, [])
        form_index = None
        if index is not None and int(index) < len(forms_of):
            form_index = forms_of[int(index)]
        return Refusal(target, field if form_index is not None else None, form_index, error.message)
    field = re.split(r"[\[.]", name, maxsplit=1)[0]
    return Refusal("experiment", field if field in experiment_fields else None, None, error.message)


class ExperimentForm(forms.ModelForm):
    refusal: Refusal | None = None

    class Meta:
        model = Experiment
        fields = [
            "name",
            "key",
            "hypothesis",
            "slot",
            "audience",
            "traffic",
            "namespace",
            "namespace_start",
            "namespace_end",
            "seed",
            "holdout",
            "factors",
            "confidence",
            "minimum_detectable_effect",
        ]
        field_classes = {"audience": PrettyJSONField, "factors": PrettyJSONField}
        help_texts = {
            "audience": 'Who may enter, as a condition (JSON; empty: everyone), e.g. {"all": '
            '[{"segment": "cart-abandoners"}, {"context": "device", "op": "eq", "value": '
            '"mobile"}]} — docs/conditions.md.',
            "factors": 'Multivariate (JSON): [{"name": "color", "levels": ["red", "blue"]}, …]. '
            "With no variant rows (or when only the factors change), the variants are every "
            "combination of the levels, with equal weights.",
            "namespace": "Experiments in the same namespace with overlapping ranges never share "
            "a visitor; leave empty for none.",
        }

    def clean_audience(self) -> Any:
        value = self.cleaned_data.get("audience")
        if value is not None and not isinstance(value, dict):
            raise ValidationError('The audience is a condition object, e.g. {"all": […]}.')
        return value

    def clean_factors(self) -> Any:
        value = self.cleaned_data.get("factors")
        if value is None:
            return []
        if not isinstance(value, list):
            raise ValidationError('The factors are a list: [{"name": …, "levels": […]}, …].')
        return value

    def clean(self) -> dict[str, Any] | None:
        data = super().clean()
        if self.refusal is not None and self.refusal.target == "experiment":
            self.add_error(self.refusal.field, self.refusal.message)
        return data


class _RowForm(forms.ModelForm):
    """An inline row: shows the service's error when it names this row."""

    def __init__(self, *args: Any, refusal: Refusal | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.refusal = refusal

    def validate_unique(self) -> None:
        # The rows are replaced as a whole by experiment_save, which reports duplicate
        # keys itself; the database check here would refuse swapping two keys.
        return

    def clean(self) -> dict[str, Any] | None:
        data = super().clean()
        if self.refusal is not None:
            field = self.refusal.field if self.refusal.field in self.fields else None
            self.add_error(field, self.refusal.message)
        return data


class VariantForm(_RowForm):
    class Meta:
        model = Variant
        fields = ["key", "weight", "content"]
        field_classes = {"content": PrettyJSONField}
        widgets = {"content": forms.Textarea(attrs={"rows": 2, "cols": 40})}
        help_texts = {"content": "JSON; empty: the slot variant of the same key."}


class GoalForm(_RowForm):
    class Meta:
        model = Goal
        fields = ["event", "kind", "property", "where", "window_seconds", "primary"]
        field_classes = {"where": PrettyJSONField}
        widgets = {"where": forms.Textarea(attrs={"rows": 2, "cols": 36})}
        labels = {"window_seconds": "window (seconds)"}
        help_texts = {"window_seconds": "86400 = 1 day, 604800 = 7 days."}


class _RowId(forms.ModelChoiceField):
    """A row's hidden id: a row that no longer exists is saved as submitted."""

    def to_python(self, value: Any) -> Any:
        try:
            return super().to_python(value)
        except ValidationError:
            return None

    def validate(self, value: Any) -> None:
        # the formset marks existing rows' ids required; a vanished row is no error
        return


class RowsFormSet(BaseInlineFormSet):
    """Rows that pass the service's error to the row it names, or show it above them."""

    def __init__(self, *args: Any, refusal: Refusal | None = None, **kwargs: Any) -> None:
        self.refusal = refusal
        super().__init__(*args, **kwargs)

    def add_fields(self, form: Any, index: int | None) -> None:
        super().add_fields(form, index)
        # experiment_save replaces every row on each save, so a row's id from a page
        # loaded before the last save is no error: the rows as submitted are saved.
        pk = self.model._meta.pk.name
        field = form.fields.get(pk)
        if isinstance(field, forms.ModelChoiceField):
            form.fields[pk] = _RowId(
                field.queryset, initial=field.initial, required=False, widget=field.widget
            )

    def get_form_kwargs(self, index: int | None) -> dict[str, Any]:
        kwargs = super().get_form_kwargs(index)
        if self.refusal is not None and index is not None and index == self.refusal.form_index:
            kwargs["refusal"] = self.refusal
        return kwargs

    def clean(self) -> None:
        super().clean()
        if self.refusal is not None and self.refusal.form_index is None:
            raise ValidationError(self.refusal.message)

    def kept_rows(self) -> tuple[list[int], list[dict[str, Any]]]:
        """The rows to save, in order: (form index, cleaned data) without deleted rows
        and untouched blank ones."""
        deleted = {id(form) for form in self.deleted_forms}
        indexes, rows = [], []
        for i, form in enumerate(self.forms):
            if id(form) in deleted or not form.cleaned_data:
                continue
            if i >= self.initial_form_count() and not form.has_changed():
                continue
            indexes.append(i)
            rows.append(form.cleaned_data)
        return indexes, rows

    def touched(self) -> bool:
        """Whether any row was edited, added or marked for deletion."""
        return any(form.has_changed() for form in self.forms)


class _PartOfExperiment(admin.TabularInline):
    """Variants and goals are part of their experiment: its permissions are theirs (a
    marketer allowed to change experiments needs no separate variant or goal rights)."""

    def _may(self, request: HttpRequest, action: str) -> bool:
        return request.user.has_perm(f"experiments.{action}_experiment")

    def _may_edit(self, request: HttpRequest, obj: Any) -> bool:
        return self._may(request, "change") or (obj is None and self._may(request, "add"))

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._may(request, "view") or self._may_edit(request, obj)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._may_edit(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._may_edit(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._may_edit(request, obj)


class VariantInline(_PartOfExperiment):
    model = Variant
    form = VariantForm
    formset = RowsFormSet
    extra = 0
    verbose_name_plural = "variants (the first row is the control; weights sum to 1)"


class GoalInline(_PartOfExperiment):
    model = Goal
    form = GoalForm
    formset = RowsFormSet
    extra = 0
    verbose_name_plural = "goals (the primary one decides; the first when none is marked)"


class _Refused(Exception):
    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


_REFUSAL = "_experiment_refusal"


# --- the list -------------------------------------------------------------------------------


@admin.register(Experiment)
class ExperimentAdmin(AuditedAdminMixin, admin.ModelAdmin):
    form = ExperimentForm
    inlines = [VariantInline, GoalInline]
    list_display = [
        "name",
        "key",
        "status",
        "slot",
        "traffic",
        "exposures",
        "primary_goal",
        "results_link",
        "started",
        "stopped",
    ]
    list_filter = ["status"]
    search_fields = ["key", "name"]
    list_select_related = ["slot"]
    readonly_fields = ["status", "started_at", "stopped_at", "results_link"]
    actions = ["start_selected", "pause_selected", "stop_selected"]
    change_form_template = "admin/experiments/experiment/change_form.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Experiment]:
        # One subquery per row (an index-only count on PostgreSQL), not a join of every
        # exposure into the list's query.
        exposures = (
            Exposure.objects.filter(experiment=OuterRef("pk"))
            .order_by()
            .values("experiment")
            .annotate(n=Count("pk"))
            .values("n")
        )
        return (
            super()
            .get_queryset(request)
            .annotate(exposure_count=Coalesce(Subquery(exposures, output_field=IntegerField()), 0))
            .prefetch_related(
                Prefetch("goals", queryset=Goal.objects.filter(primary=True), to_attr="primaries")
            )
        )

    @admin.display(description="exposures", ordering="exposure_count")
    def exposures(self, obj: Experiment) -> int:
        return int(getattr(obj, "exposure_count", 0) or 0)

    @admin.display(description="started", ordering="started_at")
    def started(self, obj: Experiment) -> str:
        return _when(obj.started_at)

    @admin.display(description="stopped", ordering="stopped_at")
    def stopped(self, obj: Experiment) -> str:
        return _when(obj.stopped_at)

    @admin.display(description="primary goal")
    def primary_goal(self, obj: Experiment) -> str:
        primaries = getattr(obj, "primaries", None)
        goal = primaries[0] if primaries else None
        if goal is None:
            return "—"
        return f"{goal.event} ({goal.kind}{', ' + goal.property if goal.property else ''})"

    @admin.display(description="results")
    def results_link(self, obj: Experiment) -> SafeString | str:
        if obj.pk is None:
            return "—"
        url = reverse("admin:experiments_experiment_results", args=[obj.pk])
        return format_html('<a href="{}">Results</a>', url)

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        sets: list[Any] = [
            (None, {"fields": ["name", "key", "hypothesis", "slot"]}),
            (
                "Who enters",
                {
                    "fields": [
                        "audience",
                        "traffic",
                        "namespace",
                        ("namespace_start", "namespace_end"),
                        "seed",
                        "holdout",
                    ]
                },
            ),
            ("Multivariate", {"fields": ["factors"], "classes": ["collapse"]}),
            ("Statistics", {"fields": ["confidence", "minimum_detectable_effect"]}),
        ]
        if obj is not None:
            sets.insert(
                1, ("Lifecycle", {"fields": ["status", "started_at", "stopped_at", "results_link"]})
            )
        return sets

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = list(super().get_readonly_fields(request, obj))
        # Started experiments keep their key: it seeds the hash that keeps visitors sticky.
        if obj is not None and obj.status != Status.DRAFT:
            fields.append("key")
        return fields

    def get_prepopulated_fields(self, request: HttpRequest, obj: Any = None) -> dict[str, Any]:
        return {"key": ["name"]} if obj is None else {}

    # --- saving through experiment_save -----------------------------------------------------

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> Any:
        form = super().get_form(request, obj, change, **kwargs)
        refusal = getattr(request, _REFUSAL, None)
        if refusal is None:
            return form
        return type(form.__name__, (form,), {"refusal": refusal})

    def get_formset_kwargs(
        self, request: HttpRequest, obj: Any, inline: Any, prefix: str
    ) -> dict[str, Any]:
        kwargs = super().get_formset_kwargs(request, obj, inline, prefix)
        refusal = getattr(request, _REFUSAL, None)
        if refusal is not None and refusal.target == prefix:
            kwargs["refusal"] = refusal
        return kwargs

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> Any:
        extra_context = {**(extra_context or {}), "docs_url": self._docs_url()}
        if object_id is not None:
            obj = self.get_object(request, object_id)
            if obj is not None:
                if self.has_change_permission(request, obj):
                    extra_context["moves"] = MOVES_OFFERED.get(Status(obj.status), [])
                extra_context["results_url"] = reverse(
                    "admin:experiments_experiment_results", args=[obj.pk]
                )
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except _Refused as refused:
            # Nothing was stored (the admin's transaction rolled back): the same form
            # again, with the service's error on the field it names.
            setattr(request, _REFUSAL, refused.refusal)
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except _Refused as again:  # the error found no field to stand on: say it on top
            self.message_user(request, again.refusal.message, messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def save_model(self, request: HttpRequest, obj: Experiment, form: Any, change: bool) -> None:
        """Saved with its variants and goals in save_related, where all three are known."""

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        by_prefix = {fs.prefix: fs for fs in formsets}
        experiment: Experiment = form.instance
        variant_forms: list[int] = []
        goal_forms: list[int] = []
        variant_rows: list[dict[str, Any]] | None = None  # None: leave them as they are
        goal_rows: list[dict[str, Any]] | None = None
        if "variants" in by_prefix:
            variant_forms, variants = by_prefix["variants"].kept_rows()
            # With factors and no hand-edited rows, the service makes every combination
            # of the factors (when they changed).
            if not experiment.factors or (variants and by_prefix["variants"].touched()):
                variant_rows = [
                    {"key": v["key"], "weight": v["weight"], "content": v.get("content") or {}}
                    for v in variants
                ]
        if "goals" in by_prefix:
            goal_forms, goals = by_prefix["goals"].kept_rows()
            goal_rows = [
                {
                    "event": g["event"],
                    "kind": g["kind"],
                    "property": g.get("property") or "",
                    "where": g.get("where") or [],
                    "window_seconds": g["window_seconds"],
                    "primary": bool(g.get("primary")),
                }
                for g in goals
            ]
        try:
            services.experiment_save(
                experiment=experiment,
                actor=actor_of(request.user),
                variants=variant_rows,
                goals=goal_rows,
            )
        except ApplicationError as exc:
            rows = {"variants": variant_forms, "goals": goal_forms}
            raise _Refused(refusal_of(exc, rows, set(form.fields))) from exc

    def construct_change_message(
        self, request: HttpRequest, form: Any, formsets: Any, add: bool = False
    ) -> list[dict[str, dict[str, list[str]]]]:
        message = construct_change_message(form, [], add)
        changed = [fs.prefix for fs in formsets if fs.has_changed()]
        if not add and changed:
            if message:
                message[0]["changed"]["fields"] += changed
            else:
                message = [{"changed": {"fields": changed}}]
        return message

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> Any:
        """What a deletion removes, as counts (an experiment can have millions of
        exposures: Django's default would list every one); a running or paused
        experiment is protected: stop it first."""
        experiments = list(objs)
        ids = [e.pk for e in experiments]
        counts = {
            "experiments": len(experiments),
            "variants": Variant.objects.filter(experiment_id__in=ids).count(),
            "goals": Goal.objects.filter(experiment_id__in=ids).count(),
            "exposures": Exposure.objects.filter(experiment_id__in=ids).count(),
            "result snapshots": ResultSnapshot.objects.filter(experiment_id__in=ids).count(),
        }
        deleted = [
            f"Experiment: {e.name} ({e.key}), with its variants, goals, exposures and results"
            for e in experiments
        ]
        perms_needed = set() if self.has_delete_permission(request) else {"experiment"}
        protected = [
            f"{e.name} ({e.key}) is {e.status}: stop it first"
            for e in experiments
            if e.status in (Status.RUNNING, Status.PAUSED)
        ]
        return deleted, {k: v for k, v in counts.items() if v}, perms_needed, protected

    def delete_model(self, request: HttpRequest, obj: Experiment) -> None:
        services.experiment_delete(experiment=obj, actor=actor_of(request.user))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Experiment]) -> None:
        for experiment in queryset:
            services.experiment_delete(experiment=experiment, actor=actor_of(request.user))

    # --- start, pause, stop -----------------------------------------------------------------

    def _move(self, request: HttpRequest, experiment: Experiment, move: str) -> bool:
        try:
            with transaction.atomic():
                services.experiment_transition(
                    experiment=experiment, move=move, actor=actor_of(request.user)
                )
                self.log_change(request, experiment, [{"changed": {"fields": ["status"]}}])
        except ApplicationError as exc:
            experiment.refresh_from_db()
            self.message_user(
                request, f"Experiment {experiment.key}: {exc.message}", messages.ERROR
            )
            return False
        return True

    def _move_selected(
        self, request: HttpRequest, queryset: QuerySet[Experiment], move: str
    ) -> None:
        moved = [exp.key for exp in queryset if self._move(request, exp, move)]
        if moved:
            self.message_user(
                request, f"{move.capitalize()}: {', '.join(moved)}.", messages.SUCCESS
            )

    @admin.action(description="Start (or resume) the selected experiments", permissions=["change"])
    def start_selected(self, request: HttpRequest, queryset: QuerySet[Experiment]) -> None:
        self._move_selected(request, queryset, "start")

    @admin.action(description="Pause the selected experiments", permissions=["change"])
    def pause_selected(self, request: HttpRequest, queryset: QuerySet[Experiment]) -> None:
        self._move_selected(request, queryset, "pause")

    @admin.action(description="Stop the selected experiments (final)", permissions=["change"])
    def stop_selected(self, request: HttpRequest, queryset: QuerySet[Experiment]) -> None:
        self._move_selected(request, queryset, "stop")

    # --- extra pages ------------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        extra = [
            path("docs/", view(self.docs_view), name="experiments_experiment_docs"),
            path(
                "<int:object_id>/transition/",
                view(require_POST(self.transition_view)),
                name="experiments_experiment_transition",
            ),
            path(
                "<int:object_id>/results/",
                view(self.results_view),
                name="experiments_experiment_results",
            ),
            path(
                "<int:object_id>/results/refresh/",
                view(require_POST(self.refresh_view)),
                name="experiments_experiment_results_refresh",
            ),
            path(
                "<int:object_id>/results.csv",
                view(self.results_csv_view),
                name="experiments_experiment_results_csv",
            ),
        ]
        return extra + super().get_urls()

    def _docs_url(self) -> str:
        return reverse("admin:experiments_experiment_docs")

    def _viewable(self, request: HttpRequest, object_id: int) -> Experiment:
        experiment = get_object_or_404(Experiment.objects.select_related("slot"), pk=object_id)
        if not self.has_view_or_change_permission(request, experiment):
            raise PermissionDenied
        return experiment

    def transition_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        experiment = get_object_or_404(Experiment, pk=object_id)
        if not self.has_change_permission(request, experiment):
            raise PermissionDenied
        move = request.POST.get("move", "")
        if move not in MOVES:
            self.message_user(request, f"Unknown move {move!r}.", messages.ERROR)
        elif self._move(request, experiment, move):
            self.message_user(request, f"Experiment {experiment.key} is now {experiment.status}.")
        return HttpResponseRedirect(
            reverse("admin:experiments_experiment_change", args=[experiment.pk])
        )

    def results_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        experiment = self._viewable(request, object_id)
        snapshot, computing = results_for_display(experiment)
        context: dict[str, Any] = {
            **self.admin_site.each_context(request),
            "title": f"Results: {experiment.name}",
            "opts": self.model._meta,
            "original": experiment,
            "experiment": experiment,
            "snapshot": snapshot,
            "computing": computing,
            "docs_url": self._docs_url(),
            "change_url": reverse("admin:experiments_experiment_change", args=[experiment.pk]),
            "refresh_url": reverse(
                "admin:experiments_experiment_results_refresh", args=[experiment.pk]
            ),
            "csv_url": reverse("admin:experiments_experiment_results_csv", args=[experiment.pk]),
            **(results_context(snapshot.payload, experiment) if snapshot is not None else {}),
        }
        return TemplateResponse(request, "admin/experiments/experiment/results.html", context)

    def refresh_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        """ "Refresh now": the computation goes to a worker; the page says so at once."""
        experiment = self._viewable(request, object_id)
        pk = experiment.pk
        transaction.on_commit(lambda: experiment_results_refresh.delay(pk))
        self.message_user(
            request,
            f"Results refresh of {experiment.key} queued on a worker: reload this page in a "
            "moment to see the new figures.",
        )
        return HttpResponseRedirect(
            reverse("admin:experiments_experiment_results", args=[experiment.pk])
        )

    def results_csv_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        experiment = self._viewable(request, object_id)
        snapshot = results_latest(experiment=experiment)
        if snapshot is None:
            # the results page computes (or queues) the first snapshot
            return HttpResponseRedirect(
                reverse("admin:experiments_experiment_results", args=[experiment.pk])
            )
        response = HttpResponse(content_type="text/csv; charset=utf-8")
        stamp = f"{snapshot.computed_at:%Y%m%d-%H%M}"
        response["Content-Disposition"] = (
            f'attachment; filename="experiment-{experiment.key}-results-{stamp}.csv"'
        )
        writer = csv.writer(response)
        writer.writerow(charts.CSV_COLUMNS)
        writer.writerows(charts.csv_rows(snapshot.payload))
        return response

    def docs_view(self, request: HttpRequest) -> HttpResponse:
        """docs/experiments.md, readable in the admin (the plain-words explanation of every
        figure on the results page)."""
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        try:
            text = DOCS_FILE.read_text(encoding="utf-8")
        except OSError as exc:
            raise Http404("docs/experiments.md is not there") from exc
        context = {
            **self.admin_site.each_context(request),
            "title": "Experiments: what the numbers mean",
            "opts": self.model._meta,
            "doc": mark_safe(markdown_lite(text)),  # noqa: S308 (every piece is escaped)
        }
        return TemplateResponse(request, "admin/experiments/experiment/docs.html", context)


def _inline(text: str) -> str:
    """Escaped text with `code`, **bold** and [links](…) (shown as their text)."""
    out = escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)
    out = re.sub(r"(?<![\w*])\*([^*\s][^*]*)\*(?![\w*])", r"<em>\1</em>", out)
    return re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", out)


def markdown_lite(text: str) -> str:
    """Enough Markdown for docs/experiments.md: headings (with ids to link to), tables,
    code blocks and paragraphs, every piece escaped."""
    out: list[str] = []
    block: list[str] = []
    kind = ""  # what `block` holds: "p", "table", "ul", "ol" or "code"

    def flush() -> None:
        nonlocal kind
        if kind == "p":
            out.append(f"<p>{_inline(' '.join(block))}</p>")
        elif kind == "code":
            out.append(f"<pre>{escape(chr(10).join(block))}</pre>")
        elif kind == "table":
            rows = [
                [c.strip() for c in line.strip().strip("|").split("|")]
                for line in block
                if not re.fullmatch(r"[\s|:-]+", line)
            ]
            head = "".join(f"<th>{_inline(c)}</th>" for c in rows[0]) if rows else ""
            body = "".join(
                "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>"
                for row in rows[1:]
            )
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind in ("ul", "ol"):
            items = "".join(f"<li>{_inline(item)}</li>" for item in block)
            out.append(f"<{kind}>{items}</{kind}>")
        block.clear()
        kind = ""

    for line in text.splitlines():
        if kind == "code":
            if line.startswith("```"):
                flush()
            else:
                block.append(line)
            continue
        if line.startswith("```"):
            flush()
            kind = "code"
            continue
        heading = re.match(r"^(#{1,6})\s+(.*)$", line)
        if heading:
            flush()
            level = min(len(heading.group(1)) + 1, 6)
            title = heading.group(2).strip()
            out.append(f'<h{level} id="{slugify(title)}">{_inline(title)}</h{level}>')
        elif not line.strip():
            flush()
        else:
            item = re.match(r"^\s*(?:([-*])|\d+\.)\s+(.*)$", line)
            if item:
                current = "ul" if item.group(1) else "ol"
            elif line.lstrip().startswith("|"):
                current = "table"
            else:
                current = kind if kind in ("ul", "ol", "p") else "p"
            if kind and kind != current:
                flush()
            kind = current
            if item:
                block.append(item.group(2))
            elif current in ("ul", "ol") and block:
                block[-1] += " " + line.strip()  # a list item's continuation line
            else:
                block.append(line)
    flush()
    return "".join(out)


def results_context(payload: dict[str, Any], experiment: Experiment) -> dict[str, Any]:
    """What the results template shows, from a snapshot's payload (the experiment only
    fills in what an empty payload lacks: its variants' order and weights)."""
    current = list(experiment.variants.order_by("index").values_list("key", "weight"))
    keys = charts.variant_keys(payload, [k for k, _ in current])
    goals = payload.get("goals") or []
    weights = dict(current)
    if goals:
        weights = {str(v.get("key")): v.get("weight") for v in goals[0].get("variants") or []}
    exposures = payload.get("exposures") or {}
    srm = payload.get("srm") or {}
    expected = srm.get("expected") or []
    total = sum(n for n in exposures.values() if isinstance(n, int))
    rows = []
    for i, key in enumerate(keys):
        observed = exposures.get(key)
        observed = observed if isinstance(observed, int) else 0
        rows.append(
            {
                "key": key,
                "label": charts.label_of(key, i),
                "color": charts.color_of(i),
                "weight": charts.number(weights.get(key)),
                "expected": expected[i] if i < len(expected) else None,
                "observed": observed,
                "share": observed / total if total else None,
            }
        )
    tables = [
        replace(
            table,
            intervals_svg=mark_safe(table.intervals_svg),  # noqa: S308 (escaped in charts)
            series_svg=mark_safe(table.series_svg),  # noqa: S308
        )
        for table in charts.goal_tables(payload)
    ]
    return {
        "warnings": [
            (charts.warning_level(w.get("code", "")), w.get("message", ""))
            for w in payload.get("warnings") or []
        ],
        "exposure_rows": rows,
        "exposures_total": total,
        "srm": srm or None,
        "srm_p": charts.p_equals(charts.number(srm.get("p_value"))),
        "goal_tables": tables,
        "confidence": payload.get("confidence"),
    }
