"""Progress of long runs (training, clustering), written on the run's own row so the
admin can show it while a worker works, and passed on to a caller's hook (a management
command's progress bar)."""

from __future__ import annotations

import time
from collections.abc import Callable

from django.utils import timezone

from cdp.models import JobStatus, TrackedJob

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
