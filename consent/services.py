"""Writes: consent records, data subject requests and their processing."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from cdp.audit import audit_record
from cdp.errors import ApplicationError, NotFound, ValidationFailed
from cdp.privacy import Person, person_export, privacy_handlers
from consent.models import (
    ConsentRecord,
    DataSubjectRequest,
    Purpose,
    RequestStatus,
    RequestType,
    SubjectKind,
)
from consent.signals import consent_changed
from profiles import keys
from profiles.hooks import CarriedConsent
from profiles.models import ErasedIdentity, Identity, IdentityKind, Profile

logger = logging.getLogger(__name__)


# --- Consent -------------------------------------------------------------------------


def purposes_validate(purposes: Any) -> dict[str, list[str]] | None:
    """Problems with a {"purpose": bool} map, by field, or None."""
    if not isinstance(purposes, dict) or not purposes:
        return {"purposes": ["must be an object of purpose codes to true/false"]}
    known = set(Purpose.objects.values_list("code", flat=True))
    errors: dict[str, list[str]] = {}
    for code, value in purposes.items():
        if code not in known:
            errors[f"purposes.{code}"] = [f"unknown purpose; known: {', '.join(sorted(known))}"]
        elif not isinstance(value, bool):
            errors[f"purposes.{code}"] = ["must be true or false"]
    return errors or None


def consent_record(
    *,
    profile: Profile,
    purposes: dict[str, bool],
    source: str,
    policy_version: str,
    at: datetime | None = None,
    expires_at: datetime | None = None,
    evidence: dict[str, Any] | None = None,
) -> list[ConsentRecord]:
    """Append one record per purpose (the history is never edited)."""
    problems = purposes_validate(purposes)
    if problems:
        raise ValidationFailed(
            next(iter(problems)) + ": " + next(iter(problems.values()))[0], details=problems
        )
    by_code = {p.code: p for p in Purpose.objects.filter(code__in=purposes)}
    at = at or timezone.now()
    records = [
        ConsentRecord(
            profile=profile,
            purpose=by_code[code],
            granted=granted,
            source=source,
            policy_version=policy_version,
            recorded_at=at,
            expires_at=expires_at,
            evidence=evidence or {},
        )
        for code, granted in purposes.items()
    ]
    created = ConsentRecord.objects.bulk_create(records)
    consent_changed.send(sender=ConsentRecord, profile_ids=[profile.pk])
    return created


def consent_carried_record(items: Sequence[CarriedConsent]) -> None:
    """Consent that stored events carried (context.consent), as records with source "event"."""
    by_code = {p.code: p for p in Purpose.objects.all()}
    ConsentRecord.objects.bulk_create(
        [
            ConsentRecord(
                profile_id=item.profile_id,
                purpose=by_code[code],
                granted=granted,
                source="event",
                policy_version=item.policy_version,
                recorded_at=item.at,
                evidence={"source_id": item.source_id},
            )
            for item in items
            for code, granted in item.purposes.items()
            if code in by_code
        ]
    )
    consent_changed.send(sender=ConsentRecord, profile_ids=sorted({i.profile_id for i in items}))


def consent_evidence(*, ip: str | None, user_agent: str | None, via: str) -> dict[str, Any]:
    """Proof without raw PII: a keyed hash of the IP, the user agent, who recorded it."""
    evidence: dict[str, Any] = {"via": via}
    if ip:
        evidence["ip_hash"] = keys.pii_hash(settings.CDP["PII_HASH_KEY"], ip)
    if user_agent:
        evidence["user_agent"] = user_agent[:500]
    return evidence


# --- Data subject requests ----------------------------------------------------------


def stored_identity_value(kind: str, value: str) -> str:
    """An identifier as the Identity table stores it (emails and phones as keyed hashes)."""
    pii_key = settings.CDP["PII_HASH_KEY"]
    if kind == IdentityKind.EMAIL:
        return keys.pii_hash(pii_key, value)
    if kind == IdentityKind.PHONE:
        return keys.phone_hash(pii_key, value)
    return value


def subject_hash(kind: str, stored_value: str) -> str:
    """Keyed hash of an identity as stored: what a request keeps after its subject is erased."""
    return keys.pii_hash(settings.CDP["PII_HASH_KEY"], f"{kind}:{stored_value}")


def _history(dsr: DataSubjectRequest, actor: str, action: str) -> None:
    dsr.history = [*dsr.history, {"at": timezone.now().isoformat(), "by": actor, "action": action}]


def _audit(
    dsr: DataSubjectRequest, actor: str, step: str, details: dict[str, Any] | None = None
) -> None:
    audit_record(
        actor=actor,
        action=f"privacy.{dsr.type}.{step}",
        object_type="consent.datasubjectrequest",
        object_id=dsr.pk,
        details=details,
    )


def privacy_request_create(
    *, type: str, subject_kind: str, subject_value: str, actor: str, verified: bool = False
) -> DataSubjectRequest:
    """Open an access or erasure request; due `PRIVACY_DUE_DAYS` after receipt. When the
    caller has verified the requester, processing is queued at once."""
    if type not in RequestType.values:
        raise ValidationFailed(
            f"type: must be one of {', '.join(RequestType.values)}", details={"type": ["invalid"]}
        )
    if subject_kind not in SubjectKind.values or not subject_value:
        raise ValidationFailed(
            "give one of user_id, email, anonymous_id, phone", details={"subject": ["missing"]}
        )
    now = timezone.now()
    dsr = DataSubjectRequest(
        type=type,
        subject_kind=subject_kind,
        subject_value=subject_value,
        subject_hash=subject_hash(subject_kind, stored_identity_value(subject_kind, subject_value)),
        received_at=now,
        due_at=now + timedelta(days=settings.CDP["PRIVACY_DUE_DAYS"]),
        created_by=actor,
    )
    _history(dsr, actor, "received")
    dsr.save()
    _audit(dsr, actor, "received")
    if verified:
        privacy_request_verify(request=dsr, actor=actor)
    return dsr


def _request_for_update(request_id: uuid.UUID) -> DataSubjectRequest:
    dsr = DataSubjectRequest.objects.select_for_update().filter(pk=request_id).first()
    if dsr is None:
        raise NotFound(f"No privacy request {request_id}.")
    return dsr


def privacy_request_verify(*, request: DataSubjectRequest, actor: str) -> DataSubjectRequest:
    """Mark the requester's identity as verified and queue the processing (after commit)."""
    from consent.tasks import privacy_request_process

    with transaction.atomic():
        dsr = _request_for_update(request.pk)
        if dsr.status != RequestStatus.RECEIVED:
            raise ApplicationError(
                f"the request is {dsr.status}, not received", code="invalid_state"
            )
        dsr.status = RequestStatus.VERIFIED
        dsr.verified_at = timezone.now()
        dsr.verified_by = actor
        _history(dsr, actor, "verified")
        dsr.save()
        _audit(dsr, actor, "verified")
        transaction.on_commit(lambda: privacy_request_process.delay(str(dsr.pk)))
    return dsr


def privacy_request_reject(
    *, request: DataSubjectRequest, actor: str, reason: str
) -> DataSubjectRequest:
    with transaction.atomic():
        dsr = _request_for_update(request.pk)
        if dsr.status in (RequestStatus.COMPLETED, RequestStatus.REJECTED):
            raise ApplicationError(f"the request is {dsr.status} already", code="invalid_state")
        dsr.status = RequestStatus.REJECTED
        dsr.rejected_reason = reason
        dsr.completed_at = timezone.now()
        _history(dsr, actor, "rejected")
        dsr.save()
        _audit(dsr, actor, "rejected")
    return dsr


def person_find(*, kind: str, value: str) -> Person | None:
    """The person an identifier belongs to: their live profile, every profile merged
    into it, and all their identities."""
    identity = Identity.objects.filter(kind=kind, value=stored_identity_value(kind, value)).first()
    if identity is None:
        return None
    live = identity.profile_id
    ids = [live, *Profile.objects.filter(merged_into_id=live).values_list("pk", flat=True)]
    identities = tuple(Identity.objects.filter(profile_id__in=ids).values_list("kind", "value"))
    return Person(profile_ids=tuple(ids), identities=identities)


def _export_dir() -> Path:
    path = Path(settings.CDP["PRIVACY_EXPORT_DIR"])
    path.mkdir(parents=True, exist_ok=True)
    return path


def _write_export(dsr: DataSubjectRequest, person: Person | None) -> tuple[Path, dict[str, int]]:
    """Stream the bundle to disk record by record: memory stays flat for any history."""
    path = _export_dir() / f"{dsr.pk}.json"
    counts: dict[str, int] = {}
    tmp = path.with_suffix(".part")
    opts = orjson.OPT_NAIVE_UTC | orjson.OPT_NON_STR_KEYS
    with tmp.open("wb") as fh:
        header = {
            "request": str(dsr.pk),
            "generated_at": timezone.now().isoformat(),
            "found": person is not None,
        }
        fh.write(orjson.dumps(header)[:-1] + b', "sections": {')
        current: str | None = None
        if person is not None:
            for section, record in person_export(person):
                if section != current:
                    if current is not None:
                        fh.write(b"],")
                    fh.write(orjson.dumps(section) + b": [")
                    current = section
                    first = True
                if not first:
                    fh.write(b",")
                fh.write(orjson.dumps(record, default=str, option=opts))
                first = False
                counts[section] = counts.get(section, 0) + 1
        if current is not None:
            fh.write(b"]")
        fh.write(b"}}")
    tmp.replace(path)
    return path, counts


def _cache_keys(person: Person) -> Iterable[str]:
    for handler in privacy_handlers():
        if handler.cache_keys:
            yield from handler.cache_keys(person)


def _erase(person: Person) -> dict[str, int]:
    """Remove the person from every registered table and cache, and leave tombstones."""
    counts: dict[str, int] = {}
    pii_key = settings.CDP["PII_HASH_KEY"]
    with transaction.atomic():
        # Lock the live profile so concurrent ingestion waits and then finds nothing.
        list(Profile.objects.select_for_update().filter(pk__in=person.profile_ids))
        for handler in privacy_handlers():
            counts[handler.section] = handler.erase(person)
        ErasedIdentity.objects.bulk_create(
            [
                ErasedIdentity(kind=k, value_hash=keys.tombstone_hash(pii_key, k, v))
                for k, v in person.identities
            ],
            ignore_conflicts=True,
        )
        keys_ = list(_cache_keys(person))
        # Now, and again after commit: a reader may refill an entry while we run.
        cache.delete_many(keys_)
        transaction.on_commit(lambda: cache.delete_many(keys_))
    return counts


def privacy_request_process(*, request_id: uuid.UUID) -> DataSubjectRequest:
    """Carry out a verified request (idempotent: a retried task finishes the work)."""
    with transaction.atomic():
        dsr = _request_for_update(request_id)
        if dsr.status not in (RequestStatus.VERIFIED, RequestStatus.IN_PROGRESS):
            return dsr
        dsr.status = RequestStatus.IN_PROGRESS
        _history(dsr, "system", "started")
        dsr.save()
    person = (
        person_find(kind=dsr.subject_kind, value=dsr.subject_value) if dsr.subject_value else None
    )
    if dsr.type == RequestType.ACCESS:
        path, counts = _write_export(dsr, person)
        dsr.export_file = path.name
        dsr.export_expires_at = timezone.now() + timedelta(
            days=settings.CDP["PRIVACY_EXPORT_RETENTION_DAYS"]
        )
        result: dict[str, Any] = {"found": person is not None, "records": counts}
    else:
        counts = _erase(person) if person else {}
        result = {"found": person is not None, "deleted": counts}
    with transaction.atomic():
        fresh = _request_for_update(request_id)
        fresh.status = RequestStatus.COMPLETED
        fresh.completed_at = timezone.now()
        fresh.result = result
        fresh.export_file = dsr.export_file
        fresh.export_expires_at = dsr.export_expires_at
        if dsr.type == RequestType.ERASURE:
            fresh.subject_value = ""  # the identifier itself goes too; its keyed hash stays
        _history(fresh, "system", "completed")
        fresh.save()
        _audit(fresh, "system", "completed", result)
    return fresh


def export_path(*, request: DataSubjectRequest) -> Path | None:
    if not request.export_file:
        return None
    if request.export_expires_at and request.export_expires_at < timezone.now():
        return None
    path = _export_dir() / request.export_file
    return path if path.exists() else None


def privacy_exports_expire(*, now: datetime | None = None) -> int:
    """Delete export bundles past their retention."""
    now = now or timezone.now()
    done = 0
    for dsr in DataSubjectRequest.objects.filter(export_expires_at__lt=now).exclude(export_file=""):
        (_export_dir() / dsr.export_file).unlink(missing_ok=True)
        DataSubjectRequest.objects.filter(pk=dsr.pk).update(export_file="")
        audit_record(
            actor="system",
            action="privacy.export.expired",
            object_type="consent.datasubjectrequest",
            object_id=dsr.pk,
        )
        done += 1
    return done


def requests_erase(person: Person) -> int:
    """Privacy requests about the erased person: scrub identifiers, delete their files."""
    hashes = {subject_hash(kind, value) for kind, value in person.identities}
    n = 0
    mine = DataSubjectRequest.objects.filter(subject_hash__in=hashes).filter(
        ~Q(subject_value="") | ~Q(export_file="")
    )
    for dsr in mine:
        if dsr.export_file:
            (_export_dir() / dsr.export_file).unlink(missing_ok=True)
        DataSubjectRequest.objects.filter(pk=dsr.pk).update(subject_value="", export_file="")
        n += 1
    return n
