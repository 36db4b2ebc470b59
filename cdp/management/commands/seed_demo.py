"""Load demo data and a local admin user (embedded/demo use; never needed in production).

Project-level: it seeds every app (the demo source, the storefront's shoppers and their
events, segments, rules, experiments, the recommendations catalog and models). Idempotent:
a second run with the same seed stores no new events and creates nothing twice."""

from __future__ import annotations

from typing import Any

import orjson
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from tqdm import tqdm

from experiments.demo import demo_experiments_ensure
from profiles.demo import demo_source_ensure
from recommendations.demo import demo_recommendations_ensure
from rules.demo import demo_rules_ensure
from segments.demo import demo_models_ensure, demo_segments_ensure
from segments.services import segments_recompute_all
from storefront.demo import DEFAULT_SEED, demo_catalog_ensure, demo_shoppers_load


class Command(BaseCommand):
    help = (
        "Create demo data (the demo source, synthetic shoppers and their events, segments, "
        "rules, experiments, models) and an admin/admin superuser."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--shoppers",
            type=int,
            default=2000,
            help="synthetic shoppers (default 2000; streamed, so 1000000 works for benchmarks)",
        )
        parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="same seed, same events")
        parser.add_argument(
            "--days", type=int, default=90, help="days of history, ending now (default 90)"
        )
        parser.add_argument("--no-admin-user", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["shoppers"] < 0 or options["days"] < 1:
            raise CommandError("--shoppers must be 0 or more and --days at least 1")
        users = get_user_model()
        if not options["no_admin_user"] and not users.objects.filter(username="admin").exists():
            users.objects.create_superuser("admin", "admin@example.com", "admin")
            self.stdout.write("created superuser admin / admin (change it before exposing this)")
        source, made = demo_source_ensure()
        if made is not None:
            self.stdout.write(
                "demo source keys (shown once): "
                + orjson.dumps(
                    {
                        "source": source.slug,
                        "write_key": made.write_key,
                        "secret_key": made.secret_key,
                    }
                ).decode()
            )
        now = timezone.now()
        with tqdm(total=options["shoppers"], unit="shopper", file=self.stderr, disable=None) as bar:
            report = demo_shoppers_load(
                now=now,
                shoppers_count=options["shoppers"],
                seed=options["seed"],
                days=options["days"],
                progress=bar.update,
            )
        self.stdout.write(
            f"demo data: {report.shoppers} shoppers ("
            + ", ".join(f"{k} {v}" for k, v in sorted(report.personas.items()))
            + f"), {report.accepted} new events, {report.duplicates} already stored, "
            f"{report.rejected} rejected, in {report.seconds:.1f} s ({report.rate:,.0f} events/s)"
        )
        created, updated = demo_catalog_ensure(now=now)
        self.stdout.write(f"demo catalog: {created} new product(s), {updated} updated")
        demo_segments_ensure()
        for point in segments_recompute_all():
            self.stdout.write(f"segment {point.segment.slug}: {point.size} members")
        for line in demo_models_ensure():
            self.stdout.write(line)
        slots, rules = demo_rules_ensure()
        self.stdout.write(f"demo personalization: {len(slots)} new slots, {len(rules)} new rules")
        experiments = demo_experiments_ensure(now=timezone.now())
        self.stdout.write(f"demo experiments: {len(experiments)} new")
        for line in demo_recommendations_ensure():
            self.stdout.write(line)
