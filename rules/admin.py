"""The marketer's personalization screens: slots with their variants and their rules in
priority order (reorder by editing priorities), rules validated on save, a decision
preview for any profile or context with the reason trail, and per-rule performance."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from cdp.admin import AuditedAdminMixin
from cdp.errors import ValidationFailed
from profiles.selectors import profile_search
from rules import hooks, selectors, services
from rules.models import ContentVariant, Decision, Rule, Slot, Strategy


class VariantForm(forms.ModelForm):
    class Meta:
        model = ContentVariant
        fields = ["key", "title", "body", "image_url", "cta_label", "cta_url", "data", "html"]

    def clean_html(self) -> str:
        return services.html_sanitize(self.cleaned_data.get("html") or "")


class VariantInline(admin.StackedInline):
    model = ContentVariant
    form = VariantForm
    extra = 0


class RuleInlineFormSet(BaseInlineFormSet):
    def get_queryset(self) -> QuerySet[Rule]:
        return super().get_queryset().order_by("-priority", "key")


class RuleInline(admin.TabularInline):
    """The slot's rules in the order they are tried; edit priorities to reorder."""

    model = Rule
    formset = RuleInlineFormSet
    fields = ["name", "priority", "enabled", "variant", "starts_at", "ends_at"]
    readonly_fields = ["name", "variant", "starts_at", "ends_at"]
    extra = 0
    show_change_link = True
    verbose_name_plural = "rules (tried from the highest priority down; edit priorities to reorder)"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class SlotForm(forms.ModelForm):
    class Meta:
        model = Slot
        fields = [
            "key",
            "description",
            "strategy",
            "recommendation",
            "control_percent",
            "default_variant",
        ]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        options = data.get("recommendation")
        if options is None:
            data["recommendation"] = options = {}
        if not isinstance(options, dict):
            self.add_error("recommendation", "must be a JSON object")
        elif data.get("strategy") == Strategy.RECOMMENDATIONS:
            for name, reasons in hooks.strategy_options_problems(
                Strategy.RECOMMENDATIONS, options
            ).items():
                self.add_error("recommendation", f"{name}: must be {reasons[0]}")
        return data


@admin.register(Slot)
class SlotAdmin(AuditedAdminMixin, admin.ModelAdmin):
    form = SlotForm
    list_display = ["key", "strategy", "control_percent", "default_variant", "rule_count"]
    search_fields = ["key", "description"]
    inlines = [VariantInline, RuleInline]
    change_list_template = "admin/rules/slot/change_list.html"

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = ["key", "description", "strategy", "recommendation", "control_percent"]
        return [*fields, "default_variant"] if obj is not None else fields

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "default_variant":
            match = request.resolver_match
            slot_id = str(match.kwargs.get("object_id", "0")) if match else "0"
            kwargs["queryset"] = ContentVariant.objects.filter(slot_id=slot_id)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    @admin.display(description="rules")
    def rule_count(self, obj: Slot) -> int:
        return obj.rules.count()

    def save_model(self, request: HttpRequest, obj: Slot, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        services.config_changed()

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        super().save_formset(request, form, formset, change)
        services.config_changed()

    def delete_model(self, request: HttpRequest, obj: Slot) -> None:
        super().delete_model(request, obj)
        services.config_changed()

    def get_urls(self) -> list[URLPattern]:
        extra = [
            path(
                "preview/", self.admin_site.admin_view(self.preview_view), name="rules_slot_preview"
            ),
        ]
        return extra + super().get_urls()

    def preview_view(self, request: HttpRequest) -> HttpResponse:
        """Pick a profile and/or type a context: every slot's decision with its reasons."""
        term = request.GET.get("profile", "").strip()
        raw_context = request.GET.get("context", "").strip()
        context: dict[str, Any] = {
            **self.admin_site.each_context(request),
            "title": "Decision preview",
            "opts": self.model._meta,
            "term": term,
            "raw_context": raw_context or '{"device": "mobile", "hour": 23}',
        }
        if "run" in request.GET:
            request_context: dict[str, Any] = {}
            error = None
            if raw_context:
                try:
                    request_context = json.loads(raw_context)
                    if not isinstance(request_context, dict):
                        raise ValueError("the context must be a JSON object")
                except ValueError as exc:
                    error = f"Context: {exc}"
            profile_id = None
            if term and not error:
                ids = profile_search(term=term)
                if not ids:
                    error = "No live profile has that identity or id."
                else:
                    profile_id = ids[0]
            if error:
                messages.error(request, error)
            else:
                snap, previews = selectors.decision_preview(
                    profile_id=profile_id, context=request_context
                )
                context.update(profile_id=profile_id, snapshot=snap, previews=previews, ran=True)
        return TemplateResponse(request, "admin/rules/slot/preview.html", context)


class RuleForm(forms.ModelForm):
    class Meta:
        model = Rule
        fields = [
            "name",
            "key",
            "slot",
            "condition",
            "variant",
            "priority",
            "enabled",
            "starts_at",
            "ends_at",
            "frequency_cap_count",
            "frequency_cap_per",
            "scoring",
            "weight",
        ]
        help_texts = {
            "condition": 'JSON, e.g. {"all": [{"segment": "cart-abandoners"}, {"context": "device", "op": "eq", "value": "mobile"}]} — docs/conditions.md.'
        }

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.errors:
            return data
        candidate = Rule(
            pk=self.instance.pk,
            **{k: v for k, v in data.items() if k not in ("slot", "variant")},
            slot=data.get("slot"),
            variant=data.get("variant"),
        )
        try:
            services.rule_check(candidate)
        except ValidationFailed as exc:
            field = next(iter(exc.details or {"condition": None})).split(".")[0].split("[")[0]
            target = field if field in self.fields else None
            self.add_error(target, exc.message)
        return data


def _performance_chart(rows: list[tuple[Any, int, int, int]]) -> SafeString:
    """Daily impressions (bars) with clicks and conversions (lines) as inline SVG."""
    if not rows:
        return format_html("<p>{}</p>", "No decisions logged for this rule in the last 30 days.")
    width, height, pad = 640, 180, 30
    top = max(r[1] for r in rows) or 1
    step = (width - 2 * pad) / max(len(rows), 1)
    span = height - 2 * pad
    bars, clicks, convs, labels = [], [], [], []
    for i, (day, imp, clk, conv) in enumerate(rows):
        x = pad + i * step
        h = span * imp / top
        # numbers are formatted first: format_html escapes its arguments into strings
        bars.append(
            format_html(
                '<rect x="{}" y="{}" width="{}" height="{}" fill="#79aec8">'
                "<title>{}: {} impressions, {} clicks, {} conversions</title></rect>",
                f"{x:.1f}",
                f"{height - pad - h:.1f}",
                f"{max(step - 2, 1):.1f}",
                f"{h:.1f}",
                day.date(),
                imp,
                clk,
                conv,
            )
        )
        cx = x + step / 2
        clicks.append(f"{cx:.1f},{height - pad - span * clk / top:.1f}")
        convs.append(f"{cx:.1f},{height - pad - span * conv / top:.1f}")
        if i in (0, len(rows) - 1):
            labels.append(
                format_html(
                    '<text x="{}" y="{}" font-size="10">{}</text>',
                    f"{x:.1f}",
                    height - 8,
                    day.strftime("%b %d"),
                )
            )
    return format_html(
        '<svg width="{}" height="{}" role="img" aria-label="Rule performance by day">'
        "<title>Impressions (bars), clicks (orange) and conversions (green) per day</title>"
        '<text x="{}" y="14" font-size="11">max {} impressions/day</text>{}'
        '<polyline points="{}" fill="none" stroke="#e67e22" stroke-width="2"/>'
        '<polyline points="{}" fill="none" stroke="#2e7d32" stroke-width="2"/>{}</svg>',
        width,
        height,
        pad,
        top,
        SafeString("".join(bars)),
        " ".join(clicks),
        " ".join(convs),
        SafeString("".join(labels)),
    )


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


@admin.register(Rule)
class RuleAdmin(AuditedAdminMixin, admin.ModelAdmin):
    form = RuleForm
    list_display = ["name", "slot", "priority", "enabled", "variant", "starts_at", "ends_at", "cap"]
    list_display_links = ["name"]
    list_editable = ["priority", "enabled"]
    list_filter = ["slot", "enabled"]
    search_fields = ["name", "key"]
    ordering = ["slot__key", "-priority", "key"]
    prepopulated_fields = {"key": ["name"]}
    readonly_fields = ["performance"]
    change_list_template = "admin/rules/rule/change_list.html"

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = list(RuleForm.Meta.fields)
        return [*fields, "performance"] if obj is not None else fields

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        return {
            "condition": {"all": []},
            "scoring": [],
            **super().get_changeform_initial_data(request),
        }

    @admin.display(description="frequency cap")
    def cap(self, obj: Rule) -> str:
        return (
            f"{obj.frequency_cap_count} per {obj.frequency_cap_per}"
            if obj.frequency_cap_per
            else "—"
        )

    @admin.display(description="Performance (30 days)")
    def performance(self, obj: Rule) -> SafeString:
        perf = selectors.rule_performance(rule_ids=[obj.pk])[0]
        table = format_html(
            "<p>{} impressions, {} clicks (CTR {}), {} conversions ({})</p>",
            perf.impressions,
            perf.clicks,
            _pct(perf.ctr),
            perf.conversions,
            _pct(perf.conversion_rate),
        )
        return format_html(
            "{}{}", table, _performance_chart(selectors.rule_daily_impressions(rule_id=obj.pk))
        )

    def save_model(self, request: HttpRequest, obj: Rule, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        services.config_changed()

    def delete_model(self, request: HttpRequest, obj: Rule) -> None:
        super().delete_model(request, obj)
        services.config_changed()

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Rule]) -> None:
        super().delete_queryset(request, queryset)
        services.config_changed()

    def get_urls(self) -> list[URLPattern]:
        extra = [
            path(
                "performance/",
                self.admin_site.admin_view(self.performance_view),
                name="rules_rule_performance",
            ),
        ]
        return extra + super().get_urls()

    def performance_view(self, request: HttpRequest) -> HttpResponse:
        rows = selectors.rule_performance()
        top = max((r.impressions for r in rows), default=0) or 1
        context = {
            **self.admin_site.each_context(request),
            "title": "Rule performance",
            "opts": self.model._meta,
            "rows": [
                {
                    "perf": r,
                    "ctr": _pct(r.ctr),
                    "cr": _pct(r.conversion_rate),
                    "bar": round(300 * r.impressions / top),
                    "url": reverse("admin:rules_rule_change", args=[r.rule_id]),
                }
                for r in rows
            ],
            "since": timezone.now(),
        }
        return TemplateResponse(request, "admin/rules/rule/performance.html", context)


@admin.register(Decision)
class DecisionAdmin(admin.ModelAdmin):
    """The decision log, read-only."""

    list_display = [
        "decided_at",
        "slot",
        "variant",
        "kind",
        "rule_key",
        "profile_id",
        "clicked_at",
        "converted_at",
    ]
    list_filter = ["kind", "slot"]
    search_fields = ["profile_id", "rule_key", "slot"]
    date_hierarchy = "decided_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
