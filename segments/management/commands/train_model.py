"""Train a new version of predictive models (all active ones, or those named), then
score every profile with each version that became current."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from cdp.management.progress import ProgressBar, active_named
from segments.ml.predictive import TrainingFailed
from segments.ml.services import predictor_train_execute
from segments.models import Predictor


class Command(BaseCommand):
    help = "Train predictors on history up to their cutoff; promote a version only if not worse."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("keys", nargs="*", help="only these predictors (default: all active)")
        parser.add_argument("--no-score", action="store_true", help="train only; do not score")

    def handle(self, *args: Any, **options: Any) -> None:
        qs = active_named(Predictor.objects.all(), options["keys"], "predictor")
        for predictor in qs:
            with ProgressBar(self.stderr, predictor.key) as bar:
                try:
                    version = predictor_train_execute(
                        predictor=predictor,
                        requested_by="command:train_model",
                        score=not options["no_score"],
                        progress=bar,
                    )
                except TrainingFailed as exc:
                    raise CommandError(f"{predictor.key}: {exc}") from exc
            version.refresh_from_db()
            m = version.metrics
            self.stdout.write(
                f"{predictor.key} v{version.version}: held-out AUC {m['holdout_auc']:.3f}, "
                f"cross-validated {m['cv_auc_mean']:.3f} ± {m['cv_auc_std']:.3f} over "
                f"{m['profiles']} profiles ({m['base_rate']:.1%} positive); {version.decision}"
                + (f"; scored {version.scored_profiles} profiles" if version.scored_at else "")
            )
