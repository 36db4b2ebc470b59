#!/usr/bin/env python3
"""Benchmarks (never part of the tests). Run with `make bench` or `python3 dev.py bench`.

    python benchmarks/run.py ingest [--duration 20] [--servers gunicorn,granian]
    python benchmarks/run.py segments [--profiles 1000000] [--events 10000000] [--reuse]
    python benchmarks/run.py decide [--profiles 100000] [--duration 20] [--hot 10000]
    python benchmarks/run.py experiments [--exposures 1000000] [--events 10000000] [--reuse]
    python benchmarks/run.py ml [--profiles 100000] [--score-profiles 1000000] [--repeats 2] [--reuse]
    python benchmarks/run.py reco [--interactions 1000000] [--duration 20] [--hot 10000] [--reuse]
    python benchmarks/run.py seed [--shoppers 2000] [--database sqlite|postgres] [--repeat]
    python benchmarks/run.py soak [--minutes 10] [--window 30] [--profiles 20000]

Needs PostgreSQL (DATABASE_URL, default postgres://postgres@127.0.0.1:5432/cdp_bench; the
database is dropped and recreated) and wrk (Debian package `wrk`). The servers and wrk
bind and connect to 127.0.0.1 only, and are stopped by PID at the end.

What `ingest` measures, in one run and against the same server:
- events/s through POST /api/v1/events with 500-event batches (unique message_ids,
  ~10k visitors recurring), and that every accepted event is in PostgreSQL afterwards;
- the same batches through a bare endpoint that only parses and COPYs the rows (ratio);
- single-event requests/s against a trivial DRF GET (ratio), with p50/p99 latency.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
PY = Path(sys.executable)
BIN = PY.parent
PORT = 8111
BASE = f"http://127.0.0.1:{PORT}"
RESULTS = ROOT / "benchmarks" / "results"

BATCH_LUA = r"""
local n = 0
function setup(thread) n = n + 1; thread:set("tid", n) end
function init(args)
  local f = io.open(os.getenv("BENCH_TEMPLATE")); template = f:read("*a"); f:close()
  counter = 0
  run = os.getenv("BENCH_RUN")
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  if os.getenv("BENCH_KEY") ~= "" then wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY") end
end
function request()
  counter = counter + 1
  local prefix = run .. "-" .. tid .. "-" .. counter
  local group = tid .. "g" .. (counter % tonumber(os.getenv("BENCH_GROUPS")))
  local body = (template:gsub("@P@", prefix))
  body = (body:gsub("@G@", group))
  return wrk.format(nil, wrk.path, nil, body)
end
"""

GET_LUA = r"""
function init(args)
  if os.getenv("BENCH_KEY") ~= "" then wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY") end
end
"""


def batch_template(size: int, visitors_per_batch: int = 50) -> str:
    """A batch body with @P@ (unique per request) and @G@ (visitor group) placeholders."""
    ts = datetime.now(UTC).replace(microsecond=0).isoformat()
    events = []
    for i in range(size):
        anon = f"a-@G@-{i % visitors_per_batch}"
        r = i % 50
        if r < 20:
            e = {
                "type": "page",
                "name": "Product",
                "properties": {"path": f"/p/{i % 97}", "title": "Trail runner"},
            }
        elif r < 40:
            e = {
                "type": "track",
                "event": "product_viewed",
                "properties": {
                    "product_id": f"sku-{i % 211}",
                    "category": ["shoes", "bags"][i % 2],
                    "price": 89.0,
                },
            }
        elif r < 47:
            e = {
                "type": "track",
                "event": "scroll_depth",
                "properties": {"percent": 25 * (1 + i % 4)},
            }
        elif r < 49:
            e = {
                "type": "track",
                "event": "add_to_cart",
                "properties": {"product_id": f"sku-{i % 211}", "price": 89.0},
            }
        else:
            e = {
                "type": "track",
                "event": "purchase",
                "properties": {"revenue": 129.5, "currency": "EUR"},
            }
        e.update(
            {
                "anonymous_id": anon,
                "message_id": f"@P@-{i}",
                "timestamp": ts,
                "context": {
                    "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/130.0 Safari/537.36"
                },
            }
        )
        events.append(e)
    if size == 1:
        return json.dumps(events[0])
    return json.dumps({"batch": events})


def psql(db_url: str, sql: str, dbname: str | None = None) -> str:
    parts = urlsplit(db_url)
    args = [
        "psql",
        "-h",
        parts.hostname or "127.0.0.1",
        "-p",
        str(parts.port or 5432),
        "-U",
        parts.username or "postgres",
        "-d",
        dbname or parts.path.lstrip("/"),
        "-tA",
        "-v",
        "ON_ERROR_STOP=1",
        "-c",
        sql,
    ]
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()


def prepare_database(db_url: str) -> None:
    name = urlsplit(db_url).path.lstrip("/")
    psql(db_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', dbname="postgres")
    psql(db_url, f'CREATE DATABASE "{name}"', dbname="postgres")
    env = {**os.environ, "DATABASE_URL": db_url, "DJANGO_SETTINGS_MODULE": "benchmarks.settings"}
    subprocess.run([PY, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    psql(db_url, "CREATE TABLE bench_event_copy (LIKE profiles_event INCLUDING ALL)")


def create_source(db_url: str) -> dict[str, str]:
    env = {**os.environ, "DATABASE_URL": db_url, "DJANGO_SETTINGS_MODULE": "benchmarks.settings"}
    out = subprocess.run(
        [PY, "manage.py", "create_source", f"bench-{int(time.time())}"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)


def production_env(db_url: str, redis_url: str) -> dict[str, str]:
    """The environment of a benchmark's server or worker: the production shape."""
    return {
        **os.environ,
        "DATABASE_URL": db_url,
        "REDIS_URL": redis_url,
        "DJANGO_SETTINGS_MODULE": "benchmarks.settings",
        "DEBUG": "false",
        "SECRET_KEY": "bench-" + "x" * 60,
        "ALLOWED_HOSTS": "127.0.0.1",
    }


class Server:
    def __init__(self, kind: str, db_url: str, redis_url: str) -> None:
        self.kind = kind
        env = production_env(db_url, redis_url)
        if kind == "gunicorn":
            cmd = [
                str(BIN / "gunicorn"),
                "cdp.wsgi:application",
                "-b",
                f"127.0.0.1:{PORT}",
                "-w",
                "4",
                "--worker-class",
                "sync",
                "--log-level",
                "warning",
                "--backlog",
                "2048",
            ]
        else:
            cmd = [
                str(BIN / "granian"),
                "--interface",
                "wsgi",
                "--host",
                "127.0.0.1",
                "--port",
                str(PORT),
                "--workers",
                "2",
                "--blocking-threads",
                "4",
                "--no-access-log",
                "--log-level",
                "warning",
                "cdp.wsgi:application",
            ]
        self.label = " ".join([Path(cmd[0]).name, *cmd[1:]])
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{BASE}/healthz", timeout=1).read()
                return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"{kind} did not start")

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)


def wrk(path: str, script: str, *, duration: int, connections: int, env: dict[str, str]) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(script)
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            "-s",
            fh.name,
            f"{BASE}{path}",
        ],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(fh.name)

    def ms(label: str) -> float:
        m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            return float("nan")
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "requests": requests,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": ms("50"),
        "p99_ms": ms("99"),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1) if errors else "",
        "duration_s": duration,
    }


def bench_ingest(args: argparse.Namespace) -> dict:
    db_url = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/cdp_bench")
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")
    prepare_database(db_url)
    keys = create_source(db_url)
    tmp = Path(tempfile.mkdtemp())
    (tmp / "batch.json").write_text(batch_template(500))
    (tmp / "single.json").write_text(batch_template(1))
    print(f"batch body: {(tmp / 'batch.json').stat().st_size} bytes for 500 events", flush=True)
    results: dict = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "duration_s": args.duration,
        "cpus": os.cpu_count(),
        "servers": {},
    }
    for kind in args.servers.split(","):
        server = Server(kind, db_url, redis_url)
        try:
            run = f"{kind}{int(time.time())}"
            r: dict = {"server": server.label}
            common = {"BENCH_RUN": run, "BENCH_GROUPS": "100"}
            # warm up the workers (imports, connections, key cache)
            wrk(
                "/api/v1/events",
                BATCH_LUA,
                duration=3,
                connections=8,
                env={
                    **common,
                    "BENCH_RUN": run + "w",
                    "BENCH_TEMPLATE": str(tmp / "batch.json"),
                    "BENCH_KEY": keys["secret_key"],
                },
            )
            before = int(psql(db_url, "SELECT count(*) FROM profiles_event"))
            ingest = wrk(
                "/api/v1/events",
                BATCH_LUA,
                duration=args.duration,
                connections=args.batch_connections,
                env={
                    **common,
                    "BENCH_TEMPLATE": str(tmp / "batch.json"),
                    "BENCH_KEY": keys["secret_key"],
                },
            )
            time.sleep(1)
            stored = int(psql(db_url, "SELECT count(*) FROM profiles_event")) - before
            accepted = (ingest["requests"] - ingest["non_2xx"]) * 500
            ingest.update(
                events_per_s=accepted / args.duration,
                accepted=accepted,
                stored=stored,
                durable=stored >= accepted,
            )
            r["batch"] = ingest
            copy = wrk(
                "/bench/copy",
                BATCH_LUA,
                duration=args.duration,
                connections=args.batch_connections,
                env={
                    **common,
                    "BENCH_RUN": run + "c",
                    "BENCH_TEMPLATE": str(tmp / "batch.json"),
                    "BENCH_KEY": "",
                },
            )
            copy["events_per_s"] = (copy["requests"] - copy["non_2xx"]) * 500 / args.duration
            r["bare_copy"] = copy
            r["batch_vs_copy"] = (
                ingest["events_per_s"] / copy["events_per_s"] if copy["events_per_s"] else 0
            )
            single = wrk(
                "/api/v1/events",
                BATCH_LUA,
                duration=args.duration,
                connections=32,
                env={
                    **common,
                    "BENCH_RUN": run + "s",
                    "BENCH_TEMPLATE": str(tmp / "single.json"),
                    "BENCH_KEY": keys["write_key"],
                },
            )
            trivial = wrk(
                "/bench/trivial",
                GET_LUA,
                duration=args.duration,
                connections=32,
                env={"BENCH_KEY": ""},
            )
            r["single"], r["trivial"] = single, trivial
            r["single_vs_trivial"] = single["rps"] / trivial["rps"] if trivial["rps"] else 0
            results["servers"][kind] = r
            print(json.dumps({kind: r}, indent=2), flush=True)
        finally:
            server.stop()
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"ingest-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwritten {out}\n")
    print(markdown(results))
    return results


def markdown(results: dict) -> str:
    lines = [
        "| server | batch events/s | bare COPY events/s | ratio | batch p99 ms | stored ≥ accepted | "
        "single-event req/s | trivial DRF req/s | ratio | single p99 ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, r in results["servers"].items():
        b, c, s, t = r["batch"], r["bare_copy"], r["single"], r["trivial"]
        lines.append(
            f"| {kind} | {b['events_per_s']:,.0f} | {c['events_per_s']:,.0f} | {r['batch_vs_copy']:.2f} | "
            f"{b['p99_ms']:.0f} | {b['stored']:,} ≥ {b['accepted']:,}: {b['durable']} | {s['rps']:,.0f} | "
            f"{t['rps']:,.0f} | {r['single_vs_trivial']:.2f} | {s['p99_ms']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="bench")
    ingest = sub.add_parser("ingest")
    ingest.add_argument("--duration", type=int, default=20)
    ingest.add_argument("--servers", default="gunicorn,granian")
    ingest.add_argument("--batch-connections", type=int, default=8)
    seg = sub.add_parser("segments")
    seg.add_argument("--profiles", type=int, default=1_000_000)
    seg.add_argument("--events", type=int, default=10_000_000)
    seg.add_argument(
        "--reuse",
        action="store_true",
        help="keep the generated database of an earlier run (segments are dropped and recomputed)",
    )
    dec = sub.add_parser("decide")
    dec.add_argument("--profiles", type=int, default=100_000)
    dec.add_argument("--duration", type=int, default=20)
    dec.add_argument("--hot", type=int, default=10_000, help="visitors in the working set")
    exp = sub.add_parser("experiments")
    exp.add_argument("--exposures", type=int, default=1_000_000)
    exp.add_argument("--events", type=int, default=10_000_000)
    exp.add_argument("--repeats", type=int, default=5)
    exp.add_argument("--reuse", action="store_true", help="keep the generated database")
    ml = sub.add_parser("ml")
    ml.add_argument("--profiles", type=int, default=100_000)
    ml.add_argument("--score-profiles", type=int, default=1_000_000)
    ml.add_argument("--repeats", type=int, default=2)
    ml.add_argument("--reuse", action="store_true", help="keep the generated databases")
    ml.add_argument("--skip-score", action="store_true", help="no 1M-profile scoring database")
    reco = sub.add_parser("reco")
    reco.add_argument("--profiles", type=int, default=100_000)
    reco.add_argument("--interactions", type=int, default=1_000_000)
    reco.add_argument("--items", type=int, default=10_000)
    reco.add_argument("--duration", type=int, default=20)
    reco.add_argument("--hot", type=int, default=10_000, help="visitors in the working set")
    reco.add_argument("--repeats", type=int, default=1, help="steady-state trainings")
    reco.add_argument("--reuse", action="store_true", help="keep the generated database")
    reco.add_argument(
        "--fine", action="store_true", help="also time item_fields per event (adds overhead)"
    )
    seed = sub.add_parser("seed")
    seed.add_argument("--shoppers", type=int, default=2000)
    seed.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    seed.add_argument("--repeat", action="store_true", help="run seed_demo twice (idempotence)")
    soak = sub.add_parser("soak")
    soak.add_argument("--minutes", type=int, default=10)
    soak.add_argument("--window", type=int, default=30, help="seconds per measured window")
    soak.add_argument("--profiles", type=int, default=20_000)
    args = parser.parse_args()
    if args.bench == "soak":
        from benchmarks.soak_bench import main as soak_main

        soak_main(args.minutes, args.window, args.profiles)
        return
    if args.bench == "seed":
        from benchmarks.seed_bench import main as seed_main

        seed_main(args.shoppers, args.database, args.repeat)
        return
    if args.bench == "reco":
        from benchmarks.reco_bench import main as reco_main

        reco_main(
            args.profiles,
            args.interactions,
            args.items,
            args.duration,
            args.hot,
            args.repeats,
            reuse=args.reuse,
            fine=args.fine,
        )
        return
    if args.bench == "ml":
        from benchmarks.ml_bench import main as ml_main

        ml_main(
            args.profiles,
            args.score_profiles,
            args.repeats,
            reuse=args.reuse,
            skip_score=args.skip_score,
        )
        return
    if args.bench == "experiments":
        from benchmarks.experiments_bench import main as experiments_main

        experiments_main(args.exposures, args.events, args.repeats, reuse=args.reuse)
        return
    if args.bench == "decide":
        from benchmarks.decide_bench import main as decide_main

        decide_main(args.profiles, args.duration, args.hot)
        return
    if args.bench == "segments":
        from benchmarks.segments_bench import main as segments_main

        segments_main(args.profiles, args.events, reuse=args.reuse)
        return
    if args.bench in (None, "ingest"):
        if args.bench is None:
            args = ingest.parse_args([])
        bench_ingest(args)


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    main()
