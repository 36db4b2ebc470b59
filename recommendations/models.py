"""The item catalog and the trained recommendation models (one row per version, its
top-k neighbour lists stored compactly in one binary artifact)."""

from __future__ import annotations

from django.db import models

from cdp.models import TrackedJob


class Item(models.Model):
    """One product the shop sells, kept current from product events and imports."""

    item_id = models.CharField(max_length=200, unique=True)
    title = models.CharField(max_length=500, blank=True)
    category = models.CharField(max_length=200, blank=True, db_index=True)
    price = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    attributes = models.JSONField(
        default=dict, blank=True, help_text="Anything else: brand, image_url, url, …"
    )
    in_stock = models.BooleanField(default=True)
    # When the newest event (or import) changed these fields: older ones never overwrite.
    seen_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    class Meta:
        ordering = ["item_id"]

    def __str__(self) -> str:
        return self.title or self.item_id


class CatalogSync(models.Model):
    """How far the catalog has read the event log (one row): the last event id done."""

    last_event_id = models.BigIntegerField(default=0)
    synced_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"catalog synced to event {self.last_event_id}"


class VersionStatus(models.TextChoices):
    CANDIDATE = "candidate", "Trained, not evaluated yet"
    ACTIVE = "active", "Active (served)"
    RETIRED = "retired", "Retired (a better version replaced it)"
    REJECTED = "rejected", "Rejected (not better than the active version)"


class ModelVersion(TrackedJob):
    """One training run: every model (item-item, bought together, next item, trending)
    fitted on the same interactions, evaluated offline on a time-based held-out split
    against the popularity baseline, served only if it beats the active version."""

    version = models.PositiveIntegerField(unique=True)
    outcome = models.CharField(
        max_length=10, choices=VersionStatus.choices, default=VersionStatus.CANDIDATE
    )
    decision = models.CharField(max_length=500, blank=True, help_text="Why it is (not) served.")
    params = models.JSONField(default=dict, blank=True)
    # interactions, users, items, baskets, sessions, time range, split time
    data = models.JSONField(default=dict, blank=True)
    # {"k": [1, 5, 10, 20], "models": {"item_item": {"recall": [...], "ndcg": [...],
    #  "hit_rate": [...]}, "popularity": {...}, …}, "users": n}
    metrics = models.JSONField(default=dict, blank=True)
    artifact = models.BinaryField(null=True, blank=True, editable=False)
    artifact_bytes = models.PositiveIntegerField(default=0)
    promoted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-version"]
        verbose_name = "recommendation model version"
        constraints = [
            models.UniqueConstraint(
                fields=["outcome"],
                condition=models.Q(outcome="active"),
                name="one_active_reco_version",
            ),
        ]

    def __str__(self) -> str:
        return f"recommendations v{self.version}"
