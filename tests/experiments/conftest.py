"""Fixtures shared by the experiments tests."""

from __future__ import annotations

from typing import Any

import pytest

from rules import services as rules_services
from rules.models import Slot


@pytest.fixture
def hero(db: Any) -> Slot:
    """The home page banner, with a default and a sale variant."""
    return rules_services.slot_save(
        slot=Slot(key="home_hero"),
        actor="test",
        variants=[{"key": "welcome", "title": "Welcome"}, {"key": "sale", "title": "Sale"}],
        default_variant="welcome",
    )
