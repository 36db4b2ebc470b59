"""Compliance officer's screens: purposes, consent history per person, the request
queue with deadlines (overdue in red) and one-click processing, export downloads."""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import FileResponse, Http404, HttpRequest
from django.http.response import HttpResponseBase
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from cdp.admin import AuditedAdminMixin
from cdp.audit import actor_of, audit_record
from cdp.errors import ApplicationError
from consent import services
from consent.models import ConsentRecord, DataSubjectRequest, Purpose, RequestStatus, RequestType
from profiles import selectors as profile_selectors


@admin.register(Purpose)
class PurposeAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ["code", "name", "default", "gates", "legal_basis"]


@admin.register(ConsentRecord)
class ConsentRecordAdmin(admin.ModelAdmin):
    list_display = [
        "recorded_at",
        "profile_id",
        "purpose",
        "granted",
        "source",
        "policy_version",
        "expires_at",
    ]
    list_filter = ["purpose", "granted", "source"]
    search_fields = ["policy_version"]
    search_help_text = (
        "A person's consent history: search by user id, anonymous id, email or profile id."
    )
    date_hierarchy = "recorded_at"
    readonly_fields = [
        "profile",
        "purpose",
        "granted",
        "source",
        "policy_version",
        "recorded_at",
        "expires_at",
        "evidence",
    ]

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[ConsentRecord], search_term: str
    ) -> tuple[QuerySet[ConsentRecord], bool]:
        if not search_term.strip():
            return queryset, False
        return queryset.filter(
            profile_id__in=profile_selectors.profile_search(term=search_term)
        ), False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(DataSubjectRequest)
class DataSubjectRequestAdmin(admin.ModelAdmin):
    list_display = [
        "short_id",
        "type",
        "status",
        "subject_kind",
        "received_at",
        "deadline",
        "completed_at",
    ]
    list_filter = ["status", "type"]
    fields = ["type", "subject_kind", "subject_value"]
    readonly_fields = [
        "status",
        "received_at",
        "due_at",
        "created_by",
        "verified_at",
        "verified_by",
        "completed_at",
        "rejected_reason",
        "result",
        "history",
        "export",
    ]
    actions = ["verify_and_process", "reject"]
    ordering = ["status", "due_at"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ["type", "subject_kind", "subject_value"]
        return ["type", "subject_kind", *self.readonly_fields]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj is None:
            return []
        return ["type", "subject_kind", *self.readonly_fields]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # requests are records of what was asked and done

    def save_model(
        self, request: HttpRequest, obj: DataSubjectRequest, form: Any, change: bool
    ) -> None:
        if change:
            return
        made = services.privacy_request_create(
            type=obj.type,
            subject_kind=obj.subject_kind,
            subject_value=obj.subject_value,
            actor=actor_of(request.user),
        )
        obj.pk = made.pk
        obj.refresh_from_db()

    @admin.display(description="Request")
    def short_id(self, obj: DataSubjectRequest) -> str:
        return str(obj.pk)[:8]

    @admin.display(description="Due", ordering="due_at")
    def deadline(self, obj: DataSubjectRequest) -> SafeString:
        open_ = obj.status not in (RequestStatus.COMPLETED, RequestStatus.REJECTED)
        if open_ and obj.due_at < timezone.now():
            return format_html(
                '<b style="color:#ba2121">OVERDUE since {}</b>', obj.due_at.strftime("%Y-%m-%d")
            )
        days = (obj.due_at - timezone.now()).days
        if open_ and days <= 7:
            return format_html(
                '<span style="color:#b35c00">{} ({} days left)</span>',
                obj.due_at.strftime("%Y-%m-%d"),
                days,
            )
        return format_html("{}", obj.due_at.strftime("%Y-%m-%d"))

    @admin.display(description="Export")
    def export(self, obj: DataSubjectRequest) -> SafeString:
        if obj.type != RequestType.ACCESS or services.export_path(request=obj) is None:
            return format_html("{}", "-")
        url = reverse("admin:consent_datasubjectrequest_export", args=[obj.pk])
        return format_html(
            '<a href="{}">Download the JSON bundle</a> (until {})', url, obj.export_expires_at
        )

    def get_urls(self) -> list[URLPattern]:
        extra = [
            path(
                "<uuid:request_id>/export/",
                self.admin_site.admin_view(self.export_view),
                name="consent_datasubjectrequest_export",
            )
        ]
        return extra + super().get_urls()

    def export_view(self, request: HttpRequest, request_id: uuid.UUID) -> HttpResponseBase:
        dsr = DataSubjectRequest.objects.filter(pk=request_id).first()
        if dsr is None or not self.has_view_permission(request, dsr):
            raise Http404
        file = services.export_path(request=dsr)
        if file is None:
            raise Http404("no export")
        audit_record(
            actor=actor_of(request.user),
            action="privacy.export.downloaded",
            object_type="consent.datasubjectrequest",
            object_id=dsr.pk,
        )
        return FileResponse(
            file.open("rb"), as_attachment=True, filename=f"privacy-export-{dsr.pk}.json"
        )

    @admin.action(description="Verify identity and process now")
    def verify_and_process(
        self, request: HttpRequest, queryset: QuerySet[DataSubjectRequest]
    ) -> None:
        for dsr in queryset:
            try:
                services.privacy_request_verify(request=dsr, actor=actor_of(request.user))
            except ApplicationError as exc:
                self.message_user(request, f"{str(dsr.pk)[:8]}: {exc.message}", messages.WARNING)
            else:
                self.message_user(request, f"{str(dsr.pk)[:8]}: verified; processing started")

    @admin.action(description="Reject (identity could not be verified)")
    def reject(self, request: HttpRequest, queryset: QuerySet[DataSubjectRequest]) -> None:
        for dsr in queryset:
            try:
                services.privacy_request_reject(
                    request=dsr,
                    actor=actor_of(request.user),
                    reason="identity could not be verified",
                )
            except ApplicationError as exc:
                self.message_user(request, f"{str(dsr.pk)[:8]}: {exc.message}", messages.WARNING)
