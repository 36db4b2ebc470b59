"""Experiments on slots (or plain flags): variants, goals, sticky exposures, and the
computed results."""

from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models


class Status(models.TextChoices):
    DRAFT = "draft"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


class Experiment(models.Model):
    key = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    hypothesis = models.TextField(blank=True)
    slot = models.ForeignKey(
        "rules.Slot",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="experiments",
        help_text="The slot it runs on (its variants' content replaces the rules' answer).",
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    audience = models.JSONField(
        null=True, blank=True, help_text="Who may enter: a condition (docs/conditions.md)."
    )
    traffic = models.FloatField(
        default=1.0,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Share of the audience that enters (0..1).",
    )
    seed = models.CharField(max_length=100, blank=True, help_text="Hash seed (default: the key).")
    namespace = models.SlugField(max_length=100, blank=True)
    namespace_start = models.FloatField(default=0.0)
    namespace_end = models.FloatField(default=1.0)
    factors = models.JSONField(
        default=list,
        blank=True,
        help_text='Multivariate: [{"name": "color", "levels": ["red", "blue"]}, …] — variants are the combinations.',
    )
    holdout = models.BooleanField(
        default=False,
        help_text="The global personalization holdout: its 'holdout' variant's share of "
        "visitors only ever get slot defaults (no rules, no experiments), so the uplift of "
        "personalization as a whole can be measured against 'personalized'.",
    )
    confidence = models.FloatField(
        default=0.95,
        validators=[MinValueValidator(0.5), MaxValueValidator(0.999)],
        help_text="Confidence level of the intervals and tests (0.95: 5% false positives).",
    )
    minimum_detectable_effect = models.FloatField(
        default=0.05,
        validators=[MinValueValidator(0.001), MaxValueValidator(10.0)],
        help_text="Smallest relative lift worth detecting (0.05 = 5%): sets the sample size "
        "the results page asks for and the scale of the sequential test.",
    )
    started_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name

    @property
    def hash_seed(self) -> str:
        return self.seed or self.key


class Variant(models.Model):
    """Index 0 is the control."""

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="variants")
    index = models.PositiveSmallIntegerField()
    key = models.SlugField(max_length=100)
    weight = models.FloatField(validators=[MinValueValidator(0.0), MaxValueValidator(1.0)])
    content = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["experiment_id", "index"]
        constraints = [
            models.UniqueConstraint(fields=["experiment", "index"], name="variant_index_uniq"),
            models.UniqueConstraint(fields=["experiment", "key"], name="variant_key_uniq"),
        ]

    def __str__(self) -> str:
        return f"{self.experiment_id}/{self.key}"


class GoalKind(models.TextChoices):
    CONVERSION = "conversion"
    REVENUE = "revenue"


class Goal(models.Model):
    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="goals")
    event = models.CharField(max_length=200)
    kind = models.CharField(max_length=20, choices=GoalKind.choices, default=GoalKind.CONVERSION)
    property = models.CharField(
        max_length=200, blank=True, help_text="Revenue: the numeric property."
    )
    where = models.JSONField(default=list, blank=True, help_text='[{"property", "op", "value"}]')
    window_seconds = models.PositiveIntegerField(default=7 * 86400)
    primary = models.BooleanField(default=False)

    class Meta:
        ordering = ["experiment_id", "-primary", "pk"]

    def __str__(self) -> str:
        return f"{self.kind}:{self.event}"


class Exposure(models.Model):
    """The first time a profile saw a variant: sticky afterwards, logged once."""

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="exposures")
    profile_id = models.UUIDField()
    variant = models.SlugField(max_length=100)
    exposed_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["experiment", "profile_id"], name="exposure_uniq")
        ]
        indexes = [models.Index(fields=["profile_id"], name="exposure_profile_idx")]

    def __str__(self) -> str:
        return f"{self.experiment_id}:{self.profile_id}={self.variant}"


class ResultSnapshot(models.Model):
    """Results as computed at one time (the page shows the newest; the series is the
    cumulative chart)."""

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="results")
    computed_at = models.DateTimeField(db_index=True)
    payload = models.JSONField()
    duration_ms = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-computed_at"]

    def __str__(self) -> str:
        return f"{self.experiment_id}@{self.computed_at:%Y-%m-%d %H:%M}"


class DaySums(models.Model):
    """One goal's sums for the units first exposed on one day to one variant, kept once
    every unit of that day is past the goal window (a refresh then reads them instead
    of the events). `n` is checked against the exposures at each refresh: a day whose
    exposures changed (a merge, an erasure) is computed again. Aggregates only."""

    goal = models.ForeignKey(Goal, on_delete=models.CASCADE, related_name="day_sums")
    variant = models.SlugField(max_length=100)
    day = models.DateField()
    n = models.PositiveIntegerField()
    converters = models.PositiveIntegerField()
    y = models.FloatField()
    y2 = models.FloatField()
    x = models.FloatField()
    x2 = models.FloatField()
    xy = models.FloatField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["goal", "variant", "day"], name="daysums_uniq")
        ]

    def __str__(self) -> str:
        return f"{self.goal_id}/{self.variant}@{self.day}"
