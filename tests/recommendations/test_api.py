"""GET /api/v1/recommendations: the contract, exclusion, diversity, cold start, consent,
warm requests without the database, Redis down, and clear 4xx errors."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from profiles.keys import user_hash
from recommendations import selectors
from recommendations.algorithms import KIND_PURCHASE
from recommendations.models import Item
from recommendations.services import catalog_sync
from rules import decide
from tests.conftest import post_events
from tests.recommendations.planted import Planted

URL = "/api/v1/recommendations"


def recs(client: Any, **params: Any) -> dict[str, Any]:
    r = client.get(URL, params)
    assert r.status_code == 200, r.content
    return r.json()


def bought_by(shop: Planted, user: int) -> set[str]:
    inter = shop.inter
    mask = (inter.users == user) & (inter.kinds == KIND_PURCHASE)
    return {inter.item_ids[i] for i in inter.items[mask].tolist()}


def seen_by(shop: Planted, user: int) -> set[str]:
    inter = shop.inter
    return {inter.item_ids[i] for i in inter.items[inter.users == user].tolist()}


def bundle_of(shop: Planted, item_id: str) -> set[str]:
    code = shop.inter.item_ids.index(item_id)
    group = next(g for g in shop.bundles if code in g)
    return {shop.inter.item_ids[i] for i in group}


def buyer(shop: Planted) -> int:
    return next(u for u in range(shop.inter.n_users) if len(bought_by(shop, u)) >= 2)


@pytest.mark.django_db
def test_similar_items_are_the_planted_bundle_with_reasons_and_catalog_fields(
    write_client, trained, shop
):
    body = recs(write_client, strategy="similar", item="sku-3", limit=4, diversity=0)

    assert body["strategy"] == "similar"
    assert body["model_version"] == trained.version
    items = body["items"]
    assert len(items) == 4
    # the other four items of sku-3's bundle come first
    assert {i["item_id"] for i in items} == bundle_of(shop, "sku-3") - {"sku-3"}
    first = items[0]
    assert first["reason"] == "viewed together with Product sku-3"
    assert first["because"] == "sku-3"
    assert first["title"] == f"Product {first['item_id']}"
    assert first["category"].startswith("cat-")
    assert first["price"] > 0
    assert [i["score"] for i in items] == sorted((i["score"] for i in items), reverse=True)


@pytest.mark.django_db
def test_personal_recommendations_leave_out_what_the_visitor_bought_and_saw(
    write_client, trained, shop
):
    u = buyer(shop)
    body = recs(write_client, anonymous_id=f"planted-u{u}", limit=20)

    assert body["strategy"] == "personal"
    assert body["profile_id"] is not None
    got = {i["item_id"] for i in body["items"]}
    assert len(got) == 20
    assert not got & bought_by(shop, u)
    # the blend part never repeats history (trending fill may not either: it is bought
    # or seen items only that are excluded from the blend)
    blended = {i["item_id"] for i in body["items"] if i["source"] != "trending"}
    assert not blended & seen_by(shop, u)
    assert all(i["reason"] for i in body["items"])


@pytest.mark.django_db
def test_out_of_stock_items_are_never_recommended(write_client, trained, shop, settings):
    settings.CDP = {**settings.CDP, "RECO_CATALOG_TTL_SECONDS": 0}
    before = recs(write_client, strategy="similar", item="sku-3", limit=4, diversity=0)
    gone = before["items"][0]["item_id"]

    # the shop's product page reports it sold out; the catalog follows the events
    post_events(
        write_client,
        {
            "type": "track",
            "event": "product_viewed",
            "anonymous_id": "someone",
            "properties": {"product_id": gone, "in_stock": False},
        },
    )
    catalog_sync()
    assert Item.objects.get(item_id=gone).in_stock is False
    after = recs(write_client, strategy="similar", item="sku-3", limit=4, diversity=0)

    assert gone not in {i["item_id"] for i in after["items"]}
    assert len(after["items"]) == 4  # filled from the next neighbours or trending


@pytest.mark.django_db
def test_exclude_and_category_filters(write_client, trained):
    body = recs(write_client, strategy="similar", item="sku-3", limit=4, exclude="sku-4,sku-1")
    assert not {"sku-4", "sku-1"} & {i["item_id"] for i in body["items"]}

    only = recs(write_client, strategy="trending", category="cat-2", limit=5)
    assert only["items"]
    assert {i["category"] for i in only["items"]} == {"cat-2"}
    assert all(i["reason"] == "trending in cat-2" for i in only["items"])


@pytest.mark.django_db
def test_diversity_spreads_the_list_across_categories(write_client, trained, shop):
    u = buyer(shop)
    plain = recs(write_client, anonymous_id=f"planted-u{u}", limit=6, diversity=0)
    capped = recs(write_client, anonymous_id=f"planted-u{u}", limit=6, per_category=1)
    spread = recs(write_client, anonymous_id=f"planted-u{u}", limit=6, diversity=1)

    def top_share(body: dict[str, Any]) -> int:
        cats = [i["category"] for i in body["items"]]
        return max(cats.count(c) for c in set(cats))

    assert top_share(capped) == 1
    assert len({i["category"] for i in capped["items"]}) == len(capped["items"])
    assert top_share(spread) <= top_share(plain)
    assert len({i["category"] for i in spread["items"]}) >= len(
        {i["category"] for i in plain["items"]}
    )


@pytest.mark.django_db
def test_cold_start_gets_trending(write_client, trained, shop):
    stranger = recs(write_client, anonymous_id="never-seen", limit=5)
    assert stranger["strategy"] == "trending"
    assert "cold start" in stranger["reason"]
    assert stranger["profile_id"] is None
    assert [i["source"] for i in stranger["items"]] == ["trending"] * 5

    new_item = recs(write_client, strategy="similar", item="brand-new-sku", limit=3)
    assert new_item["strategy"] == "trending"
    assert "brand-new-sku" in new_item["reason"]
    assert len(new_item["items"]) == 3


@pytest.mark.django_db
def test_a_visitor_who_withdrew_personalization_gets_impersonal_trending(
    write_client, trained, shop
):
    u = buyer(shop)
    r = write_client.post(
        "/api/v1/consent",
        {
            "anonymous_id": f"planted-u{u}",
            "purposes": {"personalization": False},
            "policy_version": "v1",
            "source": "banner",
        },
        format="json",
    )
    assert r.status_code == 201, r.content

    body = recs(write_client, anonymous_id=f"planted-u{u}", limit=10)

    assert body["strategy"] == "trending"
    assert "no personalization consent" in body["reason"]
    assert all(i["source"] == "trending" for i in body["items"])


@pytest.mark.django_db
def test_before_any_model_is_trained_the_answer_is_empty_not_an_error(write_client, shop):
    body = recs(write_client, anonymous_id="planted-u1")
    assert body == {
        "items": [],
        "strategy": "personal",
        "reason": "no recommendation model is trained yet",
        "model_version": None,
        "profile_id": body["profile_id"],
    }


@pytest.mark.django_db
def test_a_new_event_changes_the_next_answer(write_client, trained, shop, settings):
    # a visitor with no history views one item of a bundle
    post_events(
        write_client,
        {
            "type": "track",
            "event": "product_viewed",
            "anonymous_id": "fresh",
            "properties": {"product_id": "sku-10", "category": "cat-4"},
        },
    )
    body = recs(write_client, anonymous_id="fresh", limit=4, diversity=0)

    assert body["strategy"] == "personal"
    assert {i["item_id"] for i in body["items"]} == bundle_of(shop, "sku-10") - {"sku-10"}


@pytest.mark.django_db
def test_a_warm_request_reads_no_database(write_client, trained, shop, django_assert_num_queries):
    recs(write_client, anonymous_id="planted-u1", limit=5)  # builds and caches the snapshot
    with django_assert_num_queries(0):
        body = recs(write_client, anonymous_id="planted-u1", limit=5)
    assert len(body["items"]) == 5


@pytest.mark.django_db
def test_when_redis_is_down_recommendations_answer_from_the_database(
    write_client, trained, shop, settings
):
    expected = recs(write_client, anonymous_id="planted-u2", limit=5)
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
    selectors.reset()

    body = recs(write_client, anonymous_id="planted-u2", limit=5)
    stranger = recs(write_client, anonymous_id="nobody", limit=5)

    assert body["items"] == expected["items"]
    assert len(stranger["items"]) == 5


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "51"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"strategy": "magic"}, "strategy"),
        ({"strategy": "similar"}, "item"),
        ({"strategy": "bought_together"}, "item"),
        ({"diversity": "1.5"}, "diversity"),
        ({"per_category": "0"}, "per_category"),
        ({"item": "x" * 201, "strategy": "similar"}, "item"),
        ({"exclude": "a," + "b" * 201}, "exclude"),
        ({"colour": "red"}, "colour"),
        ({"user_hash": "nothex"}, "user_hash"),
    ],
)
def test_bad_requests_get_a_400_naming_the_field(write_client, params, field):
    r = write_client.get(URL, {"anonymous_id": "a1", **params})
    assert r.status_code == 400
    error = r.json()["error"]
    assert field in error["details"]
    assert error["message"].count(field) >= 1


@pytest.mark.django_db
def test_a_verified_source_refuses_a_user_id_without_a_matching_hash(verified_source):
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {verified_source.write_key}")
    wrong = client.get(URL, {"user_id": "u1", "user_hash": "0" * 64})
    assert wrong.status_code == 400
    assert "user_hash" in wrong.json()["error"]["details"]
    missing = client.get(URL, {"user_id": "u1"})
    assert missing.status_code == 400
    right = client.get(
        URL, {"user_id": "u1", "user_hash": user_hash(verified_source.source.identity_secret, "u1")}
    )
    assert right.status_code == 200


@pytest.mark.django_db
def test_recommendations_need_a_key(anon_client):
    assert anon_client.get(URL, {"anonymous_id": "a1"}).status_code == 401
