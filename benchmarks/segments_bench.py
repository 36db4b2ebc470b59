"""Segment benchmark: 1M profiles, 10M events on PostgreSQL (never part of the tests).

    python benchmarks/run.py segments [--profiles 1000000] [--events 10000000]

Generates the data inside PostgreSQL (generate_series), defines 20 rule segments, then
reports: the full recompute time, each segment's compiled query against a hand-written
SQL query for the same condition, the recompute process's peak RSS, and the real-time
path (accepted event → membership) through granian + a Celery worker on Redis.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# (slug, condition, hand-written SQL returning profile ids, with :now)
SEGMENTS: list[tuple[str, dict[str, Any], str]] = [
    (
        "buyers-30d",
        {"event": "purchase", "within": "30d"},
        "SELECT DISTINCT profile_id FROM profiles_event WHERE NOT is_bot AND event='purchase' AND type='track' AND timestamp >= :now - interval '30 days' AND timestamp <= :now",
    ),
    (
        "engaged-buyers",
        {"event": "purchase", "within": "30d", "measure": {"fn": "count", "op": "gt", "value": 3}},
        "SELECT profile_id FROM profiles_event WHERE NOT is_bot AND event='purchase' AND type='track' AND timestamp >= :now - interval '30 days' AND timestamp <= :now GROUP BY profile_id HAVING count(*) > 3",
    ),
    (
        "cart-abandoners",
        {
            "all": [
                {"event": "add_to_cart", "within": "24h"},
                {"not": {"event": "purchase", "within": "24h"}},
            ]
        },
        "SELECT profile_id FROM profiles_event WHERE NOT is_bot AND event='add_to_cart' AND timestamp >= :now - interval '24 hours' AND timestamp <= :now EXCEPT SELECT profile_id FROM profiles_event WHERE NOT is_bot AND event='purchase' AND timestamp >= :now - interval '24 hours' AND timestamp <= :now",
    ),
    (
        "pro-plan",
        {"trait": "plan", "op": "eq", "value": "pro"},
        "SELECT id FROM profiles_profile WHERE traits->>'plan' = 'pro' AND merged_into_id IS NULL",
    ),
    (
        "adults-40-60",
        {"trait": "age", "op": "between", "value": [40, 60]},
        "SELECT id FROM profiles_profile WHERE (traits->>'age')::int BETWEEN 40 AND 60 AND merged_into_id IS NULL",
    ),
    (
        "big-spenders",
        {"attr": "revenue", "op": "gte", "value": 500},
        "SELECT id FROM profiles_profile WHERE revenue >= 500 AND merged_into_id IS NULL",
    ),
    (
        "frequent",
        {"attr": "session_count", "op": "gte", "value": 8},
        "SELECT id FROM profiles_profile WHERE session_count >= 8 AND merged_into_id IS NULL",
    ),
    (
        "lapsed",
        {"attr": "days_since_last_seen", "op": "gte", "value": 30},
        "SELECT id FROM profiles_profile WHERE last_seen_at <= :now - interval '30 days' AND merged_into_id IS NULL",
    ),
    (
        "shoe-viewers-7d",
        {
            "event": "product_viewed",
            "within": "7d",
            "where": [{"property": "category", "op": "eq", "value": "shoes"}],
        },
        "SELECT DISTINCT profile_id FROM profiles_event WHERE NOT is_bot AND event='product_viewed' AND properties->>'category'='shoes' AND timestamp >= :now - interval '7 days' AND timestamp <= :now",
    ),
    (
        "deal-seekers",
        {
            "event": "product_viewed",
            "within": "30d",
            "where": [{"property": "price", "op": "lte", "value": 59}],
            "measure": {"fn": "count", "op": "gte", "value": 3},
        },
        "SELECT profile_id FROM profiles_event WHERE NOT is_bot AND event='product_viewed' AND (properties->>'price')::numeric <= 59 AND timestamp >= :now - interval '30 days' AND timestamp <= :now GROUP BY profile_id HAVING count(*) >= 3",
    ),
    (
        "high-value-orders",
        {
            "event": "purchase",
            "within": "30d",
            "measure": {"fn": "sum", "property": "revenue", "op": "gte", "value": 300},
        },
        "SELECT profile_id FROM profiles_event WHERE NOT is_bot AND event='purchase' AND timestamp >= :now - interval '30 days' AND timestamp <= :now GROUP BY profile_id HAVING sum((properties->>'revenue')::numeric) >= 300",
    ),
    (
        "avg-basket-high",
        {
            "event": "purchase",
            "measure": {"fn": "avg", "property": "revenue", "op": "gt", "value": 150},
        },
        "SELECT profile_id FROM profiles_event WHERE NOT is_bot AND event='purchase' AND timestamp <= :now GROUP BY profile_id HAVING avg((properties->>'revenue')::numeric) > 150",
    ),
    (
        "page-heavy-7d",
        {"event": "$page", "within": "7d", "measure": {"fn": "count", "op": "gt", "value": 10}},
        "SELECT profile_id FROM profiles_event WHERE NOT is_bot AND type='page' AND timestamp >= :now - interval '7 days' AND timestamp <= :now GROUP BY profile_id HAVING count(*) > 10",
    ),
    (
        "quiet-7d",
        {"event": "$page", "within": "7d", "measure": {"fn": "count", "op": "lt", "value": 2}},
        "SELECT id FROM profiles_profile WHERE merged_into_id IS NULL AND id NOT IN (SELECT profile_id FROM profiles_event WHERE NOT is_bot AND type='page' AND timestamp >= :now - interval '7 days' AND timestamp <= :now GROUP BY profile_id HAVING count(*) >= 2)",
    ),
    (
        "pro-buyers",
        {
            "all": [
                {"trait": "plan", "op": "eq", "value": "pro"},
                {"event": "purchase", "within": "30d"},
            ]
        },
        "SELECT id FROM profiles_profile WHERE traits->>'plan'='pro' AND id IN (SELECT profile_id FROM profiles_event WHERE NOT is_bot AND event='purchase' AND timestamp >= :now - interval '30 days' AND timestamp <= :now)",
    ),
    (
        "free-or-team",
        {"trait": "plan", "op": "in", "value": ["free", "team"]},
        "SELECT id FROM profiles_profile WHERE traits->>'plan' IN ('free','team') AND merged_into_id IS NULL",
    ),
    (
        "not-pro",
        {"trait": "plan", "op": "neq", "value": "pro"},
        "SELECT id FROM profiles_profile WHERE traits->>'plan' IS DISTINCT FROM 'pro' AND merged_into_id IS NULL",
    ),
    (
        "rfm-champions",
        {
            "all": [
                {"attr": "rfm_recency", "op": "gte", "value": 4},
                {"attr": "rfm_monetary", "op": "gte", "value": 4},
            ]
        },
        "SELECT id FROM profiles_profile WHERE rfm_recency >= 4 AND rfm_monetary >= 4",
    ),
    (
        "engaged-not-buyers",
        {"all": [{"segment": "page-heavy-7d"}, {"not": {"segment": "buyers-30d"}}]},
        "SELECT m.profile_id FROM segments_membership m JOIN segments_segment s ON s.id=m.segment_id WHERE s.slug='page-heavy-7d' EXCEPT SELECT m.profile_id FROM segments_membership m JOIN segments_segment s ON s.id=m.segment_id WHERE s.slug='buyers-30d'",
    ),
    (
        "marketing-ok",
        {"consent": "marketing"},
        "SELECT r.profile_id FROM consent_consentrecord r WHERE r.granted AND r.purpose_id = (SELECT id FROM consent_purpose WHERE code='marketing')",
    ),
]


def psql(db: str, sql: str) -> str:
    out = subprocess.run(
        [
            "psql",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            db,
            "-tA",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def generate(db: str, profiles: int, events: int) -> dict[str, float]:
    t = time.monotonic()
    timings: dict[str, float] = {}
    psql(
        db,
        f"""
        CREATE UNLOGGED TABLE bench_idx AS
        SELECT i, gen_random_uuid() AS id FROM generate_series(1, {profiles}) i;
        CREATE INDEX ON bench_idx (i);
        INSERT INTO profiles_profile (id, traits, trait_timestamps, created_at, updated_at, first_seen_at,
            last_seen_at, event_count, session_count, page_view_count, purchase_count, revenue,
            avg_order_value, last_purchase_at, engagement_score, rfm_recency, rfm_frequency, rfm_monetary)
        SELECT id, jsonb_build_object('plan', (ARRAY['free','pro','team'])[1 + i % 3], 'age', 18 + i % 60),
               '{{}}', now(), now(), now() - interval '60 days', now() - (i % 60) * interval '1 day',
               i % 40, i % 12, i % 30, i % 7, (i % 7) * 97.5, CASE WHEN i % 7 > 0 THEN 97.5 ELSE 0 END,
               CASE WHEN i % 7 > 0 THEN now() - (i % 50) * interval '1 day' END, (i % 100) / 10.0,
               CASE WHEN i % 7 > 0 THEN 1 + i % 5 END, CASE WHEN i % 7 > 0 THEN 1 + (i / 7) % 5 END,
               CASE WHEN i % 7 > 0 THEN 1 + (i / 3) % 5 END
        FROM bench_idx;
    """,
    )
    timings["profiles_s"] = time.monotonic() - t
    t = time.monotonic()
    psql(
        db,
        "INSERT INTO profiles_source (name, slug, write_key_hash, write_key_prefix, secret_key_hash, "
        "secret_key_prefix, identity_secret, allowed_origins, require_identity_verification, is_active, created_at) "
        "VALUES ('gen', 'gen', 'w', 'w', 's', 's', 'i', '[]', false, true, now())",
    )
    # Drop the secondary indexes for the load, rebuild them after (as a bulk import would).
    psql(
        db,
        "DROP INDEX IF EXISTS event_profile_ts_idx; DROP INDEX IF EXISTS event_name_ts_idx; "
        "ALTER TABLE profiles_event DROP CONSTRAINT IF EXISTS event_source_message_uniq;",
    )
    psql(
        db,
        f"""
        INSERT INTO profiles_event (source_id, message_id, profile_id, type, event, timestamp, received_at,
                                    properties, traits, context, is_bot)
        SELECT (SELECT id FROM profiles_source WHERE slug='gen'), 'g' || g, b.id,
               CASE WHEN g % 10 < 4 THEN 'page' ELSE 'track' END,
               CASE WHEN g % 10 < 4 THEN 'Home' WHEN g % 10 < 8 THEN 'product_viewed'
                    WHEN g % 10 = 8 THEN 'add_to_cart' ELSE 'purchase' END,
               now() - (g % 43200) * interval '1 minute', now(),
               CASE WHEN g % 10 = 9 THEN jsonb_build_object('revenue', 20 + g % 300)
                    ELSE jsonb_build_object('category', (ARRAY['shoes','bags','jackets'])[1 + g % 3], 'price', 29 + g % 200) END,
               '{{}}', '{{}}', g % 97 = 0
        FROM generate_series(1, {events}) g JOIN bench_idx b ON b.i = 1 + (g::bigint * 7919) % {profiles};
    """,
    )
    timings["events_s"] = time.monotonic() - t
    t = time.monotonic()
    psql(
        db,
        "CREATE INDEX event_profile_ts_idx ON profiles_event (profile_id, timestamp); "
        "CREATE INDEX event_name_ts_idx ON profiles_event (event, timestamp); "
        "ALTER TABLE profiles_event ADD CONSTRAINT event_source_message_uniq UNIQUE (source_id, message_id)",
    )
    # As after any bulk load (and as autovacuum would soon do): statistics, hint bits
    # and the visibility map, so the first recompute does not pay for them.
    psql(db, "VACUUM ANALYZE")
    timings["indexes_s"] = time.monotonic() - t
    return timings


def _database_ready(db: str, profiles: int) -> bool:
    probe = subprocess.run(
        [
            "psql",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            db,
            "-tAc",
            "SELECT count(*) FROM profiles_profile",
        ],
        capture_output=True,
        text=True,
    )
    # The real-time measurement adds a few visitors to a generated database.
    return probe.returncode == 0 and profiles <= int(probe.stdout.strip() or 0) < profiles + 1000


def run(profiles: int, events: int, *, reuse: bool = False) -> dict[str, Any]:
    db = "cdp_bench_seg"
    os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{db}"
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/5")
    os.environ["DJANGO_SETTINGS_MODULE"] = "benchmarks.settings"
    if reuse and _database_ready(db, profiles):
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, check=True)
        psql(
            db,
            "TRUNCATE segments_membership, segments_segmentsize, segments_segment, "
            "segments_recomputerun CASCADE",
        )
        psql(db, "VACUUM ANALYZE segments_membership")
        gen: dict[str, float] = {"reused": 1.0}
    else:
        gen = _create(db, profiles, events)
    return _measure(db, profiles, events, gen)


def _create(db: str, profiles: int, events: int) -> dict[str, float]:
    subprocess.run(
        [
            "psql",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-c",
            f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)',
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            "psql",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-c",
            f'CREATE DATABASE "{db}"',
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, check=True)
    print(f"generating {profiles:,} profiles and {events:,} events …", flush=True)
    gen = generate(db, profiles, events)
    print(json.dumps(gen), flush=True)
    return gen


def _measure(db: str, profiles: int, events: int, gen: dict[str, float]) -> dict[str, Any]:
    import django

    sys.path.insert(0, str(ROOT))
    django.setup()
    from django.db import connection
    from django.utils import timezone

    from segments.compiler import compile_condition
    from segments.models import Segment
    from segments.services import segments_recompute_all

    for slug, condition, _ in SEGMENTS:
        Segment.objects.create(slug=slug, name=slug, condition=condition, refresh="scheduled")
    now = timezone.now()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.monotonic()
    points = segments_recompute_all(now=now)
    total = time.monotonic() - t
    # The steady state: the hourly recompute over memberships that already exist.
    t = time.monotonic()
    segments_recompute_all(now=timezone.now())
    again = time.monotonic() - t
    rss_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    per: list[dict[str, Any]] = []
    hand_sql = {slug: sql for slug, _, sql in SEGMENTS}
    with connection.cursor() as cursor:
        for point in points:
            slug = point.segment.slug
            sql, params = compile_condition(point.segment.condition, now=now)
            t0 = time.monotonic()
            cursor.execute(f"SELECT count(*) FROM ({sql}) q", params)
            compiled_n = cursor.fetchone()[0]
            compiled_s = time.monotonic() - t0
            t0 = time.monotonic()
            cursor.execute(
                f"SELECT count(*) FROM ({hand_sql[slug].replace(':now', '%s')}) q",
                [now] * hand_sql[slug].count(":now"),
            )
            hand_n = cursor.fetchone()[0]
            hand_s = time.monotonic() - t0
            per.append(
                {
                    "segment": slug,
                    "size": point.size,
                    "recompute_ms": point.duration_ms,
                    "compiled_query_ms": round(compiled_s * 1000),
                    "hand_sql_ms": round(hand_s * 1000),
                    "ratio": round(compiled_s / hand_s, 2) if hand_s else None,
                    "hand_sql_count": hand_n,
                    "compiled_count": compiled_n,
                }
            )
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "profiles": profiles,
        "events": events,
        "generate": gen,
        "recompute_total_s": round(total, 1),
        "recompute_again_s": round(again, 1),
        "recompute_rss_peak_mb": round(rss_peak_mb),
        "rss_before_mb": round(rss_before / 1024),
        "segments": per,
    }
    result["realtime"] = realtime_latency(db)
    return result


def realtime_latency(db: str, samples: int = 40) -> dict[str, Any]:
    """Accepted event → membership, through granian and a Celery worker on Redis."""
    from django.db import connection

    from profiles.services import source_create
    from segments.models import Segment

    seg = Segment.objects.create(
        slug="rt-carts",
        name="rt",
        condition={"event": "add_to_cart", "within": "24h"},
        refresh="realtime",
    )
    keys = source_create(name=f"rt-{uuid.uuid4().hex[:6]}")
    connection.close()
    env = {**os.environ, "DEBUG": "false", "SECRET_KEY": "b" * 60, "ALLOWED_HOSTS": "127.0.0.1"}
    web = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "granian"),
            "--interface",
            "wsgi",
            "--host",
            "127.0.0.1",
            "--port",
            "8112",
            "--workers",
            "2",
            "--no-access-log",
            "cdp.wsgi:application",
        ],
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "cdp",
            "worker",
            "-l",
            "warning",
            "-c",
            "2",
            "--without-gossip",
            "--without-mingle",
        ],
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    try:
        for _ in range(60):
            try:
                urllib.request.urlopen("http://127.0.0.1:8112/healthz", timeout=1).read()
                break
            except OSError:
                time.sleep(0.5)
        time.sleep(3)  # let the worker connect
        latencies = []
        for _ in range(samples):
            anon = f"rt-{uuid.uuid4().hex}"
            body = json.dumps(
                {"type": "track", "event": "add_to_cart", "anonymous_id": anon}
            ).encode()
            req = urllib.request.Request(
                "http://127.0.0.1:8112/api/v1/events",
                data=body,
                method="POST",
                headers={
                    "Content-Type": "application/json",
                    "Authorization": f"Bearer {keys.write_key}",
                },
            )
            urllib.request.urlopen(req, timeout=10).read()
            accepted = time.monotonic()
            while time.monotonic() - accepted < 10:
                found = psql(
                    db,
                    f"SELECT count(*) FROM segments_membership m JOIN profiles_identity i ON i.profile_id = m.profile_id "
                    f"WHERE m.segment_id = {seg.pk} AND i.value = '{anon}'",
                )
                if found == "1":
                    latencies.append(time.monotonic() - accepted)
                    break
                time.sleep(0.02)
        latencies.sort()
        return {
            "samples": len(latencies),
            "p50_ms": round(statistics.median(latencies) * 1000),
            "p95_ms": round(latencies[int(0.95 * (len(latencies) - 1))] * 1000),
            "max_ms": round(latencies[-1] * 1000),
            "note": "includes the 200 ms coalescing delay and ~20 ms polling",
        }
    finally:
        for proc in (web, worker):
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)


def main(profiles: int, events: int, *, reuse: bool = False) -> dict[str, Any]:
    result = run(profiles, events, reuse=reuse)
    out = ROOT / "benchmarks" / "results" / f"segments-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"written {out}")
    return result
