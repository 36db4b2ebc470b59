"""Demo data benchmark: how long `seed_demo` takes, and how fast its ingestion runs
(never part of the tests).

    python benchmarks/run.py seed [--shoppers 2000] [--database sqlite|postgres] [--repeat]

Runs `manage.py migrate` and `manage.py seed_demo --shoppers N` in a child process on a
fresh database — a temporary SQLite file (the embedded default the README's run command
uses) or the PostgreSQL database `cdp_bench_seed` (dropped and recreated) — and reports
the wall time of each step of seed_demo (from its own report lines), the ingestion rate,
the events stored, the child's peak RSS and the database's size. With `--repeat` it runs
seed_demo a second time on the same database: with the same seed it must store nothing.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.segments_bench import psql

ROOT = Path(__file__).resolve().parent.parent
PG_DB = "cdp_bench_seed"
RATE = re.compile(
    r"demo data: (?P<shoppers>\d+) shoppers .*?, (?P<accepted>\d+) new events, "
    r"(?P<duplicates>\d+) already stored, (?P<rejected>\d+) rejected, in (?P<seconds>[\d.]+) s"
)


def _child_peak_rss_mb() -> float:
    # ru_maxrss of RUSAGE_CHILDREN is the largest of the waited-for children, in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def _seed(env: dict[str, str], shoppers: int) -> dict[str, Any]:
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "manage.py", "seed_demo", "--shoppers", str(shoppers)],
        cwd=ROOT,
        env={**env, "TQDM_DISABLE": "1"},
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    wall = time.monotonic() - started
    match = RATE.search(out)
    if match is None:
        raise SystemExit(f"seed_demo printed no ingestion report:\n{out}")
    ingest_s = float(match["seconds"])
    accepted = int(match["accepted"])
    return {
        "wall_s": round(wall, 1),
        "ingest_s": ingest_s,
        "rest_s": round(wall - ingest_s, 1),
        "accepted": accepted,
        "duplicates": int(match["duplicates"]),
        "rejected": int(match["rejected"]),
        "events_per_s": round(accepted / ingest_s) if ingest_s and accepted else 0,
        "segments": re.findall(r"segment (\S+): (\d+) members", out),
    }


def main(shoppers: int, database: str, repeat: bool) -> None:
    tmp = tempfile.TemporaryDirectory(prefix="cdp-seed-bench-")
    if database == "sqlite":
        path = Path(tmp.name) / "seed.sqlite3"
        db_url = f"sqlite:///{path}"
    else:
        for sql in (
            f'DROP DATABASE IF EXISTS "{PG_DB}" WITH (FORCE)',
            f'CREATE DATABASE "{PG_DB}"',
        ):
            psql("postgres", sql)
        db_url = f"postgres://postgres@127.0.0.1:5432/{PG_DB}"
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    env["DATABASE_URL"] = db_url
    started = time.monotonic()
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    migrate_s = time.monotonic() - started
    print(f"seed_demo --shoppers {shoppers} on {database} …", flush=True)
    first = _seed(env, shoppers)
    print(json.dumps({"first": first}), flush=True)
    second = _seed(env, shoppers) if repeat else None
    if second is not None:
        print(json.dumps({"second": second}), flush=True)
    if database == "sqlite":
        size_mb = path.stat().st_size / 2**20
        events = (
            subprocess.run(
                [
                    sys.executable,
                    "manage.py",
                    "shell",
                    "-c",
                    "from profiles.models import Event; print(Event.objects.count())",
                ],
                cwd=ROOT,
                env=env,
                check=True,
                capture_output=True,
                text=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
    else:
        size_mb = int(psql(PG_DB, f"SELECT pg_database_size('{PG_DB}')")) / 2**20
        events = psql(PG_DB, "SELECT count(*) FROM profiles_event")
    result = {
        "bench": "seed",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "database": database,
        "shoppers": shoppers,
        "migrate_s": round(migrate_s, 1),
        "first": first,
        "second": second,
        "events_stored": int(events),
        "peak_rss_mb": round(_child_peak_rss_mb()),
        "database_mb": round(size_mb),
        "load_average": os.getloadavg(),
    }
    results = ROOT / "benchmarks" / "results"
    results.mkdir(exist_ok=True)
    out = results / f"seed-{database}-{shoppers}-{int(time.time())}.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(
        f"\n| database | shoppers | events stored | seed_demo | of it ingestion | events/s | "
        f"second run | peak RSS | database |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
        f"| {database} | {shoppers:,} | {int(events):,} | {first['wall_s']} s | {first['ingest_s']} s | "
        f"{first['events_per_s']:,} | "
        + (f"{second['wall_s']} s, {second['accepted']} new" if second else "—")
        + f" | {result['peak_rss_mb']} MB | {result['database_mb']} MB |"
    )
    tmp.cleanup()
