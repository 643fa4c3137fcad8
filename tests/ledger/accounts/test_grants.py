"""Credit grants through real gRPC and PostgreSQL: burn order, expiry (seen at once, written once by the
sweeper), holds across expiring grants, clawbacks of a purchase's own grant, debt, anonymized accounts, and the
refusals of bad grant fields (migrations/versions/0011_credit_grants.py, docs/grants.md)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest

from credits.ledger.v1 import ledger_service_pb2 as pb
from tests.conftest import new_key
from tests.ledger.grant_helpers import (
    PAID,
    PROMOTIONAL,
    assert_grants_consistent,
    grant_request,
    remainders,
    sweep,
    ts,
)
from tests.ledger.helpers import (
    adjust_request,
    assert_refusal,
    call,
    credit_request,
    debit_request,
    journal,
    refusal,
)
from tests.ledger.hold_helpers import capture_request, reserve_request
from tests.ledger.payment_helpers import Ids, details, source

PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
INVALID = grpc.StatusCode.INVALID_ARGUMENT
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)


def soon(days: float) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) + timedelta(days=days)


async def balance(stub, user_id: str) -> pb.GetBalanceResponse:
    return await call(stub.GetBalance, pb.GetBalanceRequest(user_id=user_id))


async def test_debits_burn_by_priority_then_soonest_expiry_then_age(stub, db, user_id):
    # Given in this order: ids (and so age) follow it.
    await call(stub.Credit, grant_request(user_id, 10))  # 1: priority 50, never expires (burns last)
    await call(stub.Credit, grant_request(user_id, 10, expires=soon(60)))  # 2: expires later
    await call(stub.Credit, grant_request(user_id, 10, expires=soon(30)))  # 3: expires first (tie with 5)
    await call(stub.Credit, grant_request(user_id, 10, priority=10))  # 4: a lower priority burns first of all
    # 5: same priority and expiry as 3, younger (paid: credits alike would add to 3's grant)
    await call(stub.Credit, grant_request(user_id, 10, expires=soon(30), category=PAID))

    listed = await balance(stub, user_id)
    assert [grant.remaining for grant in listed.grants] == [10] * 5
    order = [grant.id for grant in listed.grants]
    ids = sorted(order)
    assert order == [ids[3], ids[2], ids[4], ids[1], ids[0]]

    spanning = await call(stub.Debit, debit_request(user_id, 25))  # all of 4 and 3, half of 5
    assert spanning.transaction.balance_after == 25
    assert await remainders(db, user_id) == [(10, 10), (10, 10), (10, 0), (10, 0), (10, 5)]
    moved = await db.fetch(
        "SELECT grant_id, delta FROM grant_movements WHERE user_id = $1 AND transaction_id = $2 ORDER BY id",
        user_id,
        spanning.transaction.id,
    )
    assert [(row["grant_id"], row["delta"]) for row in moved] == [(ids[3], -10), (ids[2], -10), (ids[4], -5)]

    await call(stub.Debit, debit_request(user_id, 12))  # the rest of 5, then 2
    assert await remainders(db, user_id) == [(10, 10), (10, 3), (10, 0), (10, 0), (10, 0)]
    after = await balance(stub, user_id)
    assert [(grant.id, grant.remaining) for grant in after.grants] == [(ids[1], 3), (ids[0], 10)]
    assert await assert_grants_consistent(db, user_id) == 13


async def test_credits_alike_add_to_one_grant_and_purchases_never_do(ledger, stub, db, user_id):
    first = await call(stub.Credit, grant_request(user_id, 10))
    await call(stub.Credit, grant_request(user_id, 15))  # alike: promotional, 50, never expires
    await call(stub.AdminAdjust, adjust_request(user_id, 5))  # alike too
    await call(stub.Credit, grant_request(user_id, 20, priority=49))  # another priority: a grant of its own
    await call(stub.Debit, debit_request(user_id, 25))  # all of the priority-49 grant, 5 of the others
    await call(stub.Credit, grant_request(user_id, 4))  # adds to the grant that has something left
    listed = await balance(stub, user_id)
    assert [(g.amount, g.remaining, g.priority, g.transaction_id) for g in listed.grants] == [
        (34, 29, 50, first.transaction.id),
    ]
    for _ in range(2):
        ids = Ids.new()
        await ledger.open_payment(details(user_id, session=ids.session))
        paid_ids = details(user_id, session=ids.session, intent=ids.intent, charge=ids.charge)
        await ledger.settle_payment(paid_ids, source())
    paid = [g for g in (await balance(stub, user_id)).grants if g.category == PAID]
    assert [(g.amount, g.remaining) for g in paid] == [(550, 550), (550, 550)]
    assert len({g.payment_id for g in paid}) == 2
    assert await assert_grants_consistent(db, user_id) == 1129


async def test_get_balance_lists_the_grants_with_something_left_and_the_next_expiry(stub, db, user_id):
    first, later = soon(10), soon(20)
    await call(stub.Credit, grant_request(user_id, 40, expires=later, category=PAID, priority=70))
    await call(stub.Credit, grant_request(user_id, 15, expires=first))
    await call(stub.Credit, grant_request(user_id, 5, expires=first, category=PAID))
    await call(stub.Credit, grant_request(user_id, 7))
    await call(stub.Debit, debit_request(user_id, 5))  # the 15 expiring first, oldest of the two

    answer = await balance(stub, user_id)

    assert (answer.balance, answer.available, answer.debt) == (62, 62, 0)
    assert [(g.remaining, g.amount, g.category, g.priority) for g in answer.grants] == [
        (10, 15, PROMOTIONAL, 50),
        (5, 5, PAID, 50),
        (7, 7, PROMOTIONAL, 50),
        (40, 40, PAID, 70),
    ]
    assert answer.grants[3].expire_time == ts(later)
    assert not answer.grants[2].HasField("expire_time")
    assert answer.grants[0].transaction_id > 0 and answer.grants[0].create_time.seconds > 0
    assert answer.next_expire_time == ts(first)
    assert answer.next_expiring_amount == 15
    await call(stub.Debit, debit_request(user_id, 62))
    spent = await balance(stub, user_id)
    assert (spent.balance, list(spent.grants), spent.HasField("next_expire_time"), spent.next_expiring_amount) == (
        0, [], False, 0,
    )


async def test_expired_credits_count_for_nothing_at_once_and_the_sweeper_writes_them_once(clocked_ledger, db):
    stub, clock = clocked_ledger.stub, clocked_ledger.clock
    user_id = f"user-{uuid.uuid4().hex}"
    expires = clock.now + DAY
    await call(stub.Credit, grant_request(user_id, 100, expires=expires))
    await call(stub.Credit, grant_request(user_id, 50))
    await call(stub.Debit, debit_request(user_id, 30))  # from the expiring grant (soonest expiry first)

    clock.advance(DAY.total_seconds() - 1)
    assert (await balance(stub, user_id)).balance == 120
    clock.advance(1)  # exactly the expiry: its rest is gone for reads and spends, written or not
    seen = await balance(stub, user_id)
    assert (seen.balance, seen.available, [g.remaining for g in seen.grants]) == (50, 50, [50])
    refused = await refusal(stub.Debit, debit_request(user_id, 51))
    assert_refusal(refused, PRECONDITION, "INSUFFICIENT_CREDITS")
    assert refused.metadata["balance"] == "50"

    await sweep(db, clock.now)
    await sweep(db, clock.now)  # a second sweep (or the clocked ledger's own sweeper) finds nothing more
    expiries = [row for row in await journal(db, user_id) if row["kind"] == "expiry"]
    assert [(row["delta"], row["balance_after"]) for row in expiries] == [(-70, 50)]
    assert expiries[0]["idempotency_key"].startswith("grant:")
    listed = await call(stub.ListTransactions, pb.ListTransactionsRequest(user_id=user_id))
    assert listed.transactions[0].kind == pb.TRANSACTION_KIND_EXPIRY
    assert (await balance(stub, user_id)).balance == 50
    assert await call(stub.Debit, debit_request(user_id, 50))
    assert await assert_grants_consistent(db, user_id) == 0


async def test_a_fully_spent_grant_expires_nothing(clocked_ledger, db):
    stub, clock = clocked_ledger.stub, clocked_ledger.clock
    user_id = f"user-{uuid.uuid4().hex}"
    await call(stub.Credit, grant_request(user_id, 20, expires=clock.now + DAY))
    await call(stub.Debit, debit_request(user_id, 20))
    clock.advance(2 * DAY.total_seconds())
    await sweep(db, clock.now)
    assert [row["kind"] for row in await journal(db, user_id)] == ["grant", "spend"]
    assert await assert_grants_consistent(db, user_id) == 0


SWEEP_USERS = 30
CONCURRENT_SWEEPERS = 6


async def test_sweepers_of_several_workers_expire_each_grant_exactly_once(clocked_ledger, db, database_url):
    stub, clock = clocked_ledger.stub, clocked_ledger.clock
    users = [f"user-{uuid.uuid4().hex}" for _ in range(SWEEP_USERS)]
    for index, user in enumerate(users):
        await call(stub.Credit, grant_request(user, 10 + index, expires=clock.now + DAY))
        await call(stub.Credit, grant_request(user, 5, expires=clock.now + 2 * DAY))
        await call(stub.Credit, grant_request(user, 1))
    clock.advance(3 * DAY.total_seconds())

    async def sweeper() -> int:
        conn = await asyncpg.connect(database_url)
        try:
            grants = 0
            while True:  # small batches, as a worker loops while its batches are full
                row = await conn.fetchrow("SELECT * FROM ledger_expire_grants($1, 7)", clock.now)
                grants += row["grants"]
                if row["grants"] == 0 and not await conn.fetchval(
                    "SELECT count(*) FROM credit_grants WHERE user_id = ANY($1) AND remaining > reserved"
                    " AND expires_at <= $2",
                    users,
                    clock.now,
                ):
                    return grants
        finally:
            await conn.close()

    await asyncio.gather(*(sweeper() for _ in range(CONCURRENT_SWEEPERS)))

    rows = await db.fetch(
        "SELECT t.user_id, m.grant_id, count(*) AS entries FROM credit_transactions t"
        " JOIN grant_movements m ON m.user_id = t.user_id AND m.transaction_id = t.id"
        " WHERE t.kind = 'expiry' AND t.user_id = ANY($1) GROUP BY t.user_id, m.grant_id",
        users,
    )
    assert len(rows) == 2 * SWEEP_USERS and {row["entries"] for row in rows} == {1}
    for user in users:
        assert await assert_grants_consistent(db, user) == 1


RACE_ROUNDS = 12


async def test_expiry_racing_debits_on_the_same_account_never_spends_expired_credits(clocked_ledger, db, database_url):
    """Debits at or after the expiry and sweeps run at once on one account, in both orders, many times."""
    stub, clock = clocked_ledger.stub, clocked_ledger.clock
    conn = await asyncpg.connect(database_url)
    try:
        for round_ in range(RACE_ROUNDS):
            user_id = f"user-{uuid.uuid4().hex}"
            await call(stub.Credit, grant_request(user_id, 60, expires=clock.now + DAY))
            await call(stub.Credit, grant_request(user_id, 40))
            clock.advance(DAY.total_seconds())
            debits = [debit_request(user_id, 15) for _ in range(4)]
            sweeps = [conn.fetchrow("SELECT * FROM ledger_expire_grants($1, 500)", clock.now)]
            answers = await asyncio.gather(
                *(stub.Debit(d, metadata=(("authorization", "Bearer test-all-roles-token-000"),)) for d in debits),
                *sweeps,
                return_exceptions=True,
            )
            applied = [a for a in answers[:4] if isinstance(a, pb.DebitResponse)]
            refused = [a for a in answers[:4] if isinstance(a, grpc.aio.AioRpcError)]
            assert all(a.code() == PRECONDITION for a in refused), refused
            assert len(applied) == 2, f"round {round_}: only the 40 unexpired credits can be spent"
            await sweep(db, clock.now)
            kinds = [row["kind"] for row in await journal(db, user_id)]
            assert kinds.count("expiry") == 1, kinds
            assert await assert_grants_consistent(db, user_id) == 10
    finally:
        await conn.close()


async def test_a_refund_after_partial_spend_takes_back_its_own_grant_first(ledger, stub, db, user_id):
    await call(stub.Credit, grant_request(user_id, 100, priority=10))  # burns first
    ids = Ids.new()
    await ledger.open_payment(details(user_id, session=ids.session))
    settled = await ledger.settle_payment(
        details(user_id, session=ids.session, intent=ids.intent, charge=ids.charge), source()
    )
    purchase = await balance(stub, user_id)
    paid = [g for g in purchase.grants if g.payment_id == settled.payment.id]
    assert [(g.category, g.remaining, g.priority, g.HasField("expire_time")) for g in paid] == [(PAID, 550, 50, False)]

    await call(stub.Debit, debit_request(user_id, 120))  # the promotional 100, then 20 of the purchase
    assert await remainders(db, user_id) == [(100, 0), (550, 530)]
    await ledger.apply_refund(details(user_id, intent=ids.intent, charge=ids.charge, priced=False), 1250,
                              source("charge.refunded"))  # half: 275 credits back, all from the purchase's grant
    await call(stub.Credit, grant_request(user_id, 30))
    assert await remainders(db, user_id) == [(100, 0), (550, 255), (30, 30)]

    await ledger.apply_refund(details(user_id, intent=ids.intent, charge=ids.charge, priced=False), 2500,
                              source("charge.refunded"))  # the other 275: its own 255, then 20 of the rest
    assert await remainders(db, user_id) == [(100, 0), (550, 0), (30, 10)]
    assert await assert_grants_consistent(db, user_id) == 10


async def test_clawbacks_beyond_every_grant_are_debt_and_the_next_credits_repay_it_first(ledger, stub, db, user_id):
    ids = Ids.new()
    await ledger.open_payment(details(user_id, session=ids.session))
    await ledger.settle_payment(details(user_id, session=ids.session, intent=ids.intent, charge=ids.charge), source())
    await call(stub.Debit, debit_request(user_id, 500))
    await ledger.apply_refund(details(user_id, intent=ids.intent, charge=ids.charge, priced=False), 2500,
                              source("charge.refunded"))
    owing = await balance(stub, user_id)
    assert (owing.balance, owing.debt, list(owing.grants)) == (-500, 500, [])

    await call(stub.Credit, grant_request(user_id, 300))
    assert (await balance(stub, user_id)).debt == 200
    await call(stub.Credit, grant_request(user_id, 250, category=PAID))
    repaid = await balance(stub, user_id)
    assert (repaid.balance, repaid.debt, [(g.amount, g.remaining) for g in repaid.grants]) == (50, 0, [(250, 50)])
    assert await assert_grants_consistent(db, user_id, debt_allowed=True) == 50


async def test_a_purchase_is_a_paid_grant_valid_for_its_packs_days(ledger, stub, db, user_id):
    ids = Ids.new()
    await ledger.open_payment(details(user_id, session=ids.session))
    priced = details(user_id, session=ids.session, intent=ids.intent, charge=ids.charge)
    priced.grant_valid_days = 365
    settled = await ledger.settle_payment(priced, source())
    grant = (await balance(stub, user_id)).grants[0]
    credited = settled.transaction.create_time.ToDatetime(tzinfo=UTC)
    assert (grant.category, grant.amount, grant.payment_id) == (PAID, 550, settled.payment.id)
    assert grant.expire_time.ToDatetime(tzinfo=UTC) == credited + timedelta(days=365)
    refused = pb.SettlePaymentRequest(details=details(user_id, session=stripe_session()), source=source())
    refused.details.grant_valid_days = 3651
    assert_refusal(await refusal(stub.SettlePayment, refused), INVALID, "INVALID_ARGUMENT")


def stripe_session() -> str:
    return f"cs_test_{uuid.uuid4().hex}"


async def test_holds_reserve_against_grants_and_capture_what_they_reserved(clocked_ledger, db):
    stub, clock = clocked_ledger.stub, clocked_ledger.clock
    user_id = f"user-{uuid.uuid4().hex}"
    await call(stub.Credit, grant_request(user_id, 50, expires=clock.now + HOUR))
    await call(stub.Credit, grant_request(user_id, 100))
    hold = (await call(stub.ReserveCredits, reserve_request(user_id, 40, ttl_seconds=2 * 3600))).hold
    grants = await db.fetch("SELECT id, reserved FROM credit_grants WHERE user_id = $1 ORDER BY id", user_id)
    assert [row["reserved"] for row in grants] == [40, 0]  # the grant that expires first

    clock.advance(HOUR.total_seconds())  # the grant expires: its 10 unreserved credits go, the hold's 40 stay
    seen = await balance(stub, user_id)
    assert (seen.balance, seen.held, seen.available) == (140, 40, 100)
    assert [(g.remaining, g.reserved) for g in seen.grants] == [(40, 40), (100, 0)]
    await sweep(db, clock.now)
    assert await remainders(db, user_id) == [(50, 40), (100, 100)]

    captured = await call(stub.CaptureHold, capture_request(user_id, hold.id, 25))
    assert captured.transaction.balance_after == 115
    # The capture spent 25 of what it reserved; the other 15 came back to an expired grant: the next sweep
    # expires them (a second expiry entry of the same grant).
    assert (await balance(stub, user_id)).balance == 100
    await sweep(db, clock.now)
    assert await remainders(db, user_id) == [(50, 0), (100, 100)]
    expiries = [row["delta"] for row in await journal(db, user_id) if row["kind"] == "expiry"]
    assert expiries == [-10, -15]
    assert await assert_grants_consistent(db, user_id) == 100


async def test_a_hold_released_after_its_grant_expired_gives_the_credits_to_the_expiry(clocked_ledger, db):
    stub, clock = clocked_ledger.stub, clocked_ledger.clock
    user_id = f"user-{uuid.uuid4().hex}"
    await call(stub.Credit, grant_request(user_id, 30, expires=clock.now + HOUR))
    hold = (await call(stub.ReserveCredits, reserve_request(user_id, 30, ttl_seconds=2 * 3600))).hold
    clock.advance(HOUR.total_seconds() + 60)
    await sweep(db, clock.now)
    assert await remainders(db, user_id) == [(30, 30)]  # all reserved: nothing to expire yet
    await call(stub.ReleaseHold, pb.ReleaseHoldRequest(user_id=user_id, hold_id=hold.id))
    assert (await balance(stub, user_id)).balance == 0  # released onto an expired grant: counts for nothing
    await sweep(db, clock.now)
    assert [row["delta"] for row in await journal(db, user_id)] == [30, -30]
    assert await assert_grants_consistent(db, user_id) == 0


async def test_anonymize_keeps_live_grants_and_they_still_expire(clocked_ledger, db):
    stub, clock = clocked_ledger.stub, clocked_ledger.clock
    user_id = f"user-{uuid.uuid4().hex}"
    await call(stub.Credit, grant_request(user_id, 25, expires=clock.now + DAY, category=PAID))
    await call(stub.Credit, grant_request(user_id, 5))
    await call(stub.Anonymize, pb.AnonymizeRequest(user_id=user_id))
    kept = await balance(stub, user_id)
    assert kept.status == pb.ACCOUNT_STATUS_ANONYMIZED
    assert (kept.balance, [g.remaining for g in kept.grants]) == (30, [25, 5])
    clock.advance(DAY.total_seconds())
    await sweep(db, clock.now)
    assert [row["delta"] for row in await journal(db, user_id)][-1] == -25
    assert await assert_grants_consistent(db, user_id) == 5


async def test_admin_adjust_grants_promotional_unless_said_otherwise(stub, db, user_id):
    await call(stub.AdminAdjust, adjust_request(user_id, 40))
    paid = adjust_request(user_id, 10)
    paid.category = PAID
    paid.priority = 0
    paid.expire_time.CopyFrom(ts(soon(5)))
    await call(stub.AdminAdjust, paid)
    answer = await balance(stub, user_id)
    assert [(g.category, g.priority, g.amount) for g in answer.grants] == [(PAID, 0, 10), (PROMOTIONAL, 50, 40)]
    taken = await call(stub.AdminAdjust, adjust_request(user_id, -45))
    assert taken.transaction.balance_after == 5
    assert await remainders(db, user_id) == [(40, 5), (10, 0)]
    assert await assert_grants_consistent(db, user_id) == 5


async def test_batch_credits_carry_their_grants(stub, db, user_id):
    response = await call(
        stub.PostBatch,
        pb.PostBatchRequest(
            postings=[
                pb.BatchPosting(credit=grant_request(user_id, 10, category=PAID, priority=90)),
                pb.BatchPosting(credit=grant_request(user_id, 20, expires=soon(3))),
                pb.BatchPosting(debit=debit_request(user_id, 25)),
            ]
        ),
    )
    assert response.applied_count == 3
    assert await remainders(db, user_id) == [(10, 5), (20, 0)]
    assert await assert_grants_consistent(db, user_id) == 5


async def test_a_grants_attributes_belong_to_its_request_for_idempotency(stub, db, user_id):
    key = new_key()
    first = await call(stub.Credit, credit_request(user_id, 10, key))
    same = await call(stub.Credit, grant_request(user_id, 10, key=key, category=PROMOTIONAL, priority=50))
    assert (same.replayed, same.transaction.id) == (True, first.transaction.id)
    for other in (
        grant_request(user_id, 10, key=key, category=PAID),
        grant_request(user_id, 10, key=key, priority=49),
        grant_request(user_id, 10, key=key, expires=soon(9)),
    ):
        assert_refusal(await refusal(stub.Credit, other), grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")
    assert await assert_grants_consistent(db, user_id) == 10


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda r: setattr(r, "priority", 101), "priority"),
        (lambda r: setattr(r, "priority", -1), "priority"),
        (lambda r: setattr(r, "category", 7), "category"),
        (lambda r: r.expire_time.CopyFrom(ts(datetime.now(UTC) - timedelta(seconds=1))), "expire_time"),
        (lambda r: r.expire_time.CopyFrom(ts(soon(3651))), "expire_time"),
        (lambda r: setattr(r.expire_time, "nanos", -5), "expire_time"),
        (lambda r: setattr(r, "idempotency_key", "grant:1:expiry:5"), "idempotency_key"),
    ],
)
async def test_bad_grant_fields_are_refused_naming_the_field(stub, db, user_id, change, field):
    request = grant_request(user_id, 10)
    change(request)
    refused = await refusal(stub.Credit, request)
    assert_refusal(refused, INVALID, "INVALID_ARGUMENT")
    assert [violation.field for violation in refused.field_violations] == [field]
    assert await journal(db, user_id) == []


@pytest.mark.parametrize("field", ["category", "priority", "expire_time"])
async def test_a_negative_adjustment_with_grant_fields_is_refused(stub, db, user_id, field):
    await call(stub.Credit, credit_request(user_id, 10))
    request = adjust_request(user_id, -5)
    if field == "category":
        request.category = PAID
    elif field == "priority":
        request.priority = 3
    else:
        request.expire_time.CopyFrom(ts(soon(2)))
    refused = await refusal(stub.AdminAdjust, request)
    assert_refusal(refused, INVALID, "INVALID_ARGUMENT")
    assert [violation.field for violation in refused.field_violations] == [field]
    assert await assert_grants_consistent(db, user_id) == 10
