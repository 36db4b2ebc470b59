"""Soak benchmark: ingestion and `/decide` mixed, for minutes, against the production shape
(granian web, a Celery worker with beat, PostgreSQL, Redis) — never part of the tests.

    python benchmarks/run.py soak [--minutes 10] [--window 30] [--profiles 20000]

Generates `--profiles` known visitors with ten events each, the 20 rule segments of the
segment benchmark and the 50 rules of the `/decide` benchmark. Then, window after window
(`--window` seconds each), two wrk processes run at once on 127.0.0.1: one POSTs 50-event
batches to `/api/v1/events` (unique message ids; ~4k new visitors recurring, so real-time
segment updates and `/decide` snapshot invalidations keep the worker busy), the other asks
`/api/v1/decide` for five slots for known visitors. After each window it records both
throughputs and p99s, non-2xx answers and socket errors, the resident memory of the web
processes and of the worker, Redis's memory, the Celery queue's depth and the decision log
buffer. At the end: every accepted event must be in PostgreSQL, every answer logged.

Results: `benchmarks/results/soak-*.json` and a chart `soak-*.svg` (throughput, p99 and
memory over time) that docs/benchmarks.md shows. The leak check is the slope of each
process group's memory over the second half of the run, in MB per minute.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DB = "cdp_bench_soak"


def _rss_mb(root_pid: int) -> float:
    """Resident memory of a process and all its descendants, in MB (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, todo = 0, [root_pid]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return round(total / 1024, 1)


def _slope_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) points, in MB per minute."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    if not var:
        return 0.0
    return round(60 * sum((x - mx) * (y - my) for x, y in points) / var, 2)


def _scrape(url: str) -> dict[str, float]:
    """A few sums from the server's own /metrics (loopback, multiprocess mode)."""
    import urllib.request

    text = urllib.request.urlopen(url, timeout=10).read().decode()
    sums: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        for key, prefix in (
            ("snapshot_hits", 'cdp_cache_hits_total{cache="decide_snapshot"'),
            ("snapshot_misses", 'cdp_cache_misses_total{cache="decide_snapshot"'),
            ("http_5xx", "cdp_http_requests_total{"),
            ("events_accepted", "cdp_events_accepted_total"),
        ):
            if name.startswith(prefix) and (key != "http_5xx" or 'status="5xx"' in name):
                sums[key] = sums.get(key, 0.0) + float(value)
    return sums


def _wrk_into(
    results: dict[str, dict[str, Any]],
    name: str,
    path: str,
    script: str,
    conns: int,
    env: dict[str, str],
    window: int,
) -> None:
    from benchmarks import run as runner

    results[name] = runner.wrk(path, script, duration=window, connections=conns, env=env)


def chart(windows: list[dict[str, Any]], title: str) -> str:
    """Three stacked panels over elapsed minutes: throughput, p99, memory."""
    from cdp.charts import (
        Scale,
        domain,
        palette_color,
        polyline_points,
        svg_open,
        x_axis,
        y_grid,
        y_title,
    )

    width, left, right, panel, gap, top = 760, 80, 150, 170, 70, 34
    panels: list[tuple[str, list[tuple[str, str, float]]]] = [
        (
            "requests/s",
            [("events/s ÷ 10", "ingest_events_per_s", 0.1), ("decide req/s", "decide_rps", 1)],
        ),
        ("p99 ms", [("ingest p99", "ingest_p99_ms", 1), ("decide p99", "decide_p99_ms", 1)]),
        (
            "RSS MB",
            [("web", "web_rss_mb", 1), ("worker", "worker_rss_mb", 1), ("redis", "redis_mb", 1)],
        ),
    ]
    height = top + len(panels) * (panel + gap) + 10
    out = [svg_open(width, height, title, "soak", description=title)]
    out.append(
        f'<text x="{left}" y="20" font-size="14" font-weight="bold" fill="#222">{title}</text>'
    )
    xs = [w["elapsed_s"] / 60 for w in windows]
    x_scale = Scale(0.0, max(xs) if xs else 1.0, start=left, end=width - right)
    color = 0
    for p, (unit, lines) in enumerate(panels):
        y0 = top + p * (panel + gap)
        values = [w[key] * k for _, key, k in lines for w in windows]
        y_scale = Scale(*domain(values, floor_zero=True), start=y0 + panel, end=y0)
        out.append(y_grid(y_scale, left, width - right))
        out.append(y_title(22, y0 + panel / 2, unit))
        out.append(x_axis(x_scale, y0 + panel, "minutes"))
        for i, (name, key, k) in enumerate(lines):
            c = palette_color(color)
            color += 1
            run = [(x_scale(x), y_scale(w[key] * k)) for x, w in zip(xs, windows, strict=True)]
            out.append(
                f'<polyline fill="none" stroke="{c}" stroke-width="2" points="{polyline_points(run)}"/>'
            )
            ly = y0 + 14 + 18 * i
            out.append(
                f'<line x1="{width - right + 12}" y1="{ly - 4}" x2="{width - right + 32}" '
                f'y2="{ly - 4}" stroke="{c}" stroke-width="3"/>'
                f'<text x="{width - right + 38}" y="{ly}" font-size="12" fill="#333">{name}</text>'
            )
    out.append("</svg>")
    return "".join(out)


def main(minutes: int, window: int, profiles: int) -> dict[str, Any]:
    from benchmarks import run as runner
    from benchmarks.decide_bench import DECIDE_LUA, SLOTS, prepare

    db_url = f"postgres://postgres@127.0.0.1:5432/{DB}"
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/7")
    os.environ.update(
        DATABASE_URL=db_url, REDIS_URL=redis_url, DJANGO_SETTINGS_MODULE="benchmarks.settings"
    )
    # The decide visitors' snapshots are warm, as on a shop that has been running (the
    # `/decide` benchmark measures the cold path on its own); every segment is real-time.
    hot = min(profiles, 10_000)
    keys, _ = prepare(DB, profiles, hot, refresh="realtime")
    import redis
    from django.db import connection

    from rules.decisionlog import QUEUE_KEY

    connection.close()

    r = redis.Redis.from_url(redis_url)
    template = Path(tempfile.mkstemp(suffix=".json")[1])
    template.write_text(runner.batch_template(50, visitors_per_batch=10))
    metrics_dir = tempfile.mkdtemp(prefix="cdp-soak-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    server = runner.Server("granian", db_url, redis_url)
    del os.environ["PROMETHEUS_MULTIPROC_DIR"]
    worker_env = runner.production_env(db_url, redis_url)
    worker = subprocess.Popen(
        [
            str(runner.BIN / "celery"),
            "-A",
            "cdp",
            "worker",
            "-B",
            "--concurrency",
            "1",
            "--loglevel",
            "warning",
            "--schedule",
            str(template) + ".beat",
        ],
        cwd=ROOT,
        env=worker_env,
        start_new_session=True,
    )
    windows: list[dict[str, Any]] = []
    accepted = answered = 0
    started = time.monotonic()
    try:
        time.sleep(3)
        ingest_env = {
            "BENCH_TEMPLATE": str(template),
            "BENCH_KEY": keys["secret_key"],
            "BENCH_RUN": f"soak{int(time.time())}",
            "BENCH_GROUPS": "200",
        }
        decide_env = {"BENCH_KEY": keys["write_key"], "BENCH_HOT": str(hot)}
        for n in range(max(1, minutes * 60 // window)):
            results: dict[str, dict[str, Any]] = {}

            ingest_env["BENCH_RUN"] = f"soak{int(time.time())}w{n}"
            threads = [
                threading.Thread(
                    target=_wrk_into,
                    args=(
                        results,
                        "ingest",
                        "/api/v1/events",
                        runner.BATCH_LUA,
                        4,
                        ingest_env,
                        window,
                    ),
                ),
                threading.Thread(
                    target=_wrk_into,
                    args=(results, "decide", "/api/v1/decide", DECIDE_LUA, 16, decide_env, window),
                ),
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            ing, dec = results["ingest"], results["decide"]
            accepted += (ing["requests"] - ing["non_2xx"]) * 50
            answered += dec["requests"] - dec["non_2xx"]
            info = r.info("memory")
            scraped = _scrape(f"{runner.BASE}/metrics")
            hits, misses = scraped.get("snapshot_hits", 0), scraped.get("snapshot_misses", 0)
            row = {
                "window": n + 1,
                "elapsed_s": round(time.monotonic() - started),
                "ingest_events_per_s": round(ing["rps"] * 50),
                "ingest_p99_ms": ing["p99_ms"],
                "decide_rps": round(dec["rps"]),
                "decide_p99_ms": dec["p99_ms"],
                "non_2xx": ing["non_2xx"] + dec["non_2xx"],
                "socket_errors": " ".join(
                    x for x in (ing["socket_errors"], dec["socket_errors"]) if x
                ),
                "web_rss_mb": _rss_mb(server.proc.pid),
                "worker_rss_mb": _rss_mb(worker.pid),
                "redis_mb": round(info["used_memory"] / 2**20, 1),
                "queue_depth": int(r.llen("celery")),
                "decision_buffer": int(r.llen(QUEUE_KEY)),
                "snapshot_hit_rate": round(hits / (hits + misses), 3) if hits + misses else None,
                "server_5xx_total": scraped.get("http_5xx", 0),
                "server_events_accepted_total": scraped.get("events_accepted", 0),
            }
            windows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        server.stop()
    # Let the worker finish its queue (real-time updates, the decision drain), then stop it.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and r.llen("celery"):
        time.sleep(1)
    time.sleep(5)
    os.killpg(worker.pid, 15)
    worker.wait(timeout=60)
    from profiles.models import Event
    from rules import decisionlog
    from rules.models import Decision

    decisionlog.drain()
    stored = Event.objects.filter(message_id__startswith="soak").count()
    half = windows[len(windows) // 2 :]
    result: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "minutes": minutes,
        "window_s": window,
        "profiles": profiles,
        "server": server.label,
        "windows": windows,
        "events_accepted": accepted,
        "events_stored": stored,
        "durable": stored >= accepted,
        "decide_answered": answered,
        "decisions_logged": Decision.objects.count(),
        "decisions_expected_at_least": answered * len(SLOTS),
        "non_2xx": sum(w["non_2xx"] for w in windows),
        "leak_mb_per_min": {
            k: _slope_per_minute([(w["elapsed_s"], w[k]) for w in half])
            for k in ("web_rss_mb", "worker_rss_mb", "redis_mb")
        },
    }
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%S}"
    out = ROOT / "benchmarks" / "results" / f"soak-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    svg = out.with_suffix(".svg")
    svg.write_text(
        chart(windows, f"Soak: {minutes} min of ingestion + /decide ({result['non_2xx']} errors)")
    )
    print(json.dumps({k: v for k, v in result.items() if k != "windows"}, indent=2, default=str))
    print(f"written {out} and {svg}")
    template.unlink()
    return result
