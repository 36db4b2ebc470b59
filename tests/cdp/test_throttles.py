"""Rate limits: a flood from one browser, or through one key, is answered 429 with
Retry-After and the error shape, while everyone else goes on being served."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from cdp import throttles
from profiles.services import SourceKeys, source_create
from rules import services as rules_services
from rules.models import Slot

EVENT = {"type": "track", "event": "flood", "anonymous_id": "a-flood"}
UNLIMITED = "1000000/s"


class Clock:
    """The limiters' clock, stopped at the start of a day (so of every window) unless a
    test moves it: a test never straddles a window by chance."""

    now = 1_800_000_000.0  # a multiple of 86,400

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: Any) -> Clock:
    stopped = Clock()
    monkeypatch.setattr(throttles.time, "time", stopped)
    return stopped


@pytest.fixture
def limits(settings: Any, clock: Clock) -> Callable[..., None]:
    """limits(write_key=…, secret_key=…, client_ip=…): the rates for this test; the ones
    not named are out of the way."""

    def set_limits(**rates: str) -> None:
        base = dict.fromkeys((throttles.WRITE_KEY, throttles.SECRET_KEY, throttles.CLIENT_IP))
        settings.REST_FRAMEWORK = {
            **settings.REST_FRAMEWORK,
            "DEFAULT_THROTTLE_RATES": {k: rates.get(k, UNLIMITED) for k in base},
        }

    return set_limits


def send(client: APIClient, ip: str = "203.0.113.7", **extra: Any) -> Any:
    return client.post("/api/v1/events", EVENT, format="json", REMOTE_ADDR=ip, **extra)


def assert_rate_limited(response: Any) -> None:
    assert response.status_code == 429, response.content
    body = response.json()
    assert body["error"]["code"] == "rate_limited"
    assert body["error"]["message"]
    assert 1 <= int(response["Retry-After"]) <= 61


@pytest.mark.django_db
def test_one_browser_flooding_is_stopped_but_the_shop_goes_on(write_client, limits):
    # Given a per-address limit of 3 requests a minute
    limits(client_ip="3/min")

    # When one browser sends 4 events
    answers = [send(write_client, ip="203.0.113.7").status_code for _ in range(3)]
    flooded = send(write_client, ip="203.0.113.7")

    # Then the first 3 are accepted and the 4th is refused with Retry-After
    assert answers == [202, 202, 202]
    assert_rate_limited(flooded)
    # … while another shopper of the same shop (same write key) is still served
    assert send(write_client, ip="198.51.100.2").status_code == 202


@pytest.mark.django_db
def test_a_flood_of_made_up_keys_is_limited_and_stops_costing_lookups(
    limits, django_assert_max_num_queries
):
    # Given a per-address limit of 3 requests a minute
    limits(client_ip="3/min")

    # When one address sends with made-up keys (and without any)
    def guess(n: int) -> Any:
        client = APIClient()
        if n % 2:
            client.credentials(HTTP_AUTHORIZATION=f"Bearer wk_made-up-{n}")
        return send(client, ip="203.0.113.66")

    answers = [guess(n).status_code for n in range(3)]

    # Then the refusals count against the address: 401 while under the limit, then 429
    assert answers == [401, 401, 401]
    assert_rate_limited(guess(3))
    # … and an address over its limit is refused before its key is looked up
    with django_assert_max_num_queries(0):
        assert_rate_limited(guess(5))
    # … while other addresses are still answered as usual
    assert APIClient().post("/api/v1/events", EVENT, format="json").status_code == 401


@pytest.mark.django_db
def test_a_write_key_has_one_budget_across_all_browsers(write_client, limits):
    # Given a write-key limit of 2 requests a second
    limits(write_key="2/s")

    # When three browsers (three addresses) use it within the second
    first = send(write_client, ip="192.0.2.1")
    second = send(write_client, ip="192.0.2.2")
    third = send(write_client, ip="192.0.2.3")

    # Then the key's budget is shared: the third is refused
    assert (first.status_code, second.status_code) == (202, 202)
    assert_rate_limited(third)
    assert int(third["Retry-After"]) <= 2


@pytest.mark.django_db
def test_sources_and_key_kinds_have_their_own_budgets(source, write_client, limits):
    # Given a write-key limit of 1 a minute, and a second shop
    limits(write_key="1/min")
    other: SourceKeys = source_create(name="Other shop")
    other_client = APIClient()
    other_client.credentials(HTTP_AUTHORIZATION=f"Bearer {other.write_key}")
    secret_client = APIClient()
    secret_client.credentials(HTTP_AUTHORIZATION=f"Bearer {source.secret_key}")

    # When the first shop's write key is used up
    assert send(write_client).status_code == 202
    assert_rate_limited(send(write_client))

    # Then the other shop's write key and the shop's own secret key still work
    assert send(other_client).status_code == 202
    assert send(secret_client).status_code == 202


@pytest.mark.django_db
def test_secret_key_servers_are_not_limited_by_address(secret_client, limits):
    # Given a tiny per-address limit and a secret-key limit of 3 a minute
    limits(client_ip="1/min", secret_key="3/min")

    # When one server imports through its secret key
    answers = [send(secret_client, ip="10.0.0.5").status_code for _ in range(3)]

    # Then its address does not matter, only the secret key's own limit
    assert answers == [202, 202, 202]
    assert_rate_limited(send(secret_client, ip="10.0.0.5"))


@pytest.mark.django_db
def test_staff_sessions_are_not_limited_by_address(staff_client, limits):
    # Given a tiny per-address limit
    limits(client_ip="1/min")

    # When a marketer's session reads the API twice
    answers = [staff_client.get("/api/v1/segments").status_code for _ in range(2)]

    # Then both are answered
    assert answers == [200, 200]


@pytest.mark.django_db
def test_a_forged_x_forwarded_for_does_not_buy_a_fresh_limit(write_client, limits):
    # Given a per-address limit of 1 a minute and no proxy configured (the default)
    limits(client_ip="1/min")

    # When a script sends with a different made-up X-Forwarded-For each time
    first = send(write_client, ip="203.0.113.9", HTTP_X_FORWARDED_FOR="1.1.1.1")
    second = send(write_client, ip="203.0.113.9", HTTP_X_FORWARDED_FOR="2.2.2.2")

    # Then it is counted by its real address and refused
    assert first.status_code == 202
    assert_rate_limited(second)


@pytest.mark.django_db
def test_behind_a_trusted_proxy_the_forwarded_client_is_counted(write_client, limits, settings):
    # Given one trusted proxy that appends the client's address to X-Forwarded-For
    limits(client_ip="1/min")
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    proxy = "10.0.0.1"

    # When two shoppers come through it, one of them forging an earlier hop
    ann = send(write_client, ip=proxy, HTTP_X_FORWARDED_FOR="198.51.100.10")
    bob = send(write_client, ip=proxy, HTTP_X_FORWARDED_FOR="6.6.6.6, 198.51.100.20")
    bob_again = send(write_client, ip=proxy, HTTP_X_FORWARDED_FOR="7.7.7.7, 198.51.100.20")

    # Then each is counted by the address the proxy saw, whatever they forged
    assert (ann.status_code, bob.status_code) == (202, 202)
    assert_rate_limited(bob_again)


@pytest.mark.django_db
def test_the_segment_endpoints_are_limited_too(source, limits):
    # Given a per-address limit of 1 a minute and analytics.js's basic-auth write key
    limits(client_ip="1/min")
    client = APIClient()
    basic = base64.b64encode(f"{source.write_key}:".encode()).decode()
    client.credentials(HTTP_AUTHORIZATION=f"Basic {basic}")
    message = {"event": "Flood", "anonymousId": "a-flood"}

    # When it sends twice
    first = client.post("/v1/track", message, format="json", REMOTE_ADDR="203.0.113.3")
    second = client.post("/v1/t", message, format="json", REMOTE_ADDR="203.0.113.3")

    # Then the second is refused with the error shape
    assert first.status_code == 200, first.content
    assert_rate_limited(second)


@pytest.mark.django_db
def test_decisions_are_limited_per_browser(write_client, limits):
    # Given a per-address limit of 1 a minute
    limits(client_ip="1/min")
    rules_services.slot_save(
        slot=Slot(key="home_hero"), actor="test", variants=[{"key": "base"}], default_variant="base"
    )
    ask = {"anonymous_id": "a-flood", "slots": ["home_hero"]}

    # When one browser asks twice
    first = write_client.post("/api/v1/decide", ask, format="json", REMOTE_ADDR="203.0.113.4")
    second = write_client.post("/api/v1/decide", ask, format="json", REMOTE_ADDR="203.0.113.4")

    # Then the second is refused
    assert first.status_code == 200, first.content
    assert_rate_limited(second)


@pytest.mark.django_db
def test_health_probes_are_never_limited(anon_client, limits):
    # Given a per-address limit of 1 a minute
    limits(client_ip="1/min")

    # When the load balancer probes five times
    answers = [anon_client.get("/healthz").status_code for _ in range(5)]

    # Then every probe is answered
    assert answers == [200] * 5


@pytest.mark.django_db
def test_the_limit_lifts_when_the_window_passes(write_client, limits, clock):
    # Given a per-address limit of 1 a minute, used up 20 s into the minute
    limits(client_ip="1/min")
    clock.now += 20
    assert send(write_client).status_code == 202
    refused = send(write_client)
    assert_rate_limited(refused)
    assert int(refused["Retry-After"]) == 41  # the 40 s left, rounded up

    # When the minute is over
    clock.now += 40

    # Then the browser is served again
    assert send(write_client).status_code == 202


@pytest.mark.django_db
def test_a_limit_can_be_switched_off(write_client, limits):
    # Given the per-address limit switched off
    limits(client_ip="off", write_key="1000/min")

    # When one browser sends many events / Then none is refused
    assert {send(write_client).status_code for _ in range(20)} == {202}


@pytest.mark.django_db
def test_an_unreachable_redis_keeps_collection_going_and_limits_per_process(
    write_client, limits, settings
):
    # Given a per-address limit of 2 a minute and a Redis that does not answer (a closed
    # port: the real client, the real connection error)
    limits(client_ip="2/min")
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:6399/0",
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }
    throttles.local_counts_reset()

    # When a browser sends three times
    answers = [send(write_client).status_code for _ in range(3)]

    # Then the first two are stored (collection goes on), the third is refused: this
    # process still counts on its own
    assert answers == [202, 202, 429]
    # … and Redis is not tried again at once (each try could wait for a timeout)
    assert throttles._cache_down_until > 0


@pytest.mark.django_db
def test_processes_share_their_counts_through_redis(write_client, limits, settings):
    # Given a per-address limit of 3 a minute, counted in Redis
    if "RedisCache" not in settings.CACHES["default"]["BACKEND"]:
        pytest.skip("needs Redis (REDIS_URL): the embedded default has one process")
    limits(client_ip="3/min")

    # When one web process has served a browser three times (and flushed its counts)
    assert [send(write_client).status_code for _ in range(3)] == [202, 202, 202]
    throttles._flush_now()

    # Then another process (its own counts empty) refuses the browser once it has synced
    throttles.local_counts_reset()
    first = send(write_client)  # counted locally before it learns the total
    throttles._flush_now()
    assert first.status_code == 202
    assert_rate_limited(send(write_client))


@pytest.mark.parametrize(
    ("rate", "parsed"),
    [
        ("5000/s", (5000, 1)),
        ("300/min", (300, 60)),
        ("100/10s", (100, 10)),
        ("20/hour", (20, 3600)),
        ("1000/day", (1000, 86400)),
        ("off", None),
        (None, None),
    ],
)
def test_rates_are_read_as_requests_per_window(rate, parsed):
    assert throttles.rate_parse(rate) == parsed


@pytest.mark.parametrize("rate", ["5000", "fast", "10/fortnight", "-1/s"])
def test_a_mistyped_rate_is_an_error_not_an_open_door(rate):
    with pytest.raises(ValueError, match="expected"):
        throttles.rate_parse(rate)


def test_a_mistyped_rate_is_named_by_manage_py_check(settings):
    # Given an operator's typo in CDP_RATE_LIMITS
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"write_key": "5000/s", "client_ip": "fast"},
    }

    # When Django's checks run / Then they name the setting and the scope
    problems = throttles.rate_limits_check()
    assert [p.id for p in problems] == ["cdp.E001"]
    assert "client_ip" in problems[0].msg


@pytest.mark.django_db
def test_a_browser_on_the_shop_can_read_how_long_to_wait(write_client, limits):
    # Given the SDK on the shop's own origin, over its per-address limit
    limits(client_ip="1/min")
    send(write_client, HTTP_ORIGIN="https://shop.example")

    # When it is refused
    refused = send(write_client, HTTP_ORIGIN="https://shop.example")

    # Then the browser lets the SDK read the answer and its Retry-After
    assert_rate_limited(refused)
    assert refused["Access-Control-Allow-Origin"] == "https://shop.example"
    assert "Retry-After" in refused["Access-Control-Expose-Headers"]
