"""Fixtures: planted shoppers stored as real events, a trained and served version."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from profiles.ingestion import IngestContext, events_ingest
from profiles.services import SourceKeys
from recommendations.models import ModelVersion
from recommendations.services import train_execute
from tests.recommendations.planted import Planted, as_events, planted


def ingest(source: SourceKeys, events: list[dict[str, Any]]) -> int:
    ctx = IngestContext(
        source_id=source.source.pk,
        identity_secret=source.source.identity_secret,
        require_identity_verification=False,
        trusted=True,
        received_at=timezone.now(),
    )
    accepted = 0
    for start in range(0, len(events), 500):
        accepted += events_ingest(ctx=ctx, payloads=events[start : start + 500]).accepted
    return accepted


@pytest.fixture
def shop(source: SourceKeys) -> Planted:
    """~2,500 planted interactions (200 shoppers) stored through ingestion."""
    p = planted(users=200, bundles=12, end=timezone.now() - timedelta(hours=1), seed=3)
    ingest(source, as_events(p))
    return p


@pytest.fixture
def trained(shop: Planted) -> ModelVersion:
    return train_execute(requested_by="test")
