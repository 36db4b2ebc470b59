"""Admin screens: sources (keys shown once), profiles (find by any identity, timeline),
events (read-only) and event schemas (validated on save)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from cdp.admin import AuditedAdminMixin
from cdp.audit import actor_of, audit_record
from cdp.errors import ApplicationError
from profiles import selectors, services
from profiles.ingestion import schemas_invalidate
from profiles.models import Event, EventSchema, Identity, Profile, ProfileMerge, Source
from profiles.stats import engagement_at


def _show_keys(request: HttpRequest, made: services.SourceKeys) -> None:
    messages.warning(
        request,
        format_html(
            "Keys for <b>{}</b> — copy them now, they are not shown again.<br>"
            "Write key (browser): <code>{}</code><br>Secret key (server): <code>{}</code>",
            made.source.name,
            made.write_key,
            made.secret_key,
        ),
    )


class SourceForm(forms.ModelForm):
    class Meta:
        model = Source
        fields = ["name", "slug", "allowed_origins", "require_identity_verification", "is_active"]

    def clean_allowed_origins(self) -> list[str]:
        origins = self.cleaned_data.get("allowed_origins") or []
        if not isinstance(origins, list) or not all(isinstance(o, str) for o in origins):
            raise forms.ValidationError('A JSON list of origins, e.g. ["https://shop.example"].')
        for origin in origins:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise forms.ValidationError(
                    f"{origin!r} is not an origin like https://shop.example"
                )
        return [o.rstrip("/") for o in origins]


@admin.register(Source)
class SourceAdmin(AuditedAdminMixin, admin.ModelAdmin):
    form = SourceForm
    list_display = [
        "name",
        "slug",
        "write_key_prefix",
        "secret_key_prefix",
        "require_identity_verification",
        "is_active",
    ]
    readonly_fields = [
        "write_key_prefix",
        "secret_key_prefix",
        "previous_keys_expire_at",
        "identity_secret",
        "created_at",
    ]
    prepopulated_fields = {"slug": ["name"]}
    actions = ["rotate_keys", "rotate_keys_with_grace"]

    def save_model(self, request: HttpRequest, obj: Source, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            selectors.source_key_cache_clear()
            return
        made = services.source_create(
            name=obj.name,
            slug=obj.slug,
            allowed_origins=obj.allowed_origins,
            require_identity_verification=obj.require_identity_verification,
        )
        obj.pk = made.source.pk
        obj.refresh_from_db()
        _show_keys(request, made)

    @admin.action(description="Rotate keys (old keys stop working)")
    def rotate_keys(self, request: HttpRequest, queryset: QuerySet[Source]) -> None:
        self._rotate(request, queryset, grace_hours=0)

    @admin.action(description="Rotate keys (old keys keep working for 24 hours)")
    def rotate_keys_with_grace(self, request: HttpRequest, queryset: QuerySet[Source]) -> None:
        self._rotate(request, queryset, grace_hours=24)

    def _rotate(
        self, request: HttpRequest, queryset: QuerySet[Source], *, grace_hours: int
    ) -> None:
        for source in queryset:
            try:
                made = services.source_keys_rotate(source=source, grace_seconds=grace_hours * 3600)
            except ApplicationError as exc:
                self.message_user(request, exc.message, messages.ERROR)
                continue
            _show_keys(request, made)
            audit_record(
                actor=actor_of(request.user),
                action="source.keys_rotated",
                object_type="profiles.source",
                object_id=source.pk,
                details={"grace_hours": grace_hours},
            )
        selectors.source_key_cache_clear()


class IdentityInline(admin.TabularInline):
    model = Identity
    extra = 0
    can_delete = False
    fields = ("kind", "value", "source", "created_at")
    readonly_fields = ("kind", "value", "source", "created_at")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class MergeInline(admin.TabularInline):
    model = ProfileMerge
    fk_name = "into"
    extra = 0
    can_delete = False
    fields = ("other_id", "reason", "moved_identities", "other_traits", "merged_at")
    readonly_fields = ("other_id", "reason", "moved_identities", "other_traits", "merged_at")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Profile)
class ProfileAdmin(admin.ModelAdmin):
    list_display = [
        "who",
        "last_seen_at",
        "event_count",
        "session_count",
        "purchase_count",
        "revenue",
        "engagement_now",
        "rfm",
    ]
    list_filter = ["rfm_recency", "rfm_frequency", "rfm_monetary"]
    search_fields = ["id"]
    search_help_text = (
        "Any identity: user id, anonymous id, email (matched by its hash), or profile id."
    )
    ordering = ["-last_seen_at"]
    inlines = [IdentityInline, MergeInline]
    readonly_fields = [
        "id",
        "traits",
        "merged_into",
        "created_at",
        "first_seen_at",
        "last_seen_at",
        "event_count",
        "session_count",
        "page_view_count",
        "purchase_count",
        "revenue",
        "avg_order_value",
        "last_purchase_at",
        "engagement_score",
        "engagement_as_of",
        "engagement_now",
        "rfm_recency",
        "rfm_frequency",
        "rfm_monetary",
        "rfm_computed_at",
        "timeline",
    ]
    fieldsets = [
        (None, {"fields": ["id", "traits", "merged_into", "created_at"]}),
        (
            "Computed attributes",
            {
                "fields": [
                    "first_seen_at",
                    "last_seen_at",
                    "event_count",
                    "session_count",
                    "page_view_count",
                    "purchase_count",
                    "revenue",
                    "avg_order_value",
                    "last_purchase_at",
                    "engagement_now",
                    "engagement_score",
                    "engagement_as_of",
                    "rfm_recency",
                    "rfm_frequency",
                    "rfm_monetary",
                    "rfm_computed_at",
                ]
            },
        ),
        ("Event timeline (latest 50)", {"fields": ["timeline"]}),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Profile]:
        return super().get_queryset(request).prefetch_related("identities")

    @admin.display(description="Profile")
    def who(self, obj: Profile) -> str:
        ids = {i.kind: i.value for i in obj.identities.all()}
        if "user_id" in ids:
            return f"user {ids['user_id']}"
        if "anonymous_id" in ids:
            return f"anonymous {ids['anonymous_id']}"
        return str(obj.pk)

    @admin.display(description="Engagement now")
    def engagement_now(self, obj: Profile) -> str:
        half_life = settings.CDP["ENGAGEMENT_HALF_LIFE_DAYS"]
        score = engagement_at(obj.engagement_score, obj.engagement_as_of, timezone.now(), half_life)
        return f"{score:.2f}"

    @admin.display(description="RFM")
    def rfm(self, obj: Profile) -> str:
        if obj.rfm_recency is None:
            return "-"
        return f"{obj.rfm_recency}{obj.rfm_frequency}{obj.rfm_monetary}"

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Profile], search_term: str
    ) -> tuple[QuerySet[Profile], bool]:
        if not search_term.strip():
            return queryset, False
        return queryset.filter(pk__in=selectors.profile_search(term=search_term)), False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="Timeline")
    def timeline(self, obj: Profile) -> SafeString:
        events = selectors.profile_events_recent(profile=obj)
        if not events:
            return format_html("<p>{}</p>", "No events.")
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
            (
                (
                    e.timestamp.strftime("%Y-%m-%d %H:%M:%S"),
                    e.type,
                    e.event,
                    str(e.properties)[:120],
                    "bot" if e.is_bot else "",
                )
                for e in events
            ),
        )
        return format_html(
            "<table><thead><tr><th>time (UTC)</th><th>type</th><th>event</th><th>properties</th>"
            "<th></th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ["timestamp", "type", "event", "profile", "source", "is_bot"]
    list_filter = ["type", "is_bot", "source"]
    search_fields = ["event", "message_id", "user_id", "anonymous_id"]
    date_hierarchy = "timestamp"
    show_full_result_count = False
    list_select_related = ["source"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class EventSchemaForm(forms.ModelForm):
    class Meta:
        model = EventSchema
        fields = ["event", "schema", "mode", "enabled"]

    def clean_schema(self) -> Any:
        schema = self.cleaned_data.get("schema")
        if not isinstance(schema, dict):
            raise forms.ValidationError("A JSON Schema is a JSON object.")
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
            raise forms.ValidationError(
                f"Not a valid JSON Schema at {where}: {exc.message}"
            ) from exc
        return schema


@admin.register(EventSchema)
class EventSchemaAdmin(admin.ModelAdmin):
    form = EventSchemaForm
    list_display = ["event", "mode", "enabled", "updated_at"]
    list_filter = ["mode", "enabled"]

    def save_model(self, request: HttpRequest, obj: EventSchema, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        schemas_invalidate()
