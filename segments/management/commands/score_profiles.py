"""Score every profile with the current version of predictors (all active, or named)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from segments.management.progress import ProgressBar
from segments.ml.services import predictor_score
from segments.models import Predictor


class Command(BaseCommand):
    help = "Write each profile's score with the predictors' current versions."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("keys", nargs="*", help="only these predictors (default: all active)")

    def handle(self, *args: Any, **options: Any) -> None:
        qs = Predictor.objects.filter(active=True)
        keys = options["keys"]
        if keys:
            unknown = sorted(set(keys) - set(qs.filter(key__in=keys).values_list("key", flat=True)))
            if unknown:
                raise CommandError(f"no active predictor(s): {', '.join(unknown)}")
            qs = qs.filter(key__in=keys)
        for predictor in qs:
            if not predictor.versions.filter(is_current=True).exists():
                raise CommandError(f"{predictor.key}: no trained version yet (run train_model)")
            with ProgressBar(self.stderr, predictor.key) as bar:
                scored = predictor_score(predictor=predictor, progress=bar)
            self.stdout.write(f"{predictor.key}: scored {scored} profiles")
