"""What the long-running commands share: choosing the named definitions, and a progress
bar fed by a run's progress hook (step, done, total; cdp.jobs.Progress)."""

from __future__ import annotations

from types import TracebackType
from typing import Any, TextIO

from django.core.management.base import CommandError
from django.db.models import QuerySet
from tqdm import tqdm


def active_named(qs: QuerySet[Any], keys: list[str], what: str) -> QuerySet[Any]:
    """The active definitions (all, or those named by key); an unknown name is an error."""
    qs = qs.filter(active=True)
    if not keys:
        return qs
    unknown = sorted(set(keys) - set(qs.filter(key__in=keys).values_list("key", flat=True)))
    if unknown:
        raise CommandError(f"no active {what}(s): {', '.join(unknown)}")
    return qs.filter(key__in=keys)


class ProgressBar:
    """One bar per run; it follows the step being worked on and its done/total."""

    def __init__(self, stream: Any, name: str, unit: str = "profile") -> None:
        self.stream: TextIO = stream
        self.name = name
        self.bar: tqdm[Any] | None = None
        self.step = ""
        self.unit = unit

    def __call__(self, step: str, done: int = 0, total: int = 0) -> None:
        if self.bar is None or step != self.step:
            if self.bar is not None:
                self.bar.close()
            self.step = step
            self.bar = tqdm(
                total=total or None,
                desc=f"{self.name}: {step}",
                unit=self.unit,
                file=self.stream,
                disable=None,
                leave=False,
            )
        if total:
            self.bar.total = total
        self.bar.n = done
        self.bar.refresh()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.bar is not None:
            self.bar.close()
