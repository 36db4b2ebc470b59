"""A progress bar for the ML commands, fed by a run's progress hook (step, done, total)."""

from __future__ import annotations

from types import TracebackType
from typing import Any, TextIO

from tqdm import tqdm


class ProgressBar:
    """One bar per run; it follows the step being worked on and its done/total."""

    def __init__(self, stream: Any, name: str) -> None:
        self.stream: TextIO = stream
        self.name = name
        self.bar: tqdm[Any] | None = None
        self.step = ""

    def __call__(self, step: str, done: int = 0, total: int = 0) -> None:
        if self.bar is None or step != self.step:
            if self.bar is not None:
                self.bar.close()
            self.step = step
            self.bar = tqdm(
                total=total or None,
                desc=f"{self.name}: {step}",
                unit="profile",
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
