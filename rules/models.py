"""Slots, their content variants, the rules that pick a variant, and the decision log."""

from __future__ import annotations

import uuid
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, URLValidator
from django.db import models


class Strategy(models.TextChoices):
    FIRST_MATCH = "first_match", "First matching rule by priority"
    SCORE_SORTED = "score_sorted", "Highest score (scoring plans) among matching rules"
    RANDOM = "random", "Random among matching rules (by weight)"
    RECOMMENDATIONS = "recommendations", "Recommendations (when no rule matches)"


class Slot(models.Model):
    """A place on the storefront (e.g. `home_hero`) that shows one variant at a time."""

    key = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    strategy = models.CharField(
        max_length=20, choices=Strategy.choices, default=Strategy.FIRST_MATCH
    )
    control_percent = models.FloatField(
        default=0.0,
        validators=[MinValueValidator(0.0), MaxValueValidator(100.0)],
        help_text="Share of visitors (sticky, by hash) who always get the default: the control group.",
    )
    default_variant = models.ForeignKey(
        "ContentVariant",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Shown when no rule matches (and to the control group).",
    )
    recommendation = models.JSONField(
        default=dict,
        blank=True,
        help_text='Recommendations slots: {"strategy": "personal"|"similar"|"bought_together"|'
        '"next"|"trending", "limit": 4, "diversity": 0.3, "per_category": 2, '
        '"same_category": false} (docs/recommendations.md).',
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key


LINK_HELP = "An http(s) URL, or a path on the shop's own site such as /sale/."
_url_validate = URLValidator(schemes=["http", "https"])


def link_validate(value: str) -> None:
    """A link in content: an absolute http(s) URL, or a site-relative path ("/cart/") —
    the storefront resolves it against its own origin. Protocol-relative "//host" and
    other schemes (javascript:, data:) are refused."""
    if value.startswith("/") and not value.startswith("//") and not value.startswith("/\\"):
        if any(c.isspace() for c in value):
            raise ValidationError("must not contain spaces")
        return
    _url_validate(value)


class ContentVariant(models.Model):
    """One piece of content a slot can show: structured fields, free JSON, optional HTML
    (sanitized when saved)."""

    slot = models.ForeignKey(Slot, on_delete=models.CASCADE, related_name="variants")
    key = models.SlugField(max_length=100)
    title = models.CharField(max_length=300, blank=True)
    body = models.TextField(blank=True)
    image_url = models.CharField(
        max_length=1000, blank=True, validators=[link_validate], help_text=LINK_HELP
    )
    cta_label = models.CharField("call to action", max_length=200, blank=True)
    cta_url = models.CharField(
        "call to action URL",
        max_length=1000,
        blank=True,
        validators=[link_validate],
        help_text=LINK_HELP,
    )
    data = models.JSONField(default=dict, blank=True, help_text="Any JSON the storefront needs.")
    html = models.TextField(blank=True, help_text="Optional HTML; sanitized on save.")

    class Meta:
        ordering = ["slot", "key"]
        constraints = [
            models.UniqueConstraint(fields=["slot", "key"], name="variant_slot_key_uniq")
        ]

    def __str__(self) -> str:
        return f"{self.slot_id}/{self.key}"

    def content(self) -> dict[str, Any]:
        """What `/decide` returns as `content` (the same shape the management API takes)."""
        out: dict[str, Any] = {}
        for name in ("title", "body", "image_url", "html"):
            value = getattr(self, name)
            if value:
                out[name] = value
        if self.cta_label or self.cta_url:
            out["cta"] = {"label": self.cta_label, "url": self.cta_url}
        if self.data:
            out["data"] = self.data
        return out


class CapPeriod(models.TextChoices):
    DAY = "day", "per day"
    WEEK = "week", "per week"
    SESSION = "session", "per session"


class Rule(models.Model):
    """Condition → variant for one slot."""

    key = models.SlugField(max_length=100, unique=True)
    slot = models.ForeignKey(Slot, on_delete=models.CASCADE, related_name="rules")
    name = models.CharField(max_length=200)
    condition = models.JSONField(
        help_text="The shared condition language (docs/conditions.md), with context nodes."
    )
    variant = models.ForeignKey(ContentVariant, on_delete=models.PROTECT, related_name="rules")
    priority = models.IntegerField(default=0, help_text="Higher is tried first.")
    scoring = models.JSONField(
        default=list,
        blank=True,
        help_text='Score-sorted slots: [{"condition": …, "points": 10}, …], summed per visitor.',
    )
    weight = models.FloatField(
        default=1.0, validators=[MinValueValidator(0.0)], help_text="Random slots: relative weight."
    )
    enabled = models.BooleanField(default=True)
    starts_at = models.DateTimeField(null=True, blank=True)
    ends_at = models.DateTimeField(null=True, blank=True)
    frequency_cap_count = models.PositiveIntegerField(null=True, blank=True)
    frequency_cap_per = models.CharField(max_length=10, choices=CapPeriod.choices, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slot", "-priority", "key"]

    def __str__(self) -> str:
        return self.name


class DecisionKind(models.TextChoices):
    RULE = "rule"
    EXPERIMENT = "experiment"
    RECOMMENDATION = "recommendation"
    DEFAULT = "default"


class Decision(models.Model):
    """One answer for one slot: who saw what and why, and what came of it. Written off
    the request path, in batches (rules.decisionlog)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    decided_at = models.DateTimeField(db_index=True)
    source_id = models.BigIntegerField(null=True)
    profile_id = models.UUIDField(null=True, blank=True)
    slot = models.CharField(max_length=100)
    variant = models.CharField(max_length=100, blank=True)
    kind = models.CharField(max_length=20, choices=DecisionKind.choices)
    rule = models.ForeignKey(
        Rule,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="decisions",
        db_constraint=False,
    )
    rule_key = models.CharField(max_length=100, blank=True)
    experiment = models.CharField(max_length=100, blank=True)
    experiment_variant = models.CharField(
        max_length=100, blank=True, help_text="The experiment's variant (arm) that answered."
    )
    holdout = models.CharField(
        max_length=100, blank=True, help_text="The global holdout running when it was decided."
    )
    holdout_variant = models.CharField(
        max_length=100,
        blank=True,
        help_text="The visitor's arm of that holdout ('holdout' or 'personalized').",
    )
    control = models.BooleanField(default=False)
    reason = models.TextField()
    clicked_at = models.DateTimeField(null=True, blank=True)
    converted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-decided_at"]
        indexes = [
            models.Index(fields=["rule", "decided_at"], name="decision_rule_idx"),
            models.Index(fields=["profile_id", "decided_at"], name="decision_profile_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.slot}:{self.variant}@{self.decided_at:%Y-%m-%d %H:%M}"
