"""POST /gdpr/delete: self-service and admin erasure, idempotency, counts not data, amounts kept."""

from __future__ import annotations

from credits.ledger.v1 import ledger_service_pb2 as pb
from tests.conftest import new_key
from tests.webhook_gateway.edge.conftest import (
    Edge,
    account_state,
    admin_token,
    fresh_user_id,
    seed_credits,
    token,
)

PATH = "/gdpr/delete"
EMAIL = "jane.doe@example.com"


async def _open_payment_with_email(ledger, user_id: str) -> int:
    details = pb.PaymentDetails(
        user_id=user_id,
        checkout_session_id=f"cs_test_{new_key()}",
        package_id="small",
        credits=100,
        amount_minor=500,
        currency_code="eur",
        customer_email=EMAIL,
        customer_id=f"cus_{new_key()}",
    )
    opened = await ledger.call(ledger.stub.OpenPayment, pb.OpenPaymentRequest(details=details))
    return opened.payment.id


async def test_a_user_erases_their_own_data_with_an_empty_object(edge: Edge, ledger, db) -> None:
    user_id = fresh_user_id()
    await seed_credits(ledger, user_id, 70)
    payment_id = await _open_payment_with_email(ledger, user_id)
    before = await account_state(ledger, user_id)
    answer = await edge.call("POST", PATH, bearer=token(user_id), json_body={})
    assert answer.status == 200, answer.text
    assert answer.body == {
        "user_id": user_id,
        "already_anonymized": False,
        "payments_scrubbed_count": 1,
        "metadata_erased_count": answer.body["metadata_erased_count"],
    }
    assert EMAIL not in answer.text
    assert answer.headers["Cache-Control"] == "no-store"
    after = await account_state(ledger, user_id)
    assert after.status == pb.ACCOUNT_STATUS_ANONYMIZED
    assert (after.balance, after.journal) == (before.balance, before.journal)  # Amounts are kept.
    row = await db.fetchrow("SELECT customer_email FROM payments WHERE id = $1", payment_id)
    assert row["customer_email"] in (None, "")


async def test_naming_ones_own_id_is_the_same_as_an_empty_object(edge: Edge, ledger) -> None:
    user_id = fresh_user_id()
    answer = await edge.call("POST", PATH, bearer=token(user_id), json_body={"user_id": user_id})
    assert answer.status == 200
    assert (await ledger.get_balance(user_id)).status == pb.ACCOUNT_STATUS_ANONYMIZED


async def test_erasure_is_idempotent(edge: Edge, ledger) -> None:
    user_id = fresh_user_id()
    await _open_payment_with_email(ledger, user_id)
    first = await edge.call("POST", PATH, bearer=token(user_id), json_body={})
    again = await edge.call("POST", PATH, bearer=token(user_id), json_body={})
    assert (first.status, again.status) == (200, 200)
    assert (first.body["already_anonymized"], again.body["already_anonymized"]) == (False, True)
    assert again.body["payments_scrubbed_count"] == 0


async def test_an_admin_erases_any_user_and_not_themselves(edge: Edge, ledger) -> None:
    victim = fresh_user_id()
    admin_id = f"admin-{new_key()}"
    await seed_credits(ledger, victim, 15)
    answer = await edge.call("POST", PATH, bearer=admin_token(admin_id), json_body={"user_id": victim})
    assert answer.status == 200
    assert answer.body["user_id"] == victim
    assert (await ledger.get_balance(victim)).status == pb.ACCOUNT_STATUS_ANONYMIZED
    assert (await ledger.get_balance(admin_id)).status == pb.ACCOUNT_STATUS_ACTIVE


async def test_an_admins_empty_object_means_the_admins_own_account(edge: Edge, ledger) -> None:
    admin_id = f"admin-{new_key()}"
    answer = await edge.call("POST", PATH, bearer=admin_token(admin_id), json_body={})
    assert (answer.status, answer.body["user_id"]) == (200, admin_id)


async def test_after_erasure_the_page_shows_it_and_credits_stop_moving(edge: Edge, ledger) -> None:
    user_id = fresh_user_id()
    await seed_credits(ledger, user_id, 20)
    assert (await edge.call("POST", PATH, bearer=token(user_id), json_body={})).status == 200
    page = await edge.call("GET", "/me/credits", bearer=token(user_id))
    assert (page.body["status"], page.body["balance"]) == ("anonymized", 20)
    body = {"user_id": user_id, "amount": 5, "reason": "after erasure", "idempotency_key": new_key()}
    adjusted = await edge.call("POST", "/admin/adjust", bearer=admin_token(), json_body=body)
    assert adjusted.code == "ACCOUNT_ANONYMIZED"
