"""The reconciler and the checkout outcomes of issue 16 point 4, against the real ledger (PostgreSQL) and the fake
Stripe: "paid, not credited" is listed with what to do; a discounted purchase is not drift; a missed
checkout.session.expired is repaired."""

from __future__ import annotations

from credits.ledger.v1 import ledger_service_pb2 as pb
from services.reconciler.report import EXIT_DRIFT_REMAINS, EXIT_OK
from tests.fakes import stripe_events as se
from tests.reconciler.conftest import balance, buy, deliver_in_process, emitted, new_user, payment_of, run


async def test_a_purchase_refused_for_an_anonymized_account_is_listed_with_the_refund_to_make(world, fake) -> None:
    purchase = buy(fake)
    await world.reader.anonymize(purchase.user_id)
    applied = await deliver_in_process(world, emitted(fake, "checkout.session.completed", purchase.session_id))
    assert (applied.outcome.value, applied.code) == ("refused", "account_anonymized")

    report = await run(world, fake)

    [item] = report.items
    assert (item["kind"], item["action"], item["code"]) == ("paid_not_credited", "reported", "account_anonymized")
    assert item["operator_action"].startswith(f"refund 500 eur of charge {purchase.charge_id} in Stripe")
    assert item["payment_id"] == (await payment_of(world, purchase.payment_intent_id)).id
    assert item["ledger_status"] == "PAID"
    assert report.summary.exit_code == EXIT_DRIFT_REMAINS
    assert await balance(world, purchase.user_id) == 0


async def test_a_missing_credit_for_an_anonymized_account_becomes_paid_not_credited(world, fake) -> None:
    """No webhook arrived; the reconciler's Settle is refused by the ledger (recorded PAID, not credited)."""
    purchase = buy(fake)
    await world.reader.anonymize(purchase.user_id)

    report = await run(world, fake)

    [item] = report.items
    assert (item["kind"], item["action"], item["code"]) == ("paid_not_credited", "reported", "account_anonymized")
    assert "refund" in item["operator_action"]
    payment = await payment_of(world, purchase.payment_intent_id)
    assert (payment.status, payment.settle_refusal) == (pb.PAYMENT_STATUS_PAID, "account_anonymized")
    again = await run(world, fake)
    assert [(line["kind"], line["code"]) for line in again.items] == [("paid_not_credited", "account_anonymized")]


async def test_a_discounted_purchase_is_not_drift(world, fake) -> None:
    """The charge is 400 for the 500 pack (a promotion code): it matches what the ledger recorded as paid."""
    user_id = new_user()
    metadata = se.purchase_metadata(user_id, "small")
    charge = fake.state.add_charge(amount_minor=400, metadata=metadata, payment_intent_id=se.new_id("pi_"))
    session = se.checkout_session_object(
        amount_minor=500, currency="eur", metadata=metadata, client_reference_id=user_id, status="complete",
        payment_status="paid", payment_intent_id=charge["payment_intent"],
    )
    session.update(amount_total=400, total_details={"amount_discount": 100, "amount_shipping": 0, "amount_tax": 0})
    applied = await deliver_in_process(world, se.event("checkout.session.completed", session))
    assert applied.outcome.value == "applied"

    report = await run(world, fake)

    assert report.items == []
    assert report.summary.exit_code == EXIT_OK
    assert await balance(world, user_id) == 100


async def test_an_undelivered_expiry_is_repaired(world, fake) -> None:
    user_id = new_user()
    metadata = se.purchase_metadata(user_id, "small")
    session = fake.state.create_session(
        amount_minor=500, currency="eur", metadata=metadata, payment_intent_metadata=metadata,
        client_reference_id=user_id,
    )
    opened = await world.payments.open_payment(
        pb.PaymentDetails(
            user_id=user_id, checkout_session_id=session["id"], package_id="small", credits=100,
            amount_minor=500, currency_code="eur",
        )
    )
    fake.state.emit_events = False
    expired = fake.state.expire_session(session["id"])
    fake.state.add_event(se.event("checkout.session.expired", expired), delivery_success=False)

    report = await run(world, fake)

    [item] = report.items
    assert (item["kind"], item["action"]) == ("missed_event", "repaired")
    assert item["event_type"] == "checkout.session.expired"
    got = await world.reader.call(world.reader.stub.GetPayment, pb.GetPaymentRequest(payment_id=opened.payment.id))
    assert got.payment.status == pb.PAYMENT_STATUS_EXPIRED
    assert (await run(world, fake)).items == []
