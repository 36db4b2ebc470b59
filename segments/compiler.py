"""The set-based evaluator: one condition tree → one SQL query over all live profiles.

Every predicate is wrapped so it is strictly true or false (never NULL), so `not`
behaves as in the in-memory evaluator; JSON values are compared with their type;
strings compare in code-point order (COLLATE "C" on PostgreSQL, BINARY on SQLite).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection

from consent.models import ConsentRecord, Purpose
from profiles.models import Event, Profile
from segments.conditions import window_seconds
from segments.conditions.evaluate import compare

Sql = tuple[str, list[Any]]

TYPE_EVENTS = {"$page": "page", "$screen": "screen", "$identify": "identify", "$alias": "alias"}


class _Dialect:
    true = "1=1"
    false = "1=0"

    def __init__(self, vendor: str) -> None:
        self.pg = vendor == "postgresql"

    def bool(self, expr: str) -> str:
        return f"COALESCE(({expr}), {'FALSE' if self.pg else '0'})"

    def key(self, key: str) -> str:
        return key if self.pg else f'$."{key}"'

    def jtype(self, col: str) -> str:
        return f"jsonb_typeof({col} -> %s)" if self.pg else f"json_type({col}, %s)"

    def jtext(self, col: str) -> str:
        return f"({col} ->> %s)" if self.pg else f"json_extract({col}, %s)"

    def jnum(self, col: str) -> tuple[str, int]:
        """Numeric value of a JSON key or NULL; returns SQL and how many key params it uses."""
        if self.pg:
            return (
                f"(CASE WHEN jsonb_typeof({col} -> %s) = 'number' THEN ({col} ->> %s)::numeric END)",
                2,
            )
        return (
            f"(CASE WHEN json_type({col}, %s) IN ('integer', 'real') THEN json_extract({col}, %s) END)",
            2,
        )

    def string_type(self) -> str:
        return "'string'" if self.pg else "'text'"

    def collate(self, expr: str) -> str:
        return f'({expr}) COLLATE "C"' if self.pg else expr

    def contains(self, text: str) -> str:
        return f"strpos({text}, %s) > 0" if self.pg else f"instr({text}, %s) > 0"

    def startswith(self, text: str) -> str:
        return f"starts_with({text}, %s)" if self.pg else f"substr({text}, 1, length(%s)) = %s"

    def num_param(self) -> str:
        return "%s::numeric" if self.pg else "%s"

    def epoch_seconds(self, expr: str) -> str:
        """Whole seconds since 1970 (rounded down), the clock `engagement_score` uses."""
        if self.pg:
            return f"FLOOR(EXTRACT(EPOCH FROM {expr}))"
        return f"CAST(strftime('%%s', {expr}) AS INTEGER)"

    def days_since(self, column: str) -> str:
        if self.pg:
            return f"FLOOR(EXTRACT(EPOCH FROM (%s::timestamptz - {column})) / 86400)"
        return f"FLOOR((CAST(strftime('%%s', %s) AS INTEGER) - CAST(strftime('%%s', {column}) AS INTEGER)) / 86400.0)"


def _num_value(v: Any) -> Any:
    # PostgreSQL: the float's shortest text, cast to numeric, compares exactly with the
    # JSON number's numeric (same as Python comparing the parsed floats).
    return str(v) if isinstance(v, float) and connection.vendor == "postgresql" else v


class Compiler:
    """Compiles validated trees. `now` is fixed per query, like the evaluator's."""

    def __init__(self, now: datetime) -> None:
        self.d = _Dialect(connection.vendor)
        self.now = now
        self.now_param: Any = now if self.d.pg else connection.ops.adapt_datetimefield_value(now)

    # --- JSON comparisons (traits, properties) ---------------------------------------

    def _json_eq(self, col: str, key: str, value: Any) -> Sql:
        d, k = self.d, self.d.key(key)
        if isinstance(value, bool):
            if d.pg:
                return f"({d.jtype(col)} = 'boolean' AND {d.jtext(col)} = %s)", [
                    k,
                    k,
                    "true" if value else "false",
                ]
            return f"{d.jtype(col)} = %s", [k, "true" if value else "false"]
        if isinstance(value, str):
            return f"({d.jtype(col)} = {d.string_type()} AND {d.jtext(col)} = %s)", [k, k, value]
        num, n = d.jnum(col)
        return f"{num} = {d.num_param()}", [*([k] * n), _num_value(value)]

    def json_compare(self, col: str, key: str, op: str, value: Any) -> Sql:
        d, k = self.d, self.d.key(key)
        if op == "exists":
            return d.bool(f"{d.jtype(col)} IS NOT NULL AND {d.jtype(col)} <> 'null'"), [k, k]
        if op in ("neq", "not_in"):
            inner, params = self.json_compare(col, key, "eq" if op == "neq" else "in", value)
            return f"NOT ({inner})", params
        if op == "eq":
            sql, params = self._json_eq(col, key, value)
            return d.bool(sql), params
        if op == "in":
            parts = [self._json_eq(col, key, v) for v in value]
            return d.bool(" OR ".join(f"({s})" for s, _ in parts)), [
                p for _, ps in parts for p in ps
            ]
        if op in ("gt", "gte", "lt", "lte"):
            sym = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[op]
            if isinstance(value, str):
                sql = f"{d.jtype(col)} = {d.string_type()} AND {d.collate(d.jtext(col))} {sym} %s"
                return d.bool(sql), [k, k, value]
            num, n = d.jnum(col)
            return d.bool(f"{num} {sym} {d.num_param()}"), [*([k] * n), _num_value(value)]
        if op == "between":
            num, n = d.jnum(col)
            sql = f"{num} >= {d.num_param()} AND {num} <= {d.num_param()}"
            return d.bool(sql), [*([k] * n), _num_value(value[0]), *([k] * n), _num_value(value[1])]
        if op == "contains":
            sql = f"{d.jtype(col)} = {d.string_type()} AND {d.contains(d.jtext(col))}"
            return d.bool(sql), [k, k, value]
        if op == "startswith":
            sql = f"{d.jtype(col)} = {d.string_type()} AND {d.startswith(d.jtext(col))}"
            return d.bool(sql), [k, k, value] if d.pg else [k, k, value, value]
        raise ValueError(op)

    # --- Numeric expressions (attributes, scores, measures) --------------------------

    def num_compare(self, expr: str, expr_params: list[Any], op: str, value: Any) -> Sql:
        d = self.d
        if op == "exists":
            return d.bool(f"{expr} IS NOT NULL"), list(expr_params)
        if op in ("neq", "not_in"):
            inner, params = self.num_compare(
                expr, expr_params, "eq" if op == "neq" else "in", value
            )
            return f"NOT ({inner})", params
        if op == "in":
            parts = [self.num_compare(expr, expr_params, "eq", v) for v in value]
            return d.bool(" OR ".join(s for s, _ in parts)), [p for _, ps in parts for p in ps]
        if op == "between":
            sql = f"{expr} >= {d.num_param()} AND {expr} <= {d.num_param()}"
            return d.bool(sql), [
                *expr_params,
                _num_value(value[0]),
                *expr_params,
                _num_value(value[1]),
            ]
        if isinstance(value, bool) or not isinstance(value, int | float):
            return d.false, []  # attributes are numbers: a string or boolean never matches
        sym = {"eq": "=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[op]
        return d.bool(f"{expr} {sym} {d.num_param()}"), [*expr_params, _num_value(value)]

    def attr(self, name: str) -> Sql:
        if name.startswith("days_since_"):
            column = {
                "days_since_first_seen": "first_seen_at",
                "days_since_last_seen": "last_seen_at",
                "days_since_last_purchase": "last_purchase_at",
            }[name]
            return self.d.days_since(f"p.{column}"), [self.now_param]
        if name == "engagement_score":
            # Same arithmetic, in the same order, as segments.selectors.engagement_value.
            now = self.d.epoch_seconds("%s::timestamptz" if self.d.pg else "%s")
            since = self.d.epoch_seconds("p.engagement_as_of")
            cast = "::float8" if self.d.pg else ""
            half_life = settings.CDP["ENGAGEMENT_HALF_LIFE_DAYS"] * 86400.0
            return (
                "(CASE WHEN p.engagement_as_of IS NULL THEN 0.0 ELSE "
                f"FLOOR(p.engagement_score * POWER(2.0{cast}, "
                f"(-(CASE WHEN {now} > {since} THEN {now} - {since} ELSE 0 END)){cast} / %s{cast}) * 100.0) / 100.0 END)"
            ), [self.now_param, self.now_param, half_life]
        return f"p.{name}", []

    # --- Nodes ------------------------------------------------------------------------

    def node(self, n: Mapping[str, Any]) -> Sql:
        d = self.d
        if "all" in n or "any" in n:
            kids = [self.node(c) for c in (n["all"] if "all" in n else n["any"])]
            if not kids:
                return (d.true if "all" in n else d.false), []
            glue = " AND " if "all" in n else " OR "
            return "(" + glue.join(f"({s})" for s, _ in kids) + ")", [
                p for _, ps in kids for p in ps
            ]
        if "not" in n:
            s, ps = self.node(n["not"])
            return f"NOT ({s})", ps
        if "trait" in n:
            return self.json_compare("p.traits", n["trait"], n["op"], n.get("value"))
        if "attr" in n:
            expr, ps = self.attr(n["attr"])
            return self.num_compare(expr, ps, n["op"], n.get("value"))
        if "event" in n:
            return self.event(n)
        if "segment" in n:
            from segments.models import Membership, Segment

            sql = (
                f"p.id IN (SELECT m.profile_id FROM {Membership._meta.db_table} m JOIN "
                f"{Segment._meta.db_table} s ON s.id = m.segment_id WHERE s.slug = %s)"
            )
            return sql, [n["segment"]]
        if "score" in n:
            from segments.models import ProfileScore

            inner, ps = self.num_compare("sc.score", [], n["op"], n.get("value"))
            sql = f"p.id IN (SELECT sc.profile_id FROM {ProfileScore._meta.db_table} sc WHERE sc.model = %s AND {inner})"
            return sql, [n["score"], *ps]
        if "consent" in n:
            return self.consent(n["consent"])
        raise ValueError("context conditions cannot run over all profiles")

    def event(self, n: Mapping[str, Any]) -> Sql:
        d = self.d
        table = Event._meta.db_table
        where = ["e.is_bot = " + ("FALSE" if d.pg else "0"), "e.timestamp <= %s"]
        params: list[Any] = [self.now_param]
        if n["event"] in TYPE_EVENTS:
            where.append("e.type = %s")
            params.append(TYPE_EVENTS[n["event"]])
        else:
            where += ["e.type = 'track'", "e.event = %s"]
            params.append(n["event"])
        if "within" in n:
            since = self.now - timedelta(seconds=window_seconds(n["within"]))
            where.append("e.timestamp >= %s")
            params.append(since if d.pg else connection.ops.adapt_datetimefield_value(since))
        for w in n.get("where", []):
            s, ps = self.json_compare("e.properties", w["property"], w["op"], w.get("value"))
            where.append(s)
            params += ps
        m = n.get("measure", {"fn": "count", "op": "gte", "value": 1})
        if m["fn"] == "count":
            agg, agg_params = "COUNT(*)", []
        else:
            num, k = d.jnum("e.properties")
            key = [d.key(m["property"])] * k
            fn = m["fn"].upper()
            agg = f"COALESCE(SUM({num}), 0)" if m["fn"] == "sum" else f"{fn}({num})"
            agg_params = key
        having, having_params = self.num_compare(agg, agg_params, m["op"], m.get("value"))
        if m["fn"] in ("avg", "min", "max"):
            # No numeric value to aggregate matches nothing, whatever the operator.
            having, having_params = (
                f"({agg} IS NOT NULL AND {having})",
                [*agg_params, *having_params],
            )
        sub = (
            f"SELECT e.profile_id FROM {table} e WHERE {' AND '.join(where)} GROUP BY e.profile_id"
        )
        # count and sum of no events are 0: when 0 satisfies the test, profiles with no
        # matching events match too, so take the complement of those that fail it.
        if m["fn"] in ("count", "sum") and compare(0, m["op"], m.get("value")):
            return f"p.id NOT IN ({sub} HAVING NOT ({having}))", [*params, *having_params]
        return f"p.id IN ({sub} HAVING {having})", [*params, *having_params]

    def consent(self, code: str) -> Sql:
        purpose = Purpose.objects.filter(code=code).first()
        if purpose is None:
            return self.d.false, []
        from consent.selectors import purpose_default_granted

        table = ConsentRecord._meta.db_table
        unexpired = "(r.expires_at IS NULL OR r.expires_at > %s)"
        unexpired2 = "(r2.expires_at IS NULL OR r2.expires_at > %s)"
        # Profiles whose newest unexpired record for the purpose says `granted`.
        latest = (
            f"SELECT r.profile_id FROM {table} r WHERE r.purpose_id = %s AND {unexpired} AND r.granted = %s "
            f"AND NOT EXISTS (SELECT 1 FROM {table} r2 WHERE r2.profile_id = r.profile_id AND "
            f"r2.purpose_id = r.purpose_id AND {unexpired2} AND (r2.recorded_at > r.recorded_at OR "
            f"(r2.recorded_at = r.recorded_at AND r2.id > r.id)))"
        )
        if purpose_default_granted(purpose):
            return f"p.id NOT IN ({latest})", [purpose.pk, self.now_param, False, self.now_param]
        return f"p.id IN ({latest})", [purpose.pk, self.now_param, True, self.now_param]


def compile_condition(tree: Mapping[str, Any], *, now: datetime) -> Sql:
    """SQL selecting the ids of live profiles that match, and its parameters."""
    where, params = Compiler(now).node(tree)
    table = Profile._meta.db_table
    return f"SELECT p.id FROM {table} p WHERE p.merged_into_id IS NULL AND ({where})", params


def matching_ids(
    tree: Mapping[str, Any], *, now: datetime, limit: int | None = None
) -> list[uuid.UUID]:
    sql, params = compile_condition(tree, now=now)
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    # SQLite returns the UUID primary key as hex text.
    return [r[0] if isinstance(r[0], uuid.UUID) else uuid.UUID(str(r[0])) for r in rows]


Factory = Callable[[datetime], Compiler]
