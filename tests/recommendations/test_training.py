"""The catalog (from events and imports), reading interactions, training, evaluation and
promotion of versions, the commands and the scheduled task."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from cdp.models import AuditEvent, JobStatus
from recommendations.evaluation import at_k
from recommendations.interactions import interactions_read
from recommendations.models import Item, ModelVersion, VersionStatus
from recommendations.services import catalog_sync, train_execute
from recommendations.tasks import reco_train
from rules.decide import config_current
from tests.conftest import post_events


def event(name: str, props: dict[str, Any], *, ago: timedelta, who: str = "v1", **extra: Any):
    return {
        "type": "track",
        "event": name,
        "anonymous_id": who,
        "timestamp": (timezone.now() - ago).isoformat(),
        "properties": props,
        **extra,
    }


# --- Catalog ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_catalog_follows_product_events_and_newer_facts_win(write_client):
    post_events(
        write_client,
        {
            "batch": [
                event(
                    "product_viewed",
                    {
                        "product_id": "boot-1",
                        "name": "Trail boot",
                        "category": "shoes",
                        "price": 129.5,
                        "brand": "Peak",
                        "image_url": "https://cdn.example/boot.jpg",
                    },
                    ago=timedelta(hours=2),
                ),
                # an older event arriving late says another price: ignored
                event(
                    "product_viewed",
                    {"product_id": "boot-1", "price": 99, "in_stock": True},
                    ago=timedelta(days=3),
                ),
                event(
                    "product_added",
                    {"product_id": "boot-1", "in_stock": False},
                    ago=timedelta(hours=1),
                ),
                event(
                    "purchase",
                    {"products": [{"product_id": "sock-9", "name": "Wool socks", "price": 12}]},
                    ago=timedelta(minutes=5),
                ),
            ]
        },
    )

    created, _ = catalog_sync()

    assert created == 2
    boot = Item.objects.get(item_id="boot-1")
    assert boot.price is not None
    assert (boot.title, boot.category, float(boot.price), boot.in_stock) == (
        "Trail boot",
        "shoes",
        129.5,
        False,
    )
    assert boot.attributes == {"brand": "Peak", "image_url": "https://cdn.example/boot.jpg"}
    assert Item.objects.get(item_id="sock-9").title == "Wool socks"
    # a second sync has nothing new to read
    assert catalog_sync() == (0, 0)


@pytest.mark.django_db
def test_importing_a_csv_keeps_the_valid_rows_and_names_the_bad_ones(tmp_path):
    path = tmp_path / "catalog.csv"
    path.write_text(
        "item_id,title,category,price,in_stock,brand\n"
        "sku-1,Rain jacket,outerwear,89.90,yes,Peak\n"
        ",No id,outerwear,10,yes,\n"
        "sku-2,Beanie,accessories,-3,yes,\n"
        "sku-3,Gloves,accessories,19,maybe,\n"
        "sku-4,Scarf,accessories,25,no,\n",
        encoding="utf-8",
    )
    out, err = io.StringIO(), io.StringIO()

    call_command("reco_import", str(path), stdout=out, stderr=err)

    assert "2 item(s) created, 0 updated, 3 row(s) rejected" in out.getvalue()
    problems = err.getvalue()
    assert "line 3: item_id: required" in problems
    assert "line 4: price: not a non-negative number" in problems
    assert "line 5: in_stock: not a yes/no value" in problems
    jacket = Item.objects.get(item_id="sku-1")
    assert (jacket.title, jacket.attributes, jacket.in_stock) == (
        "Rain jacket",
        {"brand": "Peak"},
        True,
    )
    assert Item.objects.get(item_id="sku-4").in_stock is False
    assert AuditEvent.objects.filter(action="recommendations.catalog_imported").exists()


@pytest.mark.django_db
def test_importing_json_lines(tmp_path):
    path = tmp_path / "catalog.jsonl"
    path.write_text(
        json.dumps({"item_id": "a", "title": "A", "attributes": {"url": "https://x/a"}})
        + "\nnot json\n"
        + json.dumps({"product_id": "b", "price": 5})
        + "\n",
        encoding="utf-8",
    )
    out, err = io.StringIO(), io.StringIO()
    call_command("reco_import", str(path), stdout=out, stderr=err)
    assert "2 item(s) created" in out.getvalue()
    assert "line 2: not JSON" in err.getvalue()
    assert Item.objects.get(item_id="a").attributes == {"url": "https://x/a"}


@pytest.mark.django_db
def test_import_refuses_a_csv_without_an_item_id_column(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("name,price\nA,1\n", encoding="utf-8")
    with pytest.raises(CommandError, match="item_id"):
        call_command("reco_import", str(path), stdout=io.StringIO(), stderr=io.StringIO())


# --- Interactions -----------------------------------------------------------------------


@pytest.mark.django_db
def test_interactions_come_from_views_cart_adds_and_purchased_products(write_client):
    post_events(
        write_client,
        {
            "batch": [
                event("product_viewed", {"product_id": "p1"}, ago=timedelta(hours=3)),
                event("add_to_cart", {"sku": "p2"}, ago=timedelta(hours=2)),
                event(
                    "Order Completed",
                    {"products": [{"product_id": "p1"}, {"product_id": "p3"}]},
                    ago=timedelta(hours=1),
                ),
                event("product_viewed", {"colour": "red"}, ago=timedelta(hours=1)),  # no item
                event("page_scrolled", {"product_id": "p9"}, ago=timedelta(hours=1)),
                event(
                    "product_viewed",
                    {"product_id": "bot-item"},
                    ago=timedelta(hours=1),
                    who="crawler",
                    context={"user_agent": "Mozilla/5.0 (compatible; Googlebot/2.1)"},
                ),
            ]
        },
    )

    inter = interactions_read()

    got = sorted((inter.item_ids[i], int(k)) for i, k in zip(inter.items, inter.kinds, strict=True))
    assert got == [("p1", 0), ("p1", 2), ("p2", 1), ("p3", 2)]
    assert inter.n_users == 1


# --- Training and promotion -----------------------------------------------------------------


@pytest.mark.django_db
def test_the_first_version_is_served_and_records_what_it_learned(trained):
    v = ModelVersion.objects.get(pk=trained.pk)
    assert v.status == JobStatus.DONE
    assert v.outcome == VersionStatus.ACTIVE
    assert v.decision.startswith("the first version")
    assert v.data["interactions"] == v.data["train_interactions"] + v.data["test_interactions"]
    assert v.data["items"] == 70
    assert v.data["neighbours"]["item_item"] <= 70 * v.params["neighbours"]
    assert v.artifact is not None
    assert v.artifact_bytes == len(bytes(v.artifact)) > 0
    # held out: item-item beats popularity on the planted bundles
    assert at_k(v.metrics, "item_item") > at_k(v.metrics, "popularity")
    assert at_k(v.metrics, "personal") > at_k(v.metrics, "popularity")
    assert config_current().extensions["recommendations"].version == v.version


@pytest.mark.django_db
def test_a_version_not_better_than_the_active_one_is_not_served(trained):
    # Given an active version with better held-out figures than a retrain can reach
    m = trained.metrics
    m["models"]["personal"]["recall"] = [0.99] * len(m["k"])
    ModelVersion.objects.filter(pk=trained.pk).update(metrics=m)

    second = train_execute(requested_by="test")

    second.refresh_from_db()
    assert second.outcome == VersionStatus.REJECTED
    assert "< v1's 0.990" in second.decision
    assert ModelVersion.objects.get(outcome=VersionStatus.ACTIVE).pk == trained.pk
    assert config_current().extensions["recommendations"].version == trained.version


@pytest.mark.django_db
def test_a_version_as_good_replaces_the_active_one_and_is_audited(trained):
    second = train_execute(requested_by="test")

    second.refresh_from_db()
    assert second.outcome == VersionStatus.ACTIVE
    assert ModelVersion.objects.get(pk=trained.pk).outcome == VersionStatus.RETIRED
    assert AuditEvent.objects.filter(
        action="recommendations.version_promoted", object_id=str(second.pk)
    ).exists()
    assert config_current().extensions["recommendations"].version == second.version


@pytest.mark.django_db
def test_training_without_product_events_fails_with_a_clear_reason(db):
    with pytest.raises(ValueError, match="no interactions to learn from"):
        train_execute(requested_by="test")
    v = ModelVersion.objects.get()
    assert v.status == JobStatus.FAILED
    assert "no product events" in v.error
    assert v.outcome == VersionStatus.CANDIDATE


@pytest.mark.django_db
def test_the_train_command_reports_the_figures_with_progress(shop):
    out, err = io.StringIO(), io.StringIO()
    call_command("reco_train", stdout=out, stderr=err)
    text = out.getvalue()
    assert text.startswith("v1 (Active (served)): ")
    assert "held-out recall@10 personal" in text
    assert "popularity" in text


@pytest.mark.django_db
def test_the_train_command_explains_when_there_is_nothing_to_learn(db):
    with pytest.raises(CommandError, match="no interactions"):
        call_command("reco_train", stdout=io.StringIO(), stderr=io.StringIO())


@pytest.mark.django_db
def test_the_scheduled_task_trains_a_version(shop):
    reco_train.apply()  # in this process, as a worker would run it
    assert ModelVersion.objects.get().requested_by == "system:schedule"
