"""creditsctl settle-payment (a paid, not credited payment credited by hand, audited) and what `payment` shows of
what was paid, as a real subprocess against the real ledger on PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from credits.ledger.v1 import ledger_service_pb2 as pb
from services.ledger import errors
from services.ledger.client import LedgerClient
from tests.cli.conftest import creditsctl
from tests.cli.test_creditsctl import PAYMENT_KEYS, refused_with
from tests.conftest import ROLE_TOKENS


@pytest.fixture
async def db_reader(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


def _details(user_id: str, session_id: str) -> pb.PaymentDetails:
    return pb.PaymentDetails(
        user_id=user_id,
        checkout_session_id=session_id,
        package_id="small",
        credits=100,
        amount_minor=500,
        currency_code="eur",
    )


def _session() -> str:
    return f"cs_test_{uuid.uuid4().hex}"


async def test_settle_payment_credits_once_with_its_actor_and_reason(
    operator_env: dict[str, str], ledger: LedgerClient, db_reader, user_id: str
) -> None:
    session_id = _session()
    opened = await ledger.open_payment(_details(user_id, session_id))
    reason = "refused session (Adaptive Pricing, usd); customer keeps the pack: ticket 81"

    first = await creditsctl(
        "--json", "settle-payment", session_id, "--reason", reason, "--actor", "alice", env=operator_env
    )

    assert first.code == 0, first
    document = first.json()
    assert (document["replayed"], document["actor"]) == (False, "alice")
    assert document["admin_action_id"] > 0
    assert (document["transaction"]["delta"], document["transaction"]["kind"]) == (100, "purchase")
    assert set(document["payment"]) == PAYMENT_KEYS
    assert (document["payment"]["id"], document["payment"]["status"]) == (opened.payment.id, "credited")
    audit = await db_reader.fetchrow("SELECT * FROM admin_actions WHERE id = $1", document["admin_action_id"])
    assert (audit["actor"], audit["reason"], audit["delta"]) == ("alice", reason, 100)

    again = await creditsctl("settle-payment", str(opened.payment.id), "--reason", "again", env=operator_env)
    assert again.code == 0, again
    assert "credited earlier; nothing changed now" in again.stdout
    assert (await ledger.get_balance(user_id)).balance == 100


async def test_settle_payment_refuses_an_anonymized_account(
    operator_env: dict[str, str], ledger: LedgerClient, user_id: str
) -> None:
    opened = await ledger.open_payment(_details(user_id, _session()))
    await ledger.anonymize(user_id)
    run = await creditsctl("settle-payment", str(opened.payment.id), "--reason", "grant", env=operator_env)
    refused_with(run, "ACCOUNT_ANONYMIZED")


async def test_settle_payment_of_an_unknown_payment_is_refused(operator_env: dict[str, str]) -> None:
    refused_with(await creditsctl("settle-payment", _session(), "--reason", "grant", env=operator_env), "NOT_FOUND")


async def test_settle_payment_needs_the_admin_role(operator_env: dict[str, str]) -> None:
    env = {**operator_env, "LEDGER_TOKEN": ROLE_TOKENS["reconciler"]}
    run = await creditsctl("settle-payment", "12", "--reason", "grant", env=env)
    refused_with(run, "PERMISSION_DENIED")
    assert "the role admin" in run.stderr


@pytest.mark.parametrize(
    "args",
    [["settle-payment", "12"], ["settle-payment", "12", "--reason", "  "], ["settle-payment", "xyz", "--reason", "x"]],
    ids=["no-reason", "blank-reason", "not-a-payment-id"],
)
async def test_settle_payment_usage_errors_exit_2(operator_env: dict[str, str], args: list[str]) -> None:
    run = await creditsctl(*args, env=operator_env)
    assert run.code == 2, run
    assert run.stdout == ""


async def test_payment_shows_what_was_paid_and_a_purchase_left_uncredited(
    operator_env: dict[str, str], ledger: LedgerClient, user_id: str
) -> None:
    paid = _details(user_id, _session())
    paid.amount_paid_minor, paid.amount_tax_minor, paid.amount_discount_minor = 480, 80, 100
    settled = await ledger.settle_payment(paid)
    table = await creditsctl("payment", str(settled.payment.id), env=operator_env)
    assert table.code == 0, table
    assert "4.80 EUR (tax 0.80 EUR, discount 1.00 EUR)" in table.stdout
    document = (await creditsctl("--json", "payment", str(settled.payment.id), env=operator_env)).json()
    assert (document["amount_paid_minor"], document["amount_tax_minor"], document["amount_discount_minor"]) == (
        480, 80, 100
    )

    anonymized = f"user-{uuid.uuid4().hex}"
    await ledger.anonymize(anonymized)
    session_id = _session()
    with pytest.raises(errors.PurchaseOnAnonymizedAccount):
        await ledger.settle_payment(_details(anonymized, session_id))
    shown = await creditsctl("payment", session_id, env=operator_env)
    assert "paid, not credited (account_anonymized): refund it in Stripe" in shown.stdout
