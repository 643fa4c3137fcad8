"""Property test of credit grants: random sequences of grants (categories, priorities, expiries), debits,
purchases with refunds, and time passing with the sweeper writing expiries keep every invariant of the journal
and the grants (tests/ledger/grant_helpers.py), and a model of what can be spent predicts each debit's answer.

Each example is a fresh user on a ledger whose clock the test drives; hypothesis drives a sync test and each
example runs on the session's event loop, as tests/ledger/accounts/test_property.py does.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from credits.ledger.v1 import ledger_service_pb2 as pb
from services.ledger.client import LedgerClient
from tests.conftest import ALL_ROLES_TOKEN
from tests.ledger.grant_helpers import PAID, PROMOTIONAL, assert_grants_consistent, grant_request, sweep
from tests.ledger.helpers import call, debit_request
from tests.ledger.payment_helpers import MEDIUM_AMOUNT_MINOR, Ids, details, source

MAX_EXAMPLES = 40
HOUR = timedelta(hours=1)

operation = st.one_of(
    st.tuples(
        st.just("grant"),
        st.integers(min_value=1, max_value=80),
        st.sampled_from([10, 50, 90]),
        st.sampled_from([None, 1, 2, 5]),  # hours until it expires
        st.sampled_from([PAID, PROMOTIONAL]),
    ),
    st.tuples(st.just("debit"), st.integers(min_value=1, max_value=120)),
    st.tuples(st.just("advance"), st.integers(min_value=1, max_value=3)),  # hours; then the sweeper runs
    st.tuples(st.just("purchase")),
    st.tuples(st.just("refund"), st.integers(min_value=1, max_value=MEDIUM_AMOUNT_MINOR)),
)


@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(operation, min_size=1, max_size=14))
def test_random_grant_histories_keep_every_invariant(session_loop, clocked_ledger, db, steps):
    session_loop.run_until_complete(_run(clocked_ledger, db, steps))


async def _run(clocked_ledger, db, steps) -> None:
    stub, clock = clocked_ledger.stub, clocked_ledger.clock
    user_id = f"prop-{uuid.uuid4().hex}"
    purchase: Ids | None = None
    refunded = 0
    async with LedgerClient(f"127.0.0.1:{clocked_ledger.server.port}", ALL_ROLES_TOKEN) as ledger:
        for step in steps:
            if step[0] == "grant":
                _, amount, priority, hours, category = step
                expires = clock.now + hours * HOUR if hours else None
                await call(stub.Credit, grant_request(user_id, amount, expires=expires, priority=priority,
                                                       category=category))
            elif step[0] == "debit":
                spendable = await _spendable(stub, user_id)
                try:
                    await call(stub.Debit, debit_request(user_id, step[1]))
                    assert step[1] <= spendable, (step, spendable)
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION, exc
                    assert step[1] > spendable, (step, spendable)
            elif step[0] == "advance":
                clock.advance(step[1] * HOUR.total_seconds())
                await sweep(db, clock.now)
            elif step[0] == "purchase":
                purchase, refunded = Ids.new(), 0
                await ledger.open_payment(details(user_id, session=purchase.session))
                priced = details(user_id, session=purchase.session, intent=purchase.intent, charge=purchase.charge)
                priced.grant_valid_days = 1
                await ledger.settle_payment(priced, source())
            elif step[0] == "refund" and purchase is not None:
                refunded = min(MEDIUM_AMOUNT_MINOR, refunded + step[1])
                await ledger.apply_refund(
                    details(user_id, intent=purchase.intent, charge=purchase.charge, priced=False),
                    refunded,
                    source("charge.refunded"),
                )
            await assert_grants_consistent(db, user_id, debt_allowed=True)
        await sweep(db, clock.now)
        final = await call(stub.GetBalance, pb.GetBalanceRequest(user_id=user_id))
        stored = await assert_grants_consistent(db, user_id, debt_allowed=True)
        assert final.balance == stored  # once swept, nothing expired is left to subtract
        assert final.balance == sum(grant.remaining for grant in final.grants) - final.debt
        assert final.debt == 0 or not final.grants  # debt only where every grant is spent


async def _spendable(stub, user_id: str) -> int:
    answer = await call(stub.GetBalance, pb.GetBalanceRequest(user_id=user_id))
    return answer.available
