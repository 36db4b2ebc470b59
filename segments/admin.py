"""Marketer's screens: conditions validated on save (naming the bad node), a preview of
what a condition matches now, "why is this profile (not) in this segment", the size
history chart, and recompute on demand; clusterings and predictors with "run now", their
runs' progress, their charts and the threshold picker (runs and versions read-only)."""

from __future__ import annotations

import copy
import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import OuterRef, Prefetch, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.http import require_POST

from cdp.admin import AuditedAdminMixin
from cdp.audit import actor_of
from cdp.charts import number
from cdp.errors import ValidationFailed
from cdp.models import JobStatus
from profiles.selectors import profile_search
from segments import services
from segments.compiler import matching_ids
from segments.conditions import explain
from segments.ml import charts as ml_charts
from segments.ml import services as ml_services
from segments.ml.features import BASE_FEATURES, DESCRIPTIONS
from segments.models import (
    Clustering,
    ClusteringRun,
    Predictor,
    PredictorVersion,
    Segment,
    SegmentSize,
)
from segments.selectors import profile_facts, recompute_runs_recent


class SegmentForm(forms.ModelForm):
    class Meta:
        model = Segment
        fields = [
            "name",
            "slug",
            "description",
            "condition",
            "priority",
            "exclusive_group",
            "active",
            "refresh",
        ]
        help_texts = {
            "condition": 'JSON, e.g. {"event": "add_to_cart", "within": "24h"} — see docs/conditions.md.'
        }

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if "condition" in data:
            try:
                services.condition_check(data["condition"], slug=data.get("slug"))
            except ValidationFailed as exc:
                self.add_error("condition", exc.message)
        return data


def _chart(points: list[SegmentSize]) -> SafeString:
    """The size history as an inline SVG line chart (no JavaScript needed)."""
    if len(points) < 2:
        return format_html("<p>{}</p>", "The chart appears after two recomputes.")
    points = sorted(points, key=lambda p: p.at)
    width, height, pad = 640, 180, 30
    top = max(p.size for p in points) or 1
    t0, t1 = points[0].at.timestamp(), points[-1].at.timestamp()
    span = (t1 - t0) or 1

    def xy(p: SegmentSize) -> tuple[float, float]:
        x = pad + (p.at.timestamp() - t0) / span * (width - 2 * pad)
        y = height - pad - p.size / top * (height - 2 * pad)
        return round(x, 1), round(y, 1)

    line = " ".join(f"{x},{y}" for x, y in map(xy, points))
    dots = format_html_join(
        "",
        '<circle cx="{}" cy="{}" r="2.5" fill="#417690"><title>{}</title></circle>',
        ((*xy(p), f"{p.at:%Y-%m-%d %H:%M}: {p.size}") for p in points),
    )
    return format_html(
        '<svg width="{w}" height="{h}" role="img" aria-label="Segment size over time" '
        'style="background:#fff;border:1px solid #ddd">'
        '<text x="4" y="{ty}" font-size="11" fill="#666">{top}</text>'
        '<text x="4" y="{by}" font-size="11" fill="#666">0</text>'
        '<text x="{pad}" y="{h2}" font-size="11" fill="#666">{start}</text>'
        '<text x="{xr}" y="{h2}" font-size="11" fill="#666" text-anchor="end">{end}</text>'
        '<polyline fill="none" stroke="#417690" stroke-width="2" points="{line}"/>{dots}</svg>',
        w=width,
        h=height,
        ty=pad,
        by=height - pad,
        top=top,
        pad=pad,
        h2=height - 8,
        xr=width - pad,
        start=f"{points[0].at:%Y-%m-%d %H:%M}",
        end=f"{points[-1].at:%Y-%m-%d %H:%M}",
        line=line,
        dots=dots,
    )


@admin.register(Segment)
class SegmentAdmin(AuditedAdminMixin, admin.ModelAdmin):
    form = SegmentForm
    list_display = [
        "name",
        "slug",
        "size",
        "computed_at",
        "priority",
        "exclusive_group",
        "refresh",
        "active",
    ]
    list_filter = ["active", "refresh", "exclusive_group"]
    search_fields = ["name", "slug", "description"]
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = ["size", "computed_at", "size_history", "matches_now", "why_link"]
    actions = ["recompute_now"]
    change_list_template = "admin/segments/segment/change_list.html"

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        base: list[Any] = [
            (
                None,
                {
                    "fields": [
                        "name",
                        "slug",
                        "description",
                        "condition",
                        "priority",
                        "exclusive_group",
                        "active",
                        "refresh",
                    ]
                },
            )
        ]
        if obj is not None:
            base.append(
                (
                    "Now",
                    {"fields": ["size", "computed_at", "matches_now", "why_link", "size_history"]},
                )
            )
        return base

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> Any:
        """Segments that other segments or rules use are shown as protected: the admin
        refuses to delete them and lists what uses them."""
        deleted, counts, perms, protected = super().get_deleted_objects(objs, request)
        for segment in objs:
            protected += [
                f"{segment.name}: used by {user}" for user in services.segment_users(segment)
            ]
        return deleted, counts, perms, protected

    @admin.display(description="Size over time")
    def size_history(self, obj: Segment) -> SafeString:
        return _chart(list(obj.sizes.all()[:200]))

    @admin.display(description="Matches now")
    def matches_now(self, obj: Segment) -> SafeString:
        ids = matching_ids(obj.condition, now=timezone.now())
        sample = format_html_join(
            ", ",
            '<a href="{}">{}</a>',
            (
                (reverse("admin:profiles_profile_change", args=[pid]), str(pid)[:8])
                for pid in ids[:10]
            ),
        )
        return format_html(
            "{} profiles match the saved condition now. Sample: {}", len(ids), sample or "-"
        )

    @admin.display(description="Explain")
    def why_link(self, obj: Segment) -> SafeString:
        url = reverse("admin:segments_segment_why", args=[obj.pk])
        return format_html('<a href="{}">Why is a profile (not) in this segment?</a>', url)

    @admin.action(description="Recompute now (on a worker)")
    def recompute_now(self, request: HttpRequest, queryset: QuerySet[Segment]) -> None:
        slugs = sorted(queryset.filter(active=True).values_list("slug", flat=True))
        if not slugs:
            self.message_user(request, "Only active segments are recomputed.", messages.WARNING)
            return
        run = services.recompute_request(slugs=slugs, actor=actor_of(request.user))
        self.message_user(
            request,
            f"Recompute #{run.pk} of {len(slugs)} segment(s) queued; its progress shows above the list.",
        )

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        runs = recompute_runs_recent()
        extra_context = {
            **(extra_context or {}),
            "recompute_runs": runs,
            "recompute_running": any(r.status in ("queued", "running") for r in runs),
        }
        return super().changelist_view(request, extra_context)

    def get_urls(self) -> list[URLPattern]:
        extra = [
            path(
                "preview/",
                self.admin_site.admin_view(self.preview_view),
                name="segments_segment_preview",
            ),
            path(
                "<int:segment_id>/why/",
                self.admin_site.admin_view(self.why_view),
                name="segments_segment_why",
            ),
        ]
        return extra + super().get_urls()

    def preview_view(self, request: HttpRequest) -> HttpResponse:
        """Paste a condition: validation, the number of matches now, a sample — before saving."""
        context: dict[str, Any] = {
            **self.admin_site.each_context(request),
            "title": "Preview a condition",
            "opts": self.model._meta,
            "condition": request.POST.get("condition", ""),
        }
        if request.method == "POST":
            try:
                condition = json.loads(context["condition"])
                services.condition_check(condition)
                ids = matching_ids(condition, now=timezone.now())
                context.update(
                    count=len(ids),
                    sample=[
                        (reverse("admin:profiles_profile_change", args=[p]), p) for p in ids[:20]
                    ],
                )
            except json.JSONDecodeError as exc:
                context["error"] = f"Not JSON: {exc}"
            except ValidationFailed as exc:
                context["error"] = exc.message
        return TemplateResponse(request, "admin/segments/segment/preview.html", context)

    def why_view(self, request: HttpRequest, segment_id: int) -> HttpResponse:
        segment = Segment.objects.get(pk=segment_id)
        term = request.GET.get("profile", "").strip()
        context: dict[str, Any] = {
            **self.admin_site.each_context(request),
            "title": f"Why: {segment.name}",
            "opts": self.model._meta,
            "segment": segment,
            "term": term,
            "condition_json": json.dumps(segment.condition, indent=2),
        }
        if term:
            ids = profile_search(term=term)
            facts = profile_facts(profile_ids=ids, now=timezone.now())
            if not facts:
                messages.warning(request, "No live profile has that identity or id.")
            else:
                pid, f = next(iter(facts.items()))
                lines = sorted(
                    explain(segment.condition, f, timezone.now()), key=lambda line: line[0]
                )
                context.update(
                    profile_id=pid,
                    lines=lines,
                    result=lines[0][1] if lines else False,
                    member=segment.memberships.filter(profile_id=pid).exists(),
                )
        return TemplateResponse(request, "admin/segments/segment/why.html", context)


# --- Clustering and predictive models (segments.ml) ----------------------------------------

RECENT_JOBS = 10
ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)
# What the pages never load: the fitted model (a pickle) and the model-space arrays.
RUN_HEAVY = ("transform", "centroids")
VERSION_HEAVY = ("model_blob",)
# ... and what the tables of runs (the list, the latest runs) do not need either.
RUN_SUMMARY_DEFER = (*RUN_HEAVY, "projection", "clusters", "scores_by_k", "outlier_report")
PICKER_GRID = [round(t / 10, 1) for t in range(1, 10)]


def _service_check(form: forms.ModelForm, check: Any, data: dict[str, Any]) -> None:
    """Run a service's definition check on the form's values; its `details` name the
    fields, so each message lands on its field (or above the form)."""
    candidate = copy.copy(form.instance)
    for name, value in data.items():
        setattr(candidate, name, value)
    try:
        check(candidate)
    except ValidationFailed as exc:
        details = exc.details if isinstance(exc.details, dict) else {}
        if not details:
            form.add_error(None, exc.message)
        for field, problems in details.items():
            where = field if field in form.fields else None
            if where is not None and where in form.errors:
                continue
            form.add_error(where, problems if isinstance(problems, list) else [str(problems)])


def _feature_help() -> str:
    names = ", ".join(BASE_FEATURES)
    return (
        f'JSON list of features, e.g. ["recency_days", "revenue", "affinity:*"]; empty: all. '
        f"Known: {names}, affinity:<category> (or affinity:* for every top category)."
    )


class ClusteringForm(forms.ModelForm):
    class Meta:
        model = Clustering
        fields = [
            "name",
            "key",
            "active",
            "algorithm",
            "k_min",
            "k_max",
            "features",
            "scaling",
            "outliers",
            "pca_components",
            "lookback_days",
            "sample_size",
            "eps",
            "min_samples",
            "retrain_every_days",
        ]
        labels = {"k_min": "smallest k", "k_max": "largest k"}
        help_texts = {
            "k_max": "k-means and Ward try every k in the range and keep the best silhouette; "
            "DBSCAN and HDBSCAN find the number themselves."
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "features" in self.fields:
            self.fields["features"].help_text = _feature_help()

    def clean_features(self) -> Any:
        value = self.cleaned_data.get("features")
        if value in (None, ""):
            return []
        if not isinstance(value, list):
            raise forms.ValidationError(
                'A list of feature names, e.g. ["recency_days", "revenue"].'
            )
        return value

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        _service_check(self, ml_services.clustering_check, data)
        return data


class PredictorForm(forms.ModelForm):
    class Meta:
        model = Predictor
        fields = [
            "name",
            "key",
            "active",
            "target",
            "target_event",
            "horizon_days",
            "lookback_days",
            "algorithm",
            "threshold",
            "retrain_every_days",
        ]

    def clean_threshold(self) -> Any:
        value = self.cleaned_data.get("threshold")
        if value is not None and not 0 <= value <= 1:
            raise forms.ValidationError("A probability between 0 and 1.")
        return value

    def clean_horizon_days(self) -> Any:
        value = self.cleaned_data.get("horizon_days")
        if value is not None and value < 1:
            raise forms.ValidationError("At least one day.")
        return value

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        _service_check(self, ml_services.predictor_check, data)
        return data


def _finished(at: Any) -> str:
    return "—" if at is None else f"{timezone.localtime(at):%Y-%m-%d %H:%M}"


def _percent(value: Any) -> str:
    v = number(value)
    return "—" if v is None else f"{v * 100:.1f}%"


def _figure(value: Any, digits: int = 3) -> str:
    v = number(value)
    return "—" if v is None else f"{v:.{digits}f}"


def _svg(markup: str) -> SafeString:
    return mark_safe(markup)  # noqa: S308 (every string is escaped in segments.ml.charts)


def _run_report(run: ClusteringRun) -> dict[str, Any]:
    """What a clustering run's page shows: its charts, its clusters, its checks."""
    clusters = ml_charts.centroid_table(clusters=run.clusters, descriptions=DESCRIPTIONS)
    slugs = [str(c.get("segment", "")) for c in clusters.clusters]
    segments = dict(Segment.objects.filter(slug__in=slugs).values_list("slug", "pk"))
    total = sum(int(c.get("size") or 0) for c in clusters.clusters) or 1
    stability = run.stability if isinstance(run.stability, dict) else {}
    return {
        "run": run,
        "silhouette_svg": _svg(
            ml_charts.silhouette_chart(scores_by_k=run.scores_by_k, chosen_k=run.k)
        ),
        "inertia_svg": _svg(ml_charts.inertia_chart(scores_by_k=run.scores_by_k, chosen_k=run.k)),
        "projection_svg": _svg(
            ml_charts.projection_chart(projection=run.projection, clusters=run.clusters)
        ),
        "table": clusters,
        "clusters": [
            {
                "number": c.get("number"),
                "label": c.get("label"),
                "name": ml_charts.cluster_name(c),
                "color": ml_charts.cluster_color(int(c["number"])),
                "size": c.get("size"),
                "share": _percent(int(c.get("size") or 0) / total),
                "segment": c.get("segment"),
                "segment_url": (
                    reverse("admin:segments_segment_change", args=[segments[c["segment"]]])
                    if c.get("segment") in segments
                    else None
                ),
            }
            for c in clusters.clusters
        ],
        "silhouette": _figure(run.silhouette),
        "ari_mean": _figure(stability.get("ari_mean")),
        "ari_min": _figure(stability.get("ari_min")),
        "stability_runs": stability.get("runs"),
        "outliers": run.outlier_report if isinstance(run.outlier_report, dict) else {},
        "noise_share": _percent(run.noise_share) if run.noise_share is not None else None,
    }


def _picker(predictor: Predictor, version: PredictorVersion, raw: str | None) -> dict[str, Any]:
    """The threshold picker: how many profiles a threshold selects now (their stored
    scores), and what it did on the held-out profiles."""
    error = ""
    try:
        threshold = float(raw) if raw else predictor.threshold
    except ValueError:
        threshold, error = predictor.threshold, f"{raw!r} is not a number: showing the saved one."
    if not 0 <= threshold <= 1:
        threshold, error = predictor.threshold, "A threshold is between 0 and 1."
    threshold = round(threshold, 2)
    counts = dict(
        ml_services.threshold_counts(key=predictor.key, thresholds=[0.0, threshold, *PICKER_GRID])
    )
    scored = counts[0.0]
    by_threshold = (version.metrics or {}).get("by_threshold")
    holdout = (version.metrics or {}).get("holdout_profiles")

    def row(t: float) -> dict[str, Any]:
        at = ml_charts.threshold_row(by_threshold, t) or {}
        return {
            "threshold": t,
            "value": f"{t:.2f}",
            "count": counts[t],
            "share": _percent(counts[t] / scored if scored else None),
            "precision": _percent(at.get("precision")),
            "recall": _percent(at.get("recall")),
            "selected": at.get("selected"),
            "current": abs(t - threshold) < 1e-9,
        }

    return {
        "threshold": threshold,
        "value": f"{threshold:.2f}",
        "error": error,
        "scored": scored,
        "holdout": holdout,
        "chosen": row(threshold),
        "grid": [row(t) for t in PICKER_GRID],
        "saved": predictor.threshold,
    }


def _version_report(version: PredictorVersion, threshold: float) -> dict[str, Any]:
    m = version.metrics if isinstance(version.metrics, dict) else {}
    compared = m.get("compared_with") if isinstance(m.get("compared_with"), dict) else None
    return {
        "version": version,
        "auc": _figure(m.get("holdout_auc")),
        "cv_auc": _figure(m.get("cv_auc_mean")),
        "cv_auc_std": _figure(m.get("cv_auc_std")),
        "brier": _figure(m.get("brier")),
        "base_rate": _percent(m.get("base_rate")),
        "profiles": m.get("profiles"),
        "positives": m.get("positives"),
        "holdout_profiles": m.get("holdout_profiles"),
        "compared_with": compared,
        "roc_svg": _svg(ml_charts.roc_chart(roc=m.get("roc"), auc=m.get("holdout_auc"))),
        "threshold_svg": _svg(
            ml_charts.threshold_chart(by_threshold=m.get("by_threshold"), threshold=threshold)
        ),
        "calibration_svg": _svg(
            ml_charts.calibration_chart(calibration=m.get("calibration"), brier=m.get("brier"))
        ),
        "importance_svg": _svg(ml_charts.importance_chart(importances=m.get("importances"))),
    }


class _MLAdmin(AuditedAdminMixin, admin.ModelAdmin):
    """What the clustering and predictor admins share: "run now" as an action and a
    button, the latest jobs with their progress on the change page."""

    job_model: type[ClusteringRun] | type[PredictorVersion]
    job_parent = ""  # the job's foreign key to its definition
    verb = "Run"
    button = "Run now"

    def _request(self, request: HttpRequest, obj: Any) -> Any:
        raise NotImplementedError

    def _queue(self, request: HttpRequest, obj: Any) -> None:
        try:
            job = self._request(request, obj)
        except Exception as exc:
            # Without a broker (the embedded default) the task runs inline at once; its
            # row records the failure, the marketer reads it here and on the page.
            self.message_user(request, f"{self.verb} of {obj.key} failed: {exc}", messages.ERROR)
            return
        job.refresh_from_db()
        if job.status == JobStatus.DONE:
            self.message_user(request, f"{self.verb} #{job.pk} of {obj.key} finished.")
        else:
            self.message_user(
                request,
                f"{self.verb} #{job.pk} of {obj.key} queued on a worker: its progress shows on "
                f"the {obj._meta.verbose_name}'s page.",
            )

    def queue_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        obj = get_object_or_404(self.model, pk=object_id)
        if not self.has_change_permission(request, obj):
            raise PermissionDenied
        self._queue(request, obj)
        url = reverse(f"admin:segments_{self.model._meta.model_name}_change", args=[obj.pk])
        return HttpResponseRedirect(url + "#ml-jobs")

    def get_urls(self) -> list[URLPattern]:
        name = f"segments_{self.model._meta.model_name}_queue"
        extra = [
            path(
                "<int:object_id>/queue/",
                self.admin_site.admin_view(require_POST(self.queue_view)),
                name=name,
            )
        ]
        return extra + super().get_urls()

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> Any:
        # Runs and versions go with their definition; nobody deletes them on their own.
        deleted, counts, perms, protected = super().get_deleted_objects(objs, request)
        perms.discard(str(self.job_model._meta.verbose_name))
        return deleted, counts, perms, protected

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = list(super().get_readonly_fields(request, obj))
        # The key names the stored scores (and the cluster segments): fixed once used.
        if obj is not None and self.job_model.objects.filter(**{self.job_parent: obj}).exists():
            fields.append("key")
        return fields

    def _jobs(self, obj: Any) -> list[Any]:
        return list(
            self.job_model.objects.filter(**{self.job_parent: obj})
            .defer(*self._heavy)
            .order_by("-created_at", "-pk")[:RECENT_JOBS]
        )

    _heavy: tuple[str, ...] = ()

    def _report(self, request: HttpRequest, obj: Any) -> dict[str, Any]:
        return {}

    def _result(self, job: Any) -> str:
        """What a finished job found, in a few words (the jobs table)."""
        return ""

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> Any:
        extra_context = dict(extra_context or {})
        obj = self.get_object(request, object_id) if object_id is not None else None
        if obj is not None:
            jobs = self._jobs(obj)
            url = f"admin:segments_{self.job_model._meta.model_name}_change"
            extra_context.update(
                jobs=[
                    {"job": j, "url": reverse(url, args=[j.pk]), "result": self._result(j)}
                    for j in jobs
                ],
                jobs_active=any(j.status in ACTIVE for j in jobs),
                queue_url=reverse(
                    f"admin:segments_{self.model._meta.model_name}_queue", args=[obj.pk]
                )
                if self.has_change_permission(request, obj)
                else None,
                verb=self.verb,
                verb_button=self.button,
                **self._report(request, obj),
            )
        return super().changeform_view(request, object_id, form_url, extra_context)

    def _latest_jobs(self, queryset: QuerySet[Any], field: str) -> QuerySet[Any]:
        latest = self.job_model.objects.filter(**{self.job_parent: OuterRef("pk")}).order_by(
            "-created_at", "-pk"
        )
        return queryset.annotate(
            last_status=Subquery(latest.values("status")[:1]),
            last_finished=Subquery(latest.values("finished_at")[:1]),
        ).prefetch_related(
            Prefetch(
                field,
                queryset=self.job_model.objects.filter(is_current=True).defer(*self._heavy),
                to_attr="current_jobs",
            )
        )

    @staticmethod
    def _current(obj: Any) -> Any:
        jobs = getattr(obj, "current_jobs", None)
        return jobs[0] if jobs else None

    @admin.display(description="last run")
    def last_run(self, obj: Any) -> str:
        status = getattr(obj, "last_status", None)
        if status is None:
            return "never"
        finished = getattr(obj, "last_finished", None)
        return f"{JobStatus(status).label}" + (f", {_finished(finished)}" if finished else "")


@admin.register(Clustering)
class ClusteringAdmin(_MLAdmin):
    form = ClusteringForm
    job_model = ClusteringRun
    job_parent = "clustering"
    _heavy = RUN_SUMMARY_DEFER
    list_display = [
        "name",
        "key",
        "algorithm",
        "k_range",
        "current_k",
        "current_silhouette",
        "current_stability",
        "current_profiles",
        "last_run",
        "active",
    ]
    list_filter = ["active", "algorithm"]
    search_fields = ["key", "name"]
    actions = ["run_now"]
    change_form_template = "admin/segments/clustering/change_form.html"
    fieldsets = [
        (None, {"fields": ["name", "key", "active"]}),
        ("Model", {"fields": ["algorithm", ("k_min", "k_max"), ("eps", "min_samples")]}),
        (
            "Data",
            {"fields": ["features", "lookback_days", "scaling", "outliers", "pca_components"]},
        ),
        ("Schedule", {"fields": ["sample_size", "retrain_every_days"]}),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Clustering]:
        return self._latest_jobs(super().get_queryset(request), "runs")

    def _request(self, request: HttpRequest, obj: Clustering) -> ClusteringRun:
        return ml_services.clustering_run_request(clustering=obj, actor=actor_of(request.user))

    @admin.action(description="Run now (on a worker)", permissions=["change"])
    def run_now(self, request: HttpRequest, queryset: QuerySet[Clustering]) -> None:
        for clustering in queryset:
            self._queue(request, clustering)

    @admin.display(description="k range")
    def k_range(self, obj: Clustering) -> str:
        if obj.algorithm in (Clustering.Algorithm.DBSCAN, Clustering.Algorithm.HDBSCAN):
            return "found"
        return f"{obj.k_min}–{obj.k_max}"

    @admin.display(description="k")
    def current_k(self, obj: Clustering) -> Any:
        run = self._current(obj)
        return run.k if run is not None else "—"

    @admin.display(description="silhouette")
    def current_silhouette(self, obj: Clustering) -> str:
        run = self._current(obj)
        return _figure(run.silhouette) if run is not None else "—"

    @admin.display(description="stability (ARI)")
    def current_stability(self, obj: Clustering) -> str:
        run = self._current(obj)
        stability = run.stability if run is not None and isinstance(run.stability, dict) else {}
        return _figure(stability.get("ari_mean"), 2)

    @admin.display(description="profiles")
    def current_profiles(self, obj: Clustering) -> Any:
        run = self._current(obj)
        return run.profiles if run is not None else "—"

    def _result(self, job: ClusteringRun) -> str:
        if job.status != JobStatus.DONE:
            return ""
        return f"k = {job.k}, silhouette {_figure(job.silhouette)}, {job.profiles:,} profiles"

    def _report(self, request: HttpRequest, obj: Clustering) -> dict[str, Any]:
        current = ClusteringRun.objects.filter(clustering=obj, is_current=True).defer(*RUN_HEAVY)
        run = current.first()
        return {"report": _run_report(run) if run is not None else None}


@admin.register(Predictor)
class PredictorAdmin(_MLAdmin):
    form = PredictorForm
    job_model = PredictorVersion
    job_parent = "predictor"
    _heavy = VERSION_HEAVY
    verb = "Training"
    button = "Train now"
    list_display = [
        "name",
        "key",
        "target",
        "horizon_days",
        "algorithm",
        "current_version",
        "holdout_auc",
        "scored_at",
        "scored_profiles",
        "last_run",
        "active",
    ]
    list_filter = ["active", "target", "algorithm"]
    search_fields = ["key", "name"]
    actions = ["train_now"]
    change_form_template = "admin/segments/predictor/change_form.html"
    fieldsets = [
        (None, {"fields": ["name", "key", "active"]}),
        ("What it predicts", {"fields": ["target", "target_event", "horizon_days"]}),
        ("Model", {"fields": ["algorithm", "lookback_days", "threshold", "retrain_every_days"]}),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Predictor]:
        return self._latest_jobs(super().get_queryset(request), "versions")

    def _request(self, request: HttpRequest, obj: Predictor) -> PredictorVersion:
        return ml_services.predictor_train_request(predictor=obj, actor=actor_of(request.user))

    @admin.action(description="Train now (on a worker)", permissions=["change"])
    def train_now(self, request: HttpRequest, queryset: QuerySet[Predictor]) -> None:
        for predictor in queryset:
            self._queue(request, predictor)

    @admin.display(description="current version")
    def current_version(self, obj: Predictor) -> str:
        version = self._current(obj)
        return f"v{version.version}" if version is not None else "—"

    @admin.display(description="held-out AUC")
    def holdout_auc(self, obj: Predictor) -> str:
        version = self._current(obj)
        return _figure((version.metrics or {}).get("holdout_auc")) if version else "—"

    @admin.display(description="scored")
    def scored_at(self, obj: Predictor) -> str:
        version = self._current(obj)
        return _finished(version.scored_at) if version is not None else "—"

    @admin.display(description="profiles scored")
    def scored_profiles(self, obj: Predictor) -> Any:
        version = self._current(obj)
        return version.scored_profiles if version is not None else "—"

    def _result(self, job: PredictorVersion) -> str:
        if job.status != JobStatus.DONE:
            return ""
        auc = _figure((job.metrics or {}).get("holdout_auc"))
        return f"v{job.version}: held-out AUC {auc}" + (f"; {job.decision}" if job.decision else "")

    def _report(self, request: HttpRequest, obj: Predictor) -> dict[str, Any]:
        version = (
            PredictorVersion.objects.filter(predictor=obj, is_current=True)
            .defer(*VERSION_HEAVY)
            .first()
        )
        if version is None:
            return {"report": None}
        picker = _picker(obj, version, request.GET.get("threshold"))
        return {"report": _version_report(version, picker["threshold"]), "picker": picker}


class _JobAdmin(admin.ModelAdmin):
    """A run or a version: read-only (written by the services alone), visible to whoever
    may see its definition; the fitted model is never shown."""

    parent = ""

    def _may(self, request: HttpRequest, action: str) -> bool:
        return request.user.has_perm(f"segments.{action}_{self.parent}")

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._may(request, "view") or self._may(request, "change")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="progress")
    def progress(self, obj: Any) -> str:
        text = obj.step or "—"
        return f"{text} ({obj.done}/{obj.total})" if obj.total else text


JOB_FIELDS = [
    "status",
    "progress",
    "error",
    "requested_by",
    "created_at",
    "started_at",
    "finished_at",
    "duration_ms",
]


RUN_FIELDS = (
    "clustering",
    "is_current",
    *JOB_FIELDS,
    "as_of",
    "profiles",
    "k",
    "silhouette",
    "noise_share",
    "stability",
    "outlier_report",
)


@admin.register(ClusteringRun)
class ClusteringRunAdmin(_JobAdmin):
    parent = "clustering"
    list_display = [
        "__str__",
        "clustering",
        "status",
        "k",
        "silhouette",
        "is_current",
        "created_at",
    ]
    list_filter = ["status", "is_current", "clustering"]
    list_select_related = ["clustering"]
    fields = RUN_FIELDS
    readonly_fields = RUN_FIELDS
    change_form_template = "admin/segments/clusteringrun/change_form.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[ClusteringRun]:
        return super().get_queryset(request).defer(*RUN_HEAVY)

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> Any:
        obj = self.get_object(request, object_id) if object_id is not None else None
        extra_context = dict(extra_context or {})
        if obj is not None and obj.status == JobStatus.DONE:
            extra_context["report"] = _run_report(obj)
        return super().changeform_view(request, object_id, form_url, extra_context)


VERSION_FIELDS = (
    "predictor",
    "version",
    "algorithm",
    "is_current",
    "decision",
    *JOB_FIELDS,
    "cutoff",
    "auc",
    "feature_names",
    "categories",
    "scored_at",
    "scored_profiles",
)


@admin.register(PredictorVersion)
class PredictorVersionAdmin(_JobAdmin):
    parent = "predictor"
    list_display = [
        "__str__",
        "predictor",
        "status",
        "auc",
        "is_current",
        "scored_at",
        "created_at",
    ]
    list_filter = ["status", "is_current", "predictor"]
    list_select_related = ["predictor"]
    fields = VERSION_FIELDS
    readonly_fields = VERSION_FIELDS
    change_form_template = "admin/segments/predictorversion/change_form.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[PredictorVersion]:
        return super().get_queryset(request).defer(*VERSION_HEAVY)

    @admin.display(description="held-out AUC")
    def auc(self, obj: PredictorVersion) -> str:
        return _figure((obj.metrics or {}).get("holdout_auc"))

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> Any:
        obj = self.get_object(request, object_id) if object_id is not None else None
        extra_context = dict(extra_context or {})
        if obj is not None and obj.status == JobStatus.DONE:
            threshold = obj.predictor.threshold
            extra_context["report"] = _version_report(obj, threshold)
        return super().changeform_view(request, object_id, form_url, extra_context)
