"""Import the item catalog from a CSV or JSON Lines file: one item per row/line, with
item_id (or product_id), title (or name), category, price, in_stock; any other column
goes to attributes (brand, image_url, url, …). Bad rows are reported by line and field;
the valid ones are imported."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from tqdm import tqdm

from recommendations.services import ImportError_, ItemFields, catalog_import, item_from_row


class Command(BaseCommand):
    help = "Import items into the recommendations catalog from a CSV or JSON Lines file."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", help="a .csv file (with a header row) or a .jsonl file")
        parser.add_argument(
            "--format", choices=["csv", "jsonl"], help="default: from the file name"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        path = Path(options["path"])
        if not path.is_file():
            raise CommandError(f"{path}: no such file")
        fmt = options["format"] or ("jsonl" if path.suffix in (".jsonl", ".json") else "csv")
        now = timezone.now()
        updates: list[ItemFields] = []
        problems: list[str] = []
        with path.open(encoding="utf-8", newline="") as fh:
            rows = self._rows(fh, fmt, problems)
            for line, row in tqdm(
                rows, desc="reading", unit="item", file=self.stderr, disable=None
            ):
                try:
                    updates.append(item_from_row(row, now))
                except ImportError_ as exc:
                    problems.append(f"line {line}: {exc}")
        created, updated = catalog_import(updates=updates, actor="command:reco_import")
        for p in problems[:50]:
            self.stderr.write(p)
        if len(problems) > 50:
            self.stderr.write(f"… and {len(problems) - 50} more")
        self.stdout.write(
            f"{created} item(s) created, {updated} updated, {len(problems)} row(s) rejected"
        )
        if problems and not updates:
            raise CommandError("no valid row")

    @staticmethod
    def _rows(fh: Any, fmt: str, problems: list[str]) -> Any:
        if fmt == "csv":
            reader = csv.DictReader(fh)
            if not reader.fieldnames or not {"item_id", "product_id"} & set(reader.fieldnames):
                raise CommandError("the header row must name an item_id (or product_id) column")
            for row in reader:
                yield reader.line_num, {k: v for k, v in row.items() if k is not None}
            return
        for n, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                problems.append(f"line {n}: not JSON ({exc.msg})")
                continue
            if not isinstance(row, dict):
                problems.append(f"line {n}: must be a JSON object")
                continue
            yield n, row
