"""The `recommendations` slot strategy of /decide: configured through the management API,
answered by the served models, after the slot's own rules, with the control group and
consent respected."""

from __future__ import annotations

from typing import Any

import pytest

from rules.models import Decision
from tests.recommendations.planted import Planted
from tests.recommendations.test_api import bought_by, bundle_of, buyer

DECIDE = "/api/v1/decide"


def slot_body(**fields: Any) -> dict[str, Any]:
    return {
        "key": "for_you",
        "strategy": "recommendations",
        "recommendation": {"strategy": "personal", "limit": 4, "diversity": 0.0},
        "variants": [{"key": "picks", "content": {"title": "Picked for you"}}],
        "default_variant": "picks",
        **fields,
    }


def decide(client: Any, body: dict[str, Any]) -> dict[str, Any]:
    r = client.post(DECIDE, body, format="json")
    assert r.status_code == 200, r.content
    return r.json()


@pytest.fixture
def for_you(secret_client: Any, trained: Any) -> dict[str, Any]:
    r = secret_client.post("/api/v1/slots", slot_body(), format="json")
    assert r.status_code == 201, r.content
    return r.json()


@pytest.mark.django_db
def test_a_recommendations_slot_answers_with_items_inside_its_content(
    write_client, for_you, shop: Planted
):
    assert for_you["recommendation"]["strategy"] == "personal"
    u = buyer(shop)
    body = decide(write_client, {"anonymous_id": f"planted-u{u}", "slots": ["for_you"]})

    d = body["decisions"]["for_you"]
    assert d["source"] == "recommendation"
    assert d["variant"] == "picks"
    assert d["content"]["title"] == "Picked for you"
    items = d["content"]["items"]
    assert len(items) == 4
    assert not {i["item_id"] for i in items} & bought_by(shop, u)
    assert d["reason"].startswith("recommendations (personal, model v1)")
    assert items[0]["reason"] in d["reason"]


@pytest.mark.django_db
def test_a_product_page_gets_the_items_viewed_with_the_one_on_screen(
    write_client, secret_client, trained, shop
):
    r = secret_client.post(
        "/api/v1/slots",
        slot_body(key="pdp_similar", recommendation={"strategy": "similar", "limit": 4}),
        format="json",
    )
    assert r.status_code == 201, r.content

    body = decide(
        write_client,
        {"anonymous_id": "browsing", "slots": ["pdp_similar"], "context": {"item": "sku-7"}},
    )

    items = body["decisions"]["pdp_similar"]["content"]["items"]
    assert {i["item_id"] for i in items} == bundle_of(shop, "sku-7") - {"sku-7"}


@pytest.mark.django_db
def test_a_matching_rule_of_the_slot_wins_over_the_recommendations(
    write_client, secret_client, for_you, shop
):
    r = secret_client.put(
        "/api/v1/slots/for_you",
        slot_body(
            variants=[
                {"key": "picks", "content": {"title": "Picked for you"}},
                {"key": "sale", "content": {"title": "Winter sale"}},
            ]
        ),
        format="json",
    )
    assert r.status_code == 200, r.content
    r = secret_client.post(
        "/api/v1/rules",
        {
            "key": "mobile-sale",
            "slot": "for_you",
            "name": "Sale on mobile",
            "condition": {"context": "device", "op": "eq", "value": "mobile"},
            "variant": "sale",
        },
        format="json",
    )
    assert r.status_code == 201, r.content

    mobile = decide(
        write_client,
        {"anonymous_id": "planted-u1", "slots": ["for_you"], "context": {"device": "mobile"}},
    )["decisions"]["for_you"]
    desktop = decide(
        write_client,
        {"anonymous_id": "planted-u1", "slots": ["for_you"], "context": {"device": "desktop"}},
    )["decisions"]["for_you"]

    assert (mobile["source"], mobile["variant"], mobile["rule"]) == ("rule", "sale", "mobile-sale")
    assert desktop["source"] == "recommendation"
    assert desktop["reason"].startswith("no rule matched (1 tried); recommendations")


@pytest.mark.django_db
def test_the_control_group_gets_the_default_without_items(write_client, secret_client, trained):
    r = secret_client.post("/api/v1/slots", slot_body(control_percent=100.0), format="json")
    assert r.status_code == 201, r.content

    d = decide(write_client, {"anonymous_id": "planted-u1", "slots": ["for_you"]})["decisions"][
        "for_you"
    ]

    assert d["source"] == "default"
    assert "items" not in d["content"]
    assert "control group" in d["reason"]


@pytest.mark.django_db
def test_without_personalization_consent_the_slot_shows_trending(write_client, for_you, shop):
    u = buyer(shop)
    write_client.post(
        "/api/v1/consent",
        {
            "anonymous_id": f"planted-u{u}",
            "purposes": {"personalization": False},
            "policy_version": "v1",
            "source": "banner",
        },
        format="json",
    )
    d = decide(write_client, {"anonymous_id": f"planted-u{u}", "slots": ["for_you"]})["decisions"][
        "for_you"
    ]
    assert d["source"] == "recommendation"
    assert "no personalization consent" in d["reason"]
    assert {i["source"] for i in d["content"]["items"]} == {"trending"}


@pytest.mark.django_db
def test_recommendation_decisions_are_logged_as_such(write_client, for_you):
    from rules import decisionlog

    decide(write_client, {"anonymous_id": "planted-u1", "slots": ["for_you"]})
    decisionlog.flush()

    logged = Decision.objects.get(slot="for_you")
    assert (logged.kind, logged.variant) == ("recommendation", "picks")


@pytest.mark.django_db
def test_without_a_trained_model_the_slot_shows_its_default(write_client, secret_client, shop):
    r = secret_client.post("/api/v1/slots", slot_body(), format="json")
    assert r.status_code == 201, r.content
    d = decide(write_client, {"anonymous_id": "planted-u1", "slots": ["for_you"]})["decisions"][
        "for_you"
    ]
    assert (d["source"], d["variant"]) == ("default", "picks")
    assert "items" not in d["content"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"strategy": "magic"}, "recommendation.strategy"),
        ({"limit": 0}, "recommendation.limit"),
        ({"limit": "4"}, "recommendation.limit"),
        ({"diversity": 2}, "recommendation.diversity"),
        ({"per_category": 0}, "recommendation.per_category"),
        ({"same_category": "yes"}, "recommendation.same_category"),
        ({"colour": "red"}, "recommendation.colour"),
    ],
)
def test_bad_slot_options_get_a_400_naming_the_option(secret_client, options, field):
    r = secret_client.post("/api/v1/slots", slot_body(recommendation=options), format="json")
    assert r.status_code == 400
    error = r.json()["error"]
    assert field in error["details"]
    assert error["message"].startswith(f"{field}: must be")


@pytest.mark.django_db
def test_the_slot_admin_checks_recommendation_options(superuser_client):
    from rules.models import Slot
    from tests.admin_forms import form_fields

    slot = Slot.objects.create(key="for_you", strategy="recommendations")
    url = f"/admin/rules/slot/{slot.pk}/change/"
    data = form_fields(superuser_client.get(url).content.decode(), "slot_form")

    data["recommendation"] = '{"strategy": "magic", "limit": 4}'
    bad = superuser_client.post(url, data)
    assert bad.status_code == 200
    assert "strategy: must be one of personal, similar" in bad.content.decode()
    assert Slot.objects.get(pk=slot.pk).recommendation == {}

    data["recommendation"] = '{"strategy": "trending", "limit": 6}'
    good = superuser_client.post(url, data)
    assert good.status_code == 302
    assert Slot.objects.get(pk=slot.pk).recommendation == {"strategy": "trending", "limit": 6}
