"""Score every profile with the current version of predictors (all active, or named)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from cdp.management.progress import ProgressBar, active_named
from segments.ml.services import predictor_score
from segments.models import Predictor


class Command(BaseCommand):
    help = "Write each profile's score with the predictors' current versions."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("keys", nargs="*", help="only these predictors (default: all active)")

    def handle(self, *args: Any, **options: Any) -> None:
        qs = active_named(Predictor.objects.all(), options["keys"], "predictor")
        for predictor in qs:
            if not predictor.versions.filter(is_current=True).exists():
                raise CommandError(f"{predictor.key}: no trained version yet (run train_model)")
            with ProgressBar(self.stderr, predictor.key) as bar:
                scored = predictor_score(predictor=predictor, progress=bar)
            self.stdout.write(f"{predictor.key}: scored {scored} profiles")
