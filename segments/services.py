"""Writes: segment definitions (validated, cycle-free, audited), batch recompute with an
atomic membership swap, and real-time refresh of single profiles."""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from cdp.audit import audit_record
from cdp.errors import ValidationFailed
from cdp.jobs import profiles_enqueue_coalesced
from cdp.metrics import segment_kind, segment_recompute_duration
from segments.compiler import compile_condition
from segments.conditions import ConditionError, evaluate, referenced_segments, validate
from segments.conditions.language import event_names, max_window, uses
from segments.models import Membership, RecomputeRun, RefreshPolicy, Segment, SegmentSize
from segments.selectors import profile_facts
from segments.signals import memberships_changed, segment_usage, segments_recomputed

logger = logging.getLogger(__name__)


# --- Definitions ------------------------------------------------------------------------


def condition_check(
    condition: Any,
    *,
    slug: str | None = None,
    allow_context: bool = False,
    field: str = "condition",
) -> Any:
    """Validate a condition: node errors, unknown segments and (for a segment's own
    condition, `slug`) cycles, each reported as ValidationFailed naming the node. Rules
    pass `allow_context` (their conditions may read the request's context)."""
    try:
        validate(condition, allow_context=allow_context)
    except ConditionError as exc:
        raise ValidationFailed(
            f"{field}: {exc}", details={field: {"path": exc.path, "reason": exc.reason}}
        ) from exc
    refs = referenced_segments(condition)
    known = dict(Segment.objects.values_list("slug", "condition"))
    missing = sorted(r for r in refs if r not in known and r != slug)
    if missing:
        raise ValidationFailed(
            f"{field}: unknown segment(s) {', '.join(missing)}",
            details={
                field: {
                    "path": "segment",
                    "reason": f"unknown segment(s): {', '.join(missing)}",
                }
            },
        )
    if slug is not None:
        graph = {s: referenced_segments(c) for s, c in known.items()}
        graph[slug] = refs
        cycle = _find_cycle(graph, slug)
        if cycle:
            raise ValidationFailed(
                f"condition: segments would refer to each other in a cycle: {' -> '.join(cycle)}",
                details={
                    "condition": {"path": "segment", "reason": "cycle: " + " -> ".join(cycle)}
                },
            )
    return condition


def _find_cycle(graph: dict[str, set[str]], start: str) -> list[str] | None:
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    while stack:
        node, path = stack.pop()
        for nxt in graph.get(node, set()):
            if nxt == start:
                return [*path, start]
            if nxt not in path:
                stack.append((nxt, [*path, nxt]))
    return None


def dependency_order(segments: Iterable[Segment]) -> list[Segment]:
    """Referenced segments first; inside an exclusive group, higher priority first."""
    by_slug = {s.slug: s for s in segments}
    done: list[Segment] = []
    seen: set[str] = set()

    def visit(s: Segment) -> None:
        if s.slug in seen:
            return
        seen.add(s.slug)
        for ref in sorted(referenced_segments(s.condition)):
            if ref in by_slug:
                visit(by_slug[ref])
        done.append(s)

    for s in sorted(by_slug.values(), key=lambda s: (-s.priority, s.pk or 0)):
        visit(s)
    return done


def dependency_levels(segments: Iterable[Segment]) -> list[list[Segment]]:
    """Segments in waves: each depends only on earlier waves (the segments it references,
    and in its exclusive group the higher-priority ones), so one wave can be computed in
    parallel."""
    ordered = dependency_order(segments)
    by_slug = {s.slug: s for s in ordered}
    level: dict[str, int] = {}
    for s in ordered:  # dependencies come before their users in this order
        deps = [r for r in referenced_segments(s.condition) if r in by_slug]
        if s.exclusive_group:
            deps += [
                o.slug
                for o in ordered
                if o.exclusive_group == s.exclusive_group
                and (o.priority, -(o.pk or 0)) > (s.priority, -(s.pk or 0))
            ]
        level[s.slug] = 1 + max((level[d] for d in deps if d in level), default=-1)
    waves: list[list[Segment]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for s in ordered:
        waves[level[s.slug]].append(s)
    return waves


def segment_save(*, segment: Segment, actor: str) -> Segment:
    """Create or update a segment after validating its condition (audited)."""
    condition_check(segment.condition, slug=segment.slug)
    created = segment.pk is None
    segment.save()
    realtime_flag_reset()
    audit_record(
        actor=actor,
        action=f"segment.{'created' if created else 'updated'}",
        object_type="segments.segment",
        object_id=segment.pk,
        details={"slug": segment.slug},
    )
    return segment


def segment_users(segment: Segment) -> list[str]:
    """What refers to this segment: other segments, and whatever other apps report
    through `segment_usage` (e.g. "rule cart-reminder")."""
    users = [
        f"segment {s.slug}"
        for s in Segment.objects.exclude(pk=segment.pk)
        if segment.slug in referenced_segments(s.condition)
    ]
    for _, more in segment_usage.send(sender=Segment, slug=segment.slug):
        users.extend(more or [])
    return users


def segment_delete(*, segment: Segment, actor: str) -> None:
    users = segment_users(segment)
    if users:
        raise ValidationFailed(
            f"segment {segment.slug} is used by {', '.join(users)}",
            details={"segment": [f"used by {', '.join(users)}"]},
        )
    pk = segment.pk
    segment.delete()
    audit_record(
        actor=actor,
        action="segment.deleted",
        object_type="segments.segment",
        object_id=pk,
        details={"slug": segment.slug},
    )


# --- Batch recompute --------------------------------------------------------------------


def _higher_in_group(segment: Segment) -> list[int]:
    if not segment.exclusive_group:
        return []
    return list(
        Segment.objects.filter(exclusive_group=segment.exclusive_group, active=True)
        .exclude(pk=segment.pk)
        .filter(priority__gt=segment.priority)
        .values_list("pk", flat=True)
    ) + list(
        Segment.objects.filter(
            exclusive_group=segment.exclusive_group,
            active=True,
            priority=segment.priority,
            pk__lt=segment.pk,
        ).values_list("pk", flat=True)
    )


def segment_recompute(*, segment: Segment, now: datetime | None = None) -> SegmentSize:
    """Recompute one segment in the database (one query for the condition) and swap its
    membership in one transaction: readers see the old or the new set, never a mix."""
    now = now or timezone.now()
    started = time.monotonic()
    sql, params = compile_condition(segment.condition, now=now)
    higher = _higher_in_group(segment)
    table = Membership._meta.db_table
    postgres = connection.vendor == "postgresql"
    with transaction.atomic(), connection.cursor() as cursor:
        if postgres:
            # Room for the sorts and hashes of one set-based query over all profiles
            # (the server default of 4 MB spills them to disk); this transaction only.
            cursor.execute("SET LOCAL work_mem = %s", [settings.CDP["RECOMPUTE_WORK_MEM"]])
        cursor.execute("DROP TABLE IF EXISTS cdp_segment_new")
        cursor.execute(f"CREATE TEMPORARY TABLE cdp_segment_new AS {sql}", params)
        if higher:
            marks = ", ".join(["%s"] * len(higher))
            cursor.execute(
                f"DELETE FROM cdp_segment_new WHERE id IN (SELECT profile_id FROM {table} WHERE segment_id IN ({marks}))",  # noqa: S608
                higher,
            )
        if postgres:
            # Temporary tables are never auto-analyzed: without this the planner guesses
            # their size and may pick a nested loop over a million rows.
            cursor.execute("ANALYZE cdp_segment_new")
        # Anti-joins, not NOT IN: NOT IN over a subquery that outgrows work_mem turns
        # into a rescan per row on PostgreSQL.
        cursor.execute(
            f"DELETE FROM {table} m WHERE m.segment_id = %s AND NOT EXISTS "  # noqa: S608
            f"(SELECT 1 FROM cdp_segment_new n WHERE n.id = m.profile_id)"
            if postgres
            else f"DELETE FROM {table} WHERE segment_id = %s AND NOT EXISTS "  # noqa: S608
            f"(SELECT 1 FROM cdp_segment_new n WHERE n.id = {table}.profile_id)",
            [segment.pk],
        )
        removed = max(cursor.rowcount, 0)
        # In profile order: the (segment, profile) index then fills page after page
        # instead of touching a random page per row.
        cursor.execute(
            f"INSERT INTO {table} (segment_id, profile_id, since) SELECT %s, n.id, %s FROM cdp_segment_new n "  # noqa: S608
            f"WHERE NOT EXISTS (SELECT 1 FROM {table} m WHERE m.segment_id = %s AND m.profile_id = n.id) "
            f"ORDER BY n.id",
            [
                segment.pk,
                now if postgres else connection.ops.adapt_datetimefield_value(now),
                segment.pk,
            ],
        )
        added = max(cursor.rowcount, 0)
        cursor.execute("SELECT COUNT(*) FROM cdp_segment_new")
        size = int(cursor.fetchone()[0])
        cursor.execute("DROP TABLE cdp_segment_new")
        Segment.objects.filter(pk=segment.pk).update(size=size, computed_at=now)
        point = SegmentSize.objects.create(
            segment=segment,
            at=now,
            size=size,
            added=added,
            removed=removed,
            duration_ms=int((time.monotonic() - started) * 1000),
        )
    segment_recompute_duration.labels(segment_kind(uses(segment.condition))).observe(
        time.monotonic() - started
    )
    return point


def _recompute_in_thread(segment: Segment, now: datetime) -> SegmentSize:
    try:
        return segment_recompute(segment=segment, now=now)
    finally:
        connection.close()  # this thread's own connection


def segments_recompute_all(
    *,
    now: datetime | None = None,
    only: Iterable[str] | None = None,
    progress: Callable[[Segment, SegmentSize], object] | None = None,
    run: RecomputeRun | None = None,
) -> list[SegmentSize]:
    """Recompute active segments in dependency order (memory stays in the database).

    With a `run`, its progress (done/total, the segment being computed) is written as it
    goes, outside the recompute transactions, so the admin can show it while it runs."""
    now = now or timezone.now()
    segments = Segment.objects.filter(active=True)
    if only is not None:
        segments = segments.filter(slug__in=list(only))
    waves = dependency_levels(segments)
    # Parallel connections only see committed data: inside a caller's transaction, stay
    # in it (serially). SQLite has one writer anyway.
    workers = (
        1
        if connection.vendor != "postgresql" or connection.in_atomic_block
        else max(1, int(settings.CDP["RECOMPUTE_PARALLEL"]))
    )
    if run is not None:
        run.status, run.started_at, run.total, run.done = (
            RecomputeRun.Status.RUNNING,
            timezone.now(),
            sum(len(w) for w in waves),
            0,
        )
        run.save(update_fields=["status", "started_at", "total", "done"])
    points: list[SegmentSize] = []

    def finished(segment: Segment, point: SegmentSize) -> None:
        points.append(point)
        if run is not None:
            run.done += 1
            RecomputeRun.objects.filter(pk=run.pk).update(done=run.done)
        if progress:
            progress(segment, point)

    try:
        for wave in waves:
            if run is not None:
                RecomputeRun.objects.filter(pk=run.pk).update(
                    current=", ".join(s.slug for s in wave)[:100]
                )
            if workers == 1 or len(wave) == 1:
                for segment in wave:
                    finished(segment, segment_recompute(segment=segment, now=now))
                continue
            with ThreadPoolExecutor(max_workers=min(workers, len(wave))) as pool:
                futures = {
                    pool.submit(_recompute_in_thread, segment, now): segment for segment in wave
                }
                for future in as_completed(futures):
                    finished(futures[future], future.result())
    except Exception as exc:
        if run is not None:
            RecomputeRun.objects.filter(pk=run.pk).update(
                status=RecomputeRun.Status.FAILED,
                finished_at=timezone.now(),
                error=f"{type(exc).__name__}: {exc}"[:2000],
            )
        raise
    segments_recomputed.send(sender=Segment, slugs=[p.segment.slug for p in points])
    if run is not None:
        RecomputeRun.objects.filter(pk=run.pk).update(
            status=RecomputeRun.Status.DONE, finished_at=timezone.now(), current=""
        )
    return points


RUNS_KEPT_DAYS = 30


def recompute_request(*, slugs: list[str] | None, actor: str) -> RecomputeRun:
    """Queue a recompute on a worker (the admin's "Recompute now"): answers at once; the
    run's row shows progress. Audited."""
    from segments.tasks import segments_recompute

    run = RecomputeRun.objects.create(slugs=slugs, requested_by=actor)
    audit_record(
        actor=actor,
        action="segments.recompute_requested",
        object_type="segments.recomputerun",
        object_id=run.pk,
        details={"slugs": slugs},
    )
    transaction.on_commit(lambda: segments_recompute.delay(slugs, run.pk))
    return run


def recompute_run_execute(
    *,
    run_id: int | None,
    slugs: list[str] | None,
    requested_by: str = "system:schedule",
    progress: Callable[[Segment, SegmentSize], object] | None = None,
) -> list[SegmentSize]:
    """Run a queued recompute (or a scheduled or command one, which gets its own run
    row, so the admin shows its progress too); old run rows are pruned."""
    run = (
        RecomputeRun.objects.filter(pk=run_id).first()
        if run_id is not None
        else RecomputeRun.objects.create(slugs=slugs, requested_by=requested_by)
    )
    RecomputeRun.objects.filter(
        created_at__lt=timezone.now() - timedelta(days=RUNS_KEPT_DAYS)
    ).exclude(status=RecomputeRun.Status.RUNNING).delete()
    return segments_recompute_all(only=slugs, progress=progress, run=run)


def segments_sweep_windows(*, now: datetime | None = None) -> int:
    """Recompute segments whose conditions use time windows, so members leave on time."""
    windowed = [
        s.slug
        for s in Segment.objects.filter(active=True).exclude(refresh=RefreshPolicy.MANUAL)
        if max_window(s.condition) not in (None, 0) or "attr" in uses(s.condition)
    ]
    return len(segments_recompute_all(now=now, only=windowed)) if windowed else 0


# --- Real time ---------------------------------------------------------------------------

REALTIME_DELAY_SECONDS = 0.2
_REALTIME_FLAG: tuple[float, bool] | None = None


def _realtime_segments_exist() -> bool:
    """Cached in-process for 5 s: ingestion pays nothing when no segment is real-time."""
    global _REALTIME_FLAG
    now = time.monotonic()
    if _REALTIME_FLAG is None or now - _REALTIME_FLAG[0] > 5:
        exists = Segment.objects.filter(active=True, refresh=RefreshPolicy.REALTIME).exists()
        _REALTIME_FLAG = (now, exists)
    return _REALTIME_FLAG[1]


def realtime_flag_reset() -> None:
    global _REALTIME_FLAG
    _REALTIME_FLAG = None


def realtime_refresh_enqueue(*, profile_ids: Iterable[uuid.UUID]) -> None:
    """Coalesce: a profile already queued is not queued again; the queued task runs after
    a short delay and reads everything committed by then, so a burst costs one evaluation.
    Without Redis nothing is queued (the events are stored all the same): the scheduled
    recompute brings those memberships up to date."""
    from segments.tasks import segments_profiles_refresh

    if not _realtime_segments_exist():
        return
    profiles_enqueue_coalesced(
        task=segments_profiles_refresh,
        prefix="cdp:segrt",
        profile_ids=profile_ids,
        countdown=REALTIME_DELAY_SECONDS,
        what="real-time segment refresh",
    )


def realtime_refresh(
    *, profile_ids: list[uuid.UUID], now: datetime | None = None
) -> dict[str, int]:
    """Re-evaluate real-time segments for these profiles with the in-memory evaluator."""
    cache.delete_many([f"cdp:segrt:{pid}" for pid in profile_ids])
    now = now or timezone.now()
    segments = dependency_order(Segment.objects.filter(active=True, refresh=RefreshPolicy.REALTIME))
    if not segments or not profile_ids:
        return {"added": 0, "removed": 0}
    names: set[str] = set()
    windows: list[int] = []
    unbounded = False
    for s in segments:
        names |= event_names(s.condition)
        window = max_window(s.condition)
        if window is None:
            unbounded = True
        else:
            windows.append(window)
    since = None if unbounded else now - timedelta(seconds=max(windows or [0]))
    facts = profile_facts(profile_ids=profile_ids, now=now, event_names=names, since=since)
    added = removed = 0
    changed: set[uuid.UUID] = set()
    with transaction.atomic():
        # These profiles' memberships in every segment, in one query (not two per
        # segment), kept current in memory as the pass moves them.
        members: dict[int, set[uuid.UUID]] = defaultdict(set)
        for segment_id, profile_id in Membership.objects.filter(
            profile_id__in=list(facts)
        ).values_list("segment_id", "profile_id"):
            members[segment_id].add(profile_id)
        for segment in segments:
            current = set(members[segment.pk])
            blocked: set[uuid.UUID] = set()
            for higher in _higher_in_group(segment):
                blocked |= members[higher]
            should = {
                pid
                for pid, f in facts.items()
                if pid not in blocked and evaluate(segment.condition, f, now)
            }
            join, leave = should - current, current - should
            changed |= join | leave
            members[segment.pk] = (current - leave) | join
            if leave:
                Membership.objects.filter(segment=segment, profile_id__in=leave).delete()
            if join:
                Membership.objects.bulk_create(
                    [Membership(segment=segment, profile_id=pid, since=now) for pid in join],
                    ignore_conflicts=True,
                )
            if join or leave:
                Segment.objects.filter(pk=segment.pk).update(
                    size=F("size") + len(join) - len(leave)
                )
            for pid in facts:  # later segments in this pass see the new membership
                if pid in should:
                    facts[pid].segments.add(segment.slug)
                else:
                    facts[pid].segments.discard(segment.slug)
            added += len(join)
            removed += len(leave)
    if changed:
        memberships_changed.send(sender=Membership, profile_ids=sorted(changed))
    return {"added": added, "removed": removed}
