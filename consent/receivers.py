"""Wiring: the ingestion hooks, the merge receiver and the privacy handlers of this app."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.dispatch import receiver

from cdp.privacy import Person, PrivacyHandler, privacy_handler_register
from consent import selectors, services
from consent.models import ConsentRecord, DataSubjectRequest, Gate
from profiles.hooks import ConsentHooks, consent_hooks_set
from profiles.models import Profile
from profiles.signals import profile_merging


@receiver(profile_merging)
def consent_follows_merge(sender: type, into: Profile, other: Profile, **kwargs: Any) -> None:
    # Both histories stay; the newest record per purpose decides, whichever profile it came from.
    ConsentRecord.objects.filter(profile=other).update(profile=into)


def _validate_carried(payload: Any) -> dict[str, list[str]] | None:
    if not isinstance(payload, dict) or "purposes" not in payload:
        return {
            "context.consent": ['must be {"purposes": {code: true|false}, "policy_version": "…"}']
        }
    problems = services.purposes_validate(payload["purposes"])
    if problems:
        return {f"context.consent.{k}": v for k, v in problems.items()}
    if not isinstance(payload.get("policy_version", ""), str):
        return {"context.consent.policy_version": ["must be a string"]}
    return None


consent_hooks_set(
    ConsentHooks(
        tracking=lambda pids: selectors.gate_decisions(gate=Gate.TRACKING, profile_ids=pids),
        tracking_in=lambda purposes: selectors.gate_in(gate=Gate.TRACKING, purposes=purposes),
        validate_carried=_validate_carried,
        record_carried=services.consent_carried_record,
    )
)


def _consent_export(person: Person) -> Iterator[dict[str, Any]]:
    rows = ConsentRecord.objects.filter(profile_id__in=person.profile_ids).select_related("purpose")
    for r in rows.order_by("recorded_at", "id"):
        yield {
            "purpose": r.purpose.code,
            "granted": r.granted,
            "source": r.source,
            "policy_version": r.policy_version,
            "recorded_at": r.recorded_at,
            "expires_at": r.expires_at,
            "evidence": r.evidence,
        }


def _consent_erase(person: Person) -> int:
    return ConsentRecord.objects.filter(profile_id__in=person.profile_ids).delete()[0]


def _requests_export(person: Person) -> Iterator[dict[str, Any]]:
    hashes = {services.subject_hash(k, v) for k, v in person.identities}
    for dsr in DataSubjectRequest.objects.filter(subject_hash__in=hashes).order_by("received_at"):
        yield {
            "id": str(dsr.pk),
            "type": dsr.type,
            "status": dsr.status,
            "received_at": dsr.received_at,
            "completed_at": dsr.completed_at,
        }


privacy_handler_register(
    PrivacyHandler("consent", (ConsentRecord,), _consent_export, _consent_erase, order=100)
)
privacy_handler_register(
    PrivacyHandler(
        "privacy_requests",
        (DataSubjectRequest,),
        _requests_export,
        services.requests_erase,
        order=50,
    )
)
