"""Purposes, the append-only consent history, and data subject (access/erasure) requests."""

from __future__ import annotations

import uuid
from typing import Any

from django.db import models


class Default(models.TextChoices):
    OPT_IN = "opt_in", "Opt-in: not granted until the person grants it"
    OPT_OUT = "opt_out", "Opt-out: granted until the person withdraws it"


class Gate(models.TextChoices):
    TRACKING = "tracking", "Storing events (tracking)"
    PERSONALIZATION = "personalization", "Decisions and recommendations"
    ACTIVATION = "activation", "Marketing activation"
    NONE = "none", "Nothing enforced by the CDP"


class LegalBasis(models.TextChoices):
    CONSENT = "consent", "Consent (GDPR art. 6(1)(a))"
    LEGITIMATE_INTEREST = "legitimate_interest", "Legitimate interest (art. 6(1)(f))"
    CONTRACT = "contract", "Contract (art. 6(1)(b))"
    LEGAL_OBLIGATION = "legal_obligation", "Legal obligation (art. 6(1)(c))"


class Purpose(models.Model):
    code = models.SlugField(max_length=50, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    legal_basis = models.CharField(
        max_length=30, choices=LegalBasis.choices, default=LegalBasis.CONSENT
    )
    default = models.CharField(max_length=10, choices=Default.choices, default=Default.OPT_IN)
    gates = models.CharField(max_length=20, choices=Gate.choices, default=Gate.NONE)

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return self.code


class ConsentSource(models.TextChoices):
    BANNER = "banner", "Cookie banner"
    API = "api", "API"
    ADMIN = "admin", "Admin"
    IMPORT = "import", "Import"
    EVENT = "event", "Carried by an event"


class ConsentRecord(models.Model):
    """One grant or withdrawal: append-only proof. The current state is the newest
    unexpired record per purpose; the purpose's default applies where there is none."""

    profile = models.ForeignKey("profiles.Profile", on_delete=models.CASCADE, related_name="+")
    purpose = models.ForeignKey(Purpose, on_delete=models.PROTECT, related_name="records")
    granted = models.BooleanField()
    source = models.CharField(max_length=20, choices=ConsentSource.choices)
    policy_version = models.CharField(max_length=100)
    recorded_at = models.DateTimeField(db_index=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    # No raw PII: a keyed hash of the IP, the user agent, the API source or admin user.
    evidence = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-recorded_at", "-id"]
        indexes = [
            models.Index(fields=["profile", "purpose", "-recorded_at"], name="consent_current_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.purpose_id}={'granted' if self.granted else 'withdrawn'}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None and not kwargs.get("force_insert"):
            raise ValueError("consent records are append-only")
        super().save(*args, **kwargs)


class RequestType(models.TextChoices):
    ACCESS = "access", "Access (export)"
    ERASURE = "erasure", "Erasure"


class RequestStatus(models.TextChoices):
    RECEIVED = "received", "Received"
    VERIFIED = "verified", "Verified"
    IN_PROGRESS = "in_progress", "In progress"
    COMPLETED = "completed", "Completed"
    REJECTED = "rejected", "Rejected"


class SubjectKind(models.TextChoices):
    USER_ID = "user_id", "User id"
    EMAIL = "email", "Email"
    ANONYMOUS_ID = "anonymous_id", "Anonymous id"
    PHONE = "phone", "Phone"


class DataSubjectRequest(models.Model):
    """An access or erasure request and its workflow. After an erasure completes the
    subject's identifier is scrubbed; only its keyed hash and the counts remain."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    type = models.CharField(max_length=10, choices=RequestType.choices)
    status = models.CharField(
        max_length=20, choices=RequestStatus.choices, default=RequestStatus.RECEIVED, db_index=True
    )
    subject_kind = models.CharField(max_length=20, choices=SubjectKind.choices)
    subject_value = models.CharField(max_length=255, blank=True)
    subject_hash = models.CharField(max_length=64, db_index=True)
    received_at = models.DateTimeField()
    due_at = models.DateTimeField(db_index=True)
    created_by = models.CharField(max_length=200)
    verified_at = models.DateTimeField(null=True, blank=True)
    verified_by = models.CharField(max_length=200, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    rejected_reason = models.TextField(blank=True)
    export_file = models.CharField(max_length=300, blank=True)
    export_expires_at = models.DateTimeField(null=True, blank=True)
    result = models.JSONField(default=dict, blank=True)
    history = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["due_at"]
        verbose_name = "data subject request"

    def __str__(self) -> str:
        return f"{self.get_type_display()} {str(self.id)[:8]}"
