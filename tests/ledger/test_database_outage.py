"""Database unreachable: every RPC answers UNAVAILABLE (never a stack trace), health goes
NOT_SERVING, the service keeps running, and it recovers when the database comes back.

A second in-process ledger talks to the test database through tests/ledger/tcp_proxy.py,
which the test uses to cut the database away and give it back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import grpc
import pytest

from credits.ledger.v1 import ledger_service_pb2 as pb
from credits.ledger.v1 import ledger_service_pb2_grpc as pb_grpc
from services.ledger import app, errors
from services.ledger.client import LedgerClient
from services.ledger.database import translate_database_error
from tests.conftest import ALL_ROLES_TOKEN, ledger_settings, new_key
from tests.ledger.helpers import (
    adjust_request,
    assert_journal_consistent,
    assert_refusal,
    call,
    credit_request,
    debit_request,
    refusal,
    wait_for_health,
    wait_for_lock_waiters,
)
from tests.ledger.hold_helpers import assert_holds_consistent, capture_request, reserve_request
from tests.ledger.tcp_proxy import TcpProxy, through_proxy, upstream_of

COMMAND_TIMEOUT_SECONDS = 3.0
RECOVERY_ATTEMPTS_MAX = 50


@dataclass
class ProxiedLedger:
    proxy: TcpProxy
    server: app.LedgerServer
    channel: grpc.aio.Channel
    stub: pb_grpc.LedgerServiceStub


@pytest.fixture
async def proxied_ledger(database_url: str) -> AsyncIterator[ProxiedLedger]:
    proxy = TcpProxy(*upstream_of(database_url))
    await proxy.start()
    server = await app.start(
        ledger_settings(through_proxy(database_url, proxy.port), command_timeout_seconds=COMMAND_TIMEOUT_SECONDS)
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        await wait_for_health(channel, serving=True)
        yield ProxiedLedger(proxy=proxy, server=server, channel=channel, stub=pb_grpc.LedgerServiceStub(channel))
    finally:
        await channel.close()
        await server.stop(grace_seconds=1.0)
        await proxy.close()


def every_rpc(user_id: str, key: str) -> dict[str, tuple[str, object]]:
    return {
        "GetBalance": ("GetBalance", pb.GetBalanceRequest(user_id=user_id)),
        "Credit": ("Credit", credit_request(user_id, 5, key)),
        "Debit": ("Debit", debit_request(user_id, 1)),
        "ListTransactions": ("ListTransactions", pb.ListTransactionsRequest(user_id=user_id)),
        "AdminAdjust": ("AdminAdjust", adjust_request(user_id, 1)),
        "Anonymize": ("Anonymize", pb.AnonymizeRequest(user_id=user_id)),
        "ReserveCredits": ("ReserveCredits", reserve_request(user_id, 1)),
        "CaptureHold": ("CaptureHold", capture_request(user_id, 1)),
        "ReleaseHold": ("ReleaseHold", pb.ReleaseHoldRequest(user_id=user_id, hold_id=1)),
        "GetHold": ("GetHold", pb.GetHoldRequest(user_id=user_id, hold_id=1)),
        "ListHolds": ("ListHolds", pb.ListHoldsRequest(user_id=user_id)),
        "PostBatch": (
            "PostBatch",
            pb.PostBatchRequest(postings=[pb.BatchPosting(debit=debit_request(user_id, 1))], atomic=True),
        ),
    }


async def test_database_outage_is_unavailable_and_the_service_recovers(proxied_ledger, db, user_id):
    proxy, stub = proxied_ledger.proxy, proxied_ledger.stub
    await call(stub.Credit, credit_request(user_id, 100))
    assert proxy.open_connections > 0

    proxy.cut()

    key = new_key()
    for name, (method, request) in every_rpc(user_id, key).items():
        refused = await refusal(getattr(stub, method), request)
        assert_refusal(refused, grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE")
        assert "asyncpg" not in refused.message, name
        assert "retry" in refused.message, name
    assert proxy.connections_refused > 0  # the calls really tried the database
    await wait_for_health(proxied_ledger.channel, serving=False)
    await wait_for_health(proxied_ledger.channel, serving=False, service="credits.ledger.v1.LedgerService")

    proxy.restore()
    await wait_for_health(proxied_ledger.channel, serving=True)

    # The caller retries the refused Credit with the same key: it applies exactly once.
    response = await call(stub.Credit, credit_request(user_id, 5, key))
    assert response.replayed is False
    assert response.transaction.balance_after == 105
    replay = await call(stub.Credit, credit_request(user_id, 5, key))
    assert replay.replayed is True
    balance = await call(stub.GetBalance, pb.GetBalanceRequest(user_id=user_id))
    assert (balance.balance, balance.status) == (105, pb.ACCOUNT_STATUS_ACTIVE)
    assert await assert_journal_consistent(db, user_id) == 105


async def test_client_maps_outage_to_unavailable(proxied_ledger, user_id):
    proxied_ledger.proxy.cut()
    target = f"127.0.0.1:{proxied_ledger.server.port}"
    async with LedgerClient(target, ALL_ROLES_TOKEN, attempts_max=2) as client:
        with pytest.raises(errors.Unavailable) as raised:
            await client.credit(user_id, 1, new_key(), "grant")
        assert raised.value.code == grpc.StatusCode.UNAVAILABLE
        assert raised.value.reason == "UNAVAILABLE"
        await wait_for_health(proxied_ledger.channel, serving=False)
        assert await client.serving() is False
        proxied_ledger.proxy.restore()
        await wait_for_health(proxied_ledger.channel, serving=True)
        assert await client.serving() is True
        assert (await client.credit(user_id, 1, new_key(), "grant")).transaction.balance_after == 1


@pytest.mark.not_on_citus("waits for the call to block in the coordinator's pg_locks; on Citus it blocks on the worker")
async def test_call_in_flight_when_the_database_goes_away_is_unavailable_and_retry_applies_once(
    proxied_ledger, db, user_id
):
    proxy, stub = proxied_ledger.proxy, proxied_ledger.stub
    await call(stub.Credit, credit_request(user_id, 100))
    key = new_key()
    async with db.acquire() as blocker:
        # Hold the account row so that the Credit waits inside the database, then cut.
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute("SELECT 1 FROM accounts WHERE user_id = $1 FOR UPDATE", user_id)
        in_flight = asyncio.ensure_future(refusal(stub.Credit, credit_request(user_id, 7, key)))
        await wait_for_lock_waiters(db, 1)
        proxy.cut()
        refused = await in_flight
        await transaction.rollback()
    assert_refusal(refused, grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE")

    proxy.restore()
    await wait_for_health(proxied_ledger.channel, serving=True)
    # The database may or may not have committed the cut call: the retry tells, and applies once.
    retry = await call(stub.Credit, credit_request(user_id, 7, key))
    assert retry.transaction.balance_after == 107
    rows = await db.fetch(
        "SELECT id FROM credit_transactions WHERE user_id = $1 AND idempotency_key = $2", user_id, key
    )
    assert [row["id"] for row in rows] == [retry.transaction.id]
    assert await assert_journal_consistent(db, user_id) == 107


@pytest.mark.not_on_citus("waits for the call to block in the coordinator's pg_locks; on Citus it blocks on the worker")
async def test_a_batch_in_flight_when_the_database_goes_away_is_unavailable_and_its_retry_applies_once(
    proxied_ledger, db, user_id
):
    proxy, stub = proxied_ledger.proxy, proxied_ledger.stub
    other = f"{user_id}-other"
    await call(stub.Credit, credit_request(user_id, 100))
    batch = pb.PostBatchRequest(
        postings=[
            pb.BatchPosting(credit=credit_request(other, 9)),
            pb.BatchPosting(debit=debit_request(user_id, 30)),
            pb.BatchPosting(debit=debit_request(user_id, 500)),  # refused whatever happens
        ]
    )
    async with db.acquire() as blocker:
        # Hold one account row so that the batch waits inside the database, then cut.
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute("SELECT 1 FROM accounts WHERE user_id = $1 FOR UPDATE", user_id)
        in_flight = asyncio.ensure_future(refusal(stub.PostBatch, batch))
        await wait_for_lock_waiters(db, 1)
        proxy.cut()
        refused = await in_flight
        await transaction.rollback()
    assert_refusal(refused, grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE")
    assert "retry" in refused.message

    proxy.restore()
    await wait_for_health(proxied_ledger.channel, serving=True)
    # The database may or may not have committed the cut batch: the retry with the same keys tells, and applies once.
    retry = await call(stub.PostBatch, batch)
    outcomes = [result.outcome for result in retry.results]
    assert outcomes[2] == pb.POSTING_OUTCOME_REFUSED
    assert set(outcomes[:2]) <= {pb.POSTING_OUTCOME_APPLIED, pb.POSTING_OUTCOME_REPLAYED}
    again = await call(stub.PostBatch, batch)
    assert [result.outcome for result in again.results] == [
        pb.POSTING_OUTCOME_REPLAYED, pb.POSTING_OUTCOME_REPLAYED, pb.POSTING_OUTCOME_REFUSED,
    ]
    keys = [batch.postings[0].credit.idempotency_key, batch.postings[1].debit.idempotency_key]
    rows = await db.fetch("SELECT id FROM credit_transactions WHERE idempotency_key = ANY($1) ORDER BY id", keys)
    assert [row["id"] for row in rows] == sorted(result.transaction.id for result in retry.results[:2])
    assert await assert_journal_consistent(db, user_id) == 70
    assert await assert_journal_consistent(db, other) == 9


async def test_hold_calls_refused_by_an_outage_apply_once_when_retried(proxied_ledger, db, user_id):
    proxy, stub = proxied_ledger.proxy, proxied_ledger.stub
    await call(stub.Credit, credit_request(user_id, 100))
    reserve = reserve_request(user_id, 40)
    proxy.cut()
    assert_refusal(await refusal(stub.ReserveCredits, reserve), grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE")
    proxy.restore()
    await wait_for_health(proxied_ledger.channel, serving=True)

    hold = (await call(stub.ReserveCredits, reserve)).hold
    assert (await call(stub.ReserveCredits, reserve)).replayed is True
    capture = capture_request(user_id, hold.id, 15)
    proxy.cut()
    assert_refusal(await refusal(stub.CaptureHold, capture), grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE")
    proxy.restore()
    await wait_for_health(proxied_ledger.channel, serving=True)
    captured = await call(stub.CaptureHold, capture)
    replay = await call(stub.CaptureHold, capture)
    assert (captured.transaction, replay.replayed) == (replay.transaction, True)

    assert await assert_holds_consistent(db, user_id) == {"balance": 85, "held": 0}
    sweeper = proxied_ledger.server._sweeper  # the hold sweeper outlived the outages
    assert sweeper is not None
    assert not sweeper.done()


class AttemptRecorder(grpc.aio.UnaryUnaryClientInterceptor):
    """Records the outcome of every attempt the client makes."""

    def __init__(self) -> None:
        self.codes: list[grpc.StatusCode] = []

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        call = await continuation(client_call_details, request)
        self.codes.append(await call.code())
        return call


async def test_client_retry_through_an_outage_reuses_the_key_and_applies_once(proxied_ledger, db, user_id):
    proxy = proxied_ledger.proxy
    await call(proxied_ledger.stub.Credit, credit_request(user_id, 100))
    proxy.cut()
    target = f"127.0.0.1:{proxied_ledger.server.port}"
    attempts = AttemptRecorder()
    # Enough attempts (1 s apart at most) to outlast the outage below.
    async with LedgerClient(
        target, ALL_ROLES_TOKEN, attempts_max=60, deadline_seconds=10, interceptors=[attempts]
    ) as client:
        credit = asyncio.ensure_future(client.credit(user_id, 7, new_key(), "grant"))
        await wait_until(lambda: len(attempts.codes) >= 2)
        proxy.restore()
        response = await credit
    assert attempts.codes[:2] == [grpc.StatusCode.UNAVAILABLE] * 2
    assert attempts.codes[-1] == grpc.StatusCode.OK
    assert response.replayed is False
    assert response.transaction.balance_after == 107
    assert await assert_journal_consistent(db, user_id) == 107


WAIT_POLLS_MAX = 400


async def wait_until(condition) -> None:
    for _ in range(WAIT_POLLS_MAX):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition never held")


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(
            asyncpg.InternalClientError("cannot switch to state 12; another operation (2) is in progress"),
            id="connection-in-an-unusable-state",
        ),
        pytest.param(
            asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
            id="connection-closed-mid-operation",
        ),
        pytest.param(
            asyncpg.InternalServerError("failure on connection marked as essential: 127.0.0.1:9701"),
            id="citus-worker-lost-before-commit",
        ),
        pytest.param(
            asyncpg.InternalServerError("terminating connection due to unexpected postmaster exit"),
            id="citus-worker-died-mid-statement",
        ),
    ],
)
def test_a_broken_connection_is_unavailable_not_internal(failure):
    # Found by tests/faults: after a PostgreSQL restart asyncpg raised InternalClientError on a pooled
    # connection; it escaped the translation and the call was answered INTERNAL (a webhook 500). Citus says
    # XX000 for a worker lost mid-call (tests/citus/test_worker_kill.py).
    assert isinstance(translate_database_error(failure), errors.Unavailable)


def test_any_other_internal_error_stays_internal():
    # XX000 is Unavailable only for a lost connection; anything else is a bug to see, not a retry to make.
    failure = asyncpg.InternalServerError("cache lookup failed for relation 16384")
    assert isinstance(translate_database_error(failure), errors.Internal)
