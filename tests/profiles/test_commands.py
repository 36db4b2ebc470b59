"""Operator commands: create_source, import_events, rebuild_profile_stats."""

from __future__ import annotations

import csv
import json
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from profiles.models import Event, Profile, Source
from profiles.services import SourceKeys
from tests.conftest import post_events

pytestmark = pytest.mark.django_db


def run(*args: Any) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def keyed(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


# --- create_source --------------------------------------------------------------------


def test_create_source_prints_keys_as_json_and_they_work():
    # When the operator creates a source from the command line
    out, _ = run("create_source", "Web shop", "--origin", "https://shop.example")

    # Then it prints the slug and both raw keys as one JSON object
    made = json.loads(out)
    assert {"source", "write_key", "secret_key"} <= set(made)
    source = Source.objects.get(slug=made["source"])
    assert source.allowed_origins == ["https://shop.example"]
    assert made["write_key"].startswith("wk_")
    assert made["secret_key"].startswith("sk_")

    # And the keys work against the API
    write = post_events(
        keyed(made["write_key"]),
        {"type": "page", "anonymous_id": "a1"},
        HTTP_ORIGIN="https://shop.example",
    )
    assert write.status_code == 202, write.content
    read = keyed(made["secret_key"]).get("/api/v1/profiles", {"anonymous_id": "a1"})
    assert read.status_code == 200, read.content


def test_create_source_with_identity_verification():
    out, _ = run("create_source", "Strict", "--require-identity-verification")

    assert Source.objects.get(slug=json.loads(out)["source"]).require_identity_verification


def test_create_source_twice_fails_cleanly():
    run("create_source", "Web shop")

    with pytest.raises(CommandError, match="exists"):
        run("create_source", "Web shop")
    assert Source.objects.filter(slug="web-shop").count() == 1


def test_create_source_refuses_a_bad_origin():
    with pytest.raises(CommandError, match="origin"):
        run("create_source", "Web shop", "--origin", "shop.example")
    assert not Source.objects.exists()


# --- import_events --------------------------------------------------------------------

JSONL_LINES = [
    '{"type": "page", "anonymous_id": "a1", "timestamp": "2024-01-01T10:00:00Z"}',
    '{"type": "track", "event": "add_to_cart", "anonymous_id": "a1", "timestamp": "2024-01-01T10:01:00Z"}',
    "{not json",
    '{"type": "track", "anonymous_id": "a1"}',
    "",
    '{"type": "track", "event": "purchase", "user_id": "u1", "properties": {"revenue": 10}, "timestamp": "2024-01-02T10:00:00Z"}',
]


@pytest.fixture
def jsonl_file(tmp_path: Path) -> Path:
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(JSONL_LINES) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def csv_file(tmp_path: Path) -> Path:
    path = tmp_path / "events.csv"
    rows = [
        ["type", "event", "user_id", "anonymous_id", "timestamp", "properties"],
        ["page", "", "", "c1", "2024-02-01T09:00:00Z", '{"path": "/"}'],
        ["track", "purchase", "u9", "c1", "2024-02-01T09:05:00Z", '{"revenue": 25.5}'],
        ["track", "", "", "c1", "2024-02-01T09:06:00Z", ""],  # no event name
        ["track", "x", "", "c1", "2024-02-01T09:07:00Z", "{broken"],  # bad JSON
        ["track", "add_to_cart", "", "c2", "2024-02-01T09:08:00Z", ""],
    ]
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)
    return path


def test_import_jsonl_stores_good_lines_and_reports_bad_ones(source: SourceKeys, jsonl_file):
    # When the operator imports a JSONL file with two bad lines
    out, err = run("import_events", str(jsonl_file), "--source", source.source.slug)

    # Then the good lines are stored with their own timestamps
    assert Event.objects.count() == 3
    assert sorted(Event.objects.values_list("type", "event")) == [
        ("page", ""),
        ("track", "add_to_cart"),
        ("track", "purchase"),
    ]
    assert Event.objects.get(event="purchase").timestamp.isoformat().startswith("2024-01-02")
    assert Profile.objects.get(identities__value="u1").purchase_count == 1
    # … the bad ones are named by line number on stderr
    assert "line 3" in err
    assert "line 4" in err
    assert "event" in err.split("line 4", 1)[1]
    assert "line 1:" not in err
    # … and the summary counts them
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary == {"accepted": 3, "duplicates": 0, "rejected": 2}


def test_import_jsonl_twice_adds_no_rows(source: SourceKeys, jsonl_file):
    run("import_events", str(jsonl_file), "--source", source.source.slug)
    before = Event.objects.count()
    event_counts = dict(Profile.objects.values_list("pk", "event_count"))

    out, _ = run("import_events", str(jsonl_file), "--source", source.source.slug)

    assert Event.objects.count() == before
    assert dict(Profile.objects.values_list("pk", "event_count")) == event_counts
    assert json.loads(out.strip().splitlines()[-1])["accepted"] == 0


def test_import_csv_stores_good_rows_and_reports_bad_ones(source: SourceKeys, csv_file):
    # When the operator imports a CSV export
    out, err = run("import_events", str(csv_file), "--source", source.source.slug)

    # Then the good rows are stored with parsed properties
    assert Event.objects.count() == 3
    purchase = Event.objects.get(event="purchase")
    assert purchase.properties == {"revenue": 25.5}
    assert purchase.user_id == "u9"
    assert Event.objects.get(type="page").properties == {"path": "/"}
    # … and the bad rows are named by their line in the file (the header is line 1)
    assert "line 4" in err
    assert "line 5" in err
    assert "line 2:" not in err
    assert json.loads(out.strip().splitlines()[-1])["rejected"] == 2


def test_import_csv_twice_adds_no_rows(source: SourceKeys, csv_file):
    run("import_events", str(csv_file), "--source", source.source.slug)
    before = Event.objects.count()

    out, _ = run("import_events", str(csv_file), "--source", source.source.slug)

    assert Event.objects.count() == before
    assert json.loads(out.strip().splitlines()[-1])["accepted"] == 0


def test_import_in_small_batches_reports_the_right_lines(source: SourceKeys, jsonl_file):
    _, err = run(
        "import_events", str(jsonl_file), "--source", source.source.slug, "--batch-size", "1"
    )

    assert Event.objects.count() == 3
    assert "line 3" in err
    assert "line 4" in err


def test_import_unknown_source_fails_cleanly(jsonl_file, db):
    with pytest.raises(CommandError, match="source"):
        run("import_events", str(jsonl_file), "--source", "nope")
    assert not Event.objects.exists()


def test_import_missing_file_fails_cleanly(source: SourceKeys, tmp_path):
    with pytest.raises(CommandError, match="no such file"):
        run("import_events", str(tmp_path / "missing.jsonl"), "--source", source.source.slug)


# --- rebuild_profile_stats ------------------------------------------------------------


def test_rebuild_profile_stats_restores_counts_and_prints_a_summary(source, jsonl_file):
    # Given imported history and computed attributes that were lost
    run("import_events", str(jsonl_file), "--source", source.source.slug)
    live = Profile.objects.filter(merged_into__isnull=True)
    expected = dict(live.values_list("pk", "event_count"))
    live.update(event_count=0, purchase_count=0)

    # When the operator rebuilds them
    out, _ = run("rebuild_profile_stats")

    # Then they are back and the command says how many profiles it did
    assert dict(live.values_list("pk", "event_count")) == expected
    assert Profile.objects.get(identities__value="u1").purchase_count == 1
    assert f"rebuilt {len(expected)} profiles" in out
    assert "RFM" in out


def test_rebuild_profile_stats_on_an_empty_database():
    out, _ = run("rebuild_profile_stats")

    assert "rebuilt 0 profiles" in out
