"""Progress of long runs (training, clustering), written on the run's own row so the
admin can show it while a worker works, and passed on to a caller's hook (a management
command's progress bar); and the coalesced queueing of per-profile real-time work."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from django.core.cache import cache
from django.utils import timezone

from cdp.errors import REDIS_ERRORS
from cdp.models import JobStatus, TrackedJob

logger = logging.getLogger(__name__)

# (step, done, total): what a long run reports as it goes
Progress = Callable[[str, int, int], object]


class JobProgress:
    """Writes a run's progress to its row, and calls the caller's progress hook too."""

    def __init__(self, job: TrackedJob, hook: Progress | None) -> None:
        self.job, self.hook, self.started = job, hook, time.monotonic()
        self.manager = type(job)._default_manager

    def __call__(self, step: str, done: int = 0, total: int = 0) -> None:
        self.manager.filter(pk=self.job.pk).update(step=step[:200], done=done, total=total)
        self.job.step, self.job.done, self.job.total = step[:200], done, total
        if self.hook:
            self.hook(step, done, total)

    def start(self) -> None:
        now = timezone.now()
        self.manager.filter(pk=self.job.pk).update(status=JobStatus.RUNNING, started_at=now)
        # and on the object, which a run may save whole when it finishes
        self.job.status, self.job.started_at = JobStatus.RUNNING, now

    def fail(self, exc: BaseException) -> None:
        self.job.status = JobStatus.FAILED
        self.manager.filter(pk=self.job.pk).update(
            status=JobStatus.FAILED,
            finished_at=timezone.now(),
            error=f"{type(exc).__name__}: {exc}"[:2000],
            duration_ms=int((time.monotonic() - self.started) * 1000),
        )

    def finish(self) -> int:
        ms = int((time.monotonic() - self.started) * 1000)
        self.job.status, self.job.duration_ms = JobStatus.DONE, ms
        return ms


def profiles_enqueue_coalesced(
    *, task: Any, prefix: str, profile_ids: Iterable[uuid.UUID], countdown: float, what: str
) -> None:
    """Queue `task(profile_ids)` after `countdown` seconds for the profiles not already
    queued (a `<prefix>:<id>` mark in the cache for 30 s): the task reads everything
    committed by the time it runs, so a burst of events costs one run. Two cache round
    trips per batch, not one per profile; a race costs one extra run. Without Redis
    (cache or broker) nothing is queued and a warning says so: the events are stored all
    the same, and the scheduled batch job catches up."""
    keys = {f"{prefix}:{pid}": pid for pid in profile_ids}
    try:
        queued = cache.get_many(list(keys))
        fresh = [str(pid) for key, pid in keys.items() if key not in queued]
        if fresh:
            cache.set_many({f"{prefix}:{pid}": 1 for pid in fresh}, timeout=30)
            task.apply_async(args=(fresh,), countdown=countdown)
    except REDIS_ERRORS as exc:
        logger.warning("%s of %d profiles not queued: %s", what, len(keys), type(exc).__name__)
