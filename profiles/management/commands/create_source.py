"""Create a source and print its keys as JSON (the raw keys are shown only here)."""

from __future__ import annotations

from typing import Any

import orjson
from django.core.management.base import BaseCommand, CommandError, CommandParser

from cdp.errors import ApplicationError
from profiles.services import source_create


class Command(BaseCommand):
    help = "Create a source; prints {source, write_key, secret_key, identity_secret} as JSON."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--slug")
        parser.add_argument("--origin", action="append", default=[], help="allowed browser origin")
        parser.add_argument("--require-identity-verification", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            made = source_create(
                name=options["name"],
                slug=options["slug"],
                allowed_origins=options["origin"],
                require_identity_verification=options["require_identity_verification"],
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(
            orjson.dumps(
                {
                    "source": made.source.slug,
                    "write_key": made.write_key,
                    "secret_key": made.secret_key,
                    "identity_secret": made.source.identity_secret,
                }
            ).decode()
        )
