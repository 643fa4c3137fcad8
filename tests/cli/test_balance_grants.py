"""creditsctl balance shows a user's grants, debt and next expiry: a real subprocess against the real ledger."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp

from credits.ledger.v1 import ledger_service_pb2 as pb
from services.cli.ledger_commands import GRANT_COLUMNS
from services.ledger.client import LedgerClient
from tests.cli.conftest import creditsctl
from tests.conftest import new_key
from tests.ledger.payment_helpers import MEDIUM_AMOUNT_MINOR, MEDIUM_CREDITS, details, source, stripe_id

GRANT_KEYS = {
    "id",
    "category",
    "priority",
    "amount",
    "remaining",
    "reserved",
    "expire_time",
    "create_time",
    "transaction_id",
    "payment_id",
}


def _in_days(days: int) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) + timedelta(days=days)


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


async def _credit(ledger: LedgerClient, user_id: str, amount: int, **extra: object) -> pb.Transaction:
    return (await ledger.credit(user_id, amount, new_key(), "a grant for a creditsctl test", **extra)).transaction


def _expiring(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


async def test_a_user_without_grants(operator_env: dict[str, str], user_id: str) -> None:
    document = (await creditsctl("--json", "balance", user_id, env=operator_env)).json()
    assert (document["grants"], document["debt"]) == ([], 0)
    assert (document["next_expire_time"], document["next_expiring_amount"]) == (None, 0)
    run = await creditsctl("balance", user_id, env=operator_env)
    assert run.code == 0, run
    lines = run.stdout.splitlines()
    assert "debt         0" in lines
    assert "next expiry  -" in lines
    assert lines[-1] == "no grants with credits left"


async def test_grants_in_burn_order_with_reserved_and_expiry(
    operator_env: dict[str, str], user_id: str, ledger: LedgerClient
) -> None:
    expires = _in_days(30)
    forever = await _credit(ledger, user_id, 100, category=pb.GRANT_CATEGORY_PROMOTIONAL)
    soon = await _credit(ledger, user_id, 40, expire_time=_expiring(expires), priority=20)
    paid = await _credit(ledger, user_id, 60, category=pb.GRANT_CATEGORY_PAID, priority=80)
    await ledger.debit(user_id, 10, new_key(), "a job")  # from `soon`, the lowest priority
    reserve = pb.ReserveCreditsRequest(
        user_id=user_id, amount=35, idempotency_key=new_key(), reason="a run", ttl_seconds=600
    )
    await ledger.call(ledger.stub.ReserveCredits, reserve)  # 30 from `soon`, 5 from `forever`

    document = (await creditsctl("--json", "balance", user_id, env=operator_env)).json()
    grants = document["grants"]
    assert all(set(grant) == GRANT_KEYS for grant in grants)
    assert [grant["transaction_id"] for grant in grants] == [soon.id, forever.id, paid.id]
    assert [(grant["remaining"], grant["amount"], grant["reserved"]) for grant in grants] == [
        (30, 40, 30),
        (100, 100, 5),
        (60, 60, 0),
    ]
    assert [grant["category"] for grant in grants] == ["promotional", "promotional", "paid"]
    assert [grant["priority"] for grant in grants] == [20, 50, 80]
    assert [grant["expire_time"] for grant in grants] == [_rfc3339(expires), None, None]
    assert (document["next_expire_time"], document["next_expiring_amount"]) == (_rfc3339(expires), 30)
    assert (document["balance"], document["held"], document["debt"]) == (190, 35, 0)

    run = await creditsctl("balance", user_id, env=operator_env)
    assert run.code == 0, run
    lines = run.stdout.splitlines()
    assert f"next expiry  30 credits at {_rfc3339(expires)}" in lines
    header = _header_index(lines)
    rows = [line.split() for line in lines[header + 1 :]]
    assert rows == [
        [str(grants[0]["id"]), "promotional", "20", "30/40", "30", _rfc3339(expires)],
        [str(grants[1]["id"]), "promotional", "50", "100/100", "5", "never"],
        [str(grants[2]["id"]), "paid", "80", "60/60", "0", "never"],
    ]


def _header_index(lines: list[str]) -> int:
    [index] = [number for number, line in enumerate(lines) if line.split() == list(GRANT_COLUMNS)]
    return index


async def test_debt_after_a_refund_of_spent_credits(
    operator_env: dict[str, str], user_id: str, ledger: LedgerClient
) -> None:
    ids = {"session": stripe_id("cs"), "intent": stripe_id("pi"), "charge": stripe_id("ch")}
    await ledger.call(
        ledger.stub.SettlePayment, pb.SettlePaymentRequest(details=details(user_id, **ids), source=source())
    )
    await ledger.debit(user_id, MEDIUM_CREDITS - 50, new_key(), "spent most of it")
    refund = pb.ApplyRefundRequest(
        details=details(user_id, **ids), amount_refunded_minor=MEDIUM_AMOUNT_MINOR, source=source("charge.refunded")
    )
    await ledger.call(ledger.stub.ApplyRefund, refund)

    document = (await creditsctl("--json", "balance", user_id, env=operator_env)).json()
    assert (document["balance"], document["debt"], document["grants"]) == (
        -(MEDIUM_CREDITS - 50),
        MEDIUM_CREDITS - 50,
        [],
    )
    run = await creditsctl("balance", user_id, env=operator_env)
    assert f"debt         {MEDIUM_CREDITS - 50}" in run.stdout.splitlines()
