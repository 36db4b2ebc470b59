"""Recommendations benchmark on PostgreSQL + Redis (never part of the tests).

    python benchmarks/run.py reco [--profiles 100000] [--interactions 1000000]
                                  [--items 10000] [--duration 20] [--hot 10000]
                                  [--repeats 1] [--reuse] [--fine]

Generates, in the database `cdp_bench_reco` (Redis db 7), ~1M product interactions of
100k profiles on 10k items in 20 categories, COPYed straight into `profiles_event`
(no ingestion API), plus the catalog rows (`recommendations_item`, as a catalog import
made before the first event). The structure is planted: items come in bundles of five
of one category that are viewed in a customary order, carted and bought together;
bundle popularity is Zipf; each profile has one to three interest bundles (mostly of
one category) and 1..n sessions spread over 90 days, 20-120 s between events, with a
noise view of a popular item now and then; purchases of several items are one order
event listing them in `properties.products`; a tenth of the items go on sale (−20 %)
at some point, so their later events carry a new price for the catalog sync to write.

Then:
- training: `recommendations.services.train_execute()` end to end, each run in a fresh
  process (peak RSS is the job's own): first with the catalog never synced (the first
  training of a shop: `catalog_sync` reads every product event), then the steady state
  (the catalog is synced every minute by Celery beat, so the daily training finds it
  current). Reported: wall time, the steps of the progress hook, `version.data
  ["timings"]`, the time inside each model and catalog function, peak RSS, artifact
  size and the held-out recall@10 / NDCG@10 of every compared model (bar ≤ 60 s);
- serving: granian as in the `decide` benchmark, the snapshots of `--hot` visitors
  warmed with `rules.decide.snapshots_warm`, then wrk (32 connections) on
  `GET /api/v1/recommendations` (personal, random hot visitor), the same with
  `strategy=similar&item=<random item>`, `/decide` with one `recommendations` slot, and
  the trivial DRF view, in the same run: req/s, ratio to trivial (bar ≥ 0.5), p50/p99
  (bar p99 ≤ 25 ms), non-2xx (must be 0).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from bisect import bisect
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from itertools import accumulate
from pathlib import Path
from typing import Any

from benchmarks.ml_bench import _Phases, _rss_mb, _timed
from benchmarks.segments_bench import psql

ROOT = Path(__file__).resolve().parent.parent
DB = "cdp_bench_reco"
REDIS = "redis://127.0.0.1:6379/7"
# Not the runner's 8111: another benchmark may be serving there at the same time, and
# the health check would then find *its* server.
PORT = 8117
SEED = 20261203
DATA_VERSION = 2  # bump when the generator changes: --reuse then regenerates
DAYS = 90
BUNDLE = 5
HERO = (1.0, 0.8, 0.6, 0.45, 0.35)  # how often each position of a bundle is the entry
CATEGORIES = (
    "shoes",
    "bags",
    "jackets",
    "accessories",
    "electronics",
    "beauty",
    "home",
    "kitchen",
    "garden",
    "toys",
    "books",
    "sports",
    "outdoor",
    "watches",
    "jewelry",
    "eyewear",
    "music",
    "games",
    "pets",
    "office",
)
BRANDS = ("Northwind", "Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Stark")
PER_SESSION = 3.54  # interactions per session the generator yields, measured (for sizing)

RECO_LUA = r"""
local n = 0
function setup(thread) n = n + 1; thread:set("tid", n) end
function init(args)
  wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")
  hot = tonumber(os.getenv("BENCH_HOT"))
  items = tonumber(os.getenv("BENCH_ITEMS"))
  similar = os.getenv("BENCH_MODE") == "similar"
  math.randomseed(tid * 7919)
end
function request()
  local path = "/api/v1/recommendations?anonymous_id=v" .. math.random(1, hot) .. "&limit=10"
  if similar then
    path = path .. "&strategy=similar&item=sku-" .. string.format("%05d", math.random(0, items - 1))
  end
  return wrk.format("GET", path)
end
"""

DECIDE_RECO_LUA = r"""
local n = 0
function setup(thread) n = n + 1; thread:set("tid", n) end
function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")
  hot = tonumber(os.getenv("BENCH_HOT"))
  math.randomseed(tid * 104729)
  pages = {"/", "/sale", "/c/shoes", "/cart"}
  counter = 0
end
function request()
  counter = counter + 1
  local body = '{"anonymous_id":"v' .. math.random(1, hot) .. '","slots":["reco_strip"],'
    .. '"context":{"page":"' .. pages[1 + counter % 4] .. '"}}'
  return wrk.format(nil, wrk.path, nil, body)
end
"""


def _url(db: str = DB) -> str:
    return f"postgres://postgres@127.0.0.1:5432/{db}"


def _redis() -> str:
    return os.environ.get("BENCH_RECO_REDIS_URL", REDIS)


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": _url(),
        "REDIS_URL": _redis(),
        "DJANGO_SETTINGS_MODULE": "benchmarks.settings",
    }


def _migrate() -> None:
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=_env(), check=True
    )


# --- Data ------------------------------------------------------------------------------


class Shop:
    """The planted catalog: items in bundles of BUNDLE of one category, Zipf popularity
    of bundles (a random rank order), a hero item per bundle."""

    def __init__(self, items: int, rng: random.Random) -> None:
        self.n = items - items % BUNDLE
        codes = list(range(self.n))
        rng.shuffle(codes)
        self.bundles = [codes[b : b + BUNDLE] for b in range(0, self.n, BUNDLE)]
        ranks = list(range(len(self.bundles)))
        rng.shuffle(ranks)
        self.bundle_w = [1.0 / (r + 1) ** 1.05 for r in ranks]
        self.bundle_cat = [b % len(CATEGORIES) for b in range(len(self.bundles))]
        self.cum_bundles = list(accumulate(self.bundle_w))
        by_cat: dict[int, list[int]] = {}
        for b, c in enumerate(self.bundle_cat):
            by_cat.setdefault(c, []).append(b)
        self.cat_bundles = by_cat
        self.cum_cat = {
            c: list(accumulate(self.bundle_w[b] for b in bs)) for c, bs in by_cat.items()
        }
        self.category = [""] * self.n
        self.price = [0.0] * self.n
        self.title = [""] * self.n
        item_w = [0.0] * self.n
        for b, members in enumerate(self.bundles):
            cat = CATEGORIES[self.bundle_cat[b]]
            for pos, j in enumerate(members):
                self.category[j] = cat
                self.price[j] = round(5 + (j * 7919 % 29500) / 100, 2)
                self.title[j] = f"{BRANDS[j % len(BRANDS)]} {cat} {j:05d}"
                item_w[j] = self.bundle_w[b] * HERO[pos]
        self.cum_items = list(accumulate(item_w))
        self.cum_hero = list(accumulate(HERO))
        # "product_id": …, "name": …, "category": …, "price": … of each item, for events
        self.props = [
            f'"product_id": "{sku(j)}", "name": "{self.title[j]}", '
            f'"category": "{self.category[j]}", "price": {self.price[j]}'
            for j in range(self.n)
        ]
        self.sale_at = [math.inf] * self.n  # none until sales_plan
        self.sale_props = list(self.props)
        self.sale_price = list(self.price)

    def bundle(self, rng: random.Random, category: int | None = None) -> int:
        if category is None:
            return bisect(self.cum_bundles, rng.random() * self.cum_bundles[-1])
        cum = self.cum_cat[category]
        return self.cat_bundles[category][bisect(cum, rng.random() * cum[-1])]

    def popular_item(self, rng: random.Random) -> int:
        return bisect(self.cum_items, rng.random() * self.cum_items[-1])

    def sales_plan(self, now: float, rng: random.Random, share: float = 0.1) -> None:
        """A `share` of the items go on sale (−20 %) at some time in the window: their
        later events carry the new price (what the catalog sync has to write)."""
        for j in range(self.n):
            if rng.random() < share:
                self.sale_at[j] = now - rng.random() * DAYS * 86400.0
                self.sale_price[j] = round(self.price[j] * 0.8, 2)
                self.sale_props[j] = self.props[j].rsplit('"price": ', 1)[0] + (
                    f'"price": {self.sale_price[j]}'
                )

    def at(self, j: int, t: float) -> tuple[str, float]:
        """Item j's properties and price at time t."""
        if t >= self.sale_at[j]:
            return self.sale_props[j], self.sale_price[j]
        return self.props[j], self.price[j]


def sku(j: int) -> str:
    return f"sku-{j:05d}"


def _poisson(rng: random.Random, lam: float) -> int:
    """Knuth's method (small lam only)."""
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def events_generate(
    shop: Shop, profiles: int, interactions: int, now: float, rng: random.Random
) -> tuple[list[tuple[float, int, str, str]], Counter[str]]:
    """(timestamp, profile number, event name, properties JSON) of every event, in no
    order, and the counts of interactions by kind (an order counts each of its items)."""
    lam = max(0.0, interactions / profiles / PER_SESSION - 1)
    out: list[tuple[float, int, str, str]] = []
    counts: Counter[str] = Counter()
    orders = 0
    span = DAYS * 86400.0 - 3600
    shop.sales_plan(now, rng)
    for p in range(1, profiles + 1):
        first = shop.bundle(rng)
        interests = [first]
        for _ in range((rng.random() < 0.5) + (rng.random() < 0.25)):
            same = rng.random() < 0.7
            interests.append(shop.bundle(rng, shop.bundle_cat[first] if same else None))
        cum_int = list(accumulate((1.0, 0.5, 0.3)[: len(interests)]))
        # heavy and light shoppers: gamma(2, ½) keeps the mean
        n_sessions = 1 + _poisson(rng, lam * rng.gammavariate(2.0, 0.5))
        starts = sorted(now - 3600 - rng.random() * span for _ in range(n_sessions))
        for t in starts:
            members = shop.bundles[interests[bisect(cum_int, rng.random() * cum_int[-1])]]
            pos = bisect(shop.cum_hero, rng.random() * shop.cum_hero[-1])
            path = [members[pos]]
            for _ in range(min(4, _poisson(rng, 1.6))):
                # mostly the bundle's customary next item, sometimes any of it
                pos = (pos + 1) % BUNDLE if rng.random() < 0.7 else rng.randrange(BUNDLE)
                path.append(members[pos])
            if rng.random() < 0.25:  # a look at something popular elsewhere
                path.insert(rng.randrange(len(path) + 1), shop.popular_item(rng))
            for j in path:
                t += 20 + rng.random() * 100
                out.append((t, p, "product_viewed", "{" + shop.at(j, t)[0] + "}"))
            carted = [j for j in dict.fromkeys(path) if rng.random() < 0.18]
            for j in carted:
                t += 20 + rng.random() * 100
                out.append((t, p, "product_added", "{" + shop.at(j, t)[0] + ', "quantity": 1}'))
            counts["views"] += len(path)
            counts["cart_adds"] += len(carted)
            if not carted or rng.random() >= 0.55:
                continue
            t += 60 + rng.random() * 240
            orders += 1
            now_of = [shop.at(j, t) for j in carted]
            revenue = round(sum(price for _, price in now_of), 2)
            if len(carted) == 1:
                props = (
                    "{" + now_of[0][0] + f', "quantity": 1, "order_id": "o{orders}", '
                    f'"revenue": {revenue}, "currency": "EUR"}}'
                )
            else:
                listed = ", ".join("{" + fields + ', "quantity": 1}' for fields, _ in now_of)
                props = (
                    f'{{"order_id": "o{orders}", "revenue": {revenue}, "currency": "EUR", '
                    f'"products": [{listed}]}}'
                )
                counts["orders_with_products"] += 1
            out.append((t, p, "purchase", props))
            counts["purchased_items"] += len(carted)
        counts["sessions"] += n_sessions
    counts["purchases"] = orders
    counts["interactions"] = counts["views"] + counts["cart_adds"] + counts["purchased_items"]
    return out, counts


def _without_indexes(db: str, table: str, load: Callable[[], None]) -> None:
    """Secondary indexes, unique and foreign-key constraints of `table` off for a bulk
    load and back after it (as ml_bench's generator and a bulk import do)."""
    indexes = [
        d
        for d in psql(
            db,
            f"SELECT indexdef FROM pg_indexes WHERE tablename = '{table}' "
            "AND indexname NOT IN (SELECT conname FROM pg_constraint "
            f"WHERE conrelid = '{table}'::regclass)",
        ).splitlines()
        if d
    ]
    constraints = [
        line.split("|", 1)
        for line in psql(
            db,
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            f"WHERE conrelid = '{table}'::regclass AND contype IN ('u', 'f')",
        ).splitlines()
    ]
    psql(
        db,
        "".join(f"DROP INDEX {d.split(' INDEX ', 1)[1].split(' ON ', 1)[0]};" for d in indexes)
        + "".join(f'ALTER TABLE {table} DROP CONSTRAINT "{n}";' for n, _ in constraints),
    )
    load()
    psql(
        db,
        "".join(f"{d};" for d in indexes)
        + "".join(f'ALTER TABLE {table} ADD CONSTRAINT "{n}" {d};' for n, d in constraints),
    )


def _copy(table: str, columns: str, lines: Any) -> None:
    """COPY text lines (tab-separated, already escaped) into table."""
    import psycopg

    with psycopg.connect(_url(), autocommit=False) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            buf: list[str] = []
            for line in lines:
                buf.append(line)
                if len(buf) >= 20_000:
                    copy.write("".join(buf))
                    buf.clear()
            if buf:
                copy.write("".join(buf))
        conn.commit()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def catalog_load(shop: Shop, now: float, rng: random.Random) -> int:
    """The catalog as an import made the day before the first event: every item, 2 %
    of them out of stock."""
    at = _iso(now - (DAYS + 1) * 86400.0)
    lines = []
    for j in range(shop.n):
        attrs = json.dumps(
            {
                "brand": BRANDS[j % len(BRANDS)],
                "image_url": f"https://img.example.com/{sku(j)}.jpg",
                "url": f"https://shop.example.com/p/{sku(j)}",
            }
        )
        in_stock = "f" if rng.random() < 0.02 else "t"
        lines.append(
            f"{sku(j)}\t{shop.title[j]}\t{shop.category[j]}\t{shop.price[j]}\t{attrs}\t"
            f"{in_stock}\t{at}\t{at}\t{at}\n"
        )
    psql(DB, "TRUNCATE recommendations_item, recommendations_catalogsync")
    _copy(
        "recommendations_item",
        "item_id, title, category, price, attributes, in_stock, seen_at, created_at, updated_at",
        lines,
    )
    return len(lines)


def generate(profiles: int, interactions: int, items: int) -> dict[str, Any]:
    """A fresh database with the planted shop. Returns timings and counts."""
    for sql in (f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)', f'CREATE DATABASE "{DB}"'):
        psql("postgres", sql)
    _migrate()
    timings: dict[str, Any] = {}
    now_dt = datetime.now(UTC).replace(microsecond=0)
    now = now_dt.timestamp()
    lit = f"'{now_dt.isoformat()}'::timestamptz"
    t = time.monotonic()
    psql(
        DB,
        f"""
        CREATE UNLOGGED TABLE bench_idx AS
        SELECT i, gen_random_uuid() AS id FROM generate_series(1, {profiles}) i;
        CREATE INDEX ON bench_idx (i);
        INSERT INTO profiles_profile (id, traits, trait_timestamps, created_at, updated_at,
            first_seen_at, last_seen_at, event_count, session_count, page_view_count,
            purchase_count, revenue, avg_order_value, last_purchase_at, engagement_score,
            rfm_recency, rfm_frequency, rfm_monetary)
        SELECT id, jsonb_build_object('plan', (ARRAY['free','pro','team'])[1 + i % 3]), '{{}}',
               {lit} - interval '{DAYS} days', {lit}, NULL, NULL, 0, 0, 0, 0, 0, 0, NULL, 0,
               NULL, NULL, NULL
        FROM bench_idx;
        INSERT INTO profiles_identity (kind, value, profile_id, created_at)
        SELECT 'anonymous_id', 'v' || i, id, {lit} FROM bench_idx;
        INSERT INTO profiles_source (name, slug, write_key_hash, write_key_prefix,
            secret_key_hash, secret_key_prefix, identity_secret, allowed_origins,
            require_identity_verification, is_active, created_at)
        VALUES ('gen', 'gen', 'w', 'w', 's', 's', 'i', '[]', false, true, {lit});
        """,
    )
    timings["profiles_s"] = round(time.monotonic() - t, 1)
    t = time.monotonic()
    rng = random.Random(SEED)
    shop = Shop(items, rng)
    events, counts = events_generate(shop, profiles, interactions, now, rng)
    events.sort()  # ids follow time, as when events arrive
    timings["generate_python_s"] = round(time.monotonic() - t, 1)
    ids = psql(DB, "SELECT id FROM bench_idx ORDER BY i").splitlines()
    source = psql(DB, "SELECT id FROM profiles_source WHERE slug = 'gen'")

    def load() -> None:
        _copy(
            "profiles_event",
            "source_id, message_id, profile_id, type, event, anonymous_id, timestamp, "
            "received_at, properties, traits, context, is_bot",
            (
                f"{source}\tr{n}\t{ids[p - 1]}\ttrack\t{name}\tv{p}\t{_iso(ts)}\t{_iso(ts)}\t"
                f"{props}\t{{}}\t{{}}\tf\n"
                for n, (ts, p, name, props) in enumerate(events)
            ),
        )

    t = time.monotonic()
    _without_indexes(DB, "profiles_event", load)
    timings["events_copy_and_indexes_s"] = round(time.monotonic() - t, 1)
    events.clear()  # ~0.5 GB of strings
    t = time.monotonic()
    timings["catalog_items"] = catalog_load(shop, now, random.Random(SEED + 1))
    psql(
        DB,
        "UPDATE profiles_profile p SET event_count = e.n, first_seen_at = e.lo, "
        "last_seen_at = e.hi, purchase_count = e.buys FROM (SELECT profile_id, count(*) AS n, "
        "min(timestamp) AS lo, max(timestamp) AS hi, count(*) FILTER (WHERE event = 'purchase') "
        "AS buys FROM profiles_event GROUP BY profile_id) e WHERE e.profile_id = p.id",
    )
    psql(
        DB,
        f"CREATE TABLE bench_meta AS SELECT {lit} AS now, {profiles}::int AS profiles, "
        f"{interactions}::int AS target, {items}::int AS items, {DATA_VERSION} AS version, "
        f"'{json.dumps(dict(counts))}'::jsonb AS counts",
    )
    psql(DB, "VACUUM ANALYZE")
    timings["catalog_profiles_vacuum_s"] = round(time.monotonic() - t, 1)
    timings["events"] = int(psql(DB, "SELECT count(*) FROM profiles_event"))
    timings["size_mb"] = round(int(psql(DB, f"SELECT pg_database_size('{DB}')")) / 2**20)
    return {**timings, **counts}


def _ready(profiles: int, interactions: int, items: int) -> bool:
    try:
        got = psql(DB, "SELECT profiles, target, items, version FROM bench_meta")
    except subprocess.CalledProcessError:
        return False
    return got == f"{profiles}|{interactions}|{items}|{DATA_VERSION}"


def _reset(items: int) -> dict[str, Any]:
    """An earlier run's versions, slots, decisions and catalog out (the generated events
    stay); the catalog back to its generated import."""
    _migrate()
    psql(
        DB,
        "TRUNCATE recommendations_modelversion, rules_decision, rules_rule, "
        "rules_contentvariant, rules_slot CASCADE",
    )
    now = float(psql(DB, "SELECT extract(epoch FROM now) FROM bench_meta"))
    shop = Shop(items, random.Random(SEED))
    catalog_load(shop, now, random.Random(SEED + 1))
    psql(DB, "VACUUM ANALYZE recommendations_item")
    return {"reused": True, **json.loads(psql(DB, "SELECT counts FROM bench_meta"))}


# --- Training (each run in its own process) ---------------------------------------------


def _step(step: str) -> str:
    for prefix, name in (
        ("updating the catalog", "catalog_sync"),
        ("reading product events", "catalog_sync"),
        ("reading interactions", "read_interactions"),
        ("fitting on the training split", "fit_split"),
        ("evaluating", "evaluate"),
        ("fitting on every", "fit_all_and_dump"),
        ("deciding", "promote_and_save"),
    ):
        if step.startswith(prefix):
            return name
    return step


def child(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    import django

    django.setup()
    from django.db import connection

    from recommendations import algorithms as alg
    from recommendations import artifact, evaluation, services
    from recommendations.evaluation import COMPARED, at_k

    if kind != "train":
        raise ValueError(kind)
    with connection.cursor() as cursor:
        cursor.execute("SELECT now FROM bench_meta")
        now = cursor.fetchone()[0]
    base = _rss_mb()
    spent: dict[str, float] = {}
    for module, name in (
        (services, "catalog_sync"),
        (services, "items_upsert"),
        (services, "item_fields"),
        (services, "interactions_read"),
        (services, "time_split"),
        (services, "evaluate"),
        (services, "models_fit"),
        (alg, "item_item"),
        (alg, "user_item_matrix"),
        (alg, "svd_neighbours"),
        (alg, "bought_together"),
        (alg, "next_item"),
        (alg, "cosine_topk"),
        (alg, "trending"),
        (alg, "popularity"),
        (evaluation, "task_build"),
        (evaluation, "blend_matrix"),
        (evaluation, "_by_matrix"),
        (evaluation, "_by_order"),
        (evaluation, "_metrics"),
        (artifact, "dump"),
    ):
        # item_fields runs once per product event: its wrapper costs time of its own
        if hasattr(module, name) and (payload.get("fine") or name != "item_fields"):
            _timed(module, name, spent)
    phases = _Phases(_step)
    t = time.monotonic()
    version = services.train_execute(now=now, requested_by="bench", progress=phases)
    end = time.monotonic()
    grouped, _ = phases.result(end)
    m = version.metrics
    return {
        "wall_s": round(end - t, 2),
        "phases_s": grouped,
        "timings": version.data.get("timings"),
        "spent_s": {k: round(v, 2) for k, v in spent.items()},
        "data": {k: v for k, v in version.data.items() if k != "timings"},
        "artifact_bytes": version.artifact_bytes,
        "outcome": version.outcome,
        "decision": version.decision,
        "eval_users": m.get("users"),
        "item_model": m.get("item_model"),
        "code": _code_state(),
        "at10": {
            name: {
                "recall": at_k(m, name, "recall", 10),
                "ndcg": at_k(m, name, "ndcg", 10),
                "hit_rate": at_k(m, name, "hit_rate", 10),
            }
            for name in COMPARED
        },
        "metrics": m,
        "rss_before_mb": base,
        **_rss_mb(),
    }


def _code_state() -> dict[str, str]:
    """Which code was measured: the commit, and a digest of the app's sources as they
    were (others may be editing them)."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "recommendations").glob("*.py")):
        digest.update(path.read_bytes())
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "recommendations", "rules"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.split()
    return {
        "head": head,
        "recommendations_sha256": digest.hexdigest()[:12],
        "dirty": " ".join(dirty),
    }


def _run_child(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("r", suffix=".json") as out:
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import json, sys; sys.path.insert(0, '.'); "
                "from benchmarks.reco_bench import child; "
                f"r = child({kind!r}, json.loads(sys.argv[1])); "
                "open(sys.argv[2], 'w').write(json.dumps(r, default=str))",
                json.dumps(payload),
                out.name,
            ],
            cwd=ROOT,
            env=_env(),
            check=True,
        )
        result: dict[str, Any] = json.loads(Path(out.name).read_text())
    shown = {k: v for k, v in result.items() if k not in ("metrics", "data")}
    print(kind, json.dumps(shown), flush=True)
    return result


# --- Serving ---------------------------------------------------------------------------


def _get(path: str, key: str, body: dict[str, Any] | None = None) -> Any:
    from benchmarks import run as runner

    req = urllib.request.Request(
        f"{runner.BASE}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method="POST" if body is not None else "GET",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def _probe(key: str, hot: int, items: int) -> dict[str, Any]:
    """What the measured requests answer (sampled before wrk): the strategy that
    answered, list lengths, sources of the items."""
    rng = random.Random(7)
    personal: Counter[str] = Counter()
    similar: Counter[str] = Counter()
    sources: Counter[str] = Counter()
    lengths = []
    for _ in range(200):
        r = _get(f"/api/v1/recommendations?anonymous_id=v{rng.randint(1, hot)}&limit=10", key)
        personal[r["strategy"]] += 1
        lengths.append(len(r["items"]))
        sources.update(i["source"] for i in r["items"])
        s = _get(
            f"/api/v1/recommendations?anonymous_id=v{rng.randint(1, hot)}&limit=10"
            f"&strategy=similar&item={sku(rng.randrange(items))}",
            key,
        )
        similar[s["strategy"]] += 1
    decided = _get(
        "/api/v1/decide", key, {"anonymous_id": "v1", "slots": ["reco_strip"], "context": {}}
    )
    slot = decided["decisions"]["reco_strip"]
    return {
        "personal_answered_by": dict(personal),
        "personal_items_per_list": round(statistics.mean(lengths), 2),
        "personal_item_sources": dict(sources),
        "similar_answered_by": dict(similar),
        "decide_slot_items": len((slot.get("content") or {}).get("items") or []),
        "decide_slot_reason": slot.get("reason"),
        "example": _get("/api/v1/recommendations?anonymous_id=v1&limit=3", key),
    }


def serve(hot: int, items: int, duration: int) -> dict[str, Any]:
    from benchmarks import run as runner

    runner.PORT, runner.BASE = PORT, f"http://127.0.0.1:{PORT}"
    os.environ.update(
        DATABASE_URL=_url(), REDIS_URL=_redis(), DJANGO_SETTINGS_MODULE="benchmarks.settings"
    )
    keys = runner.create_source(_url())
    import django

    django.setup()
    from profiles.models import Identity
    from rules import decisionlog
    from rules.decide import snapshots_warm
    from rules.models import Decision, Slot, Strategy
    from rules.services import slot_save

    # Before the warm-up: saving a slot moves the configuration version, which retires
    # every snapshot built before it.
    slot_save(
        slot=Slot(
            key="reco_strip",
            strategy=Strategy.RECOMMENDATIONS,
            recommendation={"strategy": "personal", "limit": 4},
        ),
        actor="bench",
        variants=[{"key": "strip", "title": "Picked for you"}],
        default_variant="strip",
    )
    t = time.monotonic()
    hot_ids = list(
        Identity.objects.filter(
            kind="anonymous_id", value__in=[f"v{i}" for i in range(1, hot + 1)]
        ).values_list("profile_id", flat=True)
    )
    warmed = snapshots_warm(profile_ids=hot_ids)
    warm_s = round(time.monotonic() - t, 1)
    print(json.dumps({"warmed": warmed, "warm_s": warm_s}), flush=True)
    server = runner.Server("granian", _url(), _redis())
    result: dict[str, Any] = {
        "server": server.label,
        "hot_visitors": hot,
        "snapshots_warmed": warmed,
        "snapshots_warm_s": warm_s,
    }
    env = {"BENCH_KEY": keys["write_key"], "BENCH_HOT": str(hot), "BENCH_ITEMS": str(items)}
    decide_runs: list[dict[str, Any]] = []
    try:
        result["probe"] = _probe(keys["write_key"], hot, items)
        print(json.dumps({"probe": result["probe"]}, default=str), flush=True)
        runner.wrk(
            "/bench/trivial", runner.GET_LUA, duration=3, connections=8, env={"BENCH_KEY": ""}
        )
        # Warm-up of every thread (models, catalog, identities in process), then measure.
        for mode in ("personal", "similar"):
            runner.wrk(
                "/api/v1/recommendations",
                RECO_LUA,
                duration=4,
                connections=32,
                env={**env, "BENCH_MODE": mode},
            )
        decide_runs.append(
            runner.wrk("/api/v1/decide", DECIDE_RECO_LUA, duration=4, connections=32, env=env)
        )
        for mode in ("personal", "similar"):
            result[mode] = runner.wrk(
                "/api/v1/recommendations",
                RECO_LUA,
                duration=duration,
                connections=32,
                env={**env, "BENCH_MODE": mode},
            )
            print(mode, json.dumps(result[mode]), flush=True)
        result["decide_reco"] = runner.wrk(
            "/api/v1/decide", DECIDE_RECO_LUA, duration=duration, connections=32, env=env
        )
        decide_runs.append(result["decide_reco"])
        print("decide_reco", json.dumps(result["decide_reco"]), flush=True)
        result["trivial"] = runner.wrk(
            "/bench/trivial",
            runner.GET_LUA,
            duration=duration,
            connections=32,
            env={"BENCH_KEY": ""},
        )
        print("trivial", json.dumps(result["trivial"]), flush=True)
    finally:
        server.stop()
    trivial = result["trivial"]["rps"]
    for name in ("personal", "similar", "decide_reco"):
        result[name]["ratio"] = round(result[name]["rps"] / trivial, 3) if trivial else 0
    time.sleep(1)
    decisionlog.drain()
    result["decisions_logged"] = Decision.objects.count()
    result["decisions_answered"] = sum(r["requests"] - r["non_2xx"] for r in decide_runs)
    return result


# --- The run ---------------------------------------------------------------------------


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    values = [float(r["wall_s"]) for r in runs]
    return {"median": round(statistics.median(values), 2), "min": min(values), "max": max(values)}


def run(
    profiles: int,
    interactions: int,
    items: int,
    duration: int,
    hot: int,
    repeats: int,
    *,
    reuse: bool,
    fine: bool = False,
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "loadavg_before": os.getloadavg(),
        "profiles": profiles,
        "interactions_target": interactions,
        "items": items,
        "database": DB,
        "redis": _redis(),
    }
    if reuse and _ready(profiles, interactions, items):
        result["generate"] = _reset(items)
    else:
        print(f"generating {profiles:,} profiles, ~{interactions:,} interactions …", flush=True)
        result["generate"] = generate(profiles, interactions, items)
    print(json.dumps(result["generate"]), flush=True)
    import redis

    redis.Redis.from_url(_redis()).flushdb()  # an earlier run's versions and snapshots
    # The first training of a shop: the catalog has never read the event log.
    cold = _run_child("train", {"fine": fine})
    # Then the daily retraining, the catalog kept current by its one-minute schedule.
    steady = [_run_child("train", {"fine": fine}) for _ in range(max(1, repeats))]
    result["train_first"] = cold
    result["train_steady"] = {"wall_s": _summary(steady), "runs": steady}
    result["serving"] = serve(hot, items, duration)
    result["loadavg_after"] = os.getloadavg()
    return result


def _fmt(r: dict[str, Any]) -> str:
    return f"{r['rps']:,.0f} req/s, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms"


def markdown(r: dict[str, Any]) -> str:
    cold, steady = r["train_first"], r["train_steady"]
    s = r["serving"]
    lines = ["| measure | result | bar |", "|---|---|---|"]
    lines.append(
        f"| training, first (catalog sync over every event) | {cold['wall_s']} s, "
        f"peak RSS {cold['ru_maxrss_mb']} MB | ≤ 60 s, ≤ 1 GB |"
    )
    lines.append(
        f"| training, steady state (catalog current), median | {steady['wall_s']['median']} s "
        f"({steady['wall_s']['min']}–{steady['wall_s']['max']}), peak RSS "
        f"{steady['runs'][0]['ru_maxrss_mb']} MB | ≤ 60 s, ≤ 1 GB |"
    )
    lines.append(f"| artifact | {cold['artifact_bytes'] / 2**20:.1f} MB | — |")
    for name in ("personal", "item_item", "popularity"):
        a = cold["at10"][name]
        lines.append(f"| {name} recall@10 / NDCG@10 | {a['recall']:.4f} / {a['ndcg']:.4f} | — |")
    for name, label in (
        ("personal", "GET /recommendations, personal"),
        ("similar", "GET /recommendations, similar"),
        ("decide_reco", "/decide, one recommendations slot"),
    ):
        x = s[name]
        lines.append(
            f"| {label} | {_fmt(x)}, ratio {x['ratio']:.2f}, non-2xx {x['non_2xx']} | "
            "≥ 0.5, p99 ≤ 25 ms, 0 errors |"
        )
    lines.append(f"| trivial DRF | {_fmt(s['trivial'])} | — |")
    return "\n".join(lines)


def main(
    profiles: int,
    interactions: int,
    items: int,
    duration: int,
    hot: int,
    repeats: int = 1,
    *,
    reuse: bool = False,
    fine: bool = False,
) -> dict[str, Any]:
    result = run(profiles, interactions, items, duration, hot, repeats, reuse=reuse, fine=fine)
    out = ROOT / "benchmarks" / "results" / f"reco-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"written {out}\n")
    print(markdown(result))
    return result


if __name__ == "__main__":  # python -m benchmarks.reco_bench: see benchmarks/run.py
    sys.exit("run it as: python benchmarks/run.py reco")
