"""Rotate a source's write and secret keys; prints the new ones as JSON (shown only here).

manage.py rotate_source_keys my-shop                  # old keys stop working now
manage.py rotate_source_keys my-shop --grace-hours 24 # old keys keep working 24 h
"""

from __future__ import annotations

from typing import Any

import orjson
from django.core.management.base import BaseCommand, CommandError, CommandParser

from cdp.audit import audit_record
from cdp.errors import ApplicationError
from profiles.models import Source
from profiles.selectors import source_key_cache_clear
from profiles.services import source_keys_rotate


class Command(BaseCommand):
    help = (
        "Replace a source's write and secret keys; with --grace-hours the old ones keep "
        "working for that long, so a storefront can be deployed with the new write key "
        "without losing events. Prints {source, write_key, secret_key, old_keys_valid_until}."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("source", help="the source's slug")
        parser.add_argument(
            "--grace-hours",
            type=float,
            default=0.0,
            help="how long the old keys keep working (default 0: they stop now; at most 720)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        grace = options["grace_hours"]
        if not 0 <= grace <= 720:
            raise CommandError("--grace-hours must be between 0 and 720 (30 days)")
        source = Source.objects.filter(slug=options["source"]).first()
        if source is None:
            raise CommandError(f"no source with slug {options['source']!r}")
        try:
            made = source_keys_rotate(source=source, grace_seconds=int(grace * 3600))
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        audit_record(
            actor="cli",
            action="source.keys_rotated",
            object_type="profiles.source",
            object_id=source.pk,
            details={"grace_hours": grace},
        )
        source_key_cache_clear()
        until = made.source.previous_keys_expire_at
        self.stdout.write(
            orjson.dumps(
                {
                    "source": made.source.slug,
                    "write_key": made.write_key,
                    "secret_key": made.secret_key,
                    "old_keys_valid_until": until.isoformat() if until else None,
                }
            ).decode()
        )
