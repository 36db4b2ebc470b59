"""Experiment results benchmark: 1M exposures and their events on PostgreSQL (never part
of the tests).

    python benchmarks/run.py experiments [--exposures 1000000] [--events 10000000] [--reuse]

Generates, inside PostgreSQL, one profile per exposure, a three-variant experiment on a
slot with three goals (purchase conversion, purchase revenue, add_to_cart of shoes), the
exposures spread over 14 days, and events over the same period (page views, product
views, add-to-cart, purchases, some by bots), a share of them before each exposure
(CUPED's covariate). Then times `results_refresh` (the whole computation the Celery task
runs: the grouped query, every statistic for every goal, the snapshot write) several
times, and reports the median, the spread and the process's peak RSS.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.segments_bench import psql

ROOT = Path(__file__).resolve().parent.parent
DB = "cdp_bench_exp"


def _recreate() -> None:
    for sql in (f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)', f'CREATE DATABASE "{DB}"'):
        psql("postgres", sql)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, check=True)


def generate(exposures: int, events: int) -> dict[str, float]:
    timings: dict[str, float] = {}
    t = time.monotonic()
    psql(
        DB,
        f"""
        CREATE UNLOGGED TABLE bench_idx AS
        SELECT i, gen_random_uuid() AS id FROM generate_series(1, {exposures}) i;
        CREATE INDEX ON bench_idx (i);
        INSERT INTO profiles_profile (id, traits, trait_timestamps, created_at, updated_at,
            event_count, session_count, page_view_count, purchase_count, revenue,
            avg_order_value, engagement_score)
        SELECT id, '{{}}', '{{}}', now(), now(), 0, 0, 0, 0, 0, 0, 0 FROM bench_idx;
        INSERT INTO profiles_source (name, slug, write_key_hash, write_key_prefix, secret_key_hash,
            secret_key_prefix, identity_secret, allowed_origins, require_identity_verification,
            is_active, created_at)
        VALUES ('gen', 'gen', 'w', 'w', 's', 's', 'i', '[]', false, true, now());
        """,
    )
    timings["profiles_s"] = time.monotonic() - t
    t = time.monotonic()
    psql(
        DB,
        "DROP INDEX IF EXISTS event_profile_ts_idx; DROP INDEX IF EXISTS event_name_ts_idx; "
        "ALTER TABLE profiles_event DROP CONSTRAINT IF EXISTS event_source_message_uniq;",
    )
    # Events over the last 16 days (k, a hash of g, picks the kind, so every profile has
    # a mix: 40% page views, 40% product views, 10% add-to-cart, 10% purchases); exposure
    # i happens (i % 20160) minutes into the 14 days before now.
    psql(
        DB,
        f"""
        INSERT INTO profiles_event (source_id, message_id, profile_id, type, event, timestamp,
                                    received_at, properties, traits, context, is_bot)
        SELECT (SELECT id FROM profiles_source WHERE slug='gen'), 'g' || g, b.id,
               CASE WHEN k < 8 THEN 'page' ELSE 'track' END,
               CASE WHEN k < 8 THEN 'Home' WHEN k < 16 THEN 'product_viewed'
                    WHEN k < 18 THEN 'add_to_cart' ELSE 'purchase' END,
               now() - ((g * 31) % 23040) * interval '1 minute', now(),
               CASE WHEN k >= 18 THEN jsonb_build_object('revenue', 20 + g % 300)
                    ELSE jsonb_build_object('category', (ARRAY['shoes','bags','jackets'])[1 + g % 3]) END,
               '{{}}', '{{}}', g % 97 = 0
        FROM (SELECT g, ((g * 2654435761) % 1000003) % 20 AS k FROM generate_series(1::bigint, {events}) g) s
        JOIN bench_idx b ON b.i = 1 + (g * 7919) % {exposures};
        """,
    )
    timings["events_s"] = time.monotonic() - t
    t = time.monotonic()
    psql(
        DB,
        "CREATE INDEX event_profile_ts_idx ON profiles_event (profile_id, timestamp); "
        "CREATE INDEX event_name_ts_idx ON profiles_event (event, timestamp); "
        "ALTER TABLE profiles_event ADD CONSTRAINT event_source_message_uniq UNIQUE (source_id, message_id)",
    )
    timings["indexes_s"] = time.monotonic() - t
    return timings


def _experiment() -> Any:
    from experiments import services
    from experiments.models import Experiment
    from rules import services as rules_services
    from rules.models import Slot

    slot = rules_services.slot_save(
        slot=Slot(key="home_hero"),
        actor="bench",
        variants=[{"key": k, "title": k} for k in ("control", "red", "blue")],
        default_variant="control",
    )
    exp = services.experiment_save(
        experiment=Experiment(key="bench", name="Bench", slot=slot),
        actor="bench",
        variants=[
            {"key": "control", "weight": 0.34},
            {"key": "red", "weight": 0.33},
            {"key": "blue", "weight": 0.33},
        ],
        goals=[
            {"event": "purchase", "kind": "conversion", "primary": True},
            {"event": "purchase", "kind": "revenue", "property": "revenue"},
            {
                "event": "add_to_cart",
                "kind": "conversion",
                "where": [{"property": "category", "op": "eq", "value": "shoes"}],
                "window_seconds": 86400,
            },
        ],
    )
    return services.experiment_transition(experiment=exp, move="start", actor="bench")


def _exposures(experiment_id: int) -> None:
    psql(
        DB,
        f"""
        INSERT INTO experiments_exposure (experiment_id, profile_id, variant, exposed_at)
        SELECT {experiment_id}, id,
               CASE WHEN (i * 2654435761) % 100 < 34 THEN 'control'
                    WHEN (i * 2654435761) % 100 < 67 THEN 'red' ELSE 'blue' END,
               now() - interval '16 days' + interval '2 days' + (i % 20160) * interval '1 minute'
        FROM bench_idx;
        """,
    )
    psql(DB, "VACUUM ANALYZE")


def run(exposures: int, events: int, repeats: int, *, reuse: bool) -> dict[str, Any]:
    os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{DB}"
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/5")
    os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.settings"
    gen: dict[str, float] = {"reused": 1.0}
    fresh = not reuse
    if reuse:
        try:
            fresh = int(psql(DB, "SELECT count(*) FROM experiments_exposure") or 0) != exposures
        except subprocess.CalledProcessError:
            fresh = True
    if not fresh:  # the code may have new migrations since the data was generated
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, check=True)
    if fresh:
        _recreate()
        print(f"generating {exposures:,} profiles and exposures, {events:,} events …", flush=True)
        gen = generate(exposures, events)
    import django

    sys.path.insert(0, str(ROOT))
    django.setup()
    from experiments import services
    from experiments.models import Experiment

    if fresh:
        exp = _experiment()
        t = time.monotonic()
        _exposures(exp.pk)
        gen["exposures_s"] = time.monotonic() - t
        print(json.dumps(gen), flush=True)
    exp = Experiment.objects.get(key="bench")
    # A full computation (what the first refresh, and the nightly one, costs) …
    t = time.monotonic()
    services.results_refresh(experiment=exp, full=True)
    full_s = time.monotonic() - t
    print(f"full: {full_s:.2f} s", flush=True)
    # … then the scheduled refreshes, which read the closed days' kept sums
    timings = []
    snapshot = None
    for i in range(repeats):
        t = time.monotonic()
        snapshot = services.results_refresh(experiment=exp)
        timings.append(time.monotonic() - t)
        print(f"run {i + 1}: {timings[-1]:.2f} s", flush=True)
    assert snapshot is not None
    payload = snapshot.payload
    primary = payload["goals"][0]
    return {
        "exposures": exposures,
        "events": events,
        "generate": gen,
        "results_s": {
            "median": statistics.median(timings),
            "min": min(timings),
            "max": max(timings),
            "runs": timings,
        },
        "full_s": full_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "exposures_counted": payload["exposures_total"],
        "srm_p": payload["srm"]["p_value"],
        "primary": {
            r["key"]: {"n": r["n"], "rate": r["rate"], "ci": r["ci"]} for r in primary["variants"]
        },
        "series_days": len(primary["series"]),
    }


def main(exposures: int, events: int, repeats: int = 5, *, reuse: bool = False) -> dict[str, Any]:
    result = run(exposures, events, repeats, reuse=reuse)
    out = ROOT / "benchmarks" / "results" / f"experiments-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"written {out}")
    return result
