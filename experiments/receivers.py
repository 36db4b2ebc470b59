"""Wiring: the experiments extension of `/decide`, exposures from logged decisions,
merges keep the identified profile's assignment, privacy handlers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.dispatch import receiver

from cdp.privacy import Person, PrivacyHandler, privacy_handler_register
from experiments import services
from experiments.assignment import audiences, decide_extension, holdout_tag
from experiments.models import Experiment, Exposure, Status
from experiments.selectors import experiments_running_load, exposures_of
from profiles.models import Profile
from profiles.signals import profile_merging
from rules.hooks import Extension, extension_register
from rules.signals import decisions_logged
from segments.conditions import referenced_segments
from segments.signals import segment_usage

extension_register(
    Extension(
        name="experiments",
        load=experiments_running_load,
        profile_data=exposures_of,
        decide=decide_extension,
        tag=holdout_tag,
        conditions=audiences,
    )
)


@receiver(segment_usage)
def segments_used_by_experiments(sender: type, slug: str, **kwargs: Any) -> list[str]:
    """A segment in the audience of an experiment that is not stopped cannot be deleted."""
    return sorted(
        f"experiment {e.key}"
        for e in Experiment.objects.exclude(status=Status.STOPPED)
        .exclude(audience=None)
        .only("key", "audience")
        if slug in referenced_segments(e.audience)
    )


@receiver(decisions_logged)
def exposures_from_decisions(sender: type, rows: list[dict[str, Any]], **kwargs: Any) -> None:
    services.exposures_record(rows=rows)


@receiver(profile_merging)
def exposures_follow_merge(sender: type, into: Profile, other: Profile, **kwargs: Any) -> None:
    """The surviving (identified) profile keeps its own assignment where it has one; the
    other profile's exposures move over only for experiments it had not seen."""
    mine = set(Exposure.objects.filter(profile_id=into.pk).values_list("experiment_id", flat=True))
    Exposure.objects.filter(profile_id=other.pk, experiment_id__in=mine).delete()
    Exposure.objects.filter(profile_id=other.pk).update(profile_id=into.pk)


def _exposures_export(person: Person) -> Iterator[dict[str, Any]]:
    for e in Exposure.objects.filter(profile_id__in=person.profile_ids).select_related(
        "experiment"
    ):
        yield {"experiment": e.experiment.key, "variant": e.variant, "exposed_at": e.exposed_at}


def _exposures_erase(person: Person) -> int:
    return Exposure.objects.filter(profile_id__in=person.profile_ids).delete()[0]


privacy_handler_register(
    PrivacyHandler(
        "experiment_exposures", (Exposure,), _exposures_export, _exposures_erase, order=230
    )
)
