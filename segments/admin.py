"""Marketer's screens: conditions validated on save (naming the bad node), a preview of
what a condition matches now, "why is this profile (not) in this segment", the size
history chart, and recompute on demand."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from cdp.admin import AuditedAdminMixin
from cdp.audit import actor_of
from cdp.errors import ValidationFailed
from profiles.selectors import profile_search
from segments import services
from segments.compiler import matching_ids
from segments.conditions import explain
from segments.models import Segment, SegmentSize
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
