"""Extension points the ingestion path calls without importing other apps.

The consent app fills `consent_hooks` when it is ready; without it every event is
stored (as in a deployment with no consent requirements).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class CarriedConsent:
    """Consent an event carries in `context.consent`, applied when the event is stored."""

    profile_id: uuid.UUID
    purposes: dict[str, bool]
    policy_version: str
    at: datetime
    source_id: int


@dataclass(frozen=True)
class ConsentHooks:
    # May events be stored (the tracking purpose)? Per existing profile, and the
    # decision for visitors without a profile or a choice yet.
    tracking: Callable[[set[uuid.UUID]], tuple[dict[uuid.UUID, bool], bool]]
    # The tracking decision consent carried by an event implies (None: it does not say).
    tracking_in: Callable[[dict[str, bool]], bool | None]
    # Problems with an event's context.consent, by field, or None.
    validate_carried: Callable[[Any], dict[str, list[str]] | None]
    # Store consent that stored events carried (same transaction as the events).
    record_carried: Callable[[Sequence[CarriedConsent]], None]


consent_hooks: ConsentHooks | None = None


def consent_hooks_set(hooks: ConsentHooks | None) -> None:
    global consent_hooks
    consent_hooks = hooks
