"""Segments, their memberships and size history, and per-profile model scores."""

from __future__ import annotations

from django.db import models


class RefreshPolicy(models.TextChoices):
    REALTIME = "realtime", "Real time (on events) and on schedule"
    SCHEDULED = "scheduled", "On schedule only"
    MANUAL = "manual", "Manual recompute only"


class Segment(models.Model):
    slug = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    condition = models.JSONField(help_text="A condition tree (docs/conditions.md).")
    priority = models.IntegerField(default=0, help_text="Higher wins inside an exclusive group.")
    exclusive_group = models.SlugField(
        max_length=100,
        blank=True,
        help_text="A profile matching several segments of one group belongs only to the highest-priority one.",
    )
    active = models.BooleanField(default=True)
    refresh = models.CharField(
        max_length=20, choices=RefreshPolicy.choices, default=RefreshPolicy.REALTIME
    )
    size = models.PositiveIntegerField(default=0, editable=False)
    computed_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-priority", "slug"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    """Derived data, rewritten by every recompute. The foreign keys are not enforced by
    the database (`db_constraint=False`): PostgreSQL checks them with one trigger and one
    row lock on the profile per inserted row, at commit, which was more than half of a
    first recompute over 1M profiles (docs/benchmarks.md). Rows only ever come from a
    query over live profiles; deletes cascade through the ORM (profile erasure and
    merges delete memberships explicitly); a row orphaned by a profile deleted during a
    recompute is removed by the next one."""

    segment = models.ForeignKey(
        Segment, on_delete=models.CASCADE, related_name="memberships", db_constraint=False
    )
    profile = models.ForeignKey(
        "profiles.Profile", on_delete=models.CASCADE, related_name="+", db_constraint=False
    )
    since = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["segment", "profile"], name="membership_uniq"),
        ]
        indexes = [models.Index(fields=["profile"], name="membership_profile_idx")]

    def __str__(self) -> str:
        return f"{self.segment_id}:{self.profile_id}"


class SegmentSize(models.Model):
    """One point of a segment's size history (after every recompute)."""

    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="sizes")
    at = models.DateTimeField(db_index=True)
    size = models.PositiveIntegerField()
    added = models.PositiveIntegerField(default=0)
    removed = models.PositiveIntegerField(default=0)
    duration_ms = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"{self.segment_id}@{self.at:%Y-%m-%d %H:%M}={self.size}"


class ProfileScore(models.Model):
    """A predictive model's score for a profile (written by the ML work; read by `score`)."""

    profile = models.ForeignKey("profiles.Profile", on_delete=models.CASCADE, related_name="+")
    model = models.SlugField(max_length=100)
    score = models.FloatField()
    computed_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["model", "profile"], name="profile_score_uniq")
        ]

    def __str__(self) -> str:
        return f"{self.model}={self.score:.3f}"


class RecomputeRun(models.Model):
    """One batch recompute (scheduled, from the admin, or from the command), with its
    progress: the admin shows it while a worker runs it."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    slugs = models.JSONField(
        null=True, blank=True, help_text="Only these segments (null: all active)."
    )
    requested_by = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    current = models.SlugField(max_length=100, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["status", "created_at"], name="recompute_run_status_idx")]

    def __str__(self) -> str:
        return f"recompute #{self.pk} {self.status} {self.done}/{self.total}"
