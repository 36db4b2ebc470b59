"""Interactions read from the event log: who touched which item, when, and how (viewed,
added to cart, bought). Bot events are left out.

The item of an event is the first of CDP["RECO_ITEM_PROPERTIES"] present in its
properties (`product_id` first, as Segment's e-commerce spec names it); a purchase event
may also list its items in `properties.products` (Segment's "Order Completed"), each
counted as bought. Rows stream from the database in chunks into compact arrays.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
from django.conf import settings
from django.db import connection
from django.utils.dateparse import parse_datetime

from profiles.models import Event
from recommendations.algorithms import KIND_CART, KIND_PURCHASE, KIND_VIEW, Interactions

FETCH = 20_000
MAX_ITEM_ID = 200


def event_kinds() -> dict[str, int]:
    """Event name → kind of interaction (a purchase wins over a cart add over a view)."""
    out = {name: KIND_VIEW for name in settings.CDP["RECO_VIEW_EVENTS"]}
    out.update({name: KIND_CART for name in settings.CDP["ML_CART_EVENTS"]})
    out.update({name: KIND_PURCHASE for name in settings.CDP["PURCHASE_EVENTS"]})
    return out


def item_sql(pg: bool, column: str, path: str = "") -> str:
    props = settings.CDP["RECO_ITEM_PROPERTIES"]
    for p in props:  # names come from settings; keep them to safe identifiers
        if not p.replace("_", "").isalnum():
            raise ValueError(f"RECO_ITEM_PROPERTIES: {p!r} is not a plain property name")
    if pg:
        return "COALESCE(" + ", ".join(f"{column}->>'{p}'" for p in props) + ")"
    return "COALESCE(" + ", ".join(f"json_extract({column}, '$.{p}')" for p in props) + ")"


def _sql(*, pg: bool, names: list[str], purchases: list[str], where: str) -> str:
    table = Event._meta.db_table
    marks = ", ".join(["%s"] * len(names))
    pmarks = ", ".join(["%s"] * len(purchases)) or "NULL"
    pid = "e.profile_id::text" if pg else "e.profile_id"
    # epoch seconds straight from the database: decoding a million timestamps into
    # datetimes costs more than the whole query
    ts = (
        "EXTRACT(EPOCH FROM e.timestamp)::float8"
        if pg
        else "(julianday(e.timestamp) - 2440587.5) * 86400.0"
    )
    direct = (
        f"SELECT {pid}, e.event, {ts}, {item_sql(pg, 'e.properties')} AS item "
        f"FROM {table} e WHERE e.event IN ({marks}) AND NOT e.is_bot {where}"
    )
    if pg:
        listed = (
            f"SELECT {pid}, e.event, {ts}, {item_sql(pg, 'p.value')} AS item "
            f"FROM {table} e CROSS JOIN LATERAL jsonb_array_elements("
            f"CASE WHEN jsonb_typeof(e.properties->'products') = 'array' "
            f"THEN e.properties->'products' ELSE '[]'::jsonb END) p "
            f"WHERE e.event IN ({pmarks}) AND NOT e.is_bot {where}"
        )
    else:
        listed = (
            f"SELECT {pid}, e.event, {ts}, {item_sql(pg, 'p.value')} AS item "
            f"FROM {table} e, json_each(e.properties, '$.products') p "
            f"WHERE e.event IN ({pmarks}) AND NOT e.is_bot "
            f"AND json_type(e.properties, '$.products') = 'array' {where}"
        )
    return f"{direct} UNION ALL {listed}"


def rows(
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    profile_ids: Iterable[uuid.UUID] | None = None,
) -> Iterator[tuple[str, str, float, str]]:
    """(profile id, event name, epoch seconds, item id) of every interaction in the
    window (of these profiles, if given), in no particular order."""
    kinds = event_kinds()
    names = sorted(kinds)
    purchases = sorted(n for n, k in kinds.items() if k == KIND_PURCHASE)
    pg = connection.vendor == "postgresql"
    clauses: list[str] = []
    params: list[Any] = []
    if since is not None:
        clauses.append("AND e.timestamp >= %s")
        params.append(since)
    if until is not None:
        clauses.append("AND e.timestamp < %s")
        params.append(until)
    if profile_ids is not None:
        ids = [str(p) if pg else p.hex for p in profile_ids]
        if not ids:
            return
        clauses.append("AND e.profile_id IN (" + ", ".join(["%s"] * len(ids)) + ")")
        params.extend(ids)
    where = " ".join(clauses)
    sql = _sql(pg=pg, names=names, purchases=purchases, where=where)
    with connection.cursor() as cur:
        cur.execute(sql, [*names, *params, *purchases, *params])
        while True:
            chunk = cur.fetchmany(FETCH)
            if not chunk:
                return
            for pid, name, ts, item in chunk:
                if item is None or item == "":
                    continue
                yield str(pid), name, float(ts), str(item)[:MAX_ITEM_ID]


def interactions_read(
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    progress: Callable[[int], object] | None = None,
) -> Interactions:
    """Every interaction in the window as arrays, items and users coded densely."""
    kinds = event_kinds()
    users: dict[str, int] = {}
    items: dict[str, int] = {}
    u: np.ndarray = np.empty(1 << 16, np.int32)
    i: np.ndarray = np.empty(1 << 16, np.int32)
    t: np.ndarray = np.empty(1 << 16, np.float64)
    k: np.ndarray = np.empty(1 << 16, np.int8)
    n = 0
    for pid, name, ts, item in rows(since=since, until=until):
        if n == len(u):
            u, i, t, k = (np.resize(a, 2 * len(a)) for a in (u, i, t, k))
        u[n] = users.setdefault(pid, len(users))
        i[n] = items.setdefault(item, len(items))
        t[n] = ts
        k[n] = kinds[name]
        n += 1
        if progress is not None and n % 100_000 == 0:
            progress(n)
    if progress is not None:
        progress(n)
    return Interactions(
        u[:n].copy(), i[:n].copy(), t[:n].copy(), k[:n].copy(), list(users), list(items)
    )


def histories_of(
    *, profile_ids: list[uuid.UUID], since: datetime, purchased_since: datetime
) -> dict[uuid.UUID, dict[str, Any]]:
    """Per profile: its recent items newest first as [(item id, kind), …] (at most 50
    interactions), and every item it bought since `purchased_since`."""
    out: dict[uuid.UUID, dict[str, Any]] = {}
    if not profile_ids:
        return out
    kinds = event_kinds()
    start = min(since, purchased_since)
    seen: dict[str, list[tuple[float, str, int]]] = {}
    since_ts, bought_ts = since.timestamp(), purchased_since.timestamp()
    for pid, name, ts, item in rows(since=start, profile_ids=profile_ids):
        seen.setdefault(pid, []).append((ts, item, kinds[name]))
    by_str = {str(p) if connection.vendor == "postgresql" else p.hex: p for p in profile_ids}
    by_str.update({str(p): p for p in profile_ids})
    for key, events in seen.items():
        profile = by_str.get(key) or uuid.UUID(key)
        events.sort(key=lambda e: e[0], reverse=True)
        recent = [(item, kind) for ts, item, kind in events if ts >= since_ts][:50]
        bought = sorted(
            {item for ts, item, kind in events if kind == KIND_PURCHASE and ts >= bought_ts}
        )
        out[profile] = {"recent": recent, "purchased": bought}
    return out


def product_facts(*, lo: int, hi: int) -> list[tuple[datetime, dict[str, Any]]]:
    """For events with lo < id ≤ hi: the newest properties per (item, event name) — a
    product's page views repeat the same facts, so only the newest of each kind is
    read — as (timestamp, properties of the product)."""
    kinds = event_kinds()
    names = sorted(kinds)
    purchases = sorted(n for n, k in kinds.items() if k == KIND_PURCHASE)
    pg = connection.vendor == "postgresql"
    table = Event._meta.db_table
    marks = ", ".join(["%s"] * len(names))
    pmarks = ", ".join(["%s"] * len(purchases)) or "NULL"
    if pg:
        listed = (
            "CROSS JOIN LATERAL jsonb_array_elements(CASE WHEN jsonb_typeof("
            "e.properties->'products') = 'array' THEN e.properties->'products' "
            "ELSE '[]'::jsonb END) p"
        )
        listed_where = ""
    else:
        listed = ", json_each(e.properties, '$.products') p"
        listed_where = "AND json_type(e.properties, '$.products') = 'array'"
    sql = f"""
        SELECT ts, props FROM (
            SELECT ts, props, ROW_NUMBER() OVER (
                PARTITION BY item, event ORDER BY ts DESC, id DESC) AS rn
            FROM (
                SELECT e.id, e.timestamp AS ts, e.event, e.properties AS props,
                       {item_sql(pg, "e.properties")} AS item
                FROM {table} e
                WHERE e.id > %s AND e.id <= %s AND e.event IN ({marks}) AND NOT e.is_bot
                UNION ALL
                SELECT e.id, e.timestamp, e.event, p.value, {item_sql(pg, "p.value")}
                FROM {table} e {listed}
                WHERE e.id > %s AND e.id <= %s AND e.event IN ({pmarks}) AND NOT e.is_bot
                {listed_where}
            ) x WHERE item IS NOT NULL
        ) y WHERE rn = 1
    """
    out = []
    with connection.cursor() as cur:
        cur.execute(sql, [lo, hi, *names, lo, hi, *purchases])
        for ts, props in cur.fetchall():
            if isinstance(props, str | bytes):
                props = json.loads(props)
            if not isinstance(ts, datetime):  # SQLite hands back text, in UTC
                ts = parse_datetime(str(ts))
            if ts is not None and ts.tzinfo is None:
                ts = ts.replace(tzinfo=UTC)
            if isinstance(props, dict) and ts is not None:
                out.append((ts, props))
    return out
