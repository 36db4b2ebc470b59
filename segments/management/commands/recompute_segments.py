"""Recompute segments now (all active ones, or those named), with progress."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from segments.models import Segment, SegmentSize
from segments.services import recompute_run_execute


class Command(BaseCommand):
    help = "Recompute segment memberships in the database, in dependency order."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slugs", nargs="*", help="only these segments (default: all active)")

    def handle(self, *args: Any, **options: Any) -> None:
        slugs = options["slugs"] or None
        qs = Segment.objects.filter(active=True)
        if slugs:
            unknown = sorted(
                set(slugs) - set(qs.filter(slug__in=slugs).values_list("slug", flat=True))
            )
            if unknown:
                raise CommandError(f"no active segment(s): {', '.join(unknown)}")
            qs = qs.filter(slug__in=slugs)
        with tqdm(total=qs.count(), unit="segment", file=self.stderr, disable=None) as bar:

            def progress(segment: Segment, point: SegmentSize) -> None:
                bar.set_postfix_str(f"{segment.slug}: {point.size} in {point.duration_ms} ms")
                bar.update(1)

            points = recompute_run_execute(
                run_id=None,
                slugs=slugs,
                requested_by="command:recompute_segments",
                progress=progress,
            )
        for point in points:
            self.stdout.write(
                f"{point.segment.slug}: {point.size} members (+{point.added} -{point.removed}) in {point.duration_ms} ms"
            )
