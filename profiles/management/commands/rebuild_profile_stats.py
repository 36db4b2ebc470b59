"""Recompute every profile's computed attributes from raw events (and RFM scores)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from tqdm import tqdm

from profiles.models import Profile
from profiles.services import profiles_stats_rebuild_all, rfm_scores_compute


class Command(BaseCommand):
    help = "Rebuild computed attributes of all profiles from their events, then RFM scores."

    def handle(self, *args: Any, **options: Any) -> None:
        total = Profile.objects.filter(merged_into__isnull=True).count()
        with tqdm(total=total, unit="profile", file=self.stderr, disable=None) as bar:
            done = profiles_stats_rebuild_all(progress=bar.update)
        scored = rfm_scores_compute()
        self.stdout.write(f"rebuilt {done} profiles; RFM scored {scored} purchasers")
