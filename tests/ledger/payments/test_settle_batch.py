"""SettlePaymentBatch through real gRPC on real PostgreSQL: each request answered exactly as SettlePayment
alone would answer it (refusals included, each its own), the valid ones settled in one statement; a
redelivery inside a batch is a duplicate of its original; batches in opposite user orders never deadlock;
an outage answers the call UNAVAILABLE and its retry applies each settlement once; sizes are bounded."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest

from credits.ledger.v1 import ledger_service_pb2 as pb
from credits.ledger.v1 import ledger_service_pb2_grpc as pb_grpc
from services.ledger import app, errors
from services.ledger.payments.batch import settle_each
from services.ledger.payments.domain import EventSource, PaymentDetails, Price, Settled
from services.ledger.payments.store import PaymentsStore
from services.ledger.payments.validation import SETTLE_BATCH_REQUESTS_MAX
from tests.conftest import ROLE_TOKENS, ledger_settings
from tests.ledger.helpers import (
    Refusal,
    assert_journal_consistent,
    assert_refusal,
    call,
    credit_request,
    parse_refusal,
    refusal,
    wait_for_health,
    wait_for_lock_waiters,
)
from tests.ledger.payment_helpers import MEDIUM_AMOUNT_MINOR, MEDIUM_CREDITS, Ids, details, source, stripe_id
from tests.ledger.tcp_proxy import TcpProxy, through_proxy, upstream_of

INVALID = grpc.StatusCode.INVALID_ARGUMENT
OUTAGE_COMMAND_TIMEOUT_SECONDS = 3.0


def new_user() -> str:
    return f"user-{uuid.uuid4().hex}"


def settle(user_id: str, ids: Ids, event: pb.EventSource, **changes: object) -> pb.SettlePaymentRequest:
    message = details(user_id, session=ids.session, intent=ids.intent)
    for name, value in changes.items():
        setattr(message, name, value)
    return pb.SettlePaymentRequest(details=message, source=event)


def outcome(result: pb.SettlePaymentResult) -> tuple[object, ...]:
    """What a result says, without the ids that differ between two runs of one scenario."""
    if result.WhichOneof("result") == "refusal":
        refused = result.refusal
        field = refused.field.partition("].")[2] if refused.field.startswith("requests[") else refused.field
        return ("refused", grpc.StatusCode(_code(refused.code)), refused.reason, field)
    settled = result.settled
    return ("settled", settled.credited, settled.duplicate_event, settled.transaction.delta, settled.payment.status)


def _code(number: int) -> tuple[int, str]:
    return next(code.value for code in grpc.StatusCode if code.value[0] == number)


def alone_outcome(response: pb.SettlePaymentResponse | None, refused: Refusal | None) -> tuple[object, ...]:
    if response is None:
        assert refused is not None
        field = refused.field_violations[0].field if refused.field_violations else ""
        return ("refused", refused.code, refused.reason, field)
    return ("settled", response.credited, response.duplicate_event, response.transaction.delta, response.payment.status)


@dataclass
class Scenario:
    """One batch's worth of settlements on fresh users; built twice, once per way of sending it."""

    users: list[str]
    requests: list[pb.SettlePaymentRequest]


async def mixed_scenario(stub: pb_grpc.LedgerServiceStub) -> Scenario:
    buyer, other, anonymized = new_user(), new_user(), new_user()
    await call(stub.Anonymize, pb.AnonymizeRequest(user_id=anonymized))
    ids = Ids.new()
    first = source()
    requests = [
        settle(buyer, ids, first),
        settle(other, Ids.new(), source()),
        settle(buyer, ids, first),  # Stripe redelivered it into the same batch: a duplicate
        settle(buyer, ids, source(), payment_intent_id=stripe_id("pi")),  # another intent: conflict
        settle(buyer, ids, source(event_id=first.event_id, payload="tampered")),  # same event id, other data
        settle("", Ids.new(), source()),  # no user: invalid, refused before the database
        settle(anonymized, Ids.new(), source()),  # paid, not credited: refund it
        settle(other, Ids.new(), source(), currency_code="EUR"),  # invalid currency
        pb.SettlePaymentRequest(details=details(other), source=source()),  # no payment id at all
        settle(other, Ids.new(), source()),
    ]
    return Scenario(users=[buyer, other, anonymized], requests=requests)


async def test_a_mixed_batch_answers_each_request_as_settle_payment_alone_would(stub, db):
    batched = await mixed_scenario(stub)
    alone = await mixed_scenario(stub)

    response = await call(stub.SettlePaymentBatch, pb.SettlePaymentBatchRequest(requests=batched.requests))
    alone_outcomes = []
    for request in alone.requests:
        try:
            alone_outcomes.append(alone_outcome(await call(stub.SettlePayment, request), None))
        except grpc.aio.AioRpcError as exc:
            alone_outcomes.append(alone_outcome(None, parse_refusal(exc)))

    assert len(response.results) == len(batched.requests)
    assert [outcome(result) for result in response.results] == alone_outcomes
    kinds = [outcome(result)[0:3] for result in response.results]
    assert kinds[0] == ("settled", True, False) and kinds[1] == ("settled", True, False)
    assert kinds[2] == ("settled", False, True)
    assert [kind[2] for kind in kinds[3:9]] == [
        "ALREADY_EXISTS",
        "EVENT_PAYLOAD_MISMATCH",
        "INVALID_ARGUMENT",
        "PURCHASE_ON_ANONYMIZED_ACCOUNT",
        "INVALID_ARGUMENT",
        "INVALID_ARGUMENT",
    ]
    assert kinds[9] == ("settled", True, False)
    duplicate, original = response.results[2].settled, response.results[0].settled
    assert duplicate.transaction == original.transaction
    for index, field in ((5, "details.user_id"), (7, "details.currency_code"), (8, "details.payment_intent_id")):
        assert response.results[index].refusal.field == f"requests[{index}].{field}"
        assert response.results[index].refusal.metadata["field"] == f"requests[{index}].{field}"
        assert response.results[index].refusal.code == INVALID.value[0]
    for scenario in (batched, alone):
        buyer, other, anonymized = scenario.users
        assert await assert_journal_consistent(db, buyer) == MEDIUM_CREDITS
        assert await assert_journal_consistent(db, other) == 2 * MEDIUM_CREDITS
        # The anonymized account's purchase is recorded PAID, not credited, in both ways.
        rows = await db.fetch("SELECT status FROM payments WHERE user_id = $1", anonymized)
        assert [row["status"] for row in rows] == ["PAID"]


async def test_every_answer_of_a_batch_is_durable_when_the_call_answers(stub, db):
    users = [new_user() for _ in range(5)]
    requests = [settle(user, Ids.new(), source()) for user in users]

    response = await call(stub.SettlePaymentBatch, pb.SettlePaymentBatchRequest(requests=requests))

    for user, result in zip(users, response.results, strict=True):
        row = await db.fetchrow("SELECT status, credit_transaction_id FROM payments WHERE user_id = $1", user)
        assert (row["status"], row["credit_transaction_id"]) == ("CREDITED", result.settled.transaction.id)
    # The same batch again: every settlement is a duplicate of its original, nothing credited twice.
    again = await call(stub.SettlePaymentBatch, pb.SettlePaymentBatchRequest(requests=requests))
    for first, second in zip(response.results, again.results, strict=True):
        assert second.settled.duplicate_event and not second.settled.credited
        assert second.settled.transaction == first.settled.transaction
    for user in users:
        assert await assert_journal_consistent(db, user) == MEDIUM_CREDITS


async def test_concurrent_batches_in_opposite_user_orders_never_deadlock(stub, db):
    users = [new_user() for _ in range(8)]

    async def batch(order: list[str]) -> pb.SettlePaymentBatchResponse:
        requests = [settle(user, Ids.new(), source()) for user in order]
        return await call(stub.SettlePaymentBatch, pb.SettlePaymentBatchRequest(requests=requests))

    responses = await asyncio.gather(*(batch(users if index % 2 else users[::-1]) for index in range(16)))

    for response in responses:
        assert all(result.settled.credited for result in response.results)
    for user in users:
        assert await assert_journal_consistent(db, user) == 16 * MEDIUM_CREDITS


@pytest.mark.parametrize(
    ("count", "accepted"),
    [
        pytest.param(0, False, id="empty"),
        pytest.param(1, True, id="one"),
        pytest.param(SETTLE_BATCH_REQUESTS_MAX, True, id="at-the-limit"),
        pytest.param(SETTLE_BATCH_REQUESTS_MAX + 1, False, id="over-the-limit"),
    ],
)
async def test_a_batch_holds_one_to_a_thousand_settlements(stub, db, count, accepted):
    user = new_user()
    requests = [settle(user, Ids.new(), source()) for _ in range(count)]
    request = pb.SettlePaymentBatchRequest(requests=requests)

    if accepted:
        response = await call(stub.SettlePaymentBatch, request)
        assert len(response.results) == count
        assert all(result.settled.credited for result in response.results)
        assert await assert_journal_consistent(db, user) == count * MEDIUM_CREDITS
    else:
        refused = await refusal(stub.SettlePaymentBatch, request)
        assert_refusal(refused, INVALID, "INVALID_ARGUMENT")
        assert refused.field_violations[0].field == "requests"
        assert await db.fetchval("SELECT count(*) FROM payments WHERE user_id = $1", user) == 0


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        pytest.param("payments", True, id="payments"),
        pytest.param("reconciler", True, id="reconciler"),
        pytest.param("reader", False, id="reader"),
        pytest.param("spender", False, id="spender"),
        pytest.param("admin", False, id="admin"),
    ],
)
async def test_settle_payment_batch_is_for_the_payment_writers(stub, role, allowed):
    request = pb.SettlePaymentBatchRequest(requests=[settle(new_user(), Ids.new(), source())])
    if allowed:
        assert (await call(stub.SettlePaymentBatch, request, ROLE_TOKENS[role])).results[0].settled.credited
    else:
        refused = await refusal(stub.SettlePaymentBatch, request, ROLE_TOKENS[role])
        assert_refusal(refused, grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")


# --- a statement that fails as a whole -----------------------------------------------------------


MEDIUM = Price(package_id="medium", credits=MEDIUM_CREDITS, amount_minor=MEDIUM_AMOUNT_MINOR, currency_code="eur")


def purchase(user_id: str, **changes: str) -> tuple[PaymentDetails, EventSource]:
    ids = Ids.new()
    fields = {"checkout_session_id": ids.session, "payment_intent_id": ids.intent, **changes}
    event = source()
    return (
        PaymentDetails(user_id=user_id, price=MEDIUM, **fields),  # type: ignore[arg-type]
        EventSource(event_id=event.event_id, event_type=event.event_type, payload_sha256=event.payload_sha256),
    )


async def test_a_statement_that_raises_is_settled_one_by_one(ledger_server, db):
    """A session id longer than the table's CHECK (the RPC's validation refuses it first) aborts the
    statement; each settlement is then applied alone and only the offending one is refused."""
    good, bad = new_user(), new_user()
    answers = await settle_each(
        PaymentsStore(ledger_server.database), [purchase(good), purchase(bad, checkout_session_id="cs_" + "x" * 300)]
    )

    assert isinstance(answers[0], Settled) and answers[0].credited
    assert isinstance(answers[1], errors.Internal)
    assert await assert_journal_consistent(db, good) == MEDIUM_CREDITS
    assert await db.fetchval("SELECT count(*) FROM payments WHERE user_id = $1", bad) == 0


# --- outages -------------------------------------------------------------------------------------


@dataclass
class ProxiedLedger:
    proxy: TcpProxy
    channel: grpc.aio.Channel
    stub: pb_grpc.LedgerServiceStub


@pytest.fixture
async def proxied(database_url: str) -> AsyncIterator[ProxiedLedger]:
    proxy = TcpProxy(*upstream_of(database_url))
    await proxy.start()
    settings = ledger_settings(
        through_proxy(database_url, proxy.port), command_timeout_seconds=OUTAGE_COMMAND_TIMEOUT_SECONDS
    )
    server = await app.start(settings)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        await wait_for_health(channel, serving=True)
        yield ProxiedLedger(proxy=proxy, channel=channel, stub=pb_grpc.LedgerServiceStub(channel))
    finally:
        await channel.close()
        await server.stop(grace_seconds=1.0)
        await proxy.close()


async def test_an_outage_is_unavailable_for_the_call_and_its_retry_settles_each_once(proxied, db):
    users = [new_user() for _ in range(4)]
    request = pb.SettlePaymentBatchRequest(requests=[settle(user, Ids.new(), source()) for user in users])
    proxied.proxy.cut()

    refused = await refusal(proxied.stub.SettlePaymentBatch, request)

    assert_refusal(refused, grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE")
    proxied.proxy.restore()
    await wait_for_health(proxied.channel, serving=True)
    retry = await call(proxied.stub.SettlePaymentBatch, request)
    assert all(result.settled.credited for result in retry.results)
    again = await call(proxied.stub.SettlePaymentBatch, request)
    assert all(result.settled.duplicate_event for result in again.results)
    for user in users:
        assert await assert_journal_consistent(db, user) == MEDIUM_CREDITS


@pytest.mark.not_on_citus("waits for the call to block in the coordinator's pg_locks; on Citus it blocks on the worker")
async def test_a_batch_in_flight_when_the_database_goes_away_is_unavailable_and_its_retry_applies_once(proxied, db):
    users = sorted(new_user() for _ in range(4))  # the batch locks them in this order: the last one waits
    await call(proxied.stub.Credit, credit_request(users[-1], 1))
    request = pb.SettlePaymentBatchRequest(requests=[settle(user, Ids.new(), source()) for user in users])
    async with db.acquire() as blocker:
        # Hold the last user's account so that the batch waits inside the database (its first users locked).
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute("SELECT 1 FROM accounts WHERE user_id = $1 FOR UPDATE", users[-1])
        in_flight = asyncio.ensure_future(refusal(proxied.stub.SettlePaymentBatch, request))
        await wait_for_lock_waiters(db, 1)
        proxied.proxy.cut()
        refused = await in_flight
        await transaction.rollback()
    assert_refusal(refused, grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE")

    proxied.proxy.restore()
    await wait_for_health(proxied.channel, serving=True)
    # PostgreSQL may have committed the cut batch (its backend got the lock once the blocker rolled back,
    # and learns of the lost client only when it answers): the retry tells, and each applies exactly once.
    retry = await call(proxied.stub.SettlePaymentBatch, request)
    committed = {result.settled.duplicate_event for result in retry.results}
    assert len(committed) == 1, "one transaction: all or none of the cut batch committed"
    for user, result in zip(users, retry.results, strict=True):
        assert result.settled.credited is not result.settled.duplicate_event
        entries = await db.fetch("SELECT id FROM credit_transactions WHERE user_id = $1 AND kind = 'purchase'", user)
        assert [entry["id"] for entry in entries] == [result.settled.transaction.id]
    for user in users[:-1]:
        assert await assert_journal_consistent(db, user) == MEDIUM_CREDITS
    assert await assert_journal_consistent(db, users[-1]) == MEDIUM_CREDITS + 1
