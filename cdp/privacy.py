"""The privacy registry: every app that holds personal data registers how to export it
and how to erase it, so access and erasure requests cover everything without the
privacy code knowing every app. A test fails when a model that points at a profile (or
stores an identifier) is not covered by a handler, so later apps cannot forget.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Model


@dataclass(frozen=True)
class Person:
    """Who a request is about: their profiles (live and merged-away) and identities.

    `identities` holds (kind, value) as stored: raw for user and anonymous ids, keyed
    hashes for emails and phones.
    """

    profile_ids: tuple[uuid.UUID, ...]
    identities: tuple[tuple[str, str], ...]

    @property
    def raw_identifiers(self) -> list[str]:
        """Identifier values that can appear verbatim in other rows (user/anonymous ids)."""
        return [v for k, v in self.identities if k in ("user_id", "anonymous_id")]


ExportFn = Callable[[Person], Iterable[dict[str, Any]]]
EraseFn = Callable[[Person], int]
CacheKeysFn = Callable[[Person], Iterable[str]]


@dataclass(frozen=True)
class PrivacyHandler:
    """One section of the export and one step of the erasure.

    `models` lists every model whose rows the handler exports and erases; `order`
    sorts erasure (rows that point at others go first; profiles last).
    """

    section: str
    models: tuple[type[Model], ...]
    export: ExportFn
    erase: EraseFn
    cache_keys: CacheKeysFn | None = None
    order: int = 100
    # Models that hold personal data only through a handler of another section.
    also_covers: tuple[type[Model], ...] = field(default_factory=tuple)


_HANDLERS: dict[str, PrivacyHandler] = {}


def privacy_handler_register(handler: PrivacyHandler) -> None:
    _HANDLERS[handler.section] = handler


def privacy_handlers() -> list[PrivacyHandler]:
    return sorted(_HANDLERS.values(), key=lambda h: (h.order, h.section))


def covered_models() -> set[type[Model]]:
    out: set[type[Model]] = set()
    for h in _HANDLERS.values():
        out.update(h.models)
        out.update(h.also_covers)
    return out


def person_export(person: Person) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every record held about the person, section by section, lazily."""
    for handler in sorted(_HANDLERS.values(), key=lambda h: h.section):
        for record in handler.export(person):
            yield handler.section, record
