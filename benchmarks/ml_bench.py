"""Clustering and predictive-model benchmark on PostgreSQL (never part of the tests).

    python benchmarks/run.py ml [--profiles 100000] [--score-profiles 1000000]
                                [--repeats 2] [--reuse] [--skip-score]

Generates, inside PostgreSQL (generate_series, no ingestion API), two databases:

- `cdp_bench_ml`: 100k profiles, ~1M events over 180 days, in five planted behavioural
  groups (window shoppers, buyers, readers, cart abandoners, one-off visitors) and a
  planted churn outcome: churners' activity stops 30-130 days before now (most of
  them shortly before the 30-day horizon), the others
  keep coming back, with a last visit inside the last 30 days (the predictor's horizon);
- `cdp_bench_ml1m`: the same generator at 1M profiles, ~10M events (scoring).

Then, each measurement in a fresh process (so peak RSS is that job's own):
- a k-means clustering run with k chosen from 2..10 (phases from the progress hook:
  features, transform, fit over k, stability, writes, segment recompute);
- training a gradient_boosting and a random_forest churn predictor (holdout AUC);
- scoring 1M profiles with the trained gradient_boosting model (wall time, peak RSS,
  time in the feature query, the model and the score upsert).
Every measurement runs `--repeats` times; the median and the spread are reported.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.segments_bench import psql

ROOT = Path(__file__).resolve().parent.parent
DB = "cdp_bench_ml"
DB_SCORE = "cdp_bench_ml1m"
REDIS = "redis://127.0.0.1:6379/9"
CATEGORIES = ("shoes", "bags", "jackets", "accessories", "electronics", "beauty")


def _url(db: str) -> str:
    return f"postgres://postgres@127.0.0.1:5432/{db}"


def _env(db: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": _url(db),
        "REDIS_URL": os.environ.get("BENCH_ML_REDIS_URL", REDIS),
        "DJANGO_SETTINGS_MODULE": "benchmarks.settings",
    }


# --- Data ------------------------------------------------------------------------------

# r(a, s): a deterministic uniform [0, 1) of (a, s) (an inlined SQL function).
_RAND = """
CREATE OR REPLACE FUNCTION bench_r(a bigint, s bigint) RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT (hashint8extended(a, s) & 9007199254740991)::float8 / 9007199254740992 $$;
"""

# One row per profile: its group, whether it churns, how many events, events per
# session, and the interval of days-before-now in which its sessions fall.
#   g0 window shoppers 25 %, g1 buyers 15 %, g2 readers 20 %, g3 cart abandoners 15 %,
#   g4 one-off visitors 25 %; churn probability .35 / .12 / .25 / .45 / .70.
_PROFILES = """
CREATE UNLOGGED TABLE bench_p AS
SELECT i, id, grp, churn,
       CASE grp WHEN 0 THEN 8 + floor(bench_r(i, 2) * 11) WHEN 1 THEN 8 + floor(bench_r(i, 2) * 13)
                WHEN 2 THEN 6 + floor(bench_r(i, 2) * 13) WHEN 3 THEN 6 + floor(bench_r(i, 2) * 9)
                ELSE 1 + floor(bench_r(i, 2) * 5) END::int AS n,
       (ARRAY[3, 4, 5, 3, 2])[grp + 1] AS ps,
       CASE WHEN churn THEN 30 + power(bench_r(i, 4), 2) * 100 ELSE 0 END AS end_d,
       CASE WHEN churn THEN 30 + power(bench_r(i, 4), 2) * 100 + 10
                            + bench_r(i, 5) * (140 - power(bench_r(i, 4), 2) * 100)
            ELSE 20 + bench_r(i, 5) * 160 END AS start_d
FROM (
  SELECT i, id, grp,
         bench_r(i, 3) < (ARRAY[0.35, 0.12, 0.25, 0.45, 0.70])[grp + 1] AS churn
  FROM (
    SELECT i, gen_random_uuid() AS id,
           CASE WHEN u < 0.25 THEN 0 WHEN u < 0.40 THEN 1 WHEN u < 0.60 THEN 2
                WHEN u < 0.75 THEN 3 ELSE 4 END AS grp
    FROM (SELECT i, bench_r(i, 1) AS u FROM generate_series(1, {profiles}) i) a
  ) b
) c;
INSERT INTO profiles_profile (id, traits, trait_timestamps, created_at, updated_at, first_seen_at,
    last_seen_at, event_count, session_count, page_view_count, purchase_count, revenue,
    avg_order_value, last_purchase_at, engagement_score, rfm_recency, rfm_frequency, rfm_monetary)
SELECT id, jsonb_build_object('plan', (ARRAY['free','pro','team'])[1 + i % 3]), '{{}}',
       {now} - start_d * interval '1 day', {now}, {now} - start_d * interval '1 day',
       {now} - end_d * interval '1 day', n, 1 + n / ps, 0, 0, 0, 0, NULL, 0, NULL, NULL, NULL
FROM bench_p;
INSERT INTO profiles_source (name, slug, write_key_hash, write_key_prefix, secret_key_hash,
    secret_key_prefix, identity_secret, allowed_origins, require_identity_verification,
    is_active, created_at)
VALUES ('gen', 'gen', 'w', 'w', 's', 's', 'i', '[]', false, true, {now});
"""

# Event j of profile i: kind by group (0 page, 1 product_viewed, 2 add_to_cart,
# 3 purchase, 4 scroll_depth); session k = (j-1) / ps starts on a day drawn from the
# profile's interval (a non-churner's last session: within the last 29 days); events of
# a session are 20-120 s apart (readers: 120-360 s).
_EVENTS = """
INSERT INTO profiles_event (source_id, message_id, profile_id, type, event, anonymous_id,
                            timestamp, received_at, properties, traits, context, is_bot)
SELECT (SELECT id FROM profiles_source WHERE slug = 'gen'), 'm' || i || '-' || j, id,
       CASE WHEN kind = 0 THEN 'page' ELSE 'track' END,
       (ARRAY['Product', 'product_viewed', 'add_to_cart', 'purchase', 'scroll_depth'])[kind + 1],
       'a-' || i, ts, ts,
       CASE kind
         WHEN 0 THEN jsonb_build_object('path', '/p/' || (i * 31 + j) % 97, 'title', 'Page')
         WHEN 1 THEN jsonb_build_object('category', cat, 'product_id', 'sku-' || (i + j) % 211,
                                        'price', 19 + (i * 7 + j) % 180)
         WHEN 2 THEN jsonb_build_object('category', cat, 'product_id', 'sku-' || (i + j) % 211,
                                        'price', 19 + (i * 7 + j) % 180)
         WHEN 3 THEN jsonb_build_object('revenue', round((20 + v * 230)::numeric, 2),
                                        'currency', 'EUR')
         ELSE jsonb_build_object('percent', CASE WHEN grp = 2 THEN 75 + 25 * floor(v * 2)
                                                 ELSE 25 + 25 * floor(v * 2) END)
       END,
       '{{}}', '{{}}', false
FROM (
  SELECT i, id, j, grp, v,
         CASE grp
           WHEN 0 THEN CASE WHEN u < .55 THEN 0 WHEN u < .92 THEN 1 ELSE 4 END
           WHEN 1 THEN CASE WHEN u < .30 THEN 0 WHEN u < .60 THEN 1 WHEN u < .75 THEN 2
                            WHEN u < .88 THEN 3 ELSE 4 END
           WHEN 2 THEN CASE WHEN u < .50 THEN 0 WHEN u < .85 THEN 4 ELSE 1 END
           WHEN 3 THEN CASE WHEN u < .30 THEN 0 WHEN u < .60 THEN 1 WHEN u < .95 THEN 2 ELSE 4 END
           ELSE CASE WHEN u < .80 THEN 0 ELSE 1 END
         END AS kind,
         CASE WHEN bench_r(i * 1000 + j, 7) < .7 THEN (ARRAY{cats})[1 + CASE grp WHEN 0 THEN 0
                   WHEN 1 THEN 1 WHEN 2 THEN 2 WHEN 3 THEN 3 ELSE 4 END]
              ELSE (ARRAY{cats})[1 + floor(bench_r(i * 1000 + j, 8) * 6)::int] END AS cat,
         LEAST({now} - interval '1 second',
               {now} - (CASE WHEN NOT churn AND k = (n - 1) / ps THEN bench_r(i * 1000 + k, 9) * 29
                             ELSE end_d + bench_r(i * 1000 + k, 9) * (start_d - end_d) END)
                       * interval '1 day'
                     + ((j - 1) % ps) * (CASE WHEN grp = 2 THEN 120 + v * 240 ELSE 20 + v * 100 END)
                       * interval '1 second') AS ts
  FROM (
    SELECT p.*, j, (j - 1) / p.ps AS k, bench_r(p.i * 1000 + j, 5) AS u,
           bench_r(p.i * 1000 + j, 6) AS v
    FROM bench_p p CROSS JOIN LATERAL generate_series(1, p.n) j
  ) e
) x;
"""


def _recreate(db: str) -> None:
    for sql in (f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)', f'CREATE DATABASE "{db}"'):
        psql("postgres", sql)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=_env(db), check=True
    )


def generate(db: str, profiles: int) -> dict[str, Any]:
    """Fresh database with `profiles` profiles and ~10 events each. Returns timings."""
    _recreate(db)
    timings: dict[str, Any] = {}
    now = datetime.now(UTC).replace(microsecond=0)
    lit = f"'{now.isoformat()}'::timestamptz"
    cats = "['" + "','".join(CATEGORIES) + "']"
    t = time.monotonic()
    psql(db, _RAND + _PROFILES.format(profiles=profiles, now=lit))
    psql(db, f"CREATE TABLE bench_meta AS SELECT {lit} AS now, {profiles}::int AS profiles")
    timings["profiles_s"] = round(time.monotonic() - t, 1)
    # Secondary indexes, the unique constraint and the foreign keys off for the load,
    # back after it (as a bulk import would).
    indexes = psql(
        db,
        "SELECT indexdef FROM pg_indexes WHERE tablename = 'profiles_event' "
        "AND indexname NOT IN (SELECT conname FROM pg_constraint "
        "WHERE conrelid = 'profiles_event'::regclass)",
    ).splitlines()
    constraints = [
        line.split("|", 1)
        for line in psql(
            db,
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'profiles_event'::regclass AND contype IN ('u', 'f')",
        ).splitlines()
    ]
    psql(
        db,
        "".join(f"DROP INDEX {d.split(' INDEX ', 1)[1].split(' ON ', 1)[0]};" for d in indexes if d)
        + "".join(f'ALTER TABLE profiles_event DROP CONSTRAINT "{n}";' for n, _ in constraints),
    )
    t = time.monotonic()
    psql(db, _EVENTS.format(now=lit, cats=cats))
    timings["events_s"] = round(time.monotonic() - t, 1)
    t = time.monotonic()
    psql(
        db,
        "".join(f"{d};" for d in indexes if d)
        + "".join(f'ALTER TABLE profiles_event ADD CONSTRAINT "{n}" {d};' for n, d in constraints),
    )
    psql(db, "VACUUM ANALYZE")
    timings["indexes_s"] = round(time.monotonic() - t, 1)
    timings["events"] = int(psql(db, "SELECT count(*) FROM profiles_event"))
    timings["size_mb"] = round(int(psql(db, f"SELECT pg_database_size('{db}')")) / 2**20)
    return timings


def _ready(db: str, profiles: int) -> bool:
    try:
        return int(psql(db, "SELECT profiles FROM bench_meta") or 0) == profiles
    except subprocess.CalledProcessError:
        return False


def _reset(db: str) -> None:
    """An earlier run's models, scores and segments out (the generated data stays)."""
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=_env(db), check=True
    )
    psql(
        db,
        "TRUNCATE segments_profilescore, segments_clusteringrun, segments_clustering, "
        "segments_predictorversion, segments_predictor, segments_membership, "
        "segments_segmentsize, segments_segment CASCADE",
    )
    psql(db, "VACUUM ANALYZE segments_profilescore")


# --- Measurements (each in its own process) -------------------------------------------


class _Phases:
    """Wall time per progress step (a step lasts until the next one starts)."""

    def __init__(self, group: Callable[[str], str]) -> None:
        self.group = group
        self.marks: list[tuple[float, str]] = []

    def __call__(self, step: str, done: int, total: int) -> None:
        if not self.marks or self.marks[-1][1] != step:
            self.marks.append((time.monotonic(), step))

    def result(self, end: float) -> tuple[dict[str, float], list[tuple[str, float]]]:
        steps = [
            (s, round(((self.marks[i + 1][0] if i + 1 < len(self.marks) else end) - t0), 2))
            for i, (t0, s) in enumerate(self.marks)
        ]
        grouped: dict[str, float] = {}
        for s, d in steps:
            g = self.group(s)
            grouped[g] = round(grouped.get(g, 0.0) + d, 2)
        return grouped, steps


def _cluster_phase(step: str) -> str:
    for prefix, name in (
        ("building features", "features"),
        ("scaling", "transform"),
        ("fitting", "fit_over_k"),
        ("stability", "stability"),
        ("matching", "matching_labels"),
        ("writing", "writes_and_projection"),
        ("recomputing", "segment_recompute"),
    ):
        if step.startswith(prefix):
            return name
    return step


def _train_phase(step: str) -> str:
    for prefix, name in (
        ("building features", "features"),
        ("reading outcomes", "outcomes"),
        ("cross-validating", "cross_validation"),
        ("fitting", "fit"),
        ("evaluating", "evaluate_and_importances"),
        ("comparing", "compare"),
    ):
        if step.startswith(prefix):
            return name
    return step


def _rss_mb() -> dict[str, float]:
    status = Path("/proc/self/status").read_text()
    out: dict[str, float] = {
        "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    }
    for line in status.splitlines():
        if line.startswith(("VmHWM", "VmRSS")):
            out[line.split(":")[0]] = round(int(line.split()[1]) / 1024)
    return out


def _timed(module: Any, name: str, into: dict[str, float]) -> None:
    """Wrap module.name to add its wall time to into[name]."""
    fn = getattr(module, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.monotonic()
        try:
            return fn(*args, **kwargs)
        finally:
            into[name] = into.get(name, 0.0) + time.monotonic() - t

    setattr(module, name, wrapper)


def child(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    import django

    django.setup()
    from django.db import connection

    from segments.ml import features as ft
    from segments.ml import predictive as pr
    from segments.ml import services
    from segments.models import Clustering, Predictor, PredictorVersion, ProfileScore

    with connection.cursor() as cursor:
        cursor.execute("SELECT now FROM bench_meta")
        now = cursor.fetchone()[0]
    if kind == "cluster":
        c, _ = Clustering.objects.get_or_create(
            key="behaviour",
            defaults={"name": "Behaviour", "algorithm": "kmeans", "k_min": 2, "k_max": 10},
        )
        phases = _Phases(_cluster_phase)
        t = time.monotonic()
        run = services.clustering_run_execute(clustering=c, now=now, progress=phases)
        end = time.monotonic()
        grouped, steps = phases.result(end)
        return {
            "wall_s": round(end - t, 2),
            "phases_s": grouped,
            "steps_s": steps,
            "profiles": run.profiles,
            "k": run.k,
            "silhouette": run.silhouette,
            "scores_by_k": run.scores_by_k,
            "stability": run.stability,
            "clusters": [(x["number"], x["size"], x["label"]) for x in run.clusters],
            **_rss_mb(),
        }
    if kind == "train":
        p = Predictor.objects.create(
            key=payload["key"],
            name=payload["key"],
            target="churn",
            horizon_days=30,
            lookback_days=180,
            algorithm=payload["algorithm"],
        )
        phases = _Phases(_train_phase)
        t = time.monotonic()
        version = services.predictor_train_execute(
            predictor=p, now=now, score=False, progress=phases
        )
        end = time.monotonic()
        grouped, steps = phases.result(end)
        m = version.metrics
        if payload.get("export"):
            Path(payload["export"]).write_text(
                json.dumps(
                    {
                        "blob": bytes(version.model_blob or b"").hex(),
                        "feature_names": version.feature_names,
                        "categories": version.categories,
                        "algorithm": version.algorithm,
                    }
                )
            )
        return {
            "wall_s": round(end - t, 2),
            "phases_s": grouped,
            "profiles": m["profiles"],
            "base_rate": round(m["base_rate"], 3),
            "holdout_auc": round(m["holdout_auc"], 4),
            "cv_auc_mean": round(m["cv_auc_mean"], 4),
            "brier": round(m["brier"], 4),
            "top_features": [(x["feature"], round(x["importance"], 4)) for x in m["importances"]][
                :5
            ],
            "model_kb": round(len(bytes(version.model_blob or b"")) / 1024),
            **_rss_mb(),
        }
    if kind == "score":
        model = json.loads(Path(payload["model"]).read_text())
        key = payload["key"]
        found = Predictor.objects.filter(key=key).first()
        if found is None:
            found = Predictor.objects.create(
                key=key, name=key, target="churn", algorithm=model["algorithm"]
            )
            PredictorVersion.objects.create(
                predictor=found,
                version=1,
                algorithm=model["algorithm"],
                feature_names=model["feature_names"],
                categories=model["categories"],
                model_blob=bytes.fromhex(model["blob"]),
                is_current=True,
                status="done",
            )
        existing = ProfileScore.objects.filter(model=key).count()
        base = _rss_mb()
        spent: dict[str, float] = {}
        _timed(services, "scores_write", spent)
        _timed(services, "scores_prune", spent)
        _timed(pr, "scores_of", spent)
        _timed(ft, "_rows_to_matrix", spent)
        _timed(ft, "_query", spent)
        t = time.monotonic()
        scored = services.predictor_score(predictor=found, now=now)
        wall = time.monotonic() - t
        spent = {k: round(v, 2) for k, v in spent.items()}
        return {
            "wall_s": round(wall, 2),
            "scored": scored,
            "existing_scores_before": existing,
            "features_sql_s": round(spent.get("_query", 0) - spent.get("_rows_to_matrix", 0), 2),
            "rows_to_matrix_s": spent.get("_rows_to_matrix", 0),
            "predict_s": spent.get("scores_of", 0),
            "score_upsert_s": spent.get("scores_write", 0),
            "prune_s": spent.get("scores_prune", 0),
            "rss_before_mb": base,
            **_rss_mb(),
        }
    if kind == "explain":
        spec = ft.FeatureSpec(as_of=now, lookback_days=180, categories=ft.top_categories(as_of=now))
        bounds = ft._chunk_bounds(ft.CHUNK_PROFILES)
        _after, hi = next(bounds)
        sql = ft._events_sql(spec, "e.profile_id <= %s")
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, ft._params(spec, [hi]))
            plan = [r[0] for r in cursor.fetchall()]
        return {"plan": plan}
    raise ValueError(kind)


def _run_child(db: str, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("r", suffix=".json") as out:
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import json, sys; sys.path.insert(0, '.'); "
                "from benchmarks.ml_bench import child; "
                f"r = child({kind!r}, json.loads(sys.argv[1])); "
                "open(sys.argv[2], 'w').write(json.dumps(r, default=str))",
                json.dumps(payload),
                out.name,
            ],
            cwd=ROOT,
            env=_env(db),
            check=True,
        )
        result: dict[str, Any] = json.loads(Path(out.name).read_text())
    print(kind, json.dumps({k: v for k, v in result.items() if k != "plan"}), flush=True)
    return result


def _summary(runs: list[dict[str, Any]], key: str = "wall_s") -> dict[str, Any]:
    values = [float(r[key]) for r in runs]
    return {
        "median": round(statistics.median(values), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
        "runs": values,
    }


def run(
    profiles: int, score_profiles: int, repeats: int, *, reuse: bool, skip_score: bool
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "profiles": profiles,
        "repeats": repeats,
        "generate": {},
    }
    todo = [(DB, profiles)] + ([] if skip_score else [(DB_SCORE, score_profiles)])
    for db, n in todo:
        if reuse and _ready(db, n):
            _reset(db)
            result["generate"][db] = {"reused": True}
        else:
            print(f"generating {db}: {n:,} profiles …", flush=True)
            result["generate"][db] = generate(db, n)
            print(json.dumps(result["generate"][db]), flush=True)
    result["explain_100k_chunk"] = _run_child(DB, "explain", {})["plan"]
    clusters = [_run_child(DB, "cluster", {}) for _ in range(repeats)]
    result["clustering"] = {"wall_s": _summary(clusters), "runs": clusters}
    model = ROOT / "benchmarks" / "results" / "ml-model-gb.json"
    model.parent.mkdir(parents=True, exist_ok=True)
    for algo, short in (("gradient_boosting", "gb"), ("random_forest", "rf")):
        runs = [
            _run_child(
                DB,
                "train",
                {
                    "key": f"churn-{short}-{i}",
                    "algorithm": algo,
                    "export": str(model) if short == "gb" and i == 0 else "",
                },
            )
            for i in range(repeats)
        ]
        result[f"train_{short}"] = {
            "wall_s": _summary(runs),
            "holdout_auc": _summary(runs, "holdout_auc"),
            "runs": runs,
        }
    if not skip_score:
        result["explain_1m_chunk"] = _run_child(DB_SCORE, "explain", {})["plan"]
        # First run inserts every score; the next ones update them (the daily steady state).
        scores = [
            _run_child(DB_SCORE, "score", {"model": str(model), "key": "churn-gb"})
            for _ in range(max(repeats, 2))
        ]
        result["score_1m"] = {
            "wall_s": _summary(scores),
            "rss_peak_mb": _summary(scores, "ru_maxrss_mb"),
            "runs": scores,
        }
        result["generate"][DB_SCORE + "_size_mb"] = round(
            int(psql(DB_SCORE, f"SELECT pg_database_size('{DB_SCORE}')")) / 2**20
        )
    return result


def markdown(r: dict[str, Any]) -> str:
    def span(s: dict[str, Any], unit: str = " s") -> str:
        return f"{s['median']}{unit} ({s['min']}–{s['max']})"

    lines = ["| measure | median (min–max) | bar |", "|---|---|---|"]
    c = r["clustering"]
    lines.append(f"| clustering 100k, kmeans k 2..10 | {span(c['wall_s'])} | ≤ 60 s |")
    for short in ("gb", "rf"):
        t = r[f"train_{short}"]
        lines.append(
            f"| training {short} 100k (holdout AUC {span(t['holdout_auc'], '')}) | "
            f"{span(t['wall_s'])} | ≤ 60 s |"
        )
    if "score_1m" in r:
        s = r["score_1m"]
        lines.append(f"| scoring 1M | {span(s['wall_s'])} | ≤ 60 s |")
        lines.append(f"| scoring 1M peak RSS | {span(s['rss_peak_mb'], ' MB')} | ≤ 1 GB |")
    return "\n".join(lines)


def main(
    profiles: int,
    score_profiles: int,
    repeats: int = 2,
    *,
    reuse: bool = False,
    skip_score: bool = False,
) -> dict[str, Any]:
    result = run(profiles, score_profiles, repeats, reuse=reuse, skip_score=skip_score)
    out = ROOT / "benchmarks" / "results" / f"ml-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"written {out}\n")
    print(markdown(result))
    return result
