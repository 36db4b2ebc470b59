"""The one writer of audit entries (saleor-style plain function). Callers pass ids and
counts, never personal data: the audit log outlives erasure."""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser

from cdp.models import AuditEvent


def actor_of(
    user: AbstractBaseUser | AnonymousUser | None, *, source_slug: str | None = None
) -> str:
    if source_slug:
        return f"key:{source_slug}"
    if user is not None and user.is_authenticated:
        return f"user:{user.get_username()}"
    return "system"


def audit_record(
    *,
    actor: str,
    action: str,
    object_type: str = "",
    object_id: str | int | uuid.UUID = "",
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one audit entry (e.g. action="privacy.erasure.completed")."""
    return AuditEvent.objects.create(
        actor=actor[:200],
        action=action,
        object_type=object_type,
        object_id=str(object_id),
        details=details or {},
    )
