"""The ledger's business and pool metrics (services/ledger/metrics.py).

- `record_entry`: direction by sign and kind, replays and zero moves count nothing, unknown kinds are `other`.
- Through a real ledger (app.py wires the pool, the servicers record entries): a purchase, its redelivery,
  a refund, a dispute and its win move the counters by exactly
  what the journal moved.
- `read_pool` / `record_pool`: in-use, idle, size and waiting acquirers of a real asyncpg pool, as the
  health probe reports them. With several workers: tests/observability/test_ledger_metrics_scrape.py.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from prometheus_client import REGISTRY

from credits.ledger.v1 import ledger_service_pb2 as pb
from services.ledger import app
from services.ledger import metrics as ledger_metrics
from services.ledger.accounts.domain import Kind
from services.ledger.accounts.server import KIND_TO_PROTO
from services.ledger.client import LedgerClient
from services.ledger.metrics import credit_direction, read_pool, record_entry, record_pool
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


def pool_samples() -> dict[str, float | None]:
    return {
        "in_use": REGISTRY.get_sample_value("ledger_db_pool_connections", {"state": "in_use"}),
        "idle": REGISTRY.get_sample_value("ledger_db_pool_connections", {"state": "idle"}),
        "size_max": REGISTRY.get_sample_value("ledger_db_pool_size_max"),
        "waiting": REGISTRY.get_sample_value("ledger_db_pool_waiting"),
    }


async def test_the_pool_of_a_running_ledger_is_reported(wired_ledger: LedgerClient) -> None:
    size_max = ledger_settings("").pool_size_max
    await wired_ledger.get_balance(f"user-{uuid.uuid4().hex}")  # At least one connection opened.
    # The health probe reports the pool once a second; another in-process ledger may have reported before.
    for _ in range(int(WAIT_SECONDS_MAX / 0.05)):
        samples = pool_samples()
        if samples["size_max"] == size_max and (samples["idle"] or 0) + (samples["in_use"] or 0) > 0:
            break
        await asyncio.sleep(0.05)
    assert samples["size_max"] == size_max
    in_use, idle = samples["in_use"], samples["idle"]
    # The health probe and the hold sweeper use the pool too: some connection may be in use at this moment.
    assert idle is not None and in_use is not None
    assert 0 < idle + in_use <= size_max
    assert samples["waiting"] == 0


# --- reading and reporting the pool -------------------------------------------------------------


@pytest.fixture
async def one_connection_pool(database_url) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=0, max_size=1, command_timeout=10)
    yield pool
    await pool.close()


async def test_waiting_acquirers_are_counted_while_the_pool_is_exhausted(one_connection_pool) -> None:
    held = await one_connection_pool.acquire()
    waiters = [asyncio.ensure_future(one_connection_pool.fetchval("SELECT 1")) for _ in range(WAITERS)]
    try:
        for _ in range(int(WAIT_SECONDS_MAX / 0.01)):
            if read_pool(one_connection_pool).waiting == WAITERS:
                break
            await asyncio.sleep(0.01)
        assert read_pool(one_connection_pool) == ledger_metrics.PoolStats(in_use=1, idle=0, size_max=1, waiting=WAITERS)
    finally:
        await one_connection_pool.release(held)
    assert await asyncio.gather(*waiters) == [1] * WAITERS
    assert read_pool(one_connection_pool) == ledger_metrics.PoolStats(in_use=0, idle=1, size_max=1, waiting=0)


async def test_a_cancelled_acquirer_stops_waiting(one_connection_pool) -> None:
    async with one_connection_pool.acquire():
        waiter = asyncio.ensure_future(one_connection_pool.fetchval("SELECT 1"))
        await asyncio.sleep(0.05)
        assert read_pool(one_connection_pool).waiting == 1
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert read_pool(one_connection_pool).waiting == 0


async def test_record_pool_sets_every_pool_gauge(one_connection_pool) -> None:
    async with one_connection_pool.acquire():
        record_pool(one_connection_pool)
        assert pool_samples() == {"in_use": 1.0, "idle": 0.0, "size_max": 1.0, "waiting": 0.0}
    record_pool(one_connection_pool)
    assert pool_samples() == {"in_use": 0.0, "idle": 1.0, "size_max": 1.0, "waiting": 0.0}


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


def test_a_failed_reading_keeps_the_previous_one() -> None:
    record_pool(_PoolWithoutQueue())
    before = pool_samples()
    record_pool(_BrokenPool())  # Does not raise: the health probe goes on.
    assert pool_samples() == before


def test_waiting_is_unknown_not_zero_when_the_pool_hides_its_queue() -> None:
    record_pool(_PoolWithoutQueue())
    samples = pool_samples()
    assert (samples["in_use"], samples["idle"], samples["size_max"]) == (1.0, 2.0, 10.0)
    assert samples["waiting"] is not None and math.isnan(samples["waiting"])


@pytest.mark.parametrize(
    ("gauge", "mode"),
    [
        (ledger_metrics.DATABASE_UP, "livemin"),
        (ledger_metrics.POOL_CONNECTIONS, "livesum"),
        (ledger_metrics.POOL_SIZE_MAX, "livesum"),
        (ledger_metrics.POOL_WAITING, "livesum"),
    ],
    ids=lambda value: getattr(value, "_name", value),
)
def test_each_gauge_says_how_the_workers_values_combine(gauge, mode) -> None:
    assert gauge._multiprocess_mode == mode
