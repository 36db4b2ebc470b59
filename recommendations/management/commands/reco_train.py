"""Train a new version of every recommendation model, evaluate it on held-out data
against popularity, and serve it only if it beats the active version."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from cdp.management.progress import ProgressBar
from recommendations.evaluation import at_k
from recommendations.services import catalog_sync, train_execute


class Command(BaseCommand):
    help = "Train recommendation models; serve the new version only if it is better."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--catalog-only", action="store_true", help="only update the catalog from events"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["catalog_only"]:
            with ProgressBar(self.stderr, "catalog", unit="event") as bar:
                created, updated = catalog_sync(progress=bar)
            self.stdout.write(f"catalog: {created} item(s) created, {updated} updated")
            return
        with ProgressBar(self.stderr, "recommendations", unit="interaction") as bar:
            try:
                version = train_execute(requested_by="command:reco_train", progress=bar)
            except ValueError as exc:
                raise CommandError(str(exc)) from exc
        d, m = version.data, version.metrics
        self.stdout.write(
            f"v{version.version} ({version.get_outcome_display()}): {d['interactions']} "
            f"interactions, {d['users']} visitors, {d['items']} items in "
            f"{version.duration_ms / 1000:.1f} s; held-out recall@10 personal "
            f"{at_k(m, 'personal'):.3f}, item-item {at_k(m, 'item_item'):.3f}, popularity "
            f"{at_k(m, 'popularity'):.3f} over {m.get('users', 0)} visitors; {version.decision}"
        )
