"""Audit-log admin (read-only for everyone) and the mixin that audits admin changes."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Model, QuerySet
from django.http import HttpRequest

from cdp.audit import actor_of, audit_record
from cdp.models import AuditEvent


class AuditedAdminMixin:
    """Every add, change and delete made in this admin writes an AuditEvent."""

    def _audit(self, request: HttpRequest, obj: Model, verb: str, message: Any = None) -> None:
        meta = obj._meta
        audit_record(
            actor=actor_of(request.user),
            action=f"admin.{meta.app_label}.{meta.model_name}.{verb}",
            object_type=f"{meta.app_label}.{meta.model_name}",
            object_id=str(obj.pk),
            details={"changed": message} if isinstance(message, list) else {},
        )

    def log_addition(self, request: HttpRequest, obj: Model, message: Any) -> Any:
        self._audit(request, obj, "added", message)
        return super().log_addition(request, obj, message)  # type: ignore[misc]

    def log_change(self, request: HttpRequest, obj: Model, message: Any) -> Any:
        self._audit(request, obj, "changed", message)
        return super().log_change(request, obj, message)  # type: ignore[misc]

    def log_deletions(self, request: HttpRequest, queryset: QuerySet[Any]) -> Any:
        for obj in queryset:
            self._audit(request, obj, "deleted")
        return super().log_deletions(request, queryset)  # type: ignore[misc]


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["at", "actor", "action", "object_type", "object_id"]
    list_filter = ["action", "object_type", ("at", admin.DateFieldListFilter)]
    search_fields = ["actor", "action", "object_id"]
    date_hierarchy = "at"
    readonly_fields = ["at", "actor", "action", "object_type", "object_id", "details"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
