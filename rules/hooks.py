"""Extension point: providers answer for a slot before its rules (the experiments app
registers one for running experiments). A provider returns a SlotDecision or None."""

from __future__ import annotations

from rules.engine import Provider

_PROVIDERS: list[Provider] = []


def provider_register(provider: Provider) -> None:
    if provider not in _PROVIDERS:
        _PROVIDERS.append(provider)


def provider_unregister(provider: Provider) -> None:
    if provider in _PROVIDERS:
        _PROVIDERS.remove(provider)


def providers() -> tuple[Provider, ...]:
    return tuple(_PROVIDERS)
