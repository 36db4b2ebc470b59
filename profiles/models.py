"""Sources (keys), profiles, identities, events, event schemas and merge history."""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.db import models
from django.db.models import Q


class Source(models.Model):
    """Where events come from: a storefront, a server, an import. Owns the API keys.

    Keys are stored as SHA-256 digests (they are long random tokens, so a fast hash is
    the right one: lookups stay O(1) by index); the raw keys are shown once.
    """

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    write_key_hash = models.CharField(max_length=64, unique=True, editable=False)
    write_key_prefix = models.CharField(max_length=12, editable=False)
    secret_key_hash = models.CharField(max_length=64, unique=True, editable=False)
    secret_key_prefix = models.CharField(max_length=12, editable=False)
    # A rotation with a grace period keeps the previous keys working until this moment
    # (one generation: a second rotation replaces them). db_default: rows written by
    # plain SQL (bulk loads, the benchmarks' generators) get "" too.
    previous_write_key_hash = models.CharField(
        max_length=64, blank=True, default="", db_default="", editable=False, db_index=True
    )
    previous_secret_key_hash = models.CharField(
        max_length=64, blank=True, default="", db_default="", editable=False, db_index=True
    )
    previous_keys_expire_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Used to check `user_hash` = HMAC-SHA256(identity_secret, user_id); must be
    # readable, so it is stored as is and shown only to staff.
    identity_secret = models.CharField(max_length=80, editable=False)
    allowed_origins = models.JSONField(
        default=list,
        blank=True,
        help_text='Browser origins allowed to use the write key, e.g. "https://shop.example". '
        '"*" allows any origin.',
    )
    require_identity_verification = models.BooleanField(
        default=False,
        help_text="Write-key events that claim a user_id must carry user_hash.",
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Profile(models.Model):
    """One person (or one not-yet-identified visitor).

    Computed attributes are columns, not JSON, so segment conditions compile to plain,
    indexable SQL. A profile merged into another stays as a tombstone pointing at it.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    traits = models.JSONField(default=dict, blank=True)
    # trait -> ISO timestamp of the event that set it: newest wins, in any arrival order.
    trait_timestamps = models.JSONField(default=dict, blank=True)
    merged_into = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="merged_profiles"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    # Computed attributes, maintained incrementally at ingestion (bots excluded).
    first_seen_at = models.DateTimeField(null=True, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True, db_index=True)
    event_count = models.PositiveIntegerField(default=0)
    session_count = models.PositiveIntegerField(default=0)
    page_view_count = models.PositiveIntegerField(default=0)
    purchase_count = models.PositiveIntegerField(default=0)
    revenue = models.DecimalField(max_digits=24, decimal_places=4, default=Decimal("0"))
    avg_order_value = models.DecimalField(max_digits=24, decimal_places=4, default=Decimal("0"))
    last_purchase_at = models.DateTimeField(null=True, blank=True)
    # Decayed engagement as of `engagement_as_of`; read it decayed to now.
    engagement_score = models.FloatField(default=0.0)
    engagement_as_of = models.DateTimeField(null=True, blank=True)
    # RFM quintiles (1..5, 5 is best), computed in batch over profiles with purchases.
    rfm_recency = models.PositiveSmallIntegerField(null=True, blank=True)
    rfm_frequency = models.PositiveSmallIntegerField(null=True, blank=True)
    rfm_monetary = models.PositiveSmallIntegerField(null=True, blank=True)
    rfm_computed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["merged_into"],
                name="profile_merged_into_idx",
                condition=Q(merged_into__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return str(self.id)


class IdentityKind(models.TextChoices):
    ANONYMOUS_ID = "anonymous_id", "Anonymous id"
    USER_ID = "user_id", "User id"
    EMAIL = "email", "Email (keyed hash)"
    PHONE = "phone", "Phone (keyed hash)"


class Identity(models.Model):
    """An identifier that points at exactly one live profile.

    Emails are stored as a keyed hash (never the address), so they can be looked up
    but not read back.
    """

    kind = models.CharField(max_length=20, choices=IdentityKind.choices)
    value = models.CharField(max_length=255)
    profile = models.ForeignKey(Profile, on_delete=models.CASCADE, related_name="identities")
    source = models.ForeignKey(Source, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "identities"
        constraints = [
            models.UniqueConstraint(fields=["kind", "value"], name="identity_kind_value_uniq"),
        ]

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


class EventType(models.TextChoices):
    TRACK = "track"
    PAGE = "page"
    SCREEN = "screen"
    IDENTIFY = "identify"
    ALIAS = "alias"
    GROUP = "group"


class Event(models.Model):
    """One accepted behavioral event. Append-only; (source, message_id) is unique."""

    id = models.BigAutoField(primary_key=True)
    # No single-column indexes on the two foreign keys: the unique (source, message_id)
    # and the (profile, timestamp) indexes lead with them, and every index costs ingestion.
    source = models.ForeignKey(Source, on_delete=models.PROTECT, db_index=False)
    message_id = models.CharField(max_length=100)
    profile = models.ForeignKey(
        Profile, on_delete=models.CASCADE, related_name="events", db_index=False
    )
    type = models.CharField(max_length=16, choices=EventType.choices)
    event = models.CharField(max_length=200, blank=True, default="")
    anonymous_id = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    user_id = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    timestamp = models.DateTimeField()
    original_timestamp = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField()
    properties = models.JSONField(default=dict, blank=True)
    traits = models.JSONField(default=dict, blank=True)
    context = models.JSONField(default=dict, blank=True)
    is_bot = models.BooleanField(default=False)
    schema_warnings = models.JSONField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["source", "message_id"], name="event_source_message_uniq"
            ),
        ]
        indexes = [
            models.Index(fields=["profile", "timestamp"], name="event_profile_ts_idx"),
            models.Index(fields=["event", "timestamp"], name="event_name_ts_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.type}:{self.event or '-'}@{self.timestamp:%Y-%m-%d %H:%M}"


class SchemaMode(models.TextChoices):
    STRICT = "strict", "Strict: reject events that do not match"
    WARN = "warn", "Warn: accept and record the problems"


class EventSchema(models.Model):
    """A JSON Schema for the `properties` of one event name."""

    event = models.CharField(max_length=200, unique=True, help_text="The track event name.")
    schema = models.JSONField(help_text="JSON Schema (draft 2020-12) for `properties`.")
    mode = models.CharField(max_length=10, choices=SchemaMode.choices, default=SchemaMode.WARN)
    enabled = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.event


class ErasedIdentity(models.Model):
    """Tombstone of an erased identity: a keyed hash only, so late events from that
    identity are dropped instead of recreating the person. Holds no raw identifier."""

    kind = models.CharField(max_length=20, choices=IdentityKind.choices)
    value_hash = models.CharField(max_length=64)
    erased_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["kind", "value_hash"], name="erased_identity_uniq"),
        ]

    def __str__(self) -> str:
        return f"{self.kind}:{self.value_hash[:12]}…"


class ProfileMerge(models.Model):
    """History of a merge: what the absorbed profile held when it was absorbed."""

    into = models.ForeignKey(Profile, on_delete=models.CASCADE, related_name="merges")
    other_id = models.UUIDField(db_index=True)
    reason = models.CharField(max_length=200)
    other_traits = models.JSONField(default=dict)
    moved_identities = models.JSONField(default=list)
    merged_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-merged_at"]

    def __str__(self) -> str:
        return f"{self.other_id} -> {self.into_id}"
