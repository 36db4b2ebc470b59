"""Run behavioral clusterings now (all active ones, or those named), with progress."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from cdp.management.progress import ProgressBar, active_named
from segments.ml.clustering import ClusteringFailed
from segments.ml.services import clustering_run_execute
from segments.models import Clustering


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


class Command(BaseCommand):
    help = "Fit clusterings, write each profile's cluster and update the cluster segments."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("keys", nargs="*", help="only these clusterings (default: all active)")

    def handle(self, *args: Any, **options: Any) -> None:
        qs = active_named(Clustering.objects.all(), options["keys"], "clustering")
        for clustering in qs:
            with ProgressBar(self.stderr, clustering.key) as bar:
                try:
                    run = clustering_run_execute(
                        clustering=clustering,
                        requested_by="command:cluster_profiles",
                        progress=bar,
                    )
                except ClusteringFailed as exc:
                    raise CommandError(f"{clustering.key}: {exc}") from exc
            stability = run.stability.get("ari_mean")
            self.stdout.write(
                f"{clustering.key}: k={run.k} silhouette={_fmt(run.silhouette)} "
                f"stability ARI={_fmt(stability)} "
                f"over {run.profiles} profiles in {run.duration_ms} ms"
            )
            for x in run.clusters:
                self.stdout.write(f"  {x['segment']}: {x['size']} profiles, {x['label']}")
