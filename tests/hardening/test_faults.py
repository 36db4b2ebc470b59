"""Fault injection on the production shape (PostgreSQL, Redis, real Celery workers, all on
127.0.0.1): a worker SIGKILLed mid-task, Redis stopped and restarted under traffic, the
PostgreSQL connection cut under traffic, and the same batches replayed afterwards.

Every service the tests break is their own: a redis-server per test on a free port, Celery
workers as subprocesses on it, a TCP proxy in front of PostgreSQL; the shared Redis and
database are never touched. They run where DATABASE_URL points at PostgreSQL (CI)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import quote
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import httpx
import psycopg
import pytest
import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from cdp.celery import app as celery_app
from profiles.models import Event, Identity, Profile
from rules import decide as decide_module
from segments import services as segment_services
from segments.ml import services as ml_services
from segments.models import (
    Membership,
    Predictor,
    PredictorVersion,
    RecomputeRun,
    RefreshPolicy,
    Segment,
    SegmentSize,
)
from segments.tasks import ml_predictor_train, segments_recompute
from tests.rules.test_decide import CART, make_rule, make_slot
from tests.segments.ml.planted import planted_churn

BASE_DIR = Path(settings.BASE_DIR)
REDIS_SERVER = shutil.which("redis-server")

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.integration,
    pytest.mark.skipif(
        not settings.IS_POSTGRES,
        reason="fault injection runs on PostgreSQL only: set DATABASE_URL=postgres://… "
        "(CI's .ci/run does); SQLite has no server to cut off",
    ),
    pytest.mark.skipif(REDIS_SERVER is None, reason="needs redis-server on PATH"),
    pytest.mark.django_db(transaction=True),
]


# --- Plumbing: waiting, ports, our own Redis ------------------------------------------------


def wait_until(
    predicate: Callable[[], Any],
    *,
    timeout: float,
    what: str,
    probe: Callable[[], Any] | None = None,
) -> Any:
    """Poll (no fixed sleeps): the predicate's first truthy value, or fail saying what.
    `probe` runs before each poll (the traffic that moves things along)."""
    deadline = time.monotonic() + timeout
    while True:
        if probe is not None:
            probe()
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A redis-server of our own (no persistence), stopped and started by its PID."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS_SERVER is not None
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        with open(self.workdir / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.2)
        wait_until(lambda: _pings(client), timeout=10, what=f"redis-server on {self.port}")

    def stop(self) -> None:
        """SIGKILL: the outage is abrupt (and, with no persistence, Redis comes back empty)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_connect_timeout=0.5)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def web_on_redis(redis_server: RedisServer, settings: Any) -> Iterator[RedisServer]:
    """This process (the web side) uses our Redis as cache and Celery broker, as
    REDIS_URL=<it> would make it."""
    with web_using_redis(redis_server.url, settings):
        yield redis_server


@contextmanager
def web_using_redis(url: str, settings: Any) -> Iterator[None]:
    """Point this process at the Redis at `url`; the cached clients are dropped before
    and after."""
    settings.REDIS_URL = url
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": url,
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }
    before = {
        "broker_url": celery_app.conf.broker_url,
        "task_always_eager": celery_app.conf.task_always_eager,
    }
    celery_app.conf.update(broker_url=url, task_always_eager=False)
    _celery_pools_reset()
    decide_module.reset()
    try:
        yield
    finally:
        celery_app.conf.update(before)
        _celery_pools_reset()
        decide_module.reset()


def _celery_pools_reset() -> None:
    # The app keeps its broker connection and producer pools once made.
    celery_app._pool = None  # type: ignore[attr-defined]
    celery_app.amqp._producer_pool = None  # type: ignore[attr-defined]


# --- Plumbing: Celery workers as real processes ---------------------------------------------


def _database_url() -> str:
    db = connection.settings_dict
    auth = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        auth += ":" + quote(db["PASSWORD"], safe="")
    host = db["HOST"] or "127.0.0.1"
    return f"postgres://{auth}@{host}:{db['PORT'] or 5432}/{db['NAME']}"


class Worker:
    """`celery -A cdp worker` on the test database (pytest-django's test_<name>) and our
    Redis; its log tells how often it was handed each task."""

    def __init__(self, name: str, pool: str, broker: str, log: Path, **env: str) -> None:
        self.name, self.log = name, log
        environment = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "cdp.settings",
            "DATABASE_URL": _database_url(),
            "REDIS_URL": broker,
            "CELERY_BROKER_URL": broker,
            "CELERY_TASK_ALWAYS_EAGER": "false",
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        args = [sys.executable, "-m", "celery", "-A", "cdp", "worker", "-P", pool, "-c", "1"]
        args += ["-n", f"{name}@127.0.0.1", "-l", "info"]
        args += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                args,
                cwd=BASE_DIR,
                env=environment,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid = self.proc.pid
        self.children_seen: set[int] = set()

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self) -> None:
        wait_until(
            lambda: " ready." in self.text() or self.proc.poll() is not None,
            timeout=60,
            what=f"worker {self.name} to start",
        )
        assert self.proc.poll() is None, self.text()[-3000:]

    def deliveries(self, task: str) -> int:
        """How many times this worker was handed `task` (each delivery logs "received")."""
        return sum(
            1 for line in self.text().splitlines() if f"Task {task}[" in line and "received" in line
        )

    def pool_children(self) -> list[int]:
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with suppress(OSError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == self.pid:  # the parent's pid
                    found.append(int(stat.parent.name))
        self.children_seen.update(found)
        return found

    def stop(self) -> None:
        """Warm shutdown, then SIGKILL; pool children it started are ended by their PID."""
        self.pool_children()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for child in self.children_seen:
            with suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    started: list[Worker] = []

    def start(name: str, *, pool: str, broker: str, **env: str) -> Worker:
        worker = Worker(name, pool, broker, tmp_path / f"{name}.log", **env)
        started.append(worker)
        worker.wait_ready()
        return worker

    try:
        yield start
    finally:
        for worker in started:
            worker.stop()


# --- Plumbing: PostgreSQL seen from the side ----------------------------------------------


def pg_connect() -> psycopg.Connection[Any]:
    db = connection.settings_dict
    return psycopg.connect(
        host=db["HOST"] or "127.0.0.1",
        port=int(db["PORT"] or 5432),
        user=db["USER"] or None,
        password=db["PASSWORD"] or None,
        dbname=db["NAME"],
    )


@contextmanager
def row_locked(table: str, pk: int) -> Iterator[psycopg.Connection[Any]]:
    """Hold a row lock from another session: a task that writes that row waits there,
    inside its transaction, until the block ends. That is where the tests kill it."""
    with pg_connect() as conn:
        conn.execute(f"SELECT 1 FROM {table} WHERE id = %s FOR UPDATE", [pk])
        try:
            yield conn
        finally:
            conn.rollback()


def blocked_backend(conn: psycopg.Connection[Any], statement: str) -> int | None:
    """The PID of a backend waiting for a lock while running `statement…`, if any."""
    with pg_connect() as probe:
        row = probe.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND query LIKE %s AND pid <> %s",
            [statement + "%", conn.info.backend_pid],
        ).fetchone()
    return int(row[0]) if row else None


def backend_alive(pid: int) -> bool:
    with pg_connect() as probe:
        return (
            probe.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()
            is not None
        )


def members(slug: str) -> frozenset[uuid.UUID]:
    # One SELECT: one snapshot of the committed membership.
    return frozenset(
        Membership.objects.filter(segment__slug=slug).values_list("profile_id", flat=True)
    )


# --- 1. A worker killed mid-task --------------------------------------------------------------


def test_a_recompute_killed_mid_swap_is_redone_and_membership_is_never_half_written(
    web_on_redis, workers
):
    # Given 300 profiles, a "pros" segment computed over them (100 members)...
    profiles = Profile.objects.bulk_create(
        [Profile(traits={"plan": "pro" if i < 100 else "free"}) for i in range(300)]
    )
    ids = [p.pk for p in profiles]
    segment = segment_services.segment_save(
        segment=Segment(
            slug="pros",
            name="Pros",
            condition={"trait": "plan", "op": "eq", "value": "pro"},
            refresh=RefreshPolicy.SCHEDULED,
        ),
        actor="test",
    )
    segment_services.segment_recompute(segment=segment)
    before = members("pros")
    assert len(before) == 100
    # ... and data that moved since: 50 members leave, 80 other profiles join
    Profile.objects.filter(pk__in=ids[:50]).update(traits={"plan": "free"})
    Profile.objects.filter(pk__in=ids[100:180]).update(traits={"plan": "pro"})
    after = frozenset(ids[50:180])
    # ... and a worker (prefork, one child) on Redis
    worker = workers("recompute", pool="prefork", broker=web_on_redis.url)
    run = RecomputeRun.objects.create(slugs=["pros"], requested_by="admin:ann")
    task = "segments.tasks.segments_recompute"

    seen: set[frozenset[uuid.UUID]] = set()
    with row_locked("segments_segment", segment.pk) as lock:
        # When the recompute runs and its child process is SIGKILLed in the middle of the
        # swap (its deletes and inserts made, its transaction not committed)
        segments_recompute.apply_async((["pros"], run.pk))
        dead = wait_until(
            lambda: blocked_backend(lock, 'UPDATE "segments_segment"'),
            timeout=30,
            what="the recompute to reach the end of its swap",
        )
        (child,) = worker.pool_children()
        os.kill(child, signal.SIGKILL)

        # Then the parent re-queues the task at once and a new child takes it up
        wait_until(lambda: worker.deliveries(task) == 2, timeout=30, what="a redelivery")
        # ... while readers still see the old membership, whole
        seen.add(members("pros"))

    # When the lock goes, the dead worker's transaction is rolled back and the redelivered
    # run finishes; readers see the old set or the new one, never a mix
    def finished() -> bool:
        seen.add(members("pros"))
        return RecomputeRun.objects.get(pk=run.pk).status == RecomputeRun.Status.DONE

    wait_until(finished, timeout=60, what="the redelivered recompute to finish")
    wait_until(lambda: not backend_alive(dead), timeout=10, what="the dead backend to go")
    assert seen <= {before, after}, [len(s) for s in seen]
    assert members("pros") == after
    segment.refresh_from_db()
    assert segment.size == len(after) == 130
    # ... the size history has the first computation and the redone one, nothing half-way
    assert list(
        SegmentSize.objects.filter(segment=segment).order_by("at").values_list("size", flat=True)
    ) == [
        100,
        130,
    ]
    log = worker.text()
    assert worker.deliveries(task) == 2  # delivered once more: one retry
    print("recompute SIGKILL: deliveries", worker.deliveries(task), "memberships seen", len(seen))
    assert "WorkerLostError" in log or "SIGKILL" in log, log[-3000:]


def test_training_killed_with_its_whole_worker_is_taken_up_by_the_next_worker(
    web_on_redis, workers, source
):
    # Given profiles with planted churn, a current version v1 of a churn model, and v2
    # queued for training
    now = timezone.now()
    planted_churn(source.source, profiles=300, now=now, horizon_days=30)
    # (logistic regression: the quickest fit; where the worker dies is what matters)
    predictor = Predictor.objects.create(
        key="churn", name="Churn risk", horizon_days=30, algorithm="logistic_regression"
    )
    v1 = ml_services.predictor_train_execute(predictor=predictor, now=now, score=False)
    assert v1.is_current
    v2 = PredictorVersion.objects.create(
        predictor=predictor, version=2, algorithm=predictor.algorithm, requested_by="admin:ann"
    )
    task = "segments.tasks.ml_predictor_train"
    # ... and a worker that runs tasks in its own process (solo pool)
    first = workers("train-1", pool="solo", broker=web_on_redis.url, CDP_ML_PROMOTION_TOLERANCE="1")

    with row_locked("segments_predictorversion", v1.pk) as lock:
        # When the whole worker is SIGKILLed after fitting, while it promotes v2 (an
        # OOM kill, a lost node: nobody is left to re-queue the task)
        ml_predictor_train.apply_async((v2.pk,))
        dead = wait_until(
            lambda: blocked_backend(lock, 'UPDATE "segments_predictorversion"'),
            timeout=60,
            what="the training to reach its promotion",
        )
        first.proc.kill()
        first.proc.wait(timeout=10)
    wait_until(lambda: not backend_alive(dead), timeout=10, what="the dead backend to go")

    # Then nothing of v2 was kept: v1 is still the current version
    v2.refresh_from_db()
    assert (v2.status, v2.is_current) == ("running", False)
    assert PredictorVersion.objects.get(is_current=True) == v1
    assert first.deliveries(task) == 1

    # When another worker starts: Redis hands out again a task that nobody acknowledged
    # within the visibility timeout (CELERY_VISIBILITY_TIMEOUT, short here)
    second = workers(
        "train-2",
        pool="solo",
        broker=web_on_redis.url,
        CDP_ML_PROMOTION_TOLERANCE="1",
        CELERY_VISIBILITY_TIMEOUT="1",
    )

    # Then it trains v2 to the end and makes it current
    wait_until(
        lambda: PredictorVersion.objects.get(pk=v2.pk).status == "done",
        timeout=60,
        what="v2 trained on the second worker",
    )
    v2.refresh_from_db()
    assert v2.is_current
    assert v2.metrics["profiles"] == 300
    assert PredictorVersion.objects.filter(is_current=True).count() == 1
    assert second.deliveries(task) == 1  # one retry, on the next worker
    print("training SIGKILL: deliveries", first.deliveries(task), "+", second.deliveries(task))

    # When the same task is delivered once more (at-least-once delivery)
    finished_at = v2.finished_at
    ml_predictor_train.apply_async((v2.pk,))
    wait_until(
        lambda: "succeeded" in second.text().split(f"Task {task}[")[-1],
        timeout=30,
        what="the duplicate delivery to be handled",
    )
    # Then it is a no-op: v2 is not trained (nor promoted) again
    v2.refresh_from_db()
    assert v2.finished_at == finished_at
    assert v2.is_current


# --- 2. Redis stopped and restarted under traffic ---------------------------------------------


def _batch(tag: str, n: int = 20) -> list[dict[str, Any]]:
    """n events of a few visitors, each with its message_id (the retry key)."""
    return [
        {
            "type": "track",
            "event": "add_to_cart" if i % 4 == 0 else "product_viewed",
            "anonymous_id": f"{tag}-v{i % 5}",
            "message_id": f"{tag}-m{i}",
            "properties": {"product_id": f"sku-{i}", "price": 10 + i},
        }
        for i in range(n)
    ]


def _stored(message_ids: list[str]) -> int:
    return Event.objects.filter(message_id__in=message_ids).count()


class Storefront:
    """Traffic on its own thread, as a storefront keeps sending it: a batch of events,
    then /decide for a visitor of the batch who just added to cart; every answer is kept
    with the state Redis was in when the request started."""

    def __init__(self, key: str) -> None:
        self.client = APIClient()
        self.client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
        self.phase = "up"
        self.batches: list[tuple[str, list[dict[str, Any]]]] = []
        self.answers: list[tuple[str, str, int, dict[str, Any]]] = []
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self.stopping.is_set():
                phase, tag = self.phase, f"{self.phase}{len(self.batches)}"
                batch = _batch(tag, n=50)
                r = self.client.post("/api/v1/events", {"batch": batch}, format="json")
                self.answers.append((phase, "events", r.status_code, r.json()))
                if r.status_code == 202:
                    self.batches.append((phase, batch))
                body = {"anonymous_id": f"{tag}-v0", "slots": ["home_hero"]}
                r = self.client.post("/api/v1/decide", body, format="json")
                self.answers.append((phase, "decide", r.status_code, r.json()))
        except BaseException as exc:
            self.error = exc
        finally:
            connection.close()  # this thread's own

    def sent_in(self, phase: str) -> int:
        return sum(1 for p, _ in self.batches if p == phase)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=30)


def test_ingestion_and_decide_ride_out_a_redis_restart(web_on_redis, source):
    # Given a real-time segment (ingestion queues its refresh through Redis) and a slot
    # whose rule serves the cart reminder to visitors who added to cart
    segment_services.segment_save(
        segment=Segment(slug="carts", name="Carts", condition=CART), actor="test"
    )
    hero = make_slot()
    make_rule(hero, "cart-reminder", CART, "cart", priority=10, name="Cart reminder")
    redis_server = web_on_redis
    shop = Storefront(source.write_key)

    # When a storefront sends events and asks for decisions while Redis is killed and,
    # a little later, started again (empty: it kept nothing)
    shop.thread.start()
    try:
        wait_until(lambda: shop.sent_in("up") >= 3, timeout=30, what="traffic with Redis up")
        shop.phase = "down"
        redis_server.stop()
        wait_until(lambda: shop.sent_in("down") >= 8, timeout=60, what="traffic, Redis down")
        shop.phase = "back"
        redis_server.start()
        wait_until(lambda: shop.sent_in("back") >= 3, timeout=30, what="traffic, Redis back")
    finally:
        shop.stop()
    assert shop.error is None, repr(shop.error)

    # Then ingestion accepted every batch (202) and /decide answered every time (200),
    # with the rule's variant read from the database while the cache was away
    for phase, endpoint, code, body in shop.answers:
        assert code == (202 if endpoint == "events" else 200), (phase, endpoint, code, body)
        if endpoint == "events":
            assert body["accepted"] == 50, (phase, body)
        else:
            assert body["decisions"]["home_hero"]["variant"] == "cart", (phase, body)
    # ... and every accepted event, those of the outage too, is in PostgreSQL
    ids = [e["message_id"] for _, batch in shop.batches for e in batch]
    accepted = sum(b["accepted"] for _, e, _, b in shop.answers if e == "events")
    assert shop.sent_in("down") >= 8  # >= 400 events accepted while Redis was down
    assert _stored(ids) == accepted == 50 * len(shop.batches)
    print(
        "redis outage:",
        {phase: 50 * shop.sent_in(phase) for phase in ("up", "down", "back")},
        "events accepted and stored;",
        sum(1 for a in shop.answers if a[1] == "decide"),
        "decisions, all 200",
    )

    # ... and /decide is back on Redis (its breaker retries after a few seconds): a
    # decision caches the visitor's snapshot in the restarted server
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {source.write_key}")

    visitor = shop.batches[-1][1][0]["anonymous_id"]

    def cached_again() -> bool:
        body = {"anonymous_id": visitor, "slots": ["home_hero"]}
        assert client.post("/api/v1/decide", body, format="json").status_code == 200
        keys = redis_server.client().keys("*cdp:profile:*")
        return any(not k.endswith(b":gen") for k in keys)  # a snapshot, not a generation

    wait_until(cached_again, timeout=15, what="/decide to use Redis again")

    # When every batch is replayed
    for _, batch in shop.batches:
        response = client.post("/api/v1/events", {"batch": batch}, format="json")
        # Then each is all duplicates, and no row is added
        assert response.status_code == 202
        assert (response.json()["accepted"], response.json()["duplicates"]) == (0, len(batch))
    assert _stored(ids) == accepted


@pytest.fixture
def redis_behind_proxy(redis_server: RedisServer, settings: Any) -> Iterator[TcpProxy]:
    """This process reaches our Redis through a proxy that the test can cut."""
    proxy = TcpProxy(("127.0.0.1", redis_server.port))
    try:
        with web_using_redis(f"redis://127.0.0.1:{proxy.port}/0", settings):
            yield proxy
    finally:
        proxy.close()


def test_after_a_redis_partition_decide_serves_no_snapshot_from_before_it(
    redis_behind_proxy, write_client, monkeypatch
):
    # Given a visitor whose snapshot Redis caches when /decide answers "welcome"
    monkeypatch.setattr(decide_module, "CACHE_RETRY_AFTER", 0.5)  # the breaker, shortened
    hero = make_slot()
    make_rule(hero, "cart-reminder", CART, "cart", priority=10, name="Cart reminder")

    def hero_variant() -> str:
        body = {"anonymous_id": "ann", "slots": ["home_hero"]}
        response = write_client.post("/api/v1/decide", body, format="json")
        assert response.status_code == 200, response.content
        return str(response.json()["decisions"]["home_hero"]["variant"])

    for visitor in ("ann", "bob"):
        page = {"type": "page", "anonymous_id": visitor, "message_id": f"{visitor}-1"}
        assert write_client.post("/api/v1/events", page, format="json").status_code == 202
    assert hero_variant() == "welcome"

    # When Redis is cut off (it keeps its data: not a restart) while she adds to cart
    redis_behind_proxy.cut()
    try:
        cart = {
            "type": "track",
            "event": "add_to_cart",
            "anonymous_id": "ann",
            "message_id": "ann-2",
        }
        response = write_client.post("/api/v1/events", cart, format="json")
        assert response.status_code == 202, response.content
        answers = [hero_variant()]  # from the database
    finally:
        redis_behind_proxy.restore()

    # Then /decide sees her cart during the partition, and after it, once /decide reads
    # and writes Redis again (bob's snapshot is cached there), it never answers from what
    # Redis held before (the partition lost the invalidations)
    bob = str(Identity.objects.get(value="bob").profile_id)
    server = redis.Redis(host="127.0.0.1", port=redis_behind_proxy.target[1])

    def decide_on_redis_again() -> bool:
        answers.append(hero_variant())
        body = {"anonymous_id": "bob", "slots": ["home_hero"]}
        assert write_client.post("/api/v1/decide", body, format="json").status_code == 200
        return bool(server.exists(f":1:cdp:profile:{bob}"))

    wait_until(decide_on_redis_again, timeout=15, what="/decide to use Redis again")
    answers += [hero_variant() for _ in range(3)]
    assert set(answers) == {"cart"}, answers


# --- 3. The PostgreSQL connection cut under traffic -------------------------------------------


class TcpProxy:
    """A TCP proxy in front of PostgreSQL or Redis that the test can cut: all at once
    (`cut`: the server is unreachable, but keeps its data), or the connection that sends a
    given statement, before it reaches the server (`cut_on`)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.down = False
        self.marker: bytes | None = None
        self.cuts = 0
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.down:
                client.close()  # the server is "gone": connections are refused
                continue
            upstream = socket.create_connection(self.target)
            pair = (client, upstream)
            with self.lock:
                self.pairs.append(pair)
            threading.Thread(target=self._pump, args=(client, upstream, pair), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, pair), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, pair: Any) -> None:
        try:
            while data := src.recv(65536):
                if src is pair[0] and self.marker is not None and self.marker in data:
                    self.marker = None
                    self._cut(pair)
                    return
                dst.sendall(data)
        except OSError:
            pass
        self._cut(pair)

    def _cut(self, pair: tuple[socket.socket, socket.socket]) -> None:
        with self.lock:
            if pair in self.pairs:
                self.pairs.remove(pair)
                self.cuts += 1
        for s in pair:
            with suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def cut(self) -> None:
        self.down = True
        with self.lock:
            pairs = list(self.pairs)
        for pair in pairs:
            self._cut(pair)

    def cut_on(self, statement: bytes) -> None:
        self.marker = statement

    def restore(self) -> None:
        self.down = False

    def close(self) -> None:
        self.closed = True
        self.cut()
        self.listener.close()


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class WebProcess:
    """The real WSGI handler on one long-lived thread, as a sync gunicorn worker runs it:
    request signals close unusable connections, CONN_MAX_AGE keeps the good one, and
    CONN_HEALTH_CHECKS tests it on first use; its database connection goes through
    `port`."""

    def __init__(self, db_port: int) -> None:
        from django.core.handlers.wsgi import WSGIHandler

        self.db_port = db_port
        self.httpd: WSGIServer = make_server("127.0.0.1", 0, WSGIHandler(), handler_class=_Quiet)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        connection.settings_dict = {
            **connection.settings_dict,
            "HOST": "127.0.0.1",
            "PORT": str(self.db_port),
        }
        try:
            self.httpd.serve_forever(poll_interval=0.05)
        finally:
            connection.close()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def pg_proxy() -> Iterator[TcpProxy]:
    db = connection.settings_dict
    proxy = TcpProxy((db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432)))
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.fixture
def web(pg_proxy: TcpProxy) -> Iterator[httpx.Client]:
    server = WebProcess(pg_proxy.port)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            yield client
    finally:
        server.stop()


def _events(client: httpx.Client, key: str, batch: list[dict[str, Any]]) -> httpx.Response:
    return client.post(
        "/api/v1/events", json={"batch": batch}, headers={"Authorization": f"Bearer {key}"}
    )


def _assert_database_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, (response.status_code, response.text)
    assert int(response.headers["Retry-After"]) > 0
    error = response.json()["error"]
    assert error["code"] == "database_unavailable"
    assert error["message"]
    assert "details" in error


def test_a_cut_database_connection_is_a_clear_503_and_stores_all_or_nothing(source, pg_proxy, web):
    key = source.write_key
    table = Event._meta.db_table.encode()
    # Given a web process that has served a batch (its connection is open and kept)
    first = _batch("ok")
    assert _events(web, key, first).status_code == 202

    # When the connection is cut in the middle of a batch: its profiles and identities
    # are written inside the transaction, the events' INSERT never reaches the server
    pg_proxy.cut_on(b"INSERT INTO " + table + b" (")
    midway = _batch("midway")
    response = _events(web, key, midway)
    # Then the client gets a 503 with Retry-After in the API's error shape
    _assert_database_unavailable(response)
    assert pg_proxy.cuts == 1
    # ... and nothing of that batch was stored: no event, no profile, no identity
    anonymous_ids = sorted({e["anonymous_id"] for e in midway})
    assert _stored([e["message_id"] for e in midway]) == 0
    assert not Identity.objects.filter(value__in=anonymous_ids).exists()
    # ... and the next request, on a new connection, works: the batch sent again is stored
    response = _events(web, key, midway)
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == len(midway)

    # When PostgreSQL goes away altogether (connections cut and refused)
    pg_proxy.cut()
    down = _batch("down")
    responses = [_events(web, key, down) for _ in range(3)]
    decide = web.post(
        "/api/v1/decide",
        json={"anonymous_id": "nobody-yet", "slots": ["home_hero"]},
        headers={"Authorization": f"Bearer {key}"},
    )
    ready = web.get("/readyz")
    # Then every answer is a clear 503, never a 500, and /readyz says why
    for r in responses:
        _assert_database_unavailable(r)
    assert decide.status_code in (200, 503), decide.text  # 200 if it had it all cached
    if decide.status_code == 503:
        _assert_database_unavailable(decide)
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"].startswith("error")
    assert _stored([e["message_id"] for e in down]) == 0

    # When it comes back, the next request works at once, and the batch the client
    # retries is stored once
    pg_proxy.restore()
    response = _events(web, key, down)
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == len(down)

    # When the kept connection dies while the process is idle and the server is back
    # before the next request
    cuts = pg_proxy.cuts
    pg_proxy.cut()
    assert pg_proxy.cuts == cuts + 1  # the kept connection was the one cut
    pg_proxy.restore()
    idle = _batch("idle")
    response = _events(web, key, idle)
    # Then the health check replaces the dead connection: no error at all
    assert response.status_code == 202, response.text

    # When every batch is replayed
    for batch in (first, midway, down, idle):
        response = _events(web, key, batch)
        # Then each is all duplicates and no row is added
        assert response.status_code == 202
        assert (response.json()["accepted"], response.json()["duplicates"]) == (0, len(batch))
    assert _stored([e["message_id"] for b in (first, midway, down, idle) for e in b]) == 80


def test_an_admin_page_is_a_503_when_the_database_is_away(source, pg_proxy, web):
    # Given the admin's login form, fetched while the database is up
    form = web.get("/admin/login/")
    assert form.status_code == 200
    csrf = web.cookies["csrftoken"]
    # When PostgreSQL goes away and a marketer logs in
    pg_proxy.cut()
    response = web.post(
        "/admin/login/",
        data={"username": "ann", "password": "pw-ann-123", "csrfmiddlewaretoken": csrf},
        headers={"Referer": f"{web.base_url}/admin/login/"},
    )
    # Then the page says the service is unavailable, and when to try again
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) > 0
    assert "unavailable" in response.text


# --- 4. Replays -----------------------------------------------------------------------------


def test_replayed_batches_add_no_rows(write_client):
    # Given three batches stored once
    batches = [_batch(f"plain{i}") for i in range(3)]
    for batch in batches:
        assert write_client.post("/api/v1/events", {"batch": batch}, format="json").json()[
            "accepted"
        ] == len(batch)
    rows = Event.objects.count(), Profile.objects.count(), Identity.objects.count()
    # When each is sent twice more, and all three again as one batch
    for batch in [*batches, *batches, [e for b in batches for e in b]]:
        response = write_client.post("/api/v1/events", {"batch": batch}, format="json")
        # Then every event is a duplicate
        assert response.status_code == 202
        assert (response.json()["accepted"], response.json()["duplicates"]) == (0, len(batch))
    # ... and no event, profile or identity was added
    assert (Event.objects.count(), Profile.objects.count(), Identity.objects.count()) == rows
