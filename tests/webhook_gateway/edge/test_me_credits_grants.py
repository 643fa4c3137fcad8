"""GET /me/credits through real HTTP and the real ledger: the grants left, the debt and the next expiry.

Every answer is also checked against the OpenAPI document by the `edge` fixture.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp

from credits.ledger.v1 import ledger_service_pb2 as pb
from services.ledger.client import LedgerClient
from services.webhook_gateway.edge_routes import GRANTS_SHOWN_MAX, expiry_sentence
from tests.conftest import new_key
from tests.ledger.payment_helpers import MEDIUM_AMOUNT_MINOR, MEDIUM_CREDITS, details, source, stripe_id
from tests.webhook_gateway.edge.conftest import Edge, fresh_user_id, token

PATH = "/me/credits"
EXPIRY_WAIT_SECONDS = 2  # A grant expiring this soon; CreditRequest needs an expire_time after now.
EXPIRY_MARGIN_SECONDS = 0.5  # Past it by this much at the ledger's clock (the same machine's).


def _timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _parse(text: str) -> datetime:
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text)


def _day(days: int, hour: int = 12) -> datetime:
    """A whole second `days` days from now at `hour` UTC (the ledger keeps microseconds; whole seconds compare)."""
    today = datetime.now(UTC).replace(hour=hour, minute=0, second=0, microsecond=0)
    return today + timedelta(days=days)


async def _grant(
    ledger: LedgerClient,
    user_id: str,
    amount: int,
    *,
    expire: datetime | None = None,
    priority: int | None = None,
    category: int = pb.GRANT_CATEGORY_UNSPECIFIED,
) -> pb.Transaction:
    extra: dict[str, object] = {"category": category}
    if expire is not None:
        extra["expire_time"] = _timestamp(expire)
    if priority is not None:
        extra["priority"] = priority
    return (await ledger.credit(user_id, amount, new_key(), "a grant for an edge test", **extra)).transaction


async def test_an_account_without_grants_shows_none_no_debt_and_no_expiry(edge: Edge) -> None:
    answer = await edge.call("GET", PATH, bearer=token(fresh_user_id()))
    assert answer.status == 200
    assert (answer.body["grants"], answer.body["debt"], answer.body["next_expiry"]) == ([], 0, None)


async def test_grants_are_listed_in_burn_order_with_what_is_left(edge: Edge, ledger: LedgerClient) -> None:
    user_id = fresh_user_id()
    never = await _grant(ledger, user_id, 100)  # promotional, priority 50, never expires: burns last of the 50s
    later = await _grant(ledger, user_id, 40, expire=_day(60))
    sooner = await _grant(ledger, user_id, 30, expire=_day(20), category=pb.GRANT_CATEGORY_PAID)
    first = await _grant(ledger, user_id, 10, priority=5)  # the lowest priority burns first, expiry or not
    await ledger.debit(user_id, 15, new_key(), "a job")  # all of `first`, 5 of `sooner`

    body = (await edge.call("GET", PATH, bearer=token(user_id))).body
    grants = body["grants"]
    assert [grant["remaining"] for grant in grants] == [25, 40, 100]
    assert [grant["amount"] for grant in grants] == [30, 40, 100]
    assert [grant["category"] for grant in grants] == ["paid", "promotional", "promotional"]
    assert [grant["priority"] for grant in grants] == [50, 50, 50]
    assert [grant["reserved"] for grant in grants] == [0, 0, 0]
    assert [grant["payment_id"] for grant in grants] == [None, None, None]
    assert grants[2]["expires_at"] is None
    assert _parse(grants[0]["expires_at"]) == _day(20)
    assert _parse(grants[1]["expires_at"]) == _day(60)
    created = [_parse(grant["created_at"]) for grant in grants]
    assert created[0] == sooner.create_time.ToDatetime(tzinfo=UTC)
    assert created[1] == later.create_time.ToDatetime(tzinfo=UTC)
    assert created[2] == never.create_time.ToDatetime(tzinfo=UTC)
    assert first.id not in {grant["id"] for grant in grants}, "a grant spent in full is not listed"
    assert sum(grant["remaining"] for grant in grants) - body["debt"] == body["balance"] == 165
    expiring_on = _day(20).date().isoformat()
    assert body["next_expiry"] == {
        "credits": 25,
        "expires_at": grants[0]["expires_at"],
        "date": expiring_on,
        "text": f"25 credits expire on {expiring_on}",
    }


async def test_the_next_expiry_counts_reserved_credits_and_shows_them_reserved(
    edge: Edge, ledger: LedgerClient
) -> None:
    user_id = fresh_user_id()
    await _grant(ledger, user_id, 50, expire=_day(3))
    await _grant(ledger, user_id, 50)
    reserved = pb.ReserveCreditsRequest(
        user_id=user_id, amount=20, idempotency_key=new_key(), reason="a job in progress", ttl_seconds=600
    )
    await ledger.call(ledger.stub.ReserveCredits, reserved)

    body = (await edge.call("GET", PATH, bearer=token(user_id))).body
    assert (body["balance"], body["held"], body["available"]) == (100, 20, 80)
    assert [(grant["remaining"], grant["reserved"]) for grant in body["grants"]] == [(50, 20), (50, 0)]
    assert body["next_expiry"]["credits"] == 50
    assert body["next_expiry"]["text"] == f"50 credits expire on {_day(3).date().isoformat()}"


async def test_the_date_is_the_utc_date_of_the_expiry(edge: Edge, ledger: LedgerClient) -> None:
    user_id = fresh_user_id()
    late_evening = _day(10, hour=23) + timedelta(minutes=59, seconds=59)
    await _grant(ledger, user_id, 1, expire=late_evening)

    next_expiry = (await edge.call("GET", PATH, bearer=token(user_id))).body["next_expiry"]
    assert next_expiry["date"] == late_evening.date().isoformat()
    assert next_expiry["text"] == f"1 credit expires on {late_evening.date().isoformat()}"
    assert _parse(next_expiry["expires_at"]) == late_evening


async def test_nothing_expiring_gives_no_next_expiry_even_with_grants(edge: Edge, ledger: LedgerClient) -> None:
    user_id = fresh_user_id()
    await _grant(ledger, user_id, 70)
    await _grant(ledger, user_id, 5, expire=_day(1))
    await ledger.debit(user_id, 5, new_key(), "spends the expiring grant first")

    body = (await edge.call("GET", PATH, bearer=token(user_id))).body
    assert [grant["remaining"] for grant in body["grants"]] == [70]
    assert body["next_expiry"] is None, "the only expiring grant is spent: nothing left expires"


async def test_a_purchase_is_a_paid_grant_valid_for_its_packs_days(edge: Edge, ledger: LedgerClient) -> None:
    user_id = fresh_user_id()
    purchase = details(user_id, session=stripe_id("cs"), intent=stripe_id("pi"))
    purchase.grant_valid_days = 365
    settled = await ledger.call(ledger.stub.SettlePayment, pb.SettlePaymentRequest(details=purchase, source=source()))
    credited_at = (await ledger.list_transactions(user_id, page_size=1)).transactions[0].create_time

    body = (await edge.call("GET", PATH, bearer=token(user_id))).body
    [grant] = body["grants"]
    assert (grant["category"], grant["priority"]) == ("paid", 50)
    assert (grant["amount"], grant["remaining"]) == (MEDIUM_CREDITS, MEDIUM_CREDITS)
    assert grant["payment_id"] == settled.payment.id
    expires = credited_at.ToDatetime(tzinfo=UTC) + timedelta(days=365)
    assert _parse(grant["expires_at"]) == expires
    assert body["next_expiry"]["text"] == f"{MEDIUM_CREDITS} credits expire on {expires.date().isoformat()}"


async def test_a_refund_after_everything_was_spent_shows_the_debt(edge: Edge, ledger: LedgerClient) -> None:
    user_id = fresh_user_id()
    ids = {"session": stripe_id("cs"), "intent": stripe_id("pi"), "charge": stripe_id("ch")}
    await ledger.call(
        ledger.stub.SettlePayment, pb.SettlePaymentRequest(details=details(user_id, **ids), source=source())
    )
    await ledger.debit(user_id, MEDIUM_CREDITS, new_key(), "spent it all")
    refund = pb.ApplyRefundRequest(
        details=details(user_id, **ids),
        amount_refunded_minor=MEDIUM_AMOUNT_MINOR,
        source=source("charge.refunded"),
    )
    await ledger.call(ledger.stub.ApplyRefund, refund)

    body = (await edge.call("GET", PATH, bearer=token(user_id))).body
    assert (body["balance"], body["debt"], body["grants"], body["next_expiry"]) == (
        -MEDIUM_CREDITS,
        MEDIUM_CREDITS,
        [],
        None,
    )


async def test_only_the_first_grants_in_burn_order_are_listed(edge: Edge, ledger: LedgerClient) -> None:
    user_id = fresh_user_id()
    # Credits alike add to one grant: each of these differs by priority or category, so each is a grant.
    categories = (pb.GRANT_CATEGORY_PROMOTIONAL, pb.GRANT_CATEGORY_PAID)
    batch = pb.PostBatchRequest(
        postings=[
            pb.BatchPosting(
                credit=pb.CreditRequest(
                    user_id=user_id,
                    amount=1,
                    idempotency_key=new_key(),
                    reason="many small grants",
                    priority=index // 2,
                    category=categories[index % 2],
                )
            )
            for index in range(GRANTS_SHOWN_MAX)
        ]
    )
    await ledger.call(ledger.stub.PostBatch, batch)
    await _grant(ledger, user_id, 7, priority=99)  # burns last: the one left off

    body = (await edge.call("GET", PATH, bearer=token(user_id))).body
    assert len(body["grants"]) == GRANTS_SHOWN_MAX
    assert 99 not in {grant["priority"] for grant in body["grants"]}
    assert body["balance"] == GRANTS_SHOWN_MAX + 7, "the balance still counts every grant"


def test_the_sentence_says_one_credit_in_the_singular() -> None:
    moment = _timestamp(datetime(2027, 1, 31, 23, 59, 59, tzinfo=UTC))
    assert expiry_sentence(1, moment) == "1 credit expires on 2027-01-31"
    assert expiry_sentence(2, moment) == "2 credits expire on 2027-01-31"
    assert expiry_sentence(1_000_000, moment) == "1000000 credits expire on 2027-01-31"


async def test_credits_past_their_expiry_leave_the_page_at_once(edge: Edge, ledger: LedgerClient) -> None:
    """The ledger never counts an expired rest, swept or not: the grant and its sentence go when the time comes."""
    user_id = fresh_user_id()
    await _grant(ledger, user_id, 30)
    expires = datetime.now(UTC) + timedelta(seconds=EXPIRY_WAIT_SECONDS)
    await _grant(ledger, user_id, 12, expire=expires, priority=10)
    before = (await edge.call("GET", PATH, bearer=token(user_id))).body
    assert (before["balance"], before["next_expiry"]["credits"]) == (42, 12)

    await asyncio.sleep((expires - datetime.now(UTC)).total_seconds() + EXPIRY_MARGIN_SECONDS)
    after = (await edge.call("GET", PATH, bearer=token(user_id))).body
    assert (after["balance"], after["available"], after["next_expiry"]) == (30, 30, None)
    assert [(grant["amount"], grant["remaining"]) for grant in after["grants"]] == [(30, 30)]
