"""Ingestion service: identity resolution, merging, dedup, traits, concurrency."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection

from profiles.ingestion import IngestContext, events_ingest
from profiles.keys import user_hash
from profiles.models import Event, Identity, Profile, ProfileMerge
from profiles.services import SourceKeys, source_create
from profiles.signals import profile_merging

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def ctx_for(made: SourceKeys, *, trusted: bool = True, at: datetime | None = None) -> IngestContext:
    return IngestContext(
        source_id=made.source.pk,
        identity_secret=made.source.identity_secret,
        require_identity_verification=made.source.require_identity_verification,
        trusted=trusted,
        received_at=at or T0 + timedelta(days=10),
    )


def ev(type_: str = "track", **fields) -> dict:
    base = {"type": type_, "timestamp": T0.isoformat()}
    if type_ == "track":
        base["event"] = fields.pop("event", "viewed")
    base.update(fields)
    return base


def profile_of(kind: str, value: str) -> Profile:
    return Identity.objects.get(kind=kind, value=value).profile


@pytest.mark.django_db
class TestIdentityResolution:
    def test_first_event_creates_one_profile_with_both_identities(self, source):
        # given a visitor never seen before
        # when their first event carries an anonymous id and a user id
        result = events_ingest(ctx=ctx_for(source), payloads=[ev(anonymous_id="a1", user_id="u1")])
        # then one profile owns both identities and the event
        assert result.accepted == 1
        profile = profile_of("user_id", "u1")
        assert profile_of("anonymous_id", "a1") == profile
        assert Event.objects.get().profile == profile
        assert Profile.objects.count() == 1

    def test_identify_merges_anonymous_history_into_known_user(self, source):
        # given an identified user with history on one device, and an anonymous visitor
        ctx = ctx_for(source)
        events_ingest(ctx=ctx, payloads=[ev(user_id="u1", anonymous_id="phone", message_id="m1")])
        events_ingest(
            ctx=ctx,
            payloads=[
                ev(
                    anonymous_id="laptop",
                    message_id="m2",
                    timestamp=(T0 + timedelta(hours=2)).isoformat(),
                ),
                ev(
                    "page",
                    anonymous_id="laptop",
                    message_id="m3",
                    timestamp=(T0 + timedelta(hours=3)).isoformat(),
                ),
            ],
        )
        anonymous = profile_of("anonymous_id", "laptop")
        known = profile_of("user_id", "u1")
        assert anonymous != known
        # when the laptop visitor logs in as u1
        events_ingest(
            ctx=ctx,
            payloads=[
                ev(
                    "identify",
                    anonymous_id="laptop",
                    user_id="u1",
                    traits={"plan": "pro"},
                    message_id="m4",
                    timestamp=(T0 + timedelta(hours=4)).isoformat(),
                )
            ],
        )
        # then everything lives on the known profile; the anonymous one is a tombstone
        known.refresh_from_db()
        anonymous.refresh_from_db()
        assert anonymous.merged_into_id == known.pk
        assert set(Event.objects.values_list("profile_id", flat=True)) == {known.pk}
        assert profile_of("anonymous_id", "laptop") == known
        assert known.event_count == 4
        assert known.page_view_count == 1
        assert known.traits == {"plan": "pro"}
        assert ProfileMerge.objects.get().other_id == anonymous.pk

    def test_two_identified_profiles_are_never_merged(self, source, caplog):
        # given two people, each identified on their own device
        ctx = ctx_for(source)
        events_ingest(ctx=ctx, payloads=[ev(user_id="alice", anonymous_id="dev-a", message_id="1")])
        events_ingest(ctx=ctx, payloads=[ev(user_id="bob", anonymous_id="dev-b", message_id="2")])
        # when bob logs in on alice's device
        result = events_ingest(
            ctx=ctx, payloads=[ev("identify", user_id="bob", anonymous_id="dev-a", message_id="3")]
        )
        # then nothing merges: the event goes to bob, the device id stays alice's
        assert result.accepted == 1
        assert profile_of("user_id", "alice") != profile_of("user_id", "bob")
        assert profile_of("anonymous_id", "dev-a") == profile_of("user_id", "alice")
        assert Event.objects.get(message_id="3").profile == profile_of("user_id", "bob")
        assert not Profile.objects.filter(merged_into__isnull=False).exists()

    def test_alias_merges_previous_id(self, source):
        ctx = ctx_for(source)
        events_ingest(ctx=ctx, payloads=[ev(anonymous_id="old-anon", message_id="1")])
        events_ingest(ctx=ctx, payloads=[ev(user_id="u9", message_id="2")])
        events_ingest(
            ctx=ctx, payloads=[ev("alias", user_id="u9", previous_id="old-anon", message_id="3")]
        )
        assert profile_of("anonymous_id", "old-anon") == profile_of("user_id", "u9")
        assert profile_of("user_id", "u9").event_count == 3

    def test_anonymous_then_identify_in_one_batch_is_one_profile(self, source):
        ctx = ctx_for(source)
        events_ingest(ctx=ctx, payloads=[ev(user_id="u1", message_id="0")])
        result = events_ingest(
            ctx=ctx,
            payloads=[
                ev(anonymous_id="new-anon", message_id="1"),
                ev("identify", anonymous_id="new-anon", user_id="u1", message_id="2"),
            ],
        )
        assert result.accepted == 2
        assert Profile.objects.filter(merged_into__isnull=True).count() == 1
        assert profile_of("user_id", "u1").event_count == 3

    def test_merge_hook_lets_apps_move_their_rows(self, source):
        seen = []

        def receiver(sender, into, other, **kwargs):
            seen.append((into.pk, other.pk))

        profile_merging.connect(receiver)
        try:
            ctx = ctx_for(source)
            events_ingest(ctx=ctx, payloads=[ev(user_id="u1", message_id="1")])
            events_ingest(ctx=ctx, payloads=[ev(anonymous_id="a", message_id="2")])
            anon = profile_of("anonymous_id", "a")
            events_ingest(
                ctx=ctx, payloads=[ev("identify", user_id="u1", anonymous_id="a", message_id="3")]
            )
        finally:
            profile_merging.disconnect(receiver)
        assert seen == [(profile_of("user_id", "u1").pk, anon.pk)]

    def test_unverified_user_id_never_reaches_another_profile(self, verified_source):
        # given alice is known
        events_ingest(
            ctx=ctx_for(verified_source),
            payloads=[ev(user_id="alice", anonymous_id="a-dev", message_id="1")],
        )
        alice = profile_of("user_id", "alice")
        # when a browser claims to be alice without user_hash
        result = events_ingest(
            ctx=ctx_for(verified_source, trusted=False),
            payloads=[
                ev(
                    "identify",
                    user_id="alice",
                    anonymous_id="attacker",
                    traits={"x": 1},
                    message_id="2",
                )
            ],
        )
        # then the claim is stored on the attacker's own profile only
        assert result.accepted == 1
        attacker = profile_of("anonymous_id", "attacker")
        assert attacker != alice
        assert attacker.traits["unverified_user_id"] == "alice"
        alice.refresh_from_db()
        assert alice.event_count == 1
        # and with a valid user_hash the same claim links
        good = user_hash(verified_source.source.identity_secret, "alice")
        events_ingest(
            ctx=ctx_for(verified_source, trusted=False),
            payloads=[
                ev(
                    "identify",
                    user_id="alice",
                    anonymous_id="a-dev-2",
                    user_hash=good,
                    message_id="3",
                )
            ],
        )
        assert profile_of("anonymous_id", "a-dev-2") == alice


@pytest.mark.django_db
class TestDedupAndTraits:
    def test_replayed_batch_adds_nothing(self, source):
        ctx = ctx_for(source)
        batch = [ev(anonymous_id="a", message_id=f"m{i}", properties={"i": i}) for i in range(20)]
        first = events_ingest(ctx=ctx, payloads=batch)
        before = Profile.objects.get()
        second = events_ingest(ctx=ctx, payloads=batch)
        after = Profile.objects.get()
        assert (first.accepted, first.duplicates) == (20, 0)
        assert (second.accepted, second.duplicates) == (0, 20)
        assert Event.objects.count() == 20
        assert after.event_count == before.event_count == 20

    def test_same_message_id_from_two_sources_is_two_events(self, source):
        other = source_create(name="Other")
        events_ingest(ctx=ctx_for(source), payloads=[ev(anonymous_id="a", message_id="same")])
        events_ingest(ctx=ctx_for(other), payloads=[ev(anonymous_id="a", message_id="same")])
        assert Event.objects.count() == 2

    def test_newest_trait_wins_whatever_the_arrival_order(self, source):
        ctx = ctx_for(source)
        events_ingest(
            ctx=ctx,
            payloads=[
                ev(
                    "identify",
                    user_id="u",
                    traits={"plan": "pro"},
                    message_id="2",
                    timestamp=(T0 + timedelta(hours=2)).isoformat(),
                )
            ],
        )
        # a late identify from an hour earlier must not overwrite the newer value
        events_ingest(
            ctx=ctx,
            payloads=[
                ev(
                    "identify",
                    user_id="u",
                    traits={"plan": "free", "city": "Oslo"},
                    message_id="1",
                    timestamp=(T0 + timedelta(hours=1)).isoformat(),
                )
            ],
        )
        profile = profile_of("user_id", "u")
        assert profile.traits == {"plan": "pro", "city": "Oslo"}

    def test_email_becomes_a_hashed_identity(self, source):
        events_ingest(
            ctx=ctx_for(source),
            payloads=[ev("identify", user_id="u", traits={"email": "Ann@Example.com "})],
        )
        identity = Identity.objects.get(kind="email")
        assert "ann" not in identity.value.lower()
        assert len(identity.value) == 64

    def test_purchase_updates_revenue_and_aov(self, source):
        ctx = ctx_for(source)
        events_ingest(
            ctx=ctx,
            payloads=[
                ev(user_id="u", event="purchase", properties={"revenue": 10.5}, message_id="1"),
                ev(
                    user_id="u",
                    event="purchase",
                    properties={"revenue": "20"},
                    message_id="2",
                    timestamp=(T0 + timedelta(days=2)).isoformat(),
                ),
            ],
        )
        p = profile_of("user_id", "u")
        assert p.purchase_count == 2
        assert p.revenue == Decimal("30.5")
        assert p.avg_order_value == Decimal("15.25")
        assert p.last_purchase_at == T0 + timedelta(days=2)
        assert p.session_count == 2

    def test_late_event_recounts_sessions(self, source):
        ctx = ctx_for(source)
        # two sessions: t0 and t0+2h
        events_ingest(
            ctx=ctx,
            payloads=[
                ev(user_id="u", message_id="1"),
                ev(user_id="u", message_id="2", timestamp=(T0 + timedelta(hours=2)).isoformat()),
            ],
        )
        assert profile_of("user_id", "u").session_count == 2
        # a late event at t0+1h bridges nothing (gaps of 1h > 30 min) -> three sessions
        events_ingest(
            ctx=ctx,
            payloads=[
                ev(user_id="u", message_id="3", timestamp=(T0 + timedelta(hours=1)).isoformat())
            ],
        )
        assert profile_of("user_id", "u").session_count == 3
        # late events at +20 and +40 min join the first session with the +1h one
        events_ingest(
            ctx=ctx,
            payloads=[
                ev(user_id="u", message_id="4", timestamp=(T0 + timedelta(minutes=20)).isoformat()),
                ev(user_id="u", message_id="5", timestamp=(T0 + timedelta(minutes=40)).isoformat()),
            ],
        )
        assert profile_of("user_id", "u").session_count == 2


def _concurrently(n: int, fn) -> list[BaseException]:
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            fn(i)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return errors


@pytest.mark.django_db(transaction=True)
def test_concurrent_first_events_for_one_new_user_make_one_profile(source):
    # given a user_id never seen before
    # when eight of their first events arrive at the same time, each from its own device
    def send(i: int) -> None:
        events_ingest(
            ctx=ctx_for(source),
            payloads=[ev(user_id="new-user", anonymous_id=f"dev-{i}", message_id=f"m{i}")],
        )

    errors = _concurrently(8, send)
    # then there is exactly one live profile, holding all eight events and devices
    assert errors == []
    live = Profile.objects.filter(merged_into__isnull=True)
    assert live.count() == 1
    profile = live.get()
    assert Identity.objects.filter(kind="user_id", value="new-user").get().profile == profile
    assert Event.objects.filter(profile=profile).count() == 8
    assert Identity.objects.filter(kind="anonymous_id", profile=profile).count() == 8
    profile.refresh_from_db()
    assert profile.event_count == 8


@pytest.mark.django_db(transaction=True)
def test_concurrent_identical_batches_store_each_event_once(source):
    batch = [ev(anonymous_id=f"a{i % 5}", message_id=f"m{i}") for i in range(50)]
    results = []
    errors = _concurrently(
        4, lambda i: results.append(events_ingest(ctx=ctx_for(source), payloads=batch))
    )
    assert errors == []
    assert Event.objects.count() == 50
    assert sum(r.accepted for r in results) == 50
    assert sum(r.duplicates for r in results) == 150
    assert sum(p.event_count for p in Profile.objects.all()) == 50


@pytest.mark.django_db
class TestReviewRegressions:
    def test_timestamps_the_database_cannot_hold_are_400_not_stored(self, source):
        ctx = ctx_for(source)
        bad = [
            ev(anonymous_id="a", timestamp="9999-12-31T23:59:59-14:00"),
            ev(anonymous_id="a", timestamp="1969-12-31T23:59:59Z"),
            ev(
                anonymous_id="a",
                timestamp="1970-01-02T00:00:00+14:00",
                sent_at="3995-01-01T00:00:00Z",
            ),
        ]
        result = events_ingest(ctx=ctx, payloads=bad)
        assert result.accepted == 0
        assert [sorted(r["errors"]) for r in result.rejected] == [
            ["timestamp"],
            ["timestamp"],
            ["sent_at"],
        ]
        assert not Profile.objects.exists()

    def test_newest_trait_wins_across_utc_offsets(self, source):
        ctx = ctx_for(source)
        events_ingest(
            ctx=ctx,
            payloads=[
                ev(
                    "identify",
                    user_id="u",
                    traits={"plan": "new"},
                    message_id="1",
                    timestamp="2026-01-01T06:00:00Z",
                )
            ],
        )
        # 10:00+05:00 is 05:00Z: older, although its text sorts later
        events_ingest(
            ctx=ctx,
            payloads=[
                ev(
                    "identify",
                    user_id="u",
                    traits={"plan": "old"},
                    message_id="2",
                    timestamp="2026-01-01T10:00:00+05:00",
                )
            ],
        )
        assert profile_of("user_id", "u").traits["plan"] == "new"

    def test_unverified_browser_cannot_claim_an_email(self, verified_source):
        events_ingest(
            ctx=ctx_for(verified_source, trusted=False),
            payloads=[
                ev("identify", anonymous_id="attacker", traits={"email": "victim@example.com"})
            ],
        )
        assert not Identity.objects.filter(kind="email").exists()

    def test_lock_follows_a_merge_committed_after_lookup(self, source):
        # given P was merged into Q after a batch looked P up
        from profiles.ingestion import _profiles_lock
        from profiles.services import profile_merge

        ctx = ctx_for(source)
        events_ingest(ctx=ctx, payloads=[ev(user_id="q", message_id="1")])
        events_ingest(ctx=ctx, payloads=[ev(anonymous_id="p", message_id="2")])
        q, p = profile_of("user_id", "q"), profile_of("anonymous_id", "p")
        profile_merge(into=q, other=p, reason="test")
        # when the batch locks its profiles
        locked = _profiles_lock({p.pk})
        # then the event goes to the live profile, not the tombstone
        assert locked[p.pk].pk == q.pk

    def test_merged_tombstone_keeps_no_stats(self, source):
        ctx = ctx_for(source)
        events_ingest(ctx=ctx, payloads=[ev(user_id="q", message_id="1")])
        events_ingest(
            ctx=ctx,
            payloads=[
                ev(anonymous_id="p", event="purchase", properties={"revenue": 5}, message_id="2")
            ],
        )
        tomb = profile_of("anonymous_id", "p")
        events_ingest(
            ctx=ctx, payloads=[ev("identify", user_id="q", anonymous_id="p", message_id="3")]
        )
        tomb.refresh_from_db()
        assert tomb.merged_into_id is not None
        assert (tomb.event_count, tomb.purchase_count, tomb.revenue) == (0, 0, Decimal("0"))
        assert profile_of("user_id", "q").purchase_count == 1
