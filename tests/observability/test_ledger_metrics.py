"""The ledger's business and pool metrics (services/ledger/metrics.py).

- `record_entry`: direction by sign and kind, replays and zero moves count nothing, unknown kinds are `other`.
- Through a real ledger (app.py wires the pool, the servicers record entries): a purchase, its redelivery,
  a refund, a dispute and its win move the counters by exactly
  what the journal moved.
- `DatabasePoolCollector`: in-use, idle, size and waiting acquirers of a real asyncpg pool, read at scrape time.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
from prometheus_client import REGISTRY, CollectorRegistry

from credits.ledger.v1 import ledger_service_pb2 as pb
from services.ledger import app
from services.ledger import metrics as ledger_metrics
from services.ledger.client import LedgerClient
from services.ledger.domain import Kind
from services.ledger.metrics import DatabasePoolCollector, credit_direction, record_entry
from services.ledger.server import KIND_TO_PROTO
from tests.conftest import ALL_ROLES_TOKEN, ledger_settings, new_key
from tests.ledger.payment_helpers import MEDIUM_AMOUNT_MINOR, MEDIUM_CREDITS, Ids, details, source

KIND_BY_PROTO = {number: kind for kind, number in KIND_TO_PROTO.items()}
WAITERS = 3
WAIT_SECONDS_MAX = 5.0


def credits_sample(direction: str, kind: str) -> float:
    return REGISTRY.get_sample_value("ledger_credits_total", {"direction": direction, "kind": kind}) or 0.0


class CreditsDelta:
    """The change of every ledger_credits_total series since it was created."""

    def __init__(self) -> None:
        self.before = self._snapshot()

    @staticmethod
    def _snapshot() -> dict[tuple[str, str], float]:
        return {
            (sample.labels["direction"], sample.labels["kind"]): sample.value
            for family in REGISTRY.collect()
            if family.name == "ledger_credits"
            for sample in family.samples
            if sample.name == "ledger_credits_total"
        }

    def changes(self) -> dict[tuple[str, str], float]:
        after = self._snapshot()
        return {key: value - self.before.get(key, 0.0) for key, value in after.items() if value != self.before.get(key)}


# --- record_entry -----------------------------------------------------------------------------


DIRECTIONS = [
    pytest.param(Kind.PURCHASE, 550, "issued", id="purchase-issued"),
    pytest.param(Kind.GRANT, 10, "issued", id="grant-issued"),
    pytest.param(Kind.ADMIN_ADJUSTMENT, 5, "issued", id="admin-credit-issued"),
    pytest.param(Kind.ADMIN_ADJUSTMENT, -5, "clawed_back", id="admin-debit-clawed-back"),
    pytest.param(Kind.SPEND, -3, "spent", id="spend-spent"),
    pytest.param(Kind.HOLD_CAPTURE, -7, "spent", id="hold-capture-spent"),
    pytest.param(Kind.REFUND, -275, "clawed_back", id="refund-clawed-back"),
    pytest.param(Kind.CHARGEBACK, -550, "clawed_back", id="chargeback-clawed-back"),
    pytest.param(Kind.CHARGEBACK_REVERSAL, 550, "reinstated", id="reversal-reinstated"),
]


@pytest.mark.parametrize(("kind", "delta", "direction"), DIRECTIONS)
def test_an_applied_entry_counts_its_credits_by_direction_and_kind(kind: Kind, delta: int, direction: str) -> None:
    delta_before = CreditsDelta()
    record_entry(kind, delta, replayed=False)
    assert delta_before.changes() == {(direction, kind.value): abs(delta)}


@pytest.mark.parametrize(("kind", "delta", "direction"), DIRECTIONS)
def test_a_replayed_entry_counts_nothing(kind: Kind, delta: int, direction: str) -> None:
    delta_before = CreditsDelta()
    record_entry(kind, delta, replayed=True)
    assert delta_before.changes() == {}


def test_a_zero_move_counts_nothing() -> None:
    delta_before = CreditsDelta()
    record_entry(Kind.REFUND, 0, replayed=False)
    assert delta_before.changes() == {}


def test_an_unknown_kind_is_counted_as_other() -> None:
    delta_before = CreditsDelta()
    record_entry("made_up_kind", 4, replayed=False)
    record_entry("another_made_up_kind", -2, replayed=False)
    assert delta_before.changes() == {("issued", "other"): 4, ("spent", "other"): 2}


def test_a_zero_delta_has_no_direction() -> None:
    with pytest.raises(AssertionError):
        credit_direction(Kind.GRANT, 0)


def test_every_expected_series_exists_before_any_entry() -> None:
    for direction, kind in ledger_metrics.EXPECTED_SERIES:
        assert REGISTRY.get_sample_value("ledger_credits_total", {"direction": direction, "kind": kind}) is not None
    assert {direction for direction, _ in ledger_metrics.EXPECTED_SERIES} == set(ledger_metrics.DIRECTIONS)
    assert {kind for _, kind in ledger_metrics.EXPECTED_SERIES} == {kind.value for kind in Kind}


def test_database_up_follows_the_probe() -> None:
    ledger_metrics.record_database_reachable(False)
    assert REGISTRY.get_sample_value("ledger_database_up") == 0
    ledger_metrics.record_database_reachable(True)
    assert REGISTRY.get_sample_value("ledger_database_up") == 1


# --- wired into a real ledger -------------------------------------------------------------------


@pytest.fixture
async def wired_ledger(database_url) -> AsyncIterator[LedgerClient]:
    """A real ledger: app.start wires the pool collector, the servicers record every applied entry."""
    server = await app.start(ledger_settings(database_url))
    try:
        async with LedgerClient(f"127.0.0.1:{server.port}", ALL_ROLES_TOKEN) as client:
            yield client
    finally:
        await server.stop(grace_seconds=1.0)


async def test_credits_follow_the_journal_through_a_payment_lifecycle(wired_ledger: LedgerClient) -> None:
    ledger = wired_ledger
    user_id = f"user-{uuid.uuid4().hex}"
    ids = Ids.new()
    paid = details(user_id, session=ids.session, intent=ids.intent, charge=ids.charge)
    counted = CreditsDelta()

    key = new_key()
    await ledger.credit(user_id, 10, key, "welcome")
    await ledger.credit(user_id, 10, key, "welcome")  # Replayed: no second count.
    await ledger.debit(user_id, 4, new_key(), "spent on a match")
    completed = source("checkout.session.completed")
    await ledger.settle_payment(paid, completed)
    await ledger.settle_payment(paid, completed)  # Redelivered: duplicate_event.
    await ledger.settle_payment(paid, source("payment_intent.succeeded"))  # Already credited: no second credit.
    await ledger.apply_refund(paid, MEDIUM_AMOUNT_MINOR // 2, source("charge.refunded"))
    dispute_id = f"dp_test_{uuid.uuid4().hex}"
    await ledger.apply_dispute(paid, dispute_id, pb.DISPUTE_STATUS_NEEDS_RESPONSE, source("charge.dispute.created"))
    await ledger.apply_dispute(paid, dispute_id, pb.DISPUTE_STATUS_WON, source("charge.dispute.closed"))

    half = MEDIUM_CREDITS // 2
    assert counted.changes() == {
        ("issued", "grant"): 10,
        ("spent", "spend"): 4,
        ("issued", "purchase"): MEDIUM_CREDITS,
        ("clawed_back", "refund"): half,
        ("clawed_back", "chargeback"): MEDIUM_CREDITS - half,  # A real dispute takes what the refund left.
        ("reinstated", "chargeback_reversal"): MEDIUM_CREDITS - half,  # Won: given back.
    }
    # The counters agree with the journal: what they say moved is the balance.
    moved = counted.changes()
    issued = moved[("issued", "grant")] + moved[("issued", "purchase")] + moved[("reinstated", "chargeback_reversal")]
    taken = moved[("spent", "spend")] + moved[("clawed_back", "refund")] + moved[("clawed_back", "chargeback")]
    assert (await ledger.get_balance(user_id)).balance == issued - taken


async def test_the_pool_of_a_running_ledger_is_reported(wired_ledger: LedgerClient) -> None:
    await wired_ledger.get_balance(f"user-{uuid.uuid4().hex}")  # At least one connection opened.
    assert REGISTRY.get_sample_value("ledger_db_pool_size_max") == ledger_settings("").pool_size_max
    idle = REGISTRY.get_sample_value("ledger_db_pool_connections", {"state": "idle"})
    in_use = REGISTRY.get_sample_value("ledger_db_pool_connections", {"state": "in_use"})
    # The health probe and the hold sweeper use the pool too: some connection may be in use at this moment.
    assert idle is not None and in_use is not None
    assert 0 < idle + in_use <= ledger_settings("").pool_size_max
    assert REGISTRY.get_sample_value("ledger_db_pool_waiting") == 0


# --- the pool collector -------------------------------------------------------------------------


@pytest.fixture
def collector() -> Iterator[tuple[DatabasePoolCollector, CollectorRegistry]]:
    """A collector of its own in a registry of its own, so the process-wide one is left alone."""
    registry = CollectorRegistry()
    own = DatabasePoolCollector()
    registry.register(own)
    yield own, registry


@pytest.fixture
async def one_connection_pool(database_url) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=0, max_size=1, command_timeout=10)
    yield pool
    await pool.close()


async def test_waiting_acquirers_are_counted_while_the_pool_is_exhausted(collector, one_connection_pool) -> None:
    own, registry = collector
    own.watch(one_connection_pool)
    held = await one_connection_pool.acquire()
    waiters = [asyncio.ensure_future(one_connection_pool.fetchval("SELECT 1")) for _ in range(WAITERS)]
    try:
        for _ in range(int(WAIT_SECONDS_MAX / 0.01)):
            if registry.get_sample_value("ledger_db_pool_waiting") == WAITERS:
                break
            await asyncio.sleep(0.01)
        assert registry.get_sample_value("ledger_db_pool_waiting") == WAITERS
        assert registry.get_sample_value("ledger_db_pool_connections", {"state": "in_use"}) == 1
        assert registry.get_sample_value("ledger_db_pool_connections", {"state": "idle"}) == 0
        assert registry.get_sample_value("ledger_db_pool_size_max") == 1
    finally:
        await one_connection_pool.release(held)
    assert await asyncio.gather(*waiters) == [1] * WAITERS
    assert registry.get_sample_value("ledger_db_pool_waiting") == 0
    assert registry.get_sample_value("ledger_db_pool_connections", {"state": "in_use"}) == 0
    assert registry.get_sample_value("ledger_db_pool_connections", {"state": "idle"}) == 1


async def test_a_cancelled_acquirer_stops_waiting(collector, one_connection_pool) -> None:
    own, registry = collector
    own.watch(one_connection_pool)
    async with one_connection_pool.acquire():
        waiter = asyncio.ensure_future(one_connection_pool.fetchval("SELECT 1"))
        await asyncio.sleep(0.05)
        assert registry.get_sample_value("ledger_db_pool_waiting") == 1
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert registry.get_sample_value("ledger_db_pool_waiting") == 0


def test_without_a_pool_the_families_exist_without_samples(collector) -> None:
    own, registry = collector
    names = {family.name for family in own.describe()}
    assert names == {"ledger_db_pool_connections", "ledger_db_pool_size_max", "ledger_db_pool_waiting"}
    assert all(family.samples == [] for family in own.collect())
    assert registry.get_sample_value("ledger_db_pool_size_max") is None


async def test_unwatching_another_pool_keeps_the_watched_one(collector, one_connection_pool) -> None:
    own, registry = collector
    own.watch(one_connection_pool)
    own.unwatch(object())
    assert registry.get_sample_value("ledger_db_pool_size_max") == 1
    own.unwatch(one_connection_pool)
    assert registry.get_sample_value("ledger_db_pool_size_max") is None


class _BrokenPool:
    def get_idle_size(self) -> int:
        raise RuntimeError("pool in an odd state")


class _PoolWithoutQueue:
    """A pool of a future asyncpg that no longer has the internal queue."""

    def get_idle_size(self) -> int:
        return 2

    def get_size(self) -> int:
        return 3

    def get_max_size(self) -> int:
        return 10


def test_a_failed_reading_drops_the_samples_not_the_scrape(collector) -> None:
    own, registry = collector
    own.watch(_BrokenPool())
    assert all(family.samples == [] for family in own.collect())
    assert registry.get_sample_value("ledger_db_pool_size_max") is None


def test_waiting_is_omitted_not_zero_when_the_pool_hides_its_queue(collector) -> None:
    own, registry = collector
    own.watch(_PoolWithoutQueue())
    assert registry.get_sample_value("ledger_db_pool_connections", {"state": "in_use"}) == 1
    assert registry.get_sample_value("ledger_db_pool_size_max") == 10
    assert registry.get_sample_value("ledger_db_pool_waiting") is None
