"""The marketer's personalization screens: a slot with its rules in priority order
(reordered by editing priorities), the rule form's validation, the decision preview with
its reason trail, and how each rule performed."""

from __future__ import annotations

import html
import re
from datetime import timedelta
from typing import Any

import orjson
import pytest
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone

from cdp.models import AuditEvent
from rules import services
from rules.models import Decision, Rule, Slot
from rules.selectors import rules_config_load
from segments.models import Segment
from segments.services import segment_save, segments_recompute_all
from tests.admin_forms import form_fields

pytestmark = pytest.mark.django_db

CART = {
    "all": [
        {"event": "add_to_cart", "within": "24h"},
        {"not": {"event": "purchase", "within": "24h"}},
    ]
}
MOBILE = {"context": "device", "op": "eq", "value": "mobile"}
HESITATION = {
    "event": "product_viewed",
    "within": "1h",
    "measure": {"fn": "count", "op": "gte", "value": 3},
}


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    """The superuser's password is hashed for every test; the real hasher is slow on purpose."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def make_rule(slot: Slot, key: str, name: str, condition: Any, variant: str, **fields: Any) -> Rule:
    return services.rule_save(
        rule=Rule(
            key=key,
            slot=slot,
            name=name,
            condition=condition,
            variant=slot.variants.get(key=variant),
            **fields,
        ),
        actor="test",
    )


@pytest.fixture
def slots(db: Any) -> dict[str, Slot]:
    """Two slots: the hero with a cart, a VIP (segment) and a mobile (context) rule; the
    product note with a hesitation rule."""
    segment_save(
        segment=Segment(
            slug="vips", name="VIPs", condition={"trait": "plan", "op": "eq", "value": "pro"}
        ),
        actor="test",
    )
    hero = services.slot_save(
        slot=Slot(key="home_hero"),
        actor="test",
        variants=[
            {"key": "welcome", "title": "Welcome"},
            {"key": "cart", "title": "Your cart misses you"},
            {"key": "vip", "title": "Thank you"},
            {"key": "mobile", "title": "On the go"},
        ],
        default_variant="welcome",
    )
    note = services.slot_save(
        slot=Slot(key="product_note"),
        actor="test",
        variants=[{"key": "shipping", "body": "Free shipping"}, {"key": "hesitation"}],
        default_variant="shipping",
    )
    make_rule(hero, "cart-reminder", "Cart reminder", CART, "cart", priority=30)
    make_rule(hero, "vip-thanks", "VIP thanks", {"segment": "vips"}, "vip", priority=20)
    make_rule(hero, "mobile-visitors", "Mobile visitors", MOBILE, "mobile", priority=10)
    make_rule(note, "hesitation", "Hesitation microcopy", HESITATION, "hesitation")
    return {"home_hero": hero, "product_note": note}


def preview_of(page: str, slot: str) -> tuple[str, str, str]:
    """(variant, source, reason) the preview page shows for a slot."""
    found = re.search(
        rf'id="slot-{slot}">\s*<h3>.*?<b>(.*?)</b> <small>\[(\w+)\]</small></h3>\s*'
        r'<p class="reason">(.*?)</p>',
        page,
        re.DOTALL,
    )
    assert found, f"no preview for {slot}"
    return found.group(1), found.group(2), html.unescape(found.group(3))


def names_in_page_order(page: str, names: list[str]) -> list[str]:
    return sorted(names, key=page.index)


# --- the slot with its rules ---------------------------------------------------------------


def test_a_slots_rules_are_listed_and_reordered_by_priority(
    superuser_client, slots, django_capture_on_commit_callbacks
):
    url = reverse("admin:rules_slot_change", args=[slots["home_hero"].pk])
    names = ["Cart reminder", "VIP thanks", "Mobile visitors"]

    # Given the slot's page lists its rules from the highest priority down
    page = superuser_client.get(url).content.decode()
    assert names_in_page_order(page, names) == names

    # When the marketer gives "Mobile visitors" the highest priority and saves
    data = form_fields(page, "slot_form")
    mobile = Rule.objects.get(key="mobile-visitors")
    (row,) = [
        k[: -len("-id")]
        for k, v in data.items()
        if k.startswith("rules-") and k.endswith("-id") and v == str(mobile.pk)
    ]
    data[f"{row}-priority"] = "99"
    version = cache.get(services.VERSION_KEY)
    with django_capture_on_commit_callbacks(execute=True):
        response = superuser_client.post(url, data)

    # Then the page and the compiled configuration try it first
    assert response.status_code == 302, response.content.decode()
    page = superuser_client.get(url).content.decode()
    assert names_in_page_order(page, names) == ["Mobile visitors", "Cart reminder", "VIP thanks"]
    config = rules_config_load(version="after")
    assert [r.key for r in config.slots["home_hero"].rules] == [
        "mobile-visitors",
        "cart-reminder",
        "vip-thanks",
    ]
    # and the change is audited and published to every process
    assert AuditEvent.objects.filter(action="admin.rules.slot.changed").exists()
    assert cache.get(services.VERSION_KEY) != version


# --- the rule form -------------------------------------------------------------------------


def rule_form(slots: dict[str, Slot], condition: Any, **fields: Any) -> dict[str, Any]:
    hero = slots["home_hero"]
    return {
        "name": "Night owls",
        "key": "night-owls",
        "slot": hero.pk,
        "condition": orjson.dumps(condition).decode(),
        "variant": hero.variants.get(key="mobile").pk,
        "priority": 5,
        "enabled": "on",
        "starts_at_0": "",
        "starts_at_1": "",
        "ends_at_0": "",
        "ends_at_1": "",
        "frequency_cap_count": "",
        "frequency_cap_per": "",
        "scoring": "[]",
        "weight": "1.0",
        **fields,
    }


def test_a_bad_condition_is_refused_on_save_naming_the_node(superuser_client, slots):
    # When a marketer saves a rule whose condition has a bad operator deep inside
    bad = {"all": [MOBILE, {"any": [{"context": "hour", "op": "after", "value": 22}]}]}
    response = superuser_client.post(reverse("admin:rules_rule_add"), rule_form(slots, bad))

    # Then the form comes back with the path of the bad node, and nothing is saved
    assert response.status_code == 200
    assert "all[1].any[0].op" in response.content.decode()
    assert not Rule.objects.filter(key="night-owls").exists()
    assert not AuditEvent.objects.filter(action="admin.rules.rule.added").exists()


def test_a_rule_showing_another_slots_variant_is_refused(superuser_client, slots):
    other = slots["product_note"].variants.get(key="hesitation")
    response = superuser_client.post(
        reverse("admin:rules_rule_add"), rule_form(slots, MOBILE, variant=other.pk)
    )
    assert response.status_code == 200
    assert "variant of the rule&#x27;s slot" in response.content.decode()
    assert not Rule.objects.filter(key="night-owls").exists()


def test_saving_a_good_rule_is_audited_and_published(
    superuser_client, slots, django_capture_on_commit_callbacks
):
    version = cache.get(services.VERSION_KEY)
    night = {"all": [MOBILE, {"context": "hour", "op": "gte", "value": 22}]}

    with django_capture_on_commit_callbacks(execute=True):
        response = superuser_client.post(reverse("admin:rules_rule_add"), rule_form(slots, night))

    assert response.status_code == 302, response.content.decode()
    rule = Rule.objects.get(key="night-owls")
    assert (rule.condition, rule.variant.key, rule.priority) == (night, "mobile", 5)
    entry = AuditEvent.objects.get(action="admin.rules.rule.added")
    assert (entry.actor, entry.object_id) == ("user:admin", str(rule.pk))
    assert cache.get(services.VERSION_KEY) != version


# --- the decision preview ------------------------------------------------------------------


def preview(client: Any, profile: str = "", context: str = "{}") -> str:
    response = client.get(
        reverse("admin:rules_slot_preview"), {"run": "1", "profile": profile, "context": context}
    )
    assert response.status_code == 200
    return response.content.decode()


def test_preview_shows_every_slot_for_a_cart_abandoner(superuser_client, slots, ingest):
    # Given a shopper who added to cart and did not buy
    ingest({"type": "track", "event": "add_to_cart", "user_id": "carter"})

    # When the marketer previews their decisions on a desktop
    page = preview(superuser_client, "carter", '{"device": "desktop"}')

    # Then every slot shows its variant and the reason
    assert preview_of(page, "home_hero") == (
        "cart",
        "rule",
        "rule 'Cart reminder' matched: add_to_cart within 24h and no purchase within 24h",
    )
    assert preview_of(page, "product_note") == (
        "shipping",
        "default",
        "no rule matched (1 tried): default variant",
    )
    # with each rule's trace, node by node
    assert "count of add_to_cart = 1" in page
    assert "count of product_viewed = 0" in page
    assert "context device = &#x27;desktop&#x27;" in page
    assert not Decision.objects.exists()  # a preview logs nothing


def test_preview_follows_segment_membership(superuser_client, slots, ingest):
    # Given a pro customer, and the segments recomputed
    ingest({"type": "identify", "user_id": "paula", "traits": {"plan": "pro"}})
    segments_recompute_all()

    page = preview(superuser_client, "paula")

    assert preview_of(page, "home_hero") == (
        "vip",
        "rule",
        "rule 'VIP thanks' matched: in segment vips",
    )
    assert "Segments: vips" in page


def test_preview_for_an_unknown_visitor_uses_the_context_alone(superuser_client, slots):
    page = preview(superuser_client, "", '{"device": "mobile", "hour": 23}')

    assert "An unknown visitor" in page
    assert preview_of(page, "home_hero") == (
        "mobile",
        "rule",
        "rule 'Mobile visitors' matched: device is \"mobile\"",
    )
    assert preview_of(page, "product_note")[:2] == ("shipping", "default")


@pytest.mark.parametrize(
    ("profile", "context", "message"),
    [
        ("", '{"device": "mobile"', "Context:"),
        ("", "[1, 2]", "Context: the context must be a JSON object"),
        ("nobody-by-that-name", "{}", "No live profile has that identity or id."),
    ],
)
def test_preview_with_bad_input_shows_an_error(superuser_client, slots, profile, context, message):
    response = superuser_client.get(
        reverse("admin:rules_slot_preview"),
        {"run": "1", "profile": profile, "context": context},
        follow=True,
    )
    page = html.unescape(response.content.decode())
    assert response.status_code == 200
    assert message in page
    assert 'class="module slot-preview"' not in page


# --- performance ---------------------------------------------------------------------------


def log_decisions(rule: Rule, impressions: int, clicks: int, conversions: int) -> None:
    """Decisions a rule made over the last few days, some clicked, fewer converted."""
    now = timezone.now()
    for i in range(impressions):
        at = now - timedelta(days=i % 3, minutes=i)
        Decision.objects.create(
            decided_at=at,
            slot=rule.slot.key,
            variant=rule.variant.key,
            kind="rule",
            rule=rule,
            rule_key=rule.key,
            reason="test",
            clicked_at=at + timedelta(seconds=30) if i < clicks else None,
            converted_at=at + timedelta(minutes=10) if i < conversions else None,
        )


def performance_rows(page: str) -> dict[str, list[str]]:
    table = page.split('id="rule-performance"', 1)[1].split("</table>", 1)[0]
    body = table.split("<tbody>", 1)[1]
    rows = {}
    for row in re.findall(r"<tr>(.*?)</tr>", body, re.DOTALL):
        cells = [
            html.unescape(re.sub(r"<[^>]+>", "", c)).strip()
            for c in re.findall(r"<td>(.*?)</td>", row, re.DOTALL)
        ]
        rows[cells[1]] = cells
    return rows


def test_performance_shows_impressions_clicks_and_conversions_per_rule(superuser_client, slots):
    # Given decisions logged for two rules (and a default that belongs to no rule)
    cart, mobile = Rule.objects.get(key="cart-reminder"), Rule.objects.get(key="mobile-visitors")
    log_decisions(cart, impressions=8, clicks=2, conversions=1)
    log_decisions(mobile, impressions=3, clicks=1, conversions=0)
    Decision.objects.create(
        decided_at=timezone.now(), slot="home_hero", variant="welcome", kind="default", reason="x"
    )

    # When the marketer opens the performance page
    page = superuser_client.get(reverse("admin:rules_rule_performance")).content.decode()

    # Then each rule's counts and rates are shown
    rows = performance_rows(page)
    slot_, _, imp, _, clk, ctr, conv, cr = rows["Cart reminder"]
    assert (slot_, imp, clk, conv) == ("home_hero", "8", "2", "1")
    assert (ctr, cr) == (f"{2 / 8:.1%}", f"{1 / 8:.1%}")
    _, _, imp, _, clk, ctr, conv, cr = rows["Mobile visitors"]
    assert (imp, clk, ctr, conv, cr) == ("3", "1", f"{1 / 3:.1%}", "0", f"{0:.1%}")
    # and a rule that never served shows no rate rather than a division by zero
    _, _, imp, _, clk, ctr, conv, cr = rows["VIP thanks"]
    assert (imp, clk, ctr, conv, cr) == ("0", "0", "—", "0", "—")
    assert set(rows) == {"Cart reminder", "VIP thanks", "Mobile visitors", "Hesitation microcopy"}


def test_the_rule_page_charts_its_decisions(superuser_client, slots):
    cart = Rule.objects.get(key="cart-reminder")
    log_decisions(cart, impressions=8, clicks=2, conversions=1)

    page = superuser_client.get(reverse("admin:rules_rule_change", args=[cart.pk]))
    page = html.unescape(page.content.decode())

    assert 'aria-label="Rule performance by day"' in page
    assert f"8 impressions, 2 clicks (CTR {2 / 8:.1%}), 1 conversions ({1 / 8:.1%})" in page
    assert page.count("impressions, ") >= 3  # a bar per day, each with its figures

    # while a rule with no decisions says so, without a chart
    vip = Rule.objects.get(key="vip-thanks")
    page = superuser_client.get(reverse("admin:rules_rule_change", args=[vip.pk])).content.decode()
    assert "No decisions logged for this rule in the last 30 days." in page
    assert 'aria-label="Rule performance by day"' not in page


# --- segments used by rules ----------------------------------------------------------------


def test_deleting_a_segment_a_rule_uses_is_refused_with_a_message(superuser_client, slots):
    # Given segment "vips", which rule "vip-thanks" uses
    segment = Segment.objects.get(slug="vips")

    # When the marketer confirms its deletion in the admin
    response = superuser_client.post(
        reverse("admin:segments_segment_delete", args=[segment.pk]), {"post": "yes"}, follow=True
    )

    # Then the page says which rule uses it (not a server error), and the segment stays
    assert response.status_code == 200
    assert "vip-thanks" in response.content.decode()
    assert Segment.objects.filter(slug="vips").exists()
