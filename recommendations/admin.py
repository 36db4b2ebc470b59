"""The merchant's catalog (searched, filtered, stock marked by hand in the list) and the
recommendation model versions: "Train now", a version's progress while a worker trains
it, the data and parameters it was trained with, its offline evaluation against the
popularity baseline, every version compared, its neighbour lists explored item by item,
and serving an older version by hand (versions are read-only; the artifact is never
shown)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.http import require_POST

from cdp.admin import AuditedAdminMixin
from cdp.audit import actor_of
from cdp.charts import number
from cdp.models import JobStatus
from recommendations import charts, services
from recommendations.evaluation import at_k
from recommendations.models import Item, ModelVersion, VersionStatus
from recommendations.selectors import models_of, versions_for_chart

ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)
# What the pages never load unless the neighbour explorer needs it: the models.
HEAVY = ("artifact",)
NEIGHBOURS_SHOWN = 10
NEIGHBOUR_MODELS = (
    ("item_item", "Similar items (item-item)", "Items the same visitors viewed, carted or bought."),
    (
        "bought_together",
        "Bought together",
        "Items carted or bought in the same session (a basket).",
    ),
    ("next_item", "Next item", "What visitors went on to look at next, in one session."),
)
# Shown where a version has it (versions trained before it existed do not).
FACTORIZED = (
    "svd",
    "Similar items (factorized)",
    "Items close in the latent space of the visitors × items matrix (PureSVD).",
)
PARAM_HELP = {
    "lookback_days": "days of interactions read",
    "half_life_days": "an interaction counts half after this many days",
    "trending_half_life_days": "the same for trending",
    "weights": "weight of a view, a cart add, a purchase",
    "neighbours": "neighbours kept per item and model",
    "shrink": "discounts pairs seen by few visitors",
    "fbt_min_support": "baskets a pair must share to count as bought together",
    "next_smoothing": "shrinks rarely seen transitions towards 0",
    "session_gap_seconds": "inactivity that ends a session",
    "holdout_fraction": "latest share of interactions held out for evaluation",
    "svd_rank": "rank of the factorized model (0: none)",
    "blend": "weights of the models in the personal blend",
}


def _svg(markup: str) -> SafeString:
    return mark_safe(markup)  # noqa: S308 (every string is escaped in recommendations.charts)


def _when(value: Any) -> str:
    """A stored moment (a datetime or an ISO string) in local time, or '—'."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value or "—"
    if not isinstance(value, datetime):
        return "—"
    if timezone.is_aware(value):
        value = timezone.localtime(value)
    return f"{value:%Y-%m-%d %H:%M}"


def _count(value: Any) -> str:
    v = number(value)
    return "—" if v is None else f"{v:,.0f}"


def _recall_at_10(metrics: Any, model: str) -> float | None:
    """The model's recall@10, or None where it was not measured (at_k says 0.0 then)."""
    if charts.evaluation_of(metrics).value(model) is None:
        return None
    return at_k(metrics, model)


def _progress(job: ModelVersion) -> str:
    step = job.step or "—"
    if job.total:
        return f"{step} ({job.done:,}/{job.total:,})"
    return f"{step} ({job.done:,})" if job.done else step


# --- The catalog ----------------------------------------------------------------------------


@admin.register(Item)
class ItemAdmin(AuditedAdminMixin, admin.ModelAdmin):
    """Kept current from product events and imports; a merchant marks an item out of
    stock in the list (web processes re-read the catalog when it changed)."""

    list_display = ["item_id", "title", "category", "price", "in_stock", "seen_at"]
    list_display_links = ["item_id", "title"]
    list_editable = ["in_stock"]
    list_filter = ["in_stock", "category"]
    search_fields = ["item_id", "title"]
    fields = [
        "item_id",
        "title",
        "category",
        "price",
        "in_stock",
        "attributes",
        "seen_at",
        "created_at",
        "updated_at",
        "recommended_with",
    ]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fixed = ["seen_at", "created_at", "updated_at", "recommended_with"]
        # The models know items by their id: renaming one would orphan it.
        return ["item_id", *fixed] if obj is not None else fixed

    @admin.display(description="Recommended with it")
    def recommended_with(self, obj: Item) -> SafeString | str:
        if obj.pk is None:
            return "—"
        served = ModelVersion.objects.filter(outcome=VersionStatus.ACTIVE).values_list(
            "pk", "version"
        )
        row = served.first()
        if row is None:
            return "No version is served yet."
        url = reverse("admin:recommendations_modelversion_change", args=[row[0]])
        return format_html(
            '<a href="{}?item={}#neighbours">Its neighbours in v{} (served)</a>',
            url,
            obj.item_id,
            row[1],
        )


# --- Model versions -------------------------------------------------------------------------


@dataclass(frozen=True)
class Neighbour:
    rank: int
    item_id: str
    title: str
    category: str
    in_stock: bool | None  # None: not in the catalog
    score: float
    url: str


@dataclass(frozen=True)
class NeighbourList:
    model: str
    label: str
    help: str
    rows: list[Neighbour]


def _explore(version: ModelVersion, term: str) -> dict[str, Any]:
    """The explorer: an item's best neighbours in each model of this version, with
    their titles from the catalog."""
    out: dict[str, Any] = {"term": term, "lists": [], "error": "", "item": None}
    if not term:
        return out
    models = models_of(version) if version.status == JobStatus.DONE else None
    if models is None:
        out["error"] = f"v{version.version} has no trained models to explore."
        return out
    code = models.index.get(term)
    if code is None:
        known = Item.objects.filter(item_id=term).exists()
        out["error"] = (
            f"{term} is in the catalog but not in v{version.version}'s models: nobody "
            "interacted with it in its training window."
            if known
            else f"No item {term} in v{version.version}'s models or in the catalog."
        )
        return out
    found: list[tuple[str, str, str, list[tuple[str, float]]]] = []
    wanted = {term}
    shown = [*NEIGHBOUR_MODELS]
    if getattr(models, "svd", None) is not None:
        shown.insert(1, FACTORIZED)
    for name, label, help_text in shown:
        idx, scores = models.model(name).row(code)
        pairs = [
            (models.item_ids[int(j)], float(s))
            for j, s in zip(
                idx[:NEIGHBOURS_SHOWN].tolist(), scores[:NEIGHBOURS_SHOWN].tolist(), strict=True
            )
        ]
        wanted.update(item for item, _ in pairs)
        found.append((name, label, help_text, pairs))
    catalog = {i.item_id: i for i in Item.objects.filter(item_id__in=wanted)}

    def neighbour(rank: int, item_id: str, score: float) -> Neighbour:
        item = catalog.get(item_id)
        return Neighbour(
            rank,
            item_id,
            item.title if item else "",
            item.category if item else "",
            item.in_stock if item else None,
            score,
            reverse("admin:recommendations_item_change", args=[item.pk]) if item else "",
        )

    out["item"] = catalog.get(term)
    out["lists"] = [
        NeighbourList(
            name, label, help_text, [neighbour(r, i, s) for r, (i, s) in enumerate(pairs, 1)]
        )
        for name, label, help_text, pairs in found
    ]
    return out


def _data_rows(version: ModelVersion) -> list[tuple[str, str, str]]:
    """(what, figure, what it means) of the data a version was trained on."""
    d = version.data if isinstance(version.data, dict) else {}
    if not d:
        return []
    evaluation = charts.evaluation_of(version.metrics)
    neighbours: dict[str, Any] = d["neighbours"] if isinstance(d.get("neighbours"), dict) else {}
    timings: dict[str, Any] = d["timings"] if isinstance(d.get("timings"), dict) else {}
    return [
        (
            "Interactions",
            f"{_count(d.get('interactions'))}: {_count(d.get('views'))} views, "
            f"{_count(d.get('cart_adds'))} cart adds, {_count(d.get('purchases'))} purchases",
            "product events with an item id, from visitors who are not bots",
        ),
        ("Visitors", _count(d.get("users")), "profiles with at least one interaction"),
        ("Items", _count(d.get("items")), "items with at least one interaction"),
        ("Baskets", _count(d.get("baskets")), "items one visitor carted or bought in a session"),
        ("Sessions", _count(d.get("sessions")), "visits, split by inactivity"),
        ("Period", f"{_when(d.get('from'))} – {_when(d.get('to'))}", "first and last interaction"),
        (
            "Split at",
            _when(d.get("split_at")),
            "fitted on what came before, evaluated on what came after",
        ),
        (
            "Training / held-out interactions",
            f"{_count(d.get('train_interactions'))} / {_count(d.get('test_interactions'))}",
            "",
        ),
        (
            "Visitors evaluated",
            _count(evaluation.users),
            "active on both sides of the split, with new items after it",
        ),
        (
            "Neighbour pairs",
            ", ".join(
                f"{charts.model_label(name)} {_count(count)}" for name, count in neighbours.items()
            )
            or "—",
            "kept in the served models, fitted again on every interaction",
        ),
        (
            "Timings",
            ", ".join(
                f"{name.removesuffix('_s').replace('_', ' ')} {n:g} s"
                for name, v in timings.items()
                if (n := number(v)) is not None
            )
            or "—",
            "reading, fitting on the split, evaluating, fitting on everything",
        ),
    ]


def _param_rows(version: ModelVersion) -> list[tuple[str, str, str]]:
    params = version.params if isinstance(version.params, dict) else {}
    order = [*PARAM_HELP, *sorted(p for p in params if p not in PARAM_HELP)]

    def shown(value: Any) -> str:
        if isinstance(value, dict | list):
            return json.dumps(value)
        return f"{value:g}" if isinstance(value, float) else str(value)

    return [
        (name, shown(params[name]), PARAM_HELP.get(name, "")) for name in order if name in params
    ]


def _points(versions: list[ModelVersion]) -> list[charts.VersionPoint]:
    return [
        charts.VersionPoint(
            version=v.version,
            personal=_recall_at_10(v.metrics, "personal"),
            popularity=_recall_at_10(v.metrics, "popularity"),
            item_item=_recall_at_10(v.metrics, "item_item"),
            outcome=v.outcome,
            decision=v.decision,
        )
        for v in versions
    ]


def _figures(version: ModelVersion, previous: ModelVersion | None) -> dict[str, str] | None:
    """The headline figures (None when the version was not evaluated)."""
    metrics = version.metrics if isinstance(version.metrics, dict) else {}
    evaluation = charts.evaluation_of(metrics)
    if not evaluation.measured:
        return None
    mine = evaluation.value("personal")
    pop = evaluation.value("popularity")
    theirs = _recall_at_10(previous.metrics, "personal") if previous is not None else None
    return {
        "personal": charts.format_measure(mine),
        "popularity": charts.format_measure(pop),
        "lift": charts.format_points(mine - pop if mine is not None and pop is not None else None),
        "beats": "yes" if mine is not None and pop is not None and mine > pop else "no",
        "item_item": charts.format_measure(evaluation.value("item_item")),
        "ndcg": charts.format_measure(evaluation.value("personal", "ndcg"), "ndcg"),
        "hit_rate": charts.format_measure(evaluation.value("personal", "hit_rate")),
        "users": _count(evaluation.users),
        "item_model": charts.model_label(str(metrics.get("item_model") or "item_item")),
        "previous": f"v{previous.version}" if previous is not None else "",
        "previous_personal": charts.format_measure(theirs),
    }


def _report(version: ModelVersion, term: str) -> dict[str, Any]:
    """What a version's page shows above its fields."""
    versions = versions_for_chart()
    previous = (
        ModelVersion.objects.filter(status=JobStatus.DONE, version__lt=version.version)
        .defer(*HEAVY)
        .order_by("-version")
        .first()
    )
    return {
        "version": version,
        "working": version.status in ACTIVE,
        "progress": _progress(version),
        "figures": _figures(version, previous),
        "not_evaluated": charts.not_evaluated(charts.evaluation_of(version.metrics)),
        "recall_svg": _svg(charts.at_k_chart(metrics=version.metrics, measure="recall")),
        "ndcg_svg": _svg(charts.at_k_chart(metrics=version.metrics, measure="ndcg")),
        "versions_svg": _svg(
            charts.versions_chart(points=_points(versions), current=version.version)
        ),
        "data_rows": _data_rows(version),
        "param_rows": _param_rows(version),
        "explorer": _explore(version, term),
    }


VERSION_FIELDS = (
    "version",
    "outcome_shown",
    "decision",
    "status",
    "progress",
    "error",
    "requested_by",
    "created_at",
    "started_at",
    "finished_at",
    "duration",
    "artifact_size",
    "promoted_at",
)


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    """One training run per row, written by the services alone: read-only here, with
    "Train now" on the list and "Serve this version" on a finished version's page."""

    list_display = [
        "__str__",
        "status_progress",
        "outcome_shown",
        "recall_personal",
        "recall_popularity",
        "duration",
        "artifact_size",
        "promoted_at",
        "decision",
    ]
    list_filter = ["outcome", "status"]
    fields = VERSION_FIELDS
    readonly_fields = VERSION_FIELDS
    change_list_template = "admin/recommendations/modelversion/change_list.html"
    change_form_template = "admin/recommendations/modelversion/change_form.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet[ModelVersion]:
        return super().get_queryset(request).defer(*HEAVY)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def _may_operate(self, request: HttpRequest) -> bool:
        """Training and serving need the model's change permission (its fields stay
        read-only all the same)."""
        opts = self.model._meta
        return request.user.has_perm(f"{opts.app_label}.{get_permission_codename('change', opts)}")

    # --- columns and fields

    @admin.display(description="status")
    def status_progress(self, obj: ModelVersion) -> str:
        label = JobStatus(obj.status).label
        if obj.status in ACTIVE:
            return f"{label}: {_progress(obj)}"
        if obj.status == JobStatus.FAILED and obj.error:
            return f"{label}: {obj.error[:120]}"
        return label

    @admin.display(description="progress")
    def progress(self, obj: ModelVersion) -> str:
        return _progress(obj)

    @admin.display(description="outcome", ordering="outcome")
    def outcome_shown(self, obj: ModelVersion) -> str:
        return obj.get_outcome_display() if obj.status == JobStatus.DONE else "—"

    @admin.display(description="recall@10 personal")
    def recall_personal(self, obj: ModelVersion) -> str:
        return charts.format_measure(_recall_at_10(obj.metrics, "personal"))

    @admin.display(description="recall@10 popularity")
    def recall_popularity(self, obj: ModelVersion) -> str:
        return charts.format_measure(_recall_at_10(obj.metrics, "popularity"))

    @admin.display(description="duration", ordering="duration_ms")
    def duration(self, obj: ModelVersion) -> str:
        return charts.format_ms(obj.duration_ms)

    @admin.display(description="artifact size", ordering="artifact_bytes")
    def artifact_size(self, obj: ModelVersion) -> str:
        return charts.format_bytes(obj.artifact_bytes)

    # --- pages

    def get_urls(self) -> list[URLPattern]:
        extra = [
            path(
                "train/",
                self.admin_site.admin_view(require_POST(self.train_view)),
                name="recommendations_modelversion_train",
            ),
            path(
                "<int:object_id>/serve/",
                self.admin_site.admin_view(require_POST(self.serve_view)),
                name="recommendations_modelversion_serve",
            ),
        ]
        return extra + super().get_urls()

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        working = list(
            ModelVersion.objects.filter(status__in=ACTIVE).defer(*HEAVY).order_by("version")
        )
        extra_context = {
            **(extra_context or {}),
            "title": "Recommendation model versions",
            "train_url": (
                reverse("admin:recommendations_modelversion_train")
                if self._may_operate(request)
                else None
            ),
            "working": [
                {
                    "job": v,
                    "progress": _progress(v),
                    "url": reverse("admin:recommendations_modelversion_change", args=[v.pk]),
                }
                for v in working
            ],
            "versions_svg": _svg(charts.versions_chart(points=_points(versions_for_chart()))),
        }
        return super().changelist_view(request, extra_context)

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
            servable = (
                obj.status == JobStatus.DONE
                and obj.artifact_bytes > 0
                and obj.outcome != VersionStatus.ACTIVE
            )
            extra_context.update(
                report=_report(obj, request.GET.get("item", "").strip()[:200]),
                serve_url=(
                    reverse("admin:recommendations_modelversion_serve", args=[obj.pk])
                    if servable and self._may_operate(request)
                    else None
                ),
            )
        return super().changeform_view(request, object_id, form_url, extra_context)

    def train_view(self, request: HttpRequest) -> HttpResponse:
        """Queue a training run; without a broker it runs at once, inline."""
        if not self._may_operate(request):
            raise PermissionDenied
        back = HttpResponseRedirect(reverse("admin:recommendations_modelversion_changelist"))
        try:
            version = services.train_request(actor=actor_of(request.user))
        except Exception as exc:
            # Run inline (no broker), a failed fit raises here; its row records it too.
            self.message_user(request, f"Training failed: {exc}", messages.ERROR)
            return back
        version.refresh_from_db()
        if version.status == JobStatus.DONE:
            self.message_user(
                request,
                f"Training of v{version.version} finished: {version.get_outcome_display()}"
                + (f" ({version.decision})." if version.decision else "."),
            )
        elif version.status == JobStatus.FAILED:
            self.message_user(
                request, f"Training of v{version.version} failed: {version.error}", messages.ERROR
            )
        else:
            self.message_user(
                request,
                f"Training of v{version.version} queued on a worker: its progress shows here.",
            )
        return back

    def serve_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        """Serve this finished version whatever its figures (a rollback by hand)."""
        if not self._may_operate(request):
            raise PermissionDenied
        version = get_object_or_404(ModelVersion, pk=object_id)
        back = HttpResponseRedirect(
            reverse("admin:recommendations_modelversion_change", args=[version.pk])
        )
        if version.outcome == VersionStatus.ACTIVE:
            self.message_user(request, f"v{version.version} is already served.", messages.INFO)
            return back
        before = (
            ModelVersion.objects.filter(outcome=VersionStatus.ACTIVE)
            .values_list("version", flat=True)
            .first()
        )
        try:
            services.version_activate(version=version, actor=actor_of(request.user))
        except ValueError as exc:
            self.message_user(
                request, f"v{version.version} cannot be served: {exc}.", messages.ERROR
            )
            return back
        retired = f"; v{before} is retired" if before is not None else ""
        self.message_user(
            request,
            f"Recommendations are served from v{version.version} now{retired}. Web processes "
            "switch to it on their next request.",
            messages.SUCCESS,
        )
        return back
