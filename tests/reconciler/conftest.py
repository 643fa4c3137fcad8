"""Fixtures of the reconciler tests: real HTTP to the Stripe stand-in, real gRPC, real PostgreSQL.

A run compares *everything* Stripe and the ledger hold in its window, so each test gets its own world:
a fresh fake Stripe account (`fake`) and a fresh ledger (`world`: a database cloned from a migrated
template, with its own in-process ledger server). Other tests' payments can then never show up as
drift, and exit codes mean what they say.

The reconciler's ledger client counts the RPCs it makes (a client interceptor), so tests can assert
that the ledger is queried once per Stripe page.
"""

from __future__ import annotations

import collections
import concurrent.futures
import io
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import psycopg
import pytest

from credits.ledger.v1 import ledger_service_pb2 as pb
from services.ledger import app
from services.ledger.client import LedgerClient
from services.reconciler.config import ReconcilerSettings
from services.reconciler.report import RunSummary
from services.reconciler.run import reconcile
from services.reconciler.stripe_source import RetryPolicy
from services.stripe_bridge.apply import Applied, apply_action
from services.stripe_bridge.catalog import Catalog
from services.stripe_bridge.events import translate_event
from tests.conftest import ALL_ROLES_TOKEN, ROLE_TOKENS, DatabaseFactory, database_url_for, ledger_settings
from tests.fakes import stripe_events as se
from tests.fakes.stripe_api import RunningFakeStripe, running_fake_stripe

PACKAGES = {"small": (100, 500), "medium": (550, 2500), "large": (1200, 5000)}
FAST_RETRY = RetryPolicy(attempts_max=4, backoff_seconds_max=0.02)


class CountingInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Counts the client's unary RPCs by method name, and keeps the ListPayments requests."""

    def __init__(self) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        self.list_payments: list[pb.ListPaymentsRequest] = []

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        method = client_call_details.method
        name = (method.decode() if isinstance(method, bytes) else method).rsplit("/", 1)[-1]
        self.calls[name] += 1
        if name == "ListPayments":
            self.list_payments.append(request)
        return await continuation(client_call_details, request)

    def list_payments_by_intent(self) -> int:
        return sum(1 for request in self.list_payments if request.payment_intent_ids)


@dataclass
class World:
    """A fresh ledger (own database, own server) and clients on it."""

    target: str
    reconciler: LedgerClient  # role reconciler, counting its RPCs
    counter: CountingInterceptor
    payments: LedgerClient  # role payments: what the gateway holds
    reader: LedgerClient  # every role, for assertions
    catalog: Catalog = field(default_factory=Catalog.default)


class WorldDatabases:
    """Databases cloned from one migrated template, one per test, dropped together at the end of the run.

    A DROP DATABASE costs about a second of checkpoint on PostgreSQL; dropped concurrently, forty cost about one.
    """

    DROP_CONCURRENCY_MAX = 16

    def __init__(self, databases: DatabaseFactory) -> None:
        self.databases = databases
        self.admin_url = databases.admin_url
        template_url = databases.create()  # migrated; dropped by the shared factory
        self.template = template_url.rsplit("/", 1)[-1].split("?", 1)[0]
        self.names: list[str] = []

    def clone(self) -> str:
        if self.databases.citus:
            # On Citus a database is one per node, and each node's Citus daemon keeps a session on the template
            # (CREATE DATABASE ... TEMPLATE refuses a template in use): a fresh database, migrated, instead.
            return self.databases.create()
        name = f"credits_reconciler_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        self.names.append(name)
        return database_url_for(self.admin_url, name)

    def drop_all(self) -> None:
        def drop(name: str) -> None:
            with psycopg.connect(self.admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

        with concurrent.futures.ThreadPoolExecutor(self.DROP_CONCURRENCY_MAX) as pool:
            list(pool.map(drop, self.names))


@pytest.fixture(scope="session")
def world_databases(databases: DatabaseFactory) -> Iterator[WorldDatabases]:
    created = WorldDatabases(databases)
    yield created
    created.drop_all()


@pytest.fixture
async def world(world_databases: WorldDatabases) -> AsyncIterator[World]:
    server = await app.start(ledger_settings(world_databases.clone(), pool_size_max=10))
    target = f"127.0.0.1:{server.port}"
    counter = CountingInterceptor()
    reconciler = LedgerClient(target, ROLE_TOKENS["reconciler"], interceptors=[counter])
    payments = LedgerClient(target, ROLE_TOKENS["payments"])
    reader = LedgerClient(target, ALL_ROLES_TOKEN)
    try:
        yield World(target, reconciler, counter, payments, reader)
    finally:
        for client in (reconciler, payments, reader):
            await client.close()
        await server.stop(grace_seconds=0.5)


@pytest.fixture
async def fake() -> AsyncIterator[RunningFakeStripe]:
    async with running_fake_stripe() as running:
        yield running


def settings_for(world: World, fake: RunningFakeStripe, **overrides: Any) -> ReconcilerSettings:
    values: dict[str, Any] = {
        "ledger_target": world.target,
        "ledger_token": ROLE_TOKENS["reconciler"],
        "stripe_api_key": fake.api_key,
        "stripe_api_base": fake.base_url,
        "catalog": world.catalog,
        "stripe_retry": FAST_RETRY,
        "progress_interval_seconds": 3600,
    }
    values.update(overrides)
    return ReconcilerSettings(**values)


@dataclass
class Report:
    summary: RunSummary
    lines: list[dict[str, Any]]

    @property
    def items(self) -> list[dict[str, Any]]:
        return [line for line in self.lines if line["type"] == "drift"]

    def about(self, **match: Any) -> list[dict[str, Any]]:
        return [item for item in self.items if all(item.get(key) == value for key, value in match.items())]


async def run(world: World, fake: RunningFakeStripe, output: io.StringIO | None = None, **overrides: Any) -> Report:
    """One run with the counting reconciler client; the report is parsed from its JSON lines."""
    output = output or io.StringIO()
    summary = await reconcile(settings_for(world, fake, **overrides), ledger=world.reconciler, output=output)
    lines = [json.loads(line) for line in output.getvalue().splitlines()]
    assert lines[-1]["type"] == "summary"
    assert lines[-1]["run_id"] == summary.run_id
    return Report(summary, lines)


# --- Stripe-side scenarios ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Purchase:
    user_id: str
    package_id: str
    session_id: str
    payment_intent_id: str
    charge_id: str


def new_user() -> str:
    return f"user-{uuid.uuid4().hex[:16]}"


def buy(fake: RunningFakeStripe, user_id: str | None = None, package_id: str = "small") -> Purchase:
    """A customer pays through Checkout in Stripe (and Stripe emits its events); nothing reaches the ledger."""
    user_id = user_id or new_user()
    _, amount_minor = PACKAGES[package_id]
    metadata = se.purchase_metadata(user_id, package_id)
    session = fake.state.create_session(
        amount_minor=amount_minor,
        currency="eur",
        metadata=metadata,
        payment_intent_metadata=metadata,
        client_reference_id=user_id,
        customer_email="buyer@example.test",
    )
    completed = fake.state.complete_session(session["id"])
    intent = fake.state.payment_intent(completed["payment_intent"])
    return Purchase(user_id, package_id, session["id"], intent["id"], intent["latest_charge"])


def emitted(fake: RunningFakeStripe, event_type: str, object_id: str) -> dict[str, Any]:
    """The last event of `event_type` Stripe emitted about the object `object_id`."""
    found = [event for event in fake.state.events(event_type) if event["data"]["object"]["id"] == object_id]
    assert found, f"no {event_type} about {object_id}"
    return found[-1]


async def deliver_in_process(world: World, event: dict[str, Any]) -> Applied:
    """What the gateway does with a delivered webhook: the shared translation, applied with its role."""
    return await apply_action(translate_event(event, world.catalog), world.payments, world.catalog)


async def balance(world: World, user_id: str) -> int:
    return (await world.reader.get_balance(user_id)).balance


async def journal(world: World, user_id: str) -> list[pb.Transaction]:
    return list((await world.reader.list_transactions(user_id, page_size=100)).transactions)


async def purchases_of(world: World, user_id: str) -> list[pb.Transaction]:
    return [entry for entry in await journal(world, user_id) if entry.kind == pb.TRANSACTION_KIND_PURCHASE]


async def payment_of(world: World, payment_intent_id: str) -> pb.Payment:
    return (await world.reader.get_payment(payment_intent_id=payment_intent_id)).payment


async def ledger_snapshot(world: World) -> list[bytes]:
    """Every payment of the world's ledger, serialized: equal snapshots mean nothing changed."""
    response = await world.reader.list_payments(page_size=500)
    assert not response.next_page_token
    return sorted(payment.SerializeToString(deterministic=True) for payment in response.payments)
