"""The experiments management API: create, read, change, delete and run experiments the
way a team that keeps its configuration in git does, with every refusal naming the
field."""

from __future__ import annotations

import uuid
from copy import deepcopy
from typing import Any

import pytest
from django.utils import timezone

from cdp.models import AuditEvent
from experiments.models import Experiment, Exposure, ResultSnapshot, Variant
from profiles.models import EventSchema
from rules.models import Slot

URL = "/api/v1/experiments"
VARIANTS = [
    {"key": "welcome", "weight": 0.5},
    {"key": "sale", "weight": 0.5, "content": {"title": "Big sale"}},
]
GOALS = [{"event": "purchase", "kind": "conversion", "window": "24h"}]


@pytest.fixture(autouse=True)
def _signup_is_a_known_event(db: Any) -> None:
    EventSchema.objects.create(event="signup", schema={"type": "object"})


def body(**fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "key": "hero-test",
        "name": "Hero test",
        "slot": "home_hero",
        "variants": deepcopy(VARIANTS),
        "goals": deepcopy(GOALS),
    }
    out.update(fields)
    return out


def create(client: Any, **fields: Any) -> dict[str, Any]:
    response = client.post(URL, body(**fields), format="json")
    assert response.status_code == 201, response.content
    return response.json()


def move(client: Any, key: str, action: str) -> Any:
    return client.post(f"{URL}/{key}/{action}")


def assert_refused(response: Any, status: int, field: str) -> dict[str, Any]:
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"}
    assert field in error["details"], error
    assert field in error["message"]
    return error


# --- create and read -------------------------------------------------------------------


@pytest.mark.django_db
def test_a_created_experiment_reads_back_as_it_was_answered(secret_client, hero):
    # Given a draft created with only the required fields
    created = create(secret_client)

    # When it is read back
    response = secret_client.get(f"{URL}/hero-test")

    # Then the body is the one the create answered, with the defaults filled in
    assert response.status_code == 200
    assert response.json() == created
    assert created["status"] == "draft"
    assert created["slot"] == "home_hero"
    assert created["variants"] == [
        {"key": "welcome", "weight": 0.5, "content": {}},
        {"key": "sale", "weight": 0.5, "content": {"title": "Big sale"}},
    ]
    assert created["goals"] == [
        {
            "event": "purchase",
            "kind": "conversion",
            "property": "",
            "where": [],
            "window": "1d",  # "24h" as days, the largest unit that divides it
            "window_seconds": 86400,
            "primary": True,
        }
    ]
    assert (created["traffic"], created["confidence"], created["namespace"]) == (1.0, 0.95, None)
    assert created["started_at"] is None
    assert created["stopped_at"] is None


@pytest.mark.django_db
def test_every_optional_field_is_kept(secret_client, hero):
    # Given a body using every field
    sent = body(
        hypothesis="A sale banner sells more",
        traffic=0.4,
        audience={"context": "device", "op": "eq", "value": "mobile"},
        seed="hero-2026",
        namespace={"name": "hero", "start": 0.0, "end": 0.5},
        confidence=0.99,
        minimum_detectable_effect=0.1,
        goals=[
            {"event": "purchase", "kind": "conversion", "window": "7d"},
            {
                "event": "purchase",
                "kind": "revenue",
                "property": "revenue",
                "where": [{"property": "category", "op": "eq", "value": "shoes"}],
                "window_seconds": 3 * 3600,
                "primary": True,
            },
        ],
    )

    # When it is created and read back
    created = create(secret_client, **sent)
    read = secret_client.get(f"{URL}/hero-test").json()

    # Then each field is what was sent
    assert read == created
    for name in ("hypothesis", "traffic", "audience", "seed", "namespace", "confidence"):
        assert read[name] == sent[name], name
    assert read["minimum_detectable_effect"] == 0.1
    assert [(g["window"], g["window_seconds"], g["primary"]) for g in read["goals"]] == [
        ("3h", 10800, True),  # the primary goal first
        ("7d", 604800, False),
    ]
    assert read["goals"][0]["where"] == [{"property": "category", "op": "eq", "value": "shoes"}]


@pytest.mark.django_db
def test_a_goal_window_defaults_to_seven_days(secret_client, hero):
    created = create(secret_client, goals=[{"event": "purchase"}])

    assert created["goals"][0]["window"] == "7d"
    assert created["goals"][0]["window_seconds"] == 7 * 86400


@pytest.mark.django_db
def test_the_list_has_every_experiment_by_key_and_filters(secret_client, hero):
    # Given a running experiment and a draft flag
    create(secret_client, key="zeta")
    move(secret_client, "zeta", "start")
    create(secret_client, key="alpha", slot=None)

    # When the list is read, whole and filtered
    everything = secret_client.get(URL).json()
    running = secret_client.get(URL, {"status": "running"}).json()
    on_hero = secret_client.get(URL, {"slot": "home_hero"}).json()

    # Then
    assert [e["key"] for e in everything] == ["alpha", "zeta"]
    assert everything[1] == secret_client.get(f"{URL}/zeta").json()
    assert [e["key"] for e in running] == ["zeta"]
    assert [e["key"] for e in on_hero] == ["zeta"]
    assert_refused(secret_client.get(URL, {"status": "bogus"}), 400, "status")
    assert_refused(secret_client.get(URL, {"slot": "nope"}), 400, "slot")


@pytest.mark.django_db
def test_the_list_costs_the_same_queries_for_one_or_many_experiments(
    secret_client, hero, django_assert_num_queries
):
    # Given one experiment, listed once (the key is then cached)
    create(secret_client, key="exp-0")
    secret_client.get(URL)
    # Three queries: experiments with their slots, their variants, their goals
    with django_assert_num_queries(3):
        assert len(secret_client.get(URL).json()) == 1

    # When there are many more, with more goals each
    for i in range(1, 8):
        create(secret_client, key=f"exp-{i}", goals=[{"event": "purchase"}, {"event": "signup"}])

    # Then listing them costs the same three
    with django_assert_num_queries(3):
        response = secret_client.get(URL)
    assert len(response.json()) == 8
    assert [len(e["goals"]) for e in response.json()] == [1] + [2] * 7


# --- change ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_patch_changes_only_what_it_names(secret_client, hero):
    # Given a draft
    created = create(secret_client)

    # When its name and traffic are patched
    response = secret_client.patch(
        f"{URL}/hero-test", {"name": "Sale banner", "traffic": 0.25}, format="json"
    )

    # Then those change and the rest stays
    assert response.status_code == 200, response.content
    patched = response.json()
    assert (patched["name"], patched["traffic"]) == ("Sale banner", 0.25)
    unchanged = {k: v for k, v in created.items() if k not in ("name", "traffic", "updated_at")}
    assert {k: patched[k] for k in unchanged} == unchanged
    assert secret_client.get(f"{URL}/hero-test").json() == patched


@pytest.mark.django_db
def test_put_replaces_the_body_and_a_get_body_can_be_put_back(secret_client, hero):
    # Given a draft with an audience and two goals
    create(
        secret_client,
        audience={"context": "device", "op": "eq", "value": "mobile"},
        goals=[{"event": "purchase"}, {"event": "signup"}],
    )

    # When a body without them is PUT
    replaced = secret_client.put(f"{URL}/hero-test", body(name="Replaced"), format="json")

    # Then what was left out is back to its default
    assert replaced.status_code == 200, replaced.content
    assert replaced.json()["audience"] is None
    assert [g["event"] for g in replaced.json()["goals"]] == ["purchase"]

    # And a GET body (read-only fields included) can be sent back as it is
    again = secret_client.put(f"{URL}/hero-test", replaced.json(), format="json")
    assert again.status_code == 200, again.content
    assert {k: v for k, v in again.json().items() if k != "updated_at"} == {
        k: v for k, v in replaced.json().items() if k != "updated_at"
    }


@pytest.mark.django_db
def test_a_running_experiment_takes_new_weights_but_keeps_its_variants(secret_client, hero):
    # Given a running experiment
    create(secret_client)
    assert move(secret_client, "hero-test", "start").status_code == 200

    # When its weights change
    reweighted = secret_client.patch(
        f"{URL}/hero-test",
        {"variants": [{"key": "welcome", "weight": 0.2}, {"key": "sale", "weight": 0.8}]},
        format="json",
    )

    # Then that is allowed
    assert reweighted.status_code == 200, reweighted.content
    assert [v["weight"] for v in reweighted.json()["variants"]] == [0.2, 0.8]

    # But a renamed variant, or a new control, is refused
    for variants in (
        [{"key": "welcome", "weight": 0.5}, {"key": "promo", "weight": 0.5}],
        [{"key": "sale", "weight": 0.5}, {"key": "welcome", "weight": 0.5}],
    ):
        response = secret_client.patch(f"{URL}/hero-test", {"variants": variants}, format="json")
        error = assert_refused(response, 400, "variants")
        assert "keeps its variants" in error["message"]
    assert [v.key for v in Variant.objects.filter(experiment__key="hero-test")] == [
        "welcome",
        "sale",
    ]


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["put", "patch"])
def test_the_key_cannot_be_changed(secret_client, hero, method):
    create(secret_client)

    response = getattr(secret_client, method)(
        f"{URL}/hero-test", body(key="renamed"), format="json"
    )

    assert_refused(response, 400, "key")
    assert secret_client.get(f"{URL}/renamed").status_code == 404


@pytest.mark.django_db
def test_a_second_experiment_with_the_same_key_is_refused(secret_client, hero):
    create(secret_client)

    response = secret_client.post(URL, body(name="Again"), format="json")

    assert_refused(response, 400, "key")
    assert Experiment.objects.get(key="hero-test").name == "Hero test"


@pytest.mark.django_db
def test_unknown_experiments_are_404(secret_client, hero):
    for response in (
        secret_client.get(f"{URL}/nope"),
        secret_client.put(f"{URL}/nope", body(), format="json"),
        secret_client.patch(f"{URL}/nope", {"name": "x"}, format="json"),
        secret_client.delete(f"{URL}/nope"),
        move(secret_client, "nope", "start"),
    ):
        assert response.status_code == 404, response.content
        assert response.json()["error"]["code"] == "not_found"


# --- refusals --------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"variants": [{"key": "a", "weight": 0.5}, {"key": "b", "weight": 0.4}]}, "variants"),
        ({"variants": [{"key": "a", "weight": 1.0}]}, "variants"),
        ({"variants": [{"key": "a", "weight": 0.5}, {"key": "a", "weight": 0.5}]}, "variants"),
        (
            {"variants": [{"key": "a", "weight": 0.5}, {"key": "b", "weight": "lots"}]},
            "variants[1].weight",
        ),
        (
            {"variants": [{"key": "a b", "weight": 0.5}, {"key": "b", "weight": 0.5}]},
            "variants[0].key",
        ),
        ({"goals": [{"event": "never_sent"}]}, "goals[0].event"),
        ({"goals": []}, "goals"),
        ({"goals": [{"event": "purchase", "kind": "revenue"}]}, "goals[0].property"),
        ({"goals": [{"event": "purchase", "kind": "clicks"}]}, "goals[0].kind"),
        (
            {
                "goals": [
                    {"event": "purchase", "primary": True},
                    {"event": "signup", "primary": True},
                ]
            },
            "goals",
        ),
        ({"goals": [{"event": "purchase", "window": "3 days"}]}, "goals[0].window"),
        ({"goals": [{"event": "purchase", "window": "0m"}]}, "goals[0].window"),
        ({"goals": [{"event": "purchase", "window": "400d"}]}, "goals[0].window"),
        ({"goals": [{"event": "purchase", "window_seconds": 90}]}, "goals[0].window_seconds"),
        (
            {"goals": [{"event": "purchase", "window": "1h", "window_seconds": 60}]},
            "goals[0].window",
        ),
        (
            {
                "goals": [
                    {"event": "purchase", "where": [{"property": "x", "op": "nope", "value": 1}]}
                ]
            },
            "goals[0].where",
        ),
        ({"traffic": 1.5}, "traffic"),
        ({"confidence": 0.3}, "confidence"),
        ({"minimum_detectable_effect": 0}, "minimum_detectable_effect"),
        ({"slot": "no_such_slot"}, "slot"),
        ({"namespace": {"name": "hero", "start": 0.6, "end": 0.4}}, "namespace"),
        ({"namespace": {"name": "hero", "start": -1}}, "namespace.start"),
        ({"factors": [{"name": "color", "levels": ["red"]}]}, "factors[0].levels"),
        ({"trafic": 0.5}, "trafic"),
        (
            {
                "variants": [
                    {"key": "a", "weight": 0.5, "colour": "red"},
                    {"key": "b", "weight": 0.5},
                ]
            },
            "variants[0].colour",
        ),
        ({"name": ""}, "name"),
    ],
)
def test_bad_configurations_are_refused_naming_the_field(secret_client, hero, fields, field):
    # Given a body with one mistake
    # When it is created
    response = secret_client.post(URL, body(**fields), format="json")

    # Then it is refused, naming the field, and nothing is stored
    error = assert_refused(response, 400, field)
    assert error["code"] == "invalid"
    assert not Experiment.objects.exists()


@pytest.mark.django_db
def test_too_many_factor_combinations_are_refused(secret_client, hero):
    factors = [{"name": f"f{i}", "levels": ["a", "b", "c"]} for i in range(5)]  # 243

    sent = body(factors=factors)
    del sent["variants"]
    response = secret_client.post(URL, sent, format="json")

    assert_refused(response, 400, "factors")


@pytest.mark.django_db
def test_a_bad_audience_is_refused_naming_the_node(secret_client, hero):
    audience = {"all": [{"context": "device", "op": "eq", "value": "mobile"}, {"trait": "plan"}]}

    response = secret_client.post(URL, body(audience=audience), format="json")

    error = assert_refused(response, 400, "audience")
    assert error["details"]["audience"]["path"].startswith("all[1]")
    assert error["details"]["audience"]["reason"]


@pytest.mark.django_db
def test_an_overlapping_namespace_is_refused(secret_client, hero):
    # Given an experiment holding the first 60 % of namespace "hero"
    create(secret_client, key="first", namespace={"name": "hero", "start": 0.0, "end": 0.6})

    # When another one asks for the second half
    response = secret_client.post(
        URL, body(key="second", namespace={"name": "hero", "start": 0.5, "end": 1.0}), format="json"
    )

    # Then it is refused, naming the one it overlaps
    error = assert_refused(response, 400, "namespace")
    assert "overlaps experiment first" in error["message"]
    # … and the free slice is fine
    create(secret_client, key="third", namespace={"name": "hero", "start": 0.6, "end": 1.0})


@pytest.mark.django_db
@pytest.mark.parametrize(
    "sent",
    [
        [body()],
        "just text",
        body(variants="abc"),
        body(variants=[1, 2]),
        body(goals={"event": "purchase"}),
        body(goals=[{"event": ["purchase"]}]),
        body(goals=[{"event": "purchase", "where": "category = shoes"}]),
        body(goals=[{"event": "purchase", "window": 7}]),
        body(namespace="hero"),
        body(audience="mobile users"),
        body(audience=[1, 2]),
        body(factors={"color": ["red", "blue"]}),
        body(variants=[{"key": "a", "weight": 0.5, "content": []}, {"key": "b", "weight": 0.5}]),
        body(traffic=True),
        body(holdout="maybe"),
        body(slot={"key": "home_hero"}),
    ],
)
def test_wrong_types_are_a_400_not_a_500(secret_client, hero, sent):
    # Given an experiment to patch
    create(secret_client, key="existing")

    # When a body with a wrong type is posted, or patched onto it
    for response in (
        secret_client.post(URL, sent, format="json"),
        secret_client.patch(f"{URL}/existing", sent, format="json"),
    ):
        # Then it is refused in the error shape
        assert response.status_code == 400, response.content
        assert set(response.json()["error"]) == {"code", "message", "details"}
    assert Experiment.objects.count() == 1


@pytest.mark.django_db
def test_wrong_types_in_a_patch_are_a_400(secret_client, hero):
    create(secret_client)
    for patch in (
        [1],
        {"variants": "abc"},
        {"goals": [{"event": 5, "kind": None}]},
        {"namespace": 3},
        {"traffic": "lots"},
        {"status": "running", "colour": 1},
    ):
        response = secret_client.patch(f"{URL}/hero-test", patch, format="json")
        assert response.status_code == 400, (patch, response.content)
    assert secret_client.get(f"{URL}/hero-test").json()["status"] == "draft"


@pytest.mark.django_db
def test_a_body_that_is_not_json_is_a_400(secret_client, hero):
    response = secret_client.post(URL, b"{not json", content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_json"


# --- lifecycle -------------------------------------------------------------------------


@pytest.mark.django_db
def test_start_pause_stop_and_the_moves_that_are_refused(secret_client, hero):
    # Given a draft
    create(secret_client)

    # A draft cannot be paused or stopped
    for action in ("pause", "stop"):
        error = assert_refused(move(secret_client, "hero-test", action), 409, "status")
        assert "draft" in error["message"]

    # Start: running, with its start time
    started = move(secret_client, "hero-test", "start")
    assert started.status_code == 200, started.content
    assert started.json()["status"] == "running"
    assert started.json()["started_at"] is not None
    assert started.json() == secret_client.get(f"{URL}/hero-test").json()
    assert_refused(move(secret_client, "hero-test", "start"), 409, "status")

    # Pause, then start again: the start time is the first one
    assert move(secret_client, "hero-test", "pause").json()["status"] == "paused"
    resumed = move(secret_client, "hero-test", "start").json()
    assert resumed["status"] == "running"
    assert resumed["started_at"] == started.json()["started_at"]

    # Stop is final
    stopped = move(secret_client, "hero-test", "stop").json()
    assert stopped["status"] == "stopped"
    assert stopped["stopped_at"] is not None
    for action in ("start", "pause", "stop"):
        error = assert_refused(move(secret_client, "hero-test", action), 409, "status")
        assert "stopped" in error["message"]


@pytest.mark.django_db
def test_a_started_experiment_answers_in_decide(
    secret_client, write_client, hero, django_capture_on_commit_callbacks
):
    # Given a draft on the hero slot, and a visitor already served the slot's default
    create(
        secret_client,
        variants=[
            {"key": "welcome", "weight": 0.0},
            {"key": "sale", "weight": 1.0, "content": {"title": "Big sale"}},
        ],
    )

    def ask() -> dict[str, Any]:
        response = write_client.post(
            "/api/v1/decide", {"anonymous_id": "a-1", "slots": ["home_hero"]}, format="json"
        )
        assert response.status_code == 200, response.content
        return response.json()["decisions"]["home_hero"]

    assert ask()["source"] == "default"

    # When it is started through the API
    with django_capture_on_commit_callbacks(execute=True):
        assert move(secret_client, "hero-test", "start").status_code == 200

    # Then the next decision comes from the experiment
    decision = ask()
    assert decision["source"] == "experiment"
    assert decision["experiment"] == {"key": "hero-test", "variant": "sale"}
    assert decision["content"] == {"title": "Big sale"}

    # And once stopped, the slot answers again
    with django_capture_on_commit_callbacks(execute=True):
        assert move(secret_client, "hero-test", "stop").status_code == 200
    assert ask()["source"] == "default"


# --- delete ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_running_experiment_cannot_be_deleted_a_stopped_one_goes_with_its_data(
    secret_client, hero
):
    # Given a running experiment with exposures and results
    create(secret_client)
    move(secret_client, "hero-test", "start")
    exp = Experiment.objects.get(key="hero-test")
    now = timezone.now()
    for variant in ("welcome", "sale"):
        Exposure.objects.create(
            experiment=exp, profile_id=uuid.uuid4(), variant=variant, exposed_at=now
        )
    ResultSnapshot.objects.create(experiment=exp, computed_at=now, payload={})

    # When it is deleted while running, or paused
    for action in ("start", "pause"):
        if action == "pause":
            move(secret_client, "hero-test", "pause")
        error = assert_refused(secret_client.delete(f"{URL}/hero-test"), 409, "status")
        assert "stop it first" in error["message"]
    assert Exposure.objects.filter(experiment=exp).count() == 2

    # Then after a stop it can be, and its exposures and results are gone
    move(secret_client, "hero-test", "stop")
    response = secret_client.delete(f"{URL}/hero-test")
    assert response.status_code == 204, response.content
    assert secret_client.get(f"{URL}/hero-test").status_code == 404
    assert not Exposure.objects.exists()
    assert not ResultSnapshot.objects.exists()
    assert not Variant.objects.exists()


@pytest.mark.django_db
def test_a_draft_can_be_deleted(secret_client, hero):
    create(secret_client)

    assert secret_client.delete(f"{URL}/hero-test").status_code == 204
    assert secret_client.get(URL).json() == []


# --- audit -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_every_change_is_audited_with_the_key_that_made_it(secret_client, source, hero):
    # When an experiment is created, changed, started, stopped and deleted
    create(secret_client)
    secret_client.patch(f"{URL}/hero-test", {"name": "Renamed"}, format="json")
    for action in ("start", "stop"):
        move(secret_client, "hero-test", action)
    pk = Experiment.objects.get(key="hero-test").pk
    secret_client.delete(f"{URL}/hero-test")

    # Then each step is in the audit log, by the source's key
    rows = AuditEvent.objects.filter(object_type="experiments.experiment", object_id=str(pk))
    assert [r.action for r in rows.order_by("id")] == [
        "experiment.created",
        "experiment.updated",
        "experiment.start",
        "experiment.stop",
        "experiment.deleted",
    ]
    assert {r.actor for r in rows} == {f"key:{source.source.slug}"}


@pytest.mark.django_db
def test_a_refused_change_writes_no_audit_entry(secret_client, hero):
    create(secret_client)
    before = AuditEvent.objects.count()

    secret_client.patch(f"{URL}/hero-test", {"traffic": 2}, format="json")
    move(secret_client, "hero-test", "stop")

    assert AuditEvent.objects.count() == before


# --- holdout, multivariate, content ----------------------------------------------------

HOLDOUT_VARIANTS = [{"key": "holdout", "weight": 0.1}, {"key": "personalized", "weight": 0.9}]


@pytest.mark.django_db
def test_the_holdout_has_no_slot_two_fixed_variants_and_is_alone(secret_client, hero):
    # A holdout on a slot, or with other variants, is refused
    assert_refused(
        secret_client.post(
            URL, body(key="h", holdout=True, variants=HOLDOUT_VARIANTS), format="json"
        ),
        400,
        "slot",
    )
    assert_refused(
        secret_client.post(URL, body(key="h", holdout=True, slot=None), format="json"),
        400,
        "variants",
    )

    # One without a slot, with "holdout" and "personalized", is accepted and starts
    created = create(secret_client, key="h1", holdout=True, slot=None, variants=HOLDOUT_VARIANTS)
    assert created["holdout"] is True
    assert move(secret_client, "h1", "start").json()["status"] == "running"

    # A second one is refused while the first is not stopped
    second = body(key="h2", holdout=True, slot=None, variants=HOLDOUT_VARIANTS)
    error = assert_refused(secret_client.post(URL, second, format="json"), 409, "holdout")
    assert "h1" in error["message"]
    move(secret_client, "h1", "stop")
    assert secret_client.post(URL, second, format="json").status_code == 201

    # An experiment cannot become a holdout without meeting the same rules
    create(secret_client, key="plain")
    assert_refused(
        secret_client.patch(f"{URL}/plain", {"holdout": True, "slot": None}, format="json"),
        400,
        "variants",
    )


@pytest.mark.django_db
def test_factors_make_the_variants_and_a_patch_keeps_their_weights(secret_client, hero):
    # Given a multivariate experiment made from its factors
    sent = body(factors=[{"name": "color", "levels": ["red", "blue"]}])
    del sent["variants"]
    created = secret_client.post(URL, sent, format="json").json()
    assert [(v["key"], v["weight"]) for v in created["variants"]] == [
        ("red", 0.5),
        ("blue", 0.5),
    ]
    assert created["variants"][1]["content"] == {"factors": {"color": "blue"}}

    # When the weights are set, then another field is patched
    weights = [{"key": "red", "weight": 0.7}, {"key": "blue", "weight": 0.3}]
    secret_client.patch(f"{URL}/hero-test", {"variants": weights}, format="json")
    patched = secret_client.patch(f"{URL}/hero-test", {"name": "Colors"}, format="json").json()

    # Then the weights stay; new factors make new variants
    assert [v["weight"] for v in patched["variants"]] == [0.7, 0.3]
    regenerated = secret_client.patch(
        f"{URL}/hero-test",
        {"factors": [{"name": "color", "levels": ["red", "blue", "green"]}]},
        format="json",
    ).json()
    assert [v["key"] for v in regenerated["variants"]] == ["red", "blue", "green"]


@pytest.mark.django_db
def test_variant_html_is_sanitized(secret_client, hero):
    content = {"html": '<p onclick="steal()">Sale<script>alert(1)</script></p>'}
    created = create(
        secret_client,
        variants=[
            {"key": "welcome", "weight": 0.5},
            {"key": "sale", "weight": 0.5, "content": content},
        ],
    )

    html = created["variants"][1]["content"]["html"]
    assert "script" not in html
    assert "onclick" not in html
    assert "Sale" in html


# --- who may call ----------------------------------------------------------------------

ENDPOINTS = [
    ("get", URL),
    ("post", URL),
    ("get", f"{URL}/hero-test"),
    ("put", f"{URL}/hero-test"),
    ("patch", f"{URL}/hero-test"),
    ("delete", f"{URL}/hero-test"),
    ("post", f"{URL}/hero-test/start"),
    ("post", f"{URL}/hero-test/pause"),
    ("post", f"{URL}/hero-test/stop"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_a_write_key_or_no_key_manages_nothing(
    write_client, anon_client, secret_client, hero, method, path
):
    # Given an experiment
    create(secret_client)
    before = secret_client.get(f"{URL}/hero-test").json()

    # When the browser's write key, or no key, calls a management endpoint
    forbidden = getattr(write_client, method)(path, body(name="Hijacked"), format="json")
    anonymous = getattr(anon_client, method)(path, body(name="Hijacked"), format="json")

    # Then it is refused and nothing changed
    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["code"] == "forbidden"
    assert anonymous.status_code == 401
    assert secret_client.get(f"{URL}/hero-test").json() == before


@pytest.mark.django_db
def test_a_staff_session_may_manage_experiments(staff_client, hero):
    response = staff_client.post(URL, body(), format="json")

    assert response.status_code == 201, response.content
    assert AuditEvent.objects.get(action="experiment.created").actor == "user:staff"


@pytest.mark.django_db
def test_a_slot_an_experiment_runs_on_cannot_be_deleted(secret_client, hero):
    # given
    create(secret_client)
    assert move(secret_client, "hero-test", "start").status_code == 200
    # when
    response = secret_client.delete("/api/v1/slots/home_hero")
    # then: a conflict naming the slot, and nothing deleted
    assert response.status_code == 409, response.content
    assert "slot" in response.json()["error"]["details"]
    assert Slot.objects.filter(key="home_hero").exists()
    assert Slot.objects.get(key="home_hero").variants.count() == 2


@pytest.mark.django_db
def test_results_are_served_and_computed_on_first_ask(secret_client, write_client, hero):
    # given: a running experiment with two exposed visitors, no results computed yet
    create(secret_client)
    assert move(secret_client, "hero-test", "start").status_code == 200
    from rules import decisionlog
    from tests.conftest import post_events

    for anon in ("r-1", "r-2"):
        assert post_events(write_client, {"type": "page", "anonymous_id": anon}).status_code == 202
        decided = write_client.post(
            "/api/v1/decide", {"anonymous_id": anon, "slots": ["home_hero"]}, format="json"
        )
        assert decided.status_code == 200
    decisionlog.flush()
    # when
    response = secret_client.get(f"{URL}/hero-test/results")
    # then
    assert response.status_code == 200, response.content
    payload = response.json()
    assert payload["experiment"] == "hero-test"
    assert payload["exposures_total"] == 2
    assert [g["goal"]["event"] for g in payload["goals"]] == ["purchase"]
    assert {r["key"] for r in payload["goals"][0]["variants"]} == {"welcome", "sale"}
    # the same snapshot is served again (not recomputed per request)
    assert (
        secret_client.get(f"{URL}/hero-test/results").json()["computed_at"]
        == payload["computed_at"]
    )
    assert secret_client.get(f"{URL}/no-such/results").status_code == 404


@pytest.mark.django_db
def test_results_follow_a_change_of_goals(secret_client, hero):
    # given: results computed for one goal
    create(secret_client)
    first = secret_client.get(f"{URL}/hero-test/results").json()
    assert [g["goal"]["event"] for g in first["goals"]] == ["purchase"]
    # when: a goal is added
    goals = [*GOALS, {"event": "signup", "kind": "conversion"}]
    assert (
        secret_client.patch(f"{URL}/hero-test", {"goals": goals}, format="json").status_code == 200
    )
    # then: the next read is computed for the new goals
    again = secret_client.get(f"{URL}/hero-test/results").json()
    assert [g["goal"]["event"] for g in again["goals"]] == ["purchase", "signup"]
    assert again["computing"] is False


@pytest.mark.django_db
def test_a_large_experiment_without_results_answers_202_and_queues(
    secret_client, hero, monkeypatch, django_capture_on_commit_callbacks, celery_queued
):
    import uuid

    from django.utils import timezone

    from experiments import tasks
    from experiments.models import Experiment, Exposure

    monkeypatch.setattr(tasks, "SYNC_RESULTS_LIMIT", 1)
    create(secret_client)
    exp = Experiment.objects.get(key="hero-test")
    Exposure.objects.bulk_create(
        Exposure(
            experiment=exp, profile_id=uuid.uuid4(), variant="welcome", exposed_at=timezone.now()
        )
        for _ in range(2)
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = secret_client.get(f"{URL}/hero-test/results")
    assert response.status_code == 202
    assert response.json() == {"computing": True}
    assert celery_queued == ["experiments.tasks.experiment_results_refresh"]
