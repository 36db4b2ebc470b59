"""Import historical events from JSONL or CSV through the ingestion service.

Idempotent: an event without message_id gets one derived from its content, so running
the same file twice stores nothing the second time. Rejected lines are reported with
their line number and reasons; valid lines are never lost because of them.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import orjson
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from profiles.ingestion import IngestContext, events_ingest
from profiles.models import Source
from profiles.validation import utcnow

_JSON_COLUMNS = ("properties", "traits", "context")


def _line_count(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))


def _content_id(raw: bytes) -> str:
    return "import-" + hashlib.sha256(raw).hexdigest()[:40]


def _jsonl(fh: TextIO) -> Iterator[tuple[int, Any]]:
    for number, line in enumerate(fh, start=1):
        if not line.strip():
            continue
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            yield number, {"__error__": f"malformed JSON: {exc}"}
            continue
        if isinstance(event, dict) and not event.get("message_id"):
            event["message_id"] = _content_id(line.strip().encode())
        yield number, event


def _csv(fh: TextIO) -> Iterator[tuple[int, Any]]:
    reader = csv.DictReader(fh)
    for number, row in enumerate(reader, start=2):
        event: dict[str, Any] = {k: v for k, v in row.items() if k and v not in (None, "")}
        try:
            for col in _JSON_COLUMNS:
                if col in event:
                    event[col] = orjson.loads(event[col])
        except orjson.JSONDecodeError as exc:
            yield number, {"__error__": f"{col}: malformed JSON: {exc}"}
            continue
        if not event.get("message_id"):
            event["message_id"] = _content_id(orjson.dumps(row, option=orjson.OPT_SORT_KEYS))
        yield number, event


class Command(BaseCommand):
    help = "Import events from a JSONL or CSV file (idempotent, batched, with progress)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path)
        parser.add_argument("--source", required=True, help="slug of the source to attribute to")
        parser.add_argument(
            "--format", choices=["jsonl", "csv"], help="default: from the extension"
        )
        parser.add_argument("--batch-size", type=int, default=500)

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["path"]
        if not path.exists():
            raise CommandError(f"{path}: no such file")
        source = Source.objects.filter(slug=options["source"]).first()
        if source is None:
            raise CommandError(f"--source: no source with slug {options['source']!r}")
        fmt = options["format"] or ("csv" if path.suffix.lower() == ".csv" else "jsonl")
        size = max(1, min(int(options["batch_size"]), 500))
        totals = {"accepted": 0, "duplicates": 0, "rejected": 0}

        def flush(batch: list[tuple[int, Any]]) -> None:
            ctx = IngestContext(
                source_id=source.pk,
                identity_secret=source.identity_secret,
                require_identity_verification=False,
                trusted=True,
                received_at=utcnow(),
            )
            result = events_ingest(ctx=ctx, payloads=[e for _, e in batch])
            totals["accepted"] += result.accepted
            totals["duplicates"] += result.duplicates
            for r in result.rejected:
                totals["rejected"] += 1
                self.stderr.write(
                    f"line {batch[r['index']][0]}: {orjson.dumps(r['errors']).decode()}"
                )

        with path.open(newline="" if fmt == "csv" else None, encoding="utf-8") as fh:
            rows = _csv(fh) if fmt == "csv" else _jsonl(fh)
            batch: list[tuple[int, Any]] = []
            with tqdm(total=_line_count(path), unit="line", file=self.stderr, disable=None) as bar:
                for number, event in rows:
                    if isinstance(event, dict) and "__error__" in event:
                        totals["rejected"] += 1
                        self.stderr.write(f"line {number}: {event['__error__']}")
                        continue
                    batch.append((number, event))
                    if len(batch) >= size:
                        flush(batch)
                        bar.update(number - bar.n)
                        batch = []
                if batch:
                    flush(batch)
                bar.update(max(0, int(bar.total or 0) - bar.n))
        self.stdout.write(orjson.dumps(totals).decode())
