"""Wiring: recommendations as a `/decide` extension (the `recommendations` slot strategy;
profiles' recent and bought items ride in their snapshots)."""

from __future__ import annotations

from recommendations import selectors, serving
from rules.hooks import Extension, extension_register

extension_register(
    Extension(
        name="recommendations",
        load=selectors.models_active,
        profile_data=selectors.histories,
        strategies={"recommendations": serving.slot_strategy},
        check_options=serving.options_problems,
    )
)
