"""`/decide` benchmark on PostgreSQL + Redis, against the production server (granian).

    python benchmarks/run.py decide [--profiles 100000] [--duration 20] [--hot 10000]

Generates 100k profiles (with anonymous-id identities) and their events inside
PostgreSQL, defines the 20 rule segments of the segment benchmark and recomputes them,
then 50 rules across 5 slots (segments, traits, attributes, events, context, frequency
caps, every strategy). wrk (a second process, 127.0.0.1 only) then asks for all 5 slots
at once for known visitors drawn from a working set of `--hot` profiles (warmed first
with `rules.decide.snapshots_warm`: their snapshots are in Redis, as on a running shop),
and — in the same run, same server — GETs a trivial DRF view. Reported: the throughput
ratio (bar ≥ 0.5), p50/p99 at 32 connections (bar p99 ≤ 25 ms), the cold rate (first
visits: every request builds a snapshot from PostgreSQL), and that every decision was
logged.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

DECIDE_LUA = r"""
local n = 0
function setup(thread) n = n + 1; thread:set("tid", n) end
function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")
  hot = tonumber(os.getenv("BENCH_HOT"))
  sequential = os.getenv("BENCH_SEQUENTIAL") == "1"
  base = tonumber(os.getenv("BENCH_BASE") or "0")
  span = tonumber(os.getenv("BENCH_SPAN") or "1")
  counter = 0
  math.randomseed(tid * 7919)
  devices = {"mobile", "desktop", "tablet"}
  pages = {"/", "/blog/how-to-choose", "/p/trail-runner", "/sale"}
end
function request()
  counter = counter + 1
  local v
  if sequential then v = base + (tid - 1) * span + counter else v = math.random(1, hot) end
  local body = '{"anonymous_id":"v' .. v .. '","slots":["home_hero","product_note","content_feed","promo_strip","checkout_upsell"],'
    .. '"context":{"device":"' .. devices[1 + counter % 3] .. '","page":"' .. pages[1 + counter % 4] .. '","hour":' .. (counter % 24) .. '}}'
  return wrk.format(nil, wrk.path, nil, body)
end
"""

SLOTS = ["home_hero", "product_note", "content_feed", "promo_strip", "checkout_upsell"]
STRATEGIES = ["first_match", "first_match", "score_sorted", "random", "first_match"]


def _rule_conditions(slugs: list[str]) -> list[dict[str, Any]]:
    """50 realistic conditions: segment references, traits, attributes, event windows,
    request context, and mixes of them."""
    night = {
        "any": [
            {"context": "hour", "op": "gte", "value": 22},
            {"context": "hour", "op": "lt", "value": 5},
        ]
    }
    out: list[dict[str, Any]] = []
    for i in range(50):
        kind = i % 5
        seg = slugs[i % len(slugs)]
        if kind == 0:
            out.append({"segment": seg})
        elif kind == 1:
            out.append(
                {"all": [{"segment": seg}, {"context": "device", "op": "eq", "value": "mobile"}]}
            )
        elif kind == 2:
            out.append(
                {
                    "all": [
                        {"trait": "plan", "op": "in", "value": ["pro", "team"]},
                        {"attr": "purchase_count", "op": "gte", "value": 1 + i % 4},
                    ]
                }
            )
        elif kind == 3:
            out.append(
                {
                    "all": [
                        {"event": "add_to_cart", "within": "24h"},
                        {"not": {"event": "purchase", "within": "24h"}},
                    ]
                }
                if i % 2
                else {
                    "event": "product_viewed",
                    "within": "7d",
                    "where": [{"property": "category", "op": "eq", "value": "shoes"}],
                    "measure": {"fn": "count", "op": "gte", "value": 2},
                }
            )
        else:
            out.append({"all": [night, {"not": {"segment": seg}}]})
    return out


def setup_rules(slugs: list[str]) -> dict[str, int]:
    from rules.models import Rule, Slot
    from rules.services import rule_save, slot_save

    conditions = _rule_conditions(slugs)
    for s, (key, strategy) in enumerate(zip(SLOTS, STRATEGIES, strict=True)):
        slot = slot_save(
            slot=Slot(key=key, strategy=strategy, control_percent=5.0),
            actor="bench",
            variants=[
                {"key": f"v{j}", "title": f"{key} variant {j}", "body": "x" * 120}
                for j in range(11)
            ],
            default_variant="v0",
        )
        for r in range(10):
            i = s * 10 + r
            rule_save(
                rule=Rule(
                    key=f"{key}-r{r}",
                    slot=slot,
                    name=f"{key} rule {r}",
                    condition=conditions[i],
                    variant=slot.variants.get(key=f"v{1 + r}"),
                    priority=100 - r * 10,
                    scoring=[{"condition": {"segment": slugs[(i + 3) % len(slugs)]}, "points": 5}]
                    if strategy == "score_sorted"
                    else [],
                    frequency_cap_count=3 if r == 0 else None,
                    frequency_cap_per="day" if r == 0 else "",
                ),
                actor="bench",
            )
    return {"slots": Slot.objects.count(), "rules": Rule.objects.count()}


def prepare(
    db: str, profiles: int, hot: int, *, refresh: str = "scheduled"
) -> tuple[dict[str, str], dict[str, Any]]:
    """A fresh database `db` with `profiles` visitors (anonymous ids v1…vN, ten events
    each), the 20 benchmark segments (recomputed) with the given refresh policy, the 50
    rules, and the first `hot` visitors' `/decide` snapshots warm in Redis. Needs
    DATABASE_URL, REDIS_URL and DJANGO_SETTINGS_MODULE set for `db`. The source's keys,
    and the timings."""
    from benchmarks import run as runner
    from benchmarks.segments_bench import SEGMENTS, generate

    db_url = os.environ["DATABASE_URL"]
    runner.prepare_database(db_url)
    print(f"generating {profiles:,} profiles and {profiles * 10:,} events …", flush=True)
    gen = generate(db, profiles, profiles * 10)
    runner.psql(
        db_url,
        "INSERT INTO profiles_identity (kind, value, profile_id, created_at) "
        "SELECT 'anonymous_id', 'v' || i, id, now() FROM bench_idx",
    )
    keys = runner.create_source(db_url)

    import django

    sys.path.insert(0, str(ROOT))
    django.setup()
    from django.core.cache import cache

    from segments.models import Segment
    from segments.services import segments_recompute_all

    cache.clear()
    for slug, condition, _ in SEGMENTS:
        Segment.objects.create(slug=slug, name=slug, condition=condition, refresh=refresh)
    t = time.monotonic()
    segments_recompute_all()
    recompute_s = time.monotonic() - t
    counts = setup_rules([s for s, _, _ in SEGMENTS])
    from profiles.models import Identity
    from rules.decide import snapshots_warm

    t = time.monotonic()
    hot_ids = list(
        Identity.objects.filter(
            kind="anonymous_id", value__in=[f"v{i}" for i in range(1, hot + 1)]
        ).values_list("profile_id", flat=True)
    )
    warmed = snapshots_warm(profile_ids=hot_ids)
    warm_s = time.monotonic() - t
    facts = {
        "generate": gen,
        "recompute_s": recompute_s,
        **counts,
        "warmed": warmed,
        "warm_s": warm_s,
    }
    print(json.dumps(facts), flush=True)
    return keys, facts


def main(profiles: int, duration: int, hot: int) -> dict[str, Any]:
    from benchmarks import run as runner
    from benchmarks.segments_bench import SEGMENTS

    db = "cdp_bench_decide"
    db_url = f"postgres://postgres@127.0.0.1:5432/{db}"
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/6")
    os.environ.update(
        DATABASE_URL=db_url, REDIS_URL=redis_url, DJANGO_SETTINGS_MODULE="benchmarks.settings"
    )
    keys, facts = prepare(db, profiles, hot)
    counts = {"slots": facts["slots"], "rules": facts["rules"]}
    warmed, warm_s = facts["warmed"], facts["warm_s"]

    from rules import decisionlog

    server = runner.Server("granian", db_url, redis_url)
    result: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "profiles": profiles,
        "segments": len(SEGMENTS),
        **counts,
        "hot_visitors": hot,
        "server": server.label,
        "slots_per_request": len(SLOTS),
        "snapshots_warmed": warmed,
        "snapshots_warm_s": round(warm_s, 1),
    }
    runs: list[dict[str, Any]] = []
    try:
        env = {"BENCH_KEY": keys["write_key"], "BENCH_HOT": str(hot)}
        runner.wrk(
            "/bench/trivial", runner.GET_LUA, duration=3, connections=8, env={"BENCH_KEY": ""}
        )
        # Cold: visitors outside the working set, each seen once.
        span = (profiles - hot) // 2
        cold = runner.wrk(
            "/api/v1/decide",
            DECIDE_LUA,
            duration=max(5, duration // 2),
            connections=32,
            env={**env, "BENCH_SEQUENTIAL": "1", "BENCH_BASE": str(hot), "BENCH_SPAN": str(span)},
        )
        result["cold"] = cold
        runs.append(cold)
        # Warm-up of the processes (compiled rules, identities), then the measurement.
        runs.append(runner.wrk("/api/v1/decide", DECIDE_LUA, duration=5, connections=32, env=env))
        decide = runner.wrk(
            "/api/v1/decide", DECIDE_LUA, duration=duration, connections=32, env=env
        )
        runs.append(decide)
        trivial = runner.wrk(
            "/bench/trivial",
            runner.GET_LUA,
            duration=duration,
            connections=32,
            env={"BENCH_KEY": ""},
        )
        result.update(
            decide=decide,
            trivial=trivial,
            ratio=round(decide["rps"] / trivial["rps"], 3) if trivial["rps"] else 0,
        )
    finally:
        server.stop()
    # Every answered decision is logged: drain what waits in Redis, then count.
    time.sleep(1)
    from rules.models import Decision

    decisionlog.drain()
    answered = sum(r["requests"] - r["non_2xx"] for r in runs)
    result["decisions_logged"] = Decision.objects.count()
    result["decisions_expected_at_least"] = answered * len(SLOTS)
    out = ROOT / "benchmarks" / "results" / f"decide-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps(result, indent=2, default=str))
    print(f"written {out}")
    return result
