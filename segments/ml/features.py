"""Per-profile behavioral features, computed from raw events as of a moment.

Everything comes from events strictly before `as_of` (and after `as_of - lookback`), never
from the profile's current computed attributes: a model trained on features as of a
cutoff date sees exactly what it would have seen that day, and scoring today uses the
same arithmetic as training did. Sessions follow the ingestion rule (a gap longer than
SESSION_TIMEOUT_SECONDS starts a new one). Bot events are left out.

One query per chunk of profiles (a range of profile ids, read through the
(profile, timestamp) index), so memory is bounded by the chunk, not the population.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from django.conf import settings
from django.db import connection, transaction

from profiles.models import Event, Profile

BASE_FEATURES: tuple[str, ...] = (
    "recency_days",
    "tenure_days",
    "events",
    "sessions",
    "purchases",
    "revenue",
    "avg_session_minutes",
    "page_depth",
    "dwell_seconds",
    "scroll_depth",
    "cart_adds",
    "days_active",
)
AFFINITY_PREFIX = "affinity:"
MAX_CATEGORIES = 8
CHUNK_PROFILES = 20_000
_CATEGORY = re.compile(r"^[-\w .&/]{1,60}$")

# What each feature is, for the admin and docs/ml.md.
DESCRIPTIONS: dict[str, str] = {
    "recency_days": "days since the last event",
    "tenure_days": "days since the first event in the lookback window",
    "events": "events",
    "sessions": "sessions (visits)",
    "purchases": "purchases",
    "revenue": "revenue of the purchases",
    "avg_session_minutes": "average session duration, minutes",
    "page_depth": "page views per session",
    "dwell_seconds": "average time on a page before the next event, seconds",
    "scroll_depth": "average scroll depth, percent",
    "cart_adds": "add-to-cart events",
    "days_active": "distinct days with an event",
}


@dataclass(frozen=True)
class FeatureSpec:
    """What to compute: the moment, how far back, and which categories get an affinity."""

    as_of: datetime
    lookback_days: int = 180
    categories: tuple[str, ...] = ()

    @property
    def names(self) -> list[str]:
        return [*BASE_FEATURES, *(AFFINITY_PREFIX + c for c in self.categories)]

    @property
    def since(self) -> datetime:
        return self.as_of - timedelta(days=self.lookback_days)


@dataclass
class FeatureChunk:
    ids: list[uuid.UUID]
    X: np.ndarray  # (len(ids), len(spec.names)) float64
    names: list[str] = field(default_factory=list)


def _pg() -> bool:
    return connection.vendor == "postgresql"


def _uuid_param(value: uuid.UUID) -> Any:
    return value if connection.features.has_native_uuid_field else value.hex


def _uuid_of(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def _ts_param(value: datetime) -> Any:
    return value if _pg() else connection.ops.adapt_datetimefield_value(value)


def _in(values: Sequence[Any]) -> str:
    return ", ".join(["%s"] * len(values)) if values else "NULL"


def feature_description(name: str) -> str:
    if name.startswith(AFFINITY_PREFIX):
        return f"share of category-tagged events in {name[len(AFFINITY_PREFIX) :]}"
    return DESCRIPTIONS.get(name, name)


def top_categories(
    *, as_of: datetime, lookback_days: int = 180, limit: int = MAX_CATEGORIES
) -> tuple[str, ...]:
    """The most frequent `properties.category` values of the window (the affinity
    features). Values that are not short plain names are ignored."""
    event_table = Event._meta.db_table
    since = as_of - timedelta(days=lookback_days)
    if _pg():
        cat = "(e.properties ->> 'category')"
        typed = "jsonb_typeof(e.properties -> 'category') = 'string'"
        false = "FALSE"
    else:
        cat = "json_extract(e.properties, '$.category')"
        typed = "json_type(e.properties, '$.category') = 'text'"
        false = "0"
    sql = (
        f"SELECT {cat} AS c, COUNT(*) AS n FROM {event_table} e "  # noqa: S608
        f"WHERE e.is_bot = {false} AND e.timestamp >= %s AND e.timestamp < %s AND {typed} "
        f"GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [_ts_param(since), _ts_param(as_of), limit * 3])
        rows = cursor.fetchall()
    return tuple(c for c, _ in rows if isinstance(c, str) and _CATEGORY.match(c))[:limit]


def _events_sql(spec: FeatureSpec, where_profiles: str) -> str:
    """The grouped query: one row of raw sums per profile with events in the window."""
    cdp = settings.CDP
    event_table = Event._meta.db_table
    pg = _pg()
    purchases = list(cdp["PURCHASE_EVENTS"])
    carts = list(cdp["ML_CART_EVENTS"])
    scrolls = list(cdp["ML_SCROLL_EVENTS"])
    if pg:
        seconds = "EXTRACT(EPOCH FROM ({a}) - ({b}))"
        false = "FALSE"
        day = "((e.timestamp AT TIME ZONE 'UTC')::date)"
        category = (
            "(CASE WHEN jsonb_typeof(e.properties -> 'category') = 'string' "
            "THEN e.properties ->> 'category' END)"
        )

        def num(key: str) -> str:
            return (
                f"(CASE WHEN jsonb_typeof(e.properties -> '{key}') = 'number' "
                f"THEN (e.properties ->> '{key}')::float8 "
                f"WHEN jsonb_typeof(e.properties -> '{key}') = 'string' "
                f"AND (e.properties ->> '{key}') ~ '^ *-?[0-9]+(\\.[0-9]+)? *$' "
                f"THEN trim(e.properties ->> '{key}')::float8 END)"
            )

        as_of = "%s::timestamptz"
    else:
        seconds = "((julianday({a}) - julianday({b})) * 86400.0)"
        false = "0"
        day = "date(e.timestamp)"
        category = (
            "(CASE WHEN json_type(e.properties, '$.category') = 'text' "
            "THEN json_extract(e.properties, '$.category') END)"
        )

        def num(key: str) -> str:
            return (
                f"(CASE WHEN json_type(e.properties, '$.{key}') IN ('integer', 'real') "
                f"THEN json_extract(e.properties, '$.{key}') "
                f"WHEN json_type(e.properties, '$.{key}') = 'text' "
                f"THEN CAST(json_extract(e.properties, '$.{key}') AS REAL) END)"
            )

        as_of = "%s"
    revenue = f"COALESCE({num('revenue')}, {num('total')}, {num('value')})"
    gap = seconds.format(a="e.timestamp", b="LAG(e.timestamp) OVER w")
    next_gap = seconds.format(a="LEAD(e.timestamp) OVER w", b="e.timestamp")
    cats = "".join(
        f", SUM(CASE WHEN x.category = %s THEN 1 ELSE 0 END) AS c{i}"
        for i in range(len(spec.categories))
    )
    # Literal event names are bound as parameters, in this order: purchases (twice),
    # carts, scrolls; then the window; then the profiles; then as_of (twice); then the
    # timeout (x4); then the categories.
    return (
        f"SELECT x.pid, "  # noqa: S608
        f"{seconds.format(a=as_of, b='MAX(x.ts)')} / 86400.0, "
        f"{seconds.format(a=as_of, b='MIN(x.ts)')} / 86400.0, "
        "COUNT(*), "
        "SUM(CASE WHEN x.gap IS NULL OR x.gap > %s THEN 1 ELSE 0 END), "
        "SUM(x.purchase), COALESCE(SUM(x.revenue), 0), "
        "SUM(CASE WHEN x.gap <= %s THEN x.gap ELSE 0 END), "
        "SUM(CASE WHEN x.type = 'page' THEN 1 ELSE 0 END), "
        "SUM(CASE WHEN x.type = 'page' AND x.next_gap <= %s THEN x.next_gap ELSE 0 END), "
        "SUM(CASE WHEN x.type = 'page' AND x.next_gap <= %s THEN 1 ELSE 0 END), "
        "AVG(x.scroll), SUM(x.cart), COUNT(DISTINCT x.day), COUNT(x.category)"
        f"{cats} FROM ("
        f"SELECT e.profile_id AS pid, e.timestamp AS ts, e.type AS type, {gap} AS gap, "
        f"{next_gap} AS next_gap, "
        f"CASE WHEN e.type = 'track' AND e.event IN ({_in(purchases)}) THEN 1 ELSE 0 END AS purchase, "
        f"CASE WHEN e.type = 'track' AND e.event IN ({_in(purchases)}) THEN {revenue} END AS revenue, "
        f"CASE WHEN e.type = 'track' AND e.event IN ({_in(carts)}) THEN 1 ELSE 0 END AS cart, "
        f"CASE WHEN e.type = 'track' AND e.event IN ({_in(scrolls)}) THEN {num('percent')} END AS scroll, "
        f"{category} AS category, {day} AS day "
        f"FROM {event_table} e WHERE e.is_bot = {false} AND e.timestamp >= %s AND e.timestamp < %s "
        f"AND {where_profiles} "
        "WINDOW w AS (PARTITION BY e.profile_id ORDER BY e.timestamp)"
        ") x GROUP BY x.pid ORDER BY x.pid"
    )


def _params(spec: FeatureSpec, profile_params: list[Any]) -> list[Any]:
    cdp = settings.CDP
    timeout = float(cdp["SESSION_TIMEOUT_SECONDS"])
    purchases = list(cdp["PURCHASE_EVENTS"])
    carts = list(cdp["ML_CART_EVENTS"])
    scrolls = list(cdp["ML_SCROLL_EVENTS"])
    as_of = _ts_param(spec.as_of)
    return [
        as_of,
        as_of,
        timeout,
        timeout,
        timeout,
        timeout,
        *list(spec.categories),
        *purchases,
        *purchases,
        *carts,
        *scrolls,
        _ts_param(spec.since),
        as_of,
        *profile_params,
    ]


def _rows_to_matrix(spec: FeatureSpec, rows: list[tuple[Any, ...]]) -> FeatureChunk:
    n_cat = len(spec.categories)
    X = np.zeros((len(rows), len(BASE_FEATURES) + n_cat), dtype=np.float64)
    ids: list[uuid.UUID] = []
    for i, row in enumerate(rows):
        (
            pid,
            recency,
            tenure,
            events,
            sessions,
            purchases,
            revenue,
            active_seconds,
            pages,
            dwell_sum,
            dwell_n,
            scroll,
            carts,
            days,
            tagged,
        ) = row[:15]
        ids.append(_uuid_of(pid))
        sessions = max(int(sessions or 0), 1)
        X[i, :12] = (
            max(float(recency or 0.0), 0.0),
            max(float(tenure or 0.0), 0.0),
            float(events or 0),
            float(sessions),
            float(purchases or 0),
            float(revenue or 0.0),
            float(active_seconds or 0.0) / 60.0 / sessions,
            float(pages or 0) / sessions,
            float(dwell_sum or 0.0) / dwell_n if dwell_n else 0.0,
            float(scroll) if scroll is not None else 0.0,
            float(carts or 0),
            float(days or 0),
        )
        if n_cat and tagged:
            X[i, 12:] = np.asarray(row[15 : 15 + n_cat], dtype=np.float64) / float(tagged)
    X[~np.isfinite(X)] = 0.0
    return FeatureChunk(ids=ids, X=X, names=spec.names)


def _chunk_bounds(chunk: int) -> Iterator[tuple[uuid.UUID | None, uuid.UUID | None]]:
    """(after, up_to] ranges of live profile ids, `chunk` profiles each."""
    after: uuid.UUID | None = None
    live = Profile.objects.filter(merged_into__isnull=True).order_by("pk")
    while True:
        page = live if after is None else live.filter(pk__gt=after)
        hi = page.values_list("pk", flat=True)[chunk - 1 : chunk].first()
        yield after, hi
        if hi is None:
            return
        after = hi


def feature_chunks(
    spec: FeatureSpec,
    *,
    chunk: int = CHUNK_PROFILES,
    profile_ids: Sequence[uuid.UUID] | None = None,
) -> Iterator[FeatureChunk]:
    """Features of every live profile with at least one event in the window (or of the
    given profiles only), chunk by chunk, in profile id order."""
    if profile_ids is not None:
        ids = list(profile_ids)
        for start in range(0, len(ids), chunk):
            part = ids[start : start + chunk]
            yield _query(spec, f"e.profile_id IN ({_in(part)})", [_uuid_param(p) for p in part])
        return
    for after, hi in _chunk_bounds(chunk):
        clauses, params = [], []
        if after is not None:
            clauses.append("e.profile_id > %s")
            params.append(_uuid_param(after))
        if hi is not None:
            clauses.append("e.profile_id <= %s")
            params.append(_uuid_param(hi))
        yield _query(spec, " AND ".join(clauses) or "1=1", params)


def _query(spec: FeatureSpec, where: str, profile_params: list[Any]) -> FeatureChunk:
    sql = _events_sql(spec, where)
    with transaction.atomic(), connection.cursor() as cursor:
        if _pg():
            # A chunk's ~200k events sort in memory (4 MB spilled to disk), and JIT
            # compiling the same plan again for every chunk cost ~90 ms of ~560.
            cursor.execute("SET LOCAL work_mem = '64MB'; SET LOCAL jit = off")
        cursor.execute(sql, _params(spec, profile_params))
        rows = cursor.fetchall()
    return _rows_to_matrix(spec, rows)


def features_matrix(
    spec: FeatureSpec,
    *,
    profile_ids: Sequence[uuid.UUID] | None = None,
    progress: Callable[[int, int], object] | None = None,
) -> FeatureChunk:
    """All the features at once (training and clustering populations fit in memory);
    `progress(done, total)` after each chunk of the whole population."""
    total = live_profiles() if progress and profile_ids is None else 0
    ids: list[uuid.UUID] = []
    parts: list[np.ndarray] = []
    if progress:
        progress(0, total)
    for part in feature_chunks(spec, profile_ids=profile_ids):
        ids += part.ids
        parts.append(part.X)
        if progress:
            progress(min(total, len(parts) * CHUNK_PROFILES), total)
    X = np.vstack(parts) if parts else np.zeros((0, len(spec.names)))
    return FeatureChunk(ids=ids, X=X, names=spec.names)


def live_profiles() -> int:
    return Profile.objects.filter(merged_into__isnull=True).count()
