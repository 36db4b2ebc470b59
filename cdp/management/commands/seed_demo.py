"""Load demo data and a local admin user (embedded/demo use; never needed in production).

Project-level: it seeds every app (sources, visitors and events, segments, rules,
experiments, recommendations)."""

from __future__ import annotations

from typing import Any

import orjson
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone
from tqdm import tqdm

from experiments.demo import demo_experiments_ensure
from profiles.demo import demo_data_load, demo_source_ensure
from recommendations.demo import demo_recommendations_ensure
from rules.demo import demo_rules_ensure
from segments.demo import demo_models_ensure, demo_segments_ensure
from segments.services import segments_recompute_all


class Command(BaseCommand):
    help = "Create demo data (a demo source, visitors and events) and an admin/admin superuser."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--visitors", type=int, default=300)
        parser.add_argument("--no-admin-user", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
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
        with tqdm(total=options["visitors"], unit="visitor", file=self.stderr, disable=None) as bar:
            accepted = demo_data_load(
                visitors=options["visitors"], now=timezone.now(), progress=bar.update
            )
        self.stdout.write(f"demo data: {accepted} new events")
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
