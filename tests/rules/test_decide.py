"""POST /api/v1/decide: the contract, the order consent → rules → default, the caches
(and what invalidates them), Redis down, the query count, the decision log and its
outcomes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import caches
from django.db import connection
from django.utils import timezone

from profiles.models import Identity, Profile
from rules import decide, decisionlog, services
from rules.models import Decision, Rule, Slot
from rules.selectors import rule_performance
from segments.models import Segment
from segments.services import segment_save, segments_recompute_all
from tests.conftest import post_events

URL = "/api/v1/decide"
ROOT = Path(__file__).resolve().parents[2]
CART = {
    "all": [
        {"event": "add_to_cart", "within": "24h"},
        {"not": {"event": "purchase", "within": "24h"}},
    ]
}


def make_slot(key: str = "home_hero", **fields: Any) -> Slot:
    return services.slot_save(
        slot=Slot(key=key, **fields),
        actor="test",
        variants=[
            {"key": "welcome", "title": "Welcome"},
            {"key": "cart", "title": "Your cart misses you"},
            {"key": "mobile", "title": "On the go"},
        ],
        default_variant="welcome",
    )


def make_rule(slot: Slot, key: str, condition: Any, variant: str, **fields: Any) -> Rule:
    return services.rule_save(
        rule=Rule(
            key=key,
            slot=slot,
            name=fields.pop("name", key.replace("-", " ").title()),
            condition=condition,
            variant=slot.variants.get(key=variant),
            **fields,
        ),
        actor="test",
    )


def ask(client: Any, body: dict[str, Any], status: int = 200, **headers: Any) -> dict[str, Any]:
    response = client.post(URL, body, format="json", **headers)
    assert response.status_code == status, response.content
    return response.json()


@pytest.fixture
def hero(db: Any) -> Slot:
    slot = make_slot()
    make_rule(slot, "cart-reminder", CART, "cart", priority=10, name="Cart reminder")
    make_rule(
        slot, "mobile-visitors", {"context": "device", "op": "eq", "value": "mobile"}, "mobile"
    )
    return slot


# --- The contract -------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_cart_abandoner_gets_the_reminder_with_a_readable_reason(write_client, hero):
    # Given a visitor who added to cart and did not buy
    post_events(write_client, {"type": "track", "event": "add_to_cart", "anonymous_id": "a1"})

    # When the storefront asks for the hero slot
    body = ask(write_client, {"anonymous_id": "a1", "slots": ["home_hero"]})

    # Then the rule's variant is served with its content and the reason says why
    hero_decision = body["decisions"]["home_hero"]
    assert body["profile_id"] == str(Identity.objects.get(value="a1").profile_id)
    assert hero_decision["variant"] == "cart"
    assert hero_decision["content"] == {"title": "Your cart misses you"}
    assert hero_decision["source"] == "rule"
    assert hero_decision["rule"] == "cart-reminder"
    assert hero_decision["reason"] == (
        "rule 'Cart reminder' matched: add_to_cart within 24h and no purchase within 24h"
    )
    uuid.UUID(hero_decision["decision_id"])


@pytest.mark.django_db
def test_an_unknown_visitor_gets_decisions_without_creating_rows(write_client, hero):
    profiles_before = Profile.objects.count()

    body = ask(
        write_client,
        {"anonymous_id": "never-seen", "slots": ["home_hero"], "context": {"device": "mobile"}},
    )

    assert body["profile_id"] is None
    assert body["decisions"]["home_hero"]["variant"] == "mobile"  # context rules still apply
    assert Profile.objects.count() == profiles_before
    assert not Identity.objects.filter(value="never-seen").exists()


@pytest.mark.django_db
def test_no_rule_matching_serves_the_default_and_says_so(write_client, hero):
    body = ask(
        write_client,
        {"anonymous_id": "a2", "slots": ["home_hero"], "context": {"device": "desktop"}},
    )
    decision = body["decisions"]["home_hero"]
    assert (decision["variant"], decision["source"]) == ("welcome", "default")
    assert decision["reason"] == "no rule matched (2 tried): default variant"
    assert "rule" not in decision


@pytest.mark.django_db
def test_the_device_comes_from_the_user_agent_when_the_context_does_not_say(write_client, hero):
    iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148"
    body = ask(write_client, {"anonymous_id": "a3", "slots": ["home_hero"]}, HTTP_USER_AGENT=iphone)
    assert body["decisions"]["home_hero"]["variant"] == "mobile"


@pytest.mark.django_db
def test_hour_and_weekday_follow_the_visitors_time_zone(write_client, db):
    slot = make_slot()
    make_rule(slot, "night", {"context": "hour", "op": "gte", "value": 22}, "mobile")
    now = timezone.now()
    # A zone where it is 23:xx now
    offset = (23 - now.hour) % 24
    zone = f"Etc/GMT{'-' if offset <= 12 else '+'}{offset if offset <= 12 else 24 - offset}"
    body = ask(
        write_client, {"anonymous_id": "a4", "slots": ["home_hero"], "context": {"timezone": zone}}
    )
    assert body["decisions"]["home_hero"]["variant"] == "mobile", zone


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"slots": ["home_hero"]}, "user_id"),
        ({"anonymous_id": "a", "slots": []}, "slots"),
        ({"anonymous_id": "a"}, "slots"),
        ({"anonymous_id": "a", "slots": ["home_hero"], "context": {"hour": 24}}, "context.hour"),
        (
            {"anonymous_id": "a", "slots": ["home_hero"], "context": {"devise": "mobile"}},
            "context.devise",
        ),
        (
            {"anonymous_id": "a", "slots": ["home_hero"], "context": {"device": "fridge"}},
            "context.device",
        ),
        (
            {"anonymous_id": "a", "slots": ["home_hero"], "context": {"timezone": "Mars/Olympus"}},
            "context.timezone",
        ),
        (
            {"anonymous_id": "a", "slots": ["home_hero"], "context": {"utm": {"source": 3}}},
            "context.utm.source",
        ),
        ({"anonymous_id": "a", "slots": ["home_hero"], "context": "mobile"}, "context"),
        ({"anonymous_id": "a", "slots": "home_hero"}, "slots"),
    ],
)
def test_bad_requests_are_400_naming_the_field(write_client, hero, body, field):
    error = ask(write_client, body, status=400)["error"]
    assert field in error["details"], error
    assert field in error["message"]


@pytest.mark.django_db
def test_unknown_slots_are_listed_in_the_error(write_client, hero):
    error = ask(write_client, {"anonymous_id": "a", "slots": ["home_hero", "nope", "nada"]}, 400)[
        "error"
    ]
    assert error["code"] == "unknown_slot"
    assert error["details"]["slots"] == ["unknown: nope, nada"]
    assert error["details"]["known_slots"] == ["home_hero"]
    assert Decision.objects.count() == 0
    assert decisionlog.pending() == 0


@pytest.mark.django_db
def test_a_browser_cannot_read_another_users_decisions_without_user_hash(verified_source, hero):
    from tests.conftest import _client

    browser = _client(verified_source.write_key)
    error = ask(browser, {"user_id": "victim", "slots": ["home_hero"]}, 400)["error"]
    assert "user_hash" in error["details"]
    # with an anonymous id as well, the unverified user_id is ignored
    body = ask(browser, {"user_id": "victim", "anonymous_id": "me", "slots": ["home_hero"]})
    assert body["profile_id"] is None


# --- Consent --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_without_personalization_consent_everyone_gets_the_default(
    write_client, hero, django_capture_on_commit_callbacks
):
    post_events(write_client, {"type": "track", "event": "add_to_cart", "anonymous_id": "a5"})
    assert (
        ask(write_client, {"anonymous_id": "a5", "slots": ["home_hero"]})["decisions"]["home_hero"][
            "variant"
        ]
        == "cart"
    )

    # When the visitor withdraws personalization consent
    with django_capture_on_commit_callbacks(execute=True):
        response = write_client.post(
            "/api/v1/consent",
            {"anonymous_id": "a5", "purposes": {"personalization": False}, "policy_version": "v1"},
            format="json",
        )
    assert response.status_code == 201, response.content

    # Then the next decision (no stale snapshot) is the default, and says why
    decision = ask(write_client, {"anonymous_id": "a5", "slots": ["home_hero"]})["decisions"][
        "home_hero"
    ]
    assert decision["variant"] == "welcome"
    assert decision["reason"] == "no personalization consent: default variant"


@pytest.mark.django_db
def test_strict_deployments_give_unknown_visitors_the_default(write_client, hero, settings):
    settings.CDP = {**settings.CDP, "CONSENT_ALL_OPT_IN": True}
    services.config_changed()  # purposes' defaults are compiled with the rules
    decide.reset()
    body = ask(
        write_client,
        {"anonymous_id": "new", "slots": ["home_hero"], "context": {"device": "mobile"}},
    )
    assert body["decisions"]["home_hero"]["source"] == "default"


# --- Frequency caps, control groups -------------------------------------------------------


@pytest.mark.django_db
def test_a_frequency_cap_stops_a_rule_for_that_visitor_only(write_client, db):
    slot = make_slot()
    make_rule(
        slot,
        "mobile-capped",
        {"context": "device", "op": "eq", "value": "mobile"},
        "mobile",
        frequency_cap_count=2,
        frequency_cap_per="day",
    )
    seen = [
        ask(
            write_client,
            {"anonymous_id": "cap-1", "slots": ["home_hero"], "context": {"device": "mobile"}},
        )["decisions"]["home_hero"]
        for _ in range(3)
    ]
    assert [d["variant"] for d in seen] == ["mobile", "mobile", "welcome"]
    assert "reached its cap of 2 per day" in seen[2]["reason"]
    other = ask(
        write_client,
        {"anonymous_id": "cap-2", "slots": ["home_hero"], "context": {"device": "mobile"}},
    )
    assert other["decisions"]["home_hero"]["variant"] == "mobile"


@pytest.mark.django_db
def test_the_control_group_is_sticky_and_gets_the_default(write_client, db):
    slot = make_slot(control_percent=50.0)
    make_rule(slot, "everyone", {"all": []}, "mobile")
    answers = {
        f"v{i}": ask(write_client, {"anonymous_id": f"v{i}", "slots": ["home_hero"]})["decisions"][
            "home_hero"
        ]
        for i in range(60)
    }
    control = {k for k, d in answers.items() if d["variant"] == "welcome"}
    assert 15 <= len(control) <= 45  # about half
    assert all("control group (50% of visitors)" in answers[k]["reason"] for k in control)
    for k in list(answers)[:10]:  # the same visitor lands in the same group again
        again = ask(write_client, {"anonymous_id": k, "slots": ["home_hero"]})["decisions"][
            "home_hero"
        ]
        assert again["variant"] == answers[k]["variant"]


# --- Caches and their invalidation -------------------------------------------------------


@pytest.mark.django_db
def test_a_new_event_is_seen_by_the_next_decision(
    write_client, hero, django_capture_on_commit_callbacks
):
    # Given a visitor whose snapshot is cached
    post_events(write_client, {"type": "page", "anonymous_id": "a6"})
    first = ask(write_client, {"anonymous_id": "a6", "slots": ["home_hero"]})
    assert first["decisions"]["home_hero"]["variant"] == "welcome"

    # When they add to cart (what ingestion announces after its commit)
    with django_capture_on_commit_callbacks(execute=True):
        post_events(write_client, {"type": "track", "event": "add_to_cart", "anonymous_id": "a6"})

    # Then the next decision sees it
    after = ask(write_client, {"anonymous_id": "a6", "slots": ["home_hero"]})
    assert after["decisions"]["home_hero"]["variant"] == "cart"


@pytest.mark.django_db
def test_a_snapshot_read_before_an_event_and_written_after_it_is_never_served(
    write_client, hero, django_capture_on_commit_callbacks
):
    """The race a shop's page change makes: `/decide` for the new page reads the profile
    while the last page's add_to_cart is arriving by beacon; ingestion commits and
    invalidates, then `/decide` writes what it read before."""
    post_events(write_client, {"type": "page", "anonymous_id": "a61"})
    ask(write_client, {"anonymous_id": "a61", "slots": ["home_hero"]})
    profile_id = Identity.objects.get(value="a61").profile_id
    config = decide.config_current()
    got = decide.store().get_many([decide.generation_key(profile_id)])
    stale = decide.snapshot_build(profile_id=profile_id, config=config, now=timezone.now())
    assert stale is not None

    with django_capture_on_commit_callbacks(execute=True):
        post_events(write_client, {"type": "track", "event": "add_to_cart", "anonymous_id": "a61"})
    # the racing request writes its snapshot, built under the old generation
    stale.epoch = str(decide.store().get_many([decide.EPOCH_KEY]).get(decide.EPOCH_KEY) or "0")
    stale.generation = int(got.get(decide.generation_key(profile_id)) or 0)
    decide.store().set(decide.profile_cache_key(profile_id), stale, decide.SNAPSHOT_TTL)

    after = ask(write_client, {"anonymous_id": "a61", "slots": ["home_hero"]})
    assert after["decisions"]["home_hero"]["variant"] == "cart"


@pytest.mark.django_db
def test_a_batch_recompute_retires_cached_snapshots(
    write_client, secret_client, db, django_capture_on_commit_callbacks
):
    slot = make_slot()
    segment_save(
        segment=Segment(
            slug="pros",
            name="Pros",
            condition={"trait": "plan", "op": "eq", "value": "pro"},
            refresh="manual",
        ),
        actor="t",
    )
    make_rule(slot, "pros-only", {"segment": "pros"}, "mobile")
    post_events(write_client, {"type": "identify", "anonymous_id": "a7", "traits": {"plan": "pro"}})
    assert (
        ask(write_client, {"anonymous_id": "a7", "slots": ["home_hero"]})["decisions"]["home_hero"][
            "variant"
        ]
        == "welcome"
    )

    with django_capture_on_commit_callbacks(execute=True):
        segments_recompute_all()

    assert (
        ask(write_client, {"anonymous_id": "a7", "slots": ["home_hero"]})["decisions"]["home_hero"][
            "variant"
        ]
        == "mobile"
    )


@pytest.mark.django_db
def test_a_saved_rule_is_served_at_once(write_client, hero, django_capture_on_commit_callbacks):
    ask(write_client, {"anonymous_id": "a8", "slots": ["home_hero"]})  # config compiled and cached
    with django_capture_on_commit_callbacks(execute=True):
        make_rule(hero, "everyone", {"all": []}, "mobile", priority=99, name="Everyone")
    body = ask(write_client, {"anonymous_id": "a8", "slots": ["home_hero"]})
    assert body["decisions"]["home_hero"]["rule"] == "everyone"


@pytest.mark.django_db
def test_a_warm_decision_for_a_known_visitor_reads_no_database(
    write_client, hero, django_assert_num_queries
):
    post_events(write_client, {"type": "track", "event": "add_to_cart", "anonymous_id": "warm"})
    ask(write_client, {"anonymous_id": "warm", "slots": ["home_hero"]})  # warms every cache

    # Count the calls that reach the cache (each is one Redis round trip)
    calls: list[str] = []
    default = decide.store()
    originals = {n: getattr(default, n) for n in ("get_many", "set", "incr", "delete_many")}

    depth = [0]

    def counting(name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            if depth[0] == 0:  # not the backend's own nested calls (locmem's get_many)
                calls.append(name)
            depth[0] += 1
            try:
                return originals[name](*args, **kwargs)
            finally:
                depth[0] -= 1

        return call

    for name in originals:
        setattr(default, name, counting(name))
    try:
        with django_assert_num_queries(0):
            body = ask(write_client, {"anonymous_id": "warm", "slots": ["home_hero"]})
    finally:
        for name, fn in originals.items():
            setattr(default, name, fn)
    assert body["decisions"]["home_hero"]["variant"] == "cart"
    assert calls == ["get_many"]  # one round trip: version, epoch and snapshot together


@pytest.mark.django_db
def test_when_redis_is_down_decide_answers_from_the_database(write_client, hero, settings):
    post_events(write_client, {"type": "track", "event": "add_to_cart", "anonymous_id": "a9"})
    ask(write_client, {"anonymous_id": "a9", "slots": ["home_hero"]})
    # Given the cache now points at a port where nothing listens
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{dead}/0",
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }
    decide.reset()
    # When visitors keep asking (and a marketer saves a rule meanwhile)
    body = ask(write_client, {"anonymous_id": "a9", "slots": ["home_hero"]})
    make_rule(hero, "later", {"all": []}, "mobile", priority=99)
    time.sleep(decide.CONFIG_TTL_WITHOUT_CACHE + 0.1)
    later = ask(write_client, {"anonymous_id": "never", "slots": ["home_hero"]})

    # Then they get correct answers, from the database, and no 5xx
    assert body["decisions"]["home_hero"]["variant"] == "cart"
    assert later["decisions"]["home_hero"]["rule"] == "later"


# --- The decision log and outcomes ---------------------------------------------------------


@pytest.mark.django_db
def test_decisions_are_logged_in_batches_and_outcomes_joined(write_client, hero):
    # Given two decisions for a cart abandoner
    post_events(write_client, {"type": "track", "event": "add_to_cart", "user_id": "buyer"})
    first = ask(write_client, {"user_id": "buyer", "slots": ["home_hero"]})["decisions"][
        "home_hero"
    ]
    ask(write_client, {"anonymous_id": "x-unknown", "slots": ["home_hero"]})
    assert Decision.objects.count() == 0  # nothing written on the request path
    assert decisionlog.pending() == 2
    assert decisionlog.flush() == 2

    logged = Decision.objects.get(pk=first["decision_id"])
    assert (logged.slot, logged.variant, logged.kind, logged.rule_key) == (
        "home_hero",
        "cart",
        "rule",
        "cart-reminder",
    )
    assert logged.reason == first["reason"]
    assert str(logged.profile_id) == str(Identity.objects.get(value="buyer").profile_id)

    # When the visitor clicks the banner and buys
    post_events(
        write_client,
        {
            "batch": [
                {
                    "type": "track",
                    "event": "content_clicked",
                    "user_id": "buyer",
                    "properties": {"decision_id": first["decision_id"]},
                },
                {
                    "type": "track",
                    "event": "purchase",
                    "user_id": "buyer",
                    "properties": {"revenue": 40},
                },
            ]
        },
    )
    result = services.decisions_attribute()

    # Then the click and the conversion are joined to that decision
    logged.refresh_from_db()
    assert result == {"clicked": 1, "converted": 1}
    assert logged.clicked_at is not None
    assert logged.converted_at is not None
    assert services.decisions_attribute() == {"clicked": 0, "converted": 0}  # idempotent
    perf = {p.key: p for p in rule_performance()}
    assert (
        perf["cart-reminder"].impressions,
        perf["cart-reminder"].clicks,
        perf["cart-reminder"].conversions,
    ) == (1, 1, 1)


@pytest.mark.django_db
def test_a_purchase_outside_the_attribution_window_is_not_a_conversion(write_client, hero, ingest):
    post_events(write_client, {"type": "track", "event": "add_to_cart", "user_id": "late"})
    decided = ask(write_client, {"user_id": "late", "slots": ["home_hero"]})["decisions"][
        "home_hero"
    ]
    decisionlog.flush()
    Decision.objects.filter(pk=decided["decision_id"]).update(
        decided_at=timezone.now() - timedelta(days=2)
    )
    ingest({"type": "track", "event": "purchase", "user_id": "late"})
    services.decisions_attribute(lookback=timedelta(days=3))
    assert Decision.objects.get(pk=decided["decision_id"]).converted_at is None


@pytest.mark.django_db
def test_without_redis_decisions_wait_in_the_process_and_are_written_in_batches(
    write_client, hero, settings
):
    settings.REDIS_URL = ""  # the embedded default (or Redis unreachable)
    for i in range(3):
        ask(write_client, {"anonymous_id": f"local-{i}", "slots": ["home_hero"]})
    assert decisionlog.pending() == 3
    assert Decision.objects.count() == 0
    assert decisionlog.flush() == 3
    assert Decision.objects.count() == 3
    assert decisionlog.pending() == 0


# --- Across processes ---------------------------------------------------------------------

needs_shared_services = pytest.mark.skipif(
    not os.environ.get("REDIS_URL")
    or not os.environ.get("DATABASE_URL", "").startswith("postgres"),
    reason="a second process needs a shared database and Redis (CI runs on both)",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@needs_shared_services
@pytest.mark.integration
def test_a_rule_saved_here_is_served_by_another_process(transactional_db, source):
    import httpx

    # Given a server process that has compiled the rules and answered once
    slot = make_slot()
    make_rule(slot, "mobile", {"context": "device", "op": "eq", "value": "mobile"}, "mobile")
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": os.environ["DATABASE_URL"].rsplit("/", 1)[0]
        + "/"
        + connection.settings_dict["NAME"],
        "DJANGO_SETTINGS_MODULE": "cdp.settings",
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "granian",
            "--interface",
            "wsgi",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--no-access-log",
            "cdp.wsgi:application",
        ],
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}{URL}"
        headers = {"Authorization": f"Bearer {source.write_key}"}
        body = {"anonymous_id": "xp", "slots": ["home_hero"], "context": {"device": "desktop"}}
        deadline = time.monotonic() + 20
        while True:
            try:
                answer = httpx.post(url, json=body, headers=headers, timeout=2).json()
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        assert answer["decisions"]["home_hero"]["variant"] == "welcome"

        # When a marketer saves a rule here (another process)
        make_rule(slot, "everyone", {"all": []}, "cart", priority=50)

        # Then the server serves it on its next answer
        answer = httpx.post(url, json=body, headers=headers, timeout=2).json()
        assert answer["decisions"]["home_hero"]["rule"] == "everyone"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=20)
    # and the decisions it logged outlive it: they wait in Redis for the drain task
    assert decisionlog.drain() == 2
    assert Decision.objects.filter(slot="home_hero").count() == 2


@pytest.mark.django_db
def test_a_process_that_never_saw_the_visitor_finds_them_in_redis_not_the_database(
    write_client, hero, django_assert_num_queries
):
    post_events(write_client, {"type": "track", "event": "add_to_cart", "anonymous_id": "seen"})
    ask(write_client, {"anonymous_id": "seen", "slots": ["home_hero"]})
    decide._identities.clear()  # as in another web process: compiled rules, no identities

    with django_assert_num_queries(0):
        body = ask(write_client, {"anonymous_id": "seen", "slots": ["home_hero"]})
    assert body["decisions"]["home_hero"]["variant"] == "cart"


@pytest.mark.django_db
def test_after_a_merge_decisions_follow_the_surviving_profile(
    write_client, secret_client, hero, django_capture_on_commit_callbacks
):
    # Given a known customer, and an anonymous visitor whose identity is cached
    post_events(secret_client, {"type": "identify", "user_id": "ann", "traits": {"plan": "pro"}})
    post_events(write_client, {"type": "page", "anonymous_id": "ann-phone"})
    before = ask(write_client, {"anonymous_id": "ann-phone", "slots": ["home_hero"]})

    # When the visitor logs in on that phone (the two profiles merge) and adds to cart
    with django_capture_on_commit_callbacks(execute=True):
        post_events(
            secret_client,
            {
                "batch": [
                    {"type": "identify", "anonymous_id": "ann-phone", "user_id": "ann"},
                    {"type": "track", "event": "add_to_cart", "user_id": "ann"},
                ]
            },
        )

    # Then the anonymous id now answers for the customer's profile
    after = ask(write_client, {"anonymous_id": "ann-phone", "slots": ["home_hero"]})
    survivor = str(Identity.objects.get(kind="user_id", value="ann").profile_id)
    assert before["profile_id"] != survivor
    assert after["profile_id"] == survivor
    assert after["decisions"]["home_hero"]["variant"] == "cart"


@pytest.mark.django_db
def test_warmed_snapshots_make_first_visits_read_no_database(
    write_client, hero, django_assert_num_queries
):
    # Given visitors seen before, whose caches are cold (a deploy, a batch recompute)
    for name in ("w1", "w2"):
        post_events(write_client, {"type": "track", "event": "add_to_cart", "anonymous_id": name})
    ask(write_client, {"anonymous_id": "w0-unknown", "slots": ["home_hero"]})  # rules compiled
    caches["default"].clear()
    decide._identities.clear()
    decide.config_current()

    # When the recently active ones are warmed in bulk
    from rules.selectors import profiles_recently_active

    assert decide.snapshots_warm(profile_ids=profiles_recently_active(minutes=5, limit=100)) == 2

    # Then their first visit reads no database
    with django_assert_num_queries(0):
        body = ask(write_client, {"anonymous_id": "w2", "slots": ["home_hero"]})
    assert body["decisions"]["home_hero"]["variant"] == "cart"
