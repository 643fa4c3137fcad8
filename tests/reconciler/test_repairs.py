"""What a run repairs and what it only reports: lost webhooks of purchases, refunds and disputes; payments
only the ledger knows; charges that disagree with the catalog; idempotence, dry runs and the late webhook."""

from __future__ import annotations

import asyncio

import aiohttp

from credits.ledger.v1 import ledger_service_pb2 as pb
from services.reconciler.report import EXIT_DRIFT_REMAINS, EXIT_OK
from services.stripe_bridge.catalog import Catalog
from tests.fakes import stripe_events as se
from tests.reconciler.conftest import (
    balance,
    buy,
    deliver_in_process,
    emitted,
    journal,
    ledger_snapshot,
    new_user,
    payment_of,
    purchases_of,
    run,
)
from tests.webhook_gateway.conftest import deliver, gateway_environ, running_gateway


async def test_lost_purchase_webhook_is_credited_by_the_run(world, fake) -> None:
    purchase = buy(fake, package_id="medium")
    assert await balance(world, purchase.user_id) == 0

    report = await run(world, fake)

    assert await balance(world, purchase.user_id) == 550
    payment = await payment_of(world, purchase.payment_intent_id)
    assert payment.status == pb.PAYMENT_STATUS_CREDITED
    assert payment.charge_id == purchase.charge_id
    [item] = report.items
    assert item["kind"] == "missing_credit"
    assert item["action"] == "repaired"
    assert item["credits_delta"] == 550
    assert item["credits"] == 550
    assert (item["user_id"], item["charge_id"], item["payment_intent_id"]) == (
        purchase.user_id,
        purchase.charge_id,
        purchase.payment_intent_id,
    )
    assert item["amount_minor"] == 2500
    assert "buyer@example.test" not in str(report.lines)
    assert report.summary.exit_code == EXIT_OK
    assert report.summary.drift_repaired == {"missing_credit": 1}


async def test_delivered_purchase_is_not_drift(world, fake) -> None:
    purchase = buy(fake)
    await deliver_in_process(world, emitted(fake, "checkout.session.completed", purchase.session_id))

    report = await run(world, fake)

    assert report.items == []
    assert report.summary.charges_suite == 1
    assert report.summary.exit_code == EXIT_OK
    assert await balance(world, purchase.user_id) == 100


async def test_lost_refund_webhook_is_clawed_back(world, fake) -> None:
    purchase = buy(fake, package_id="medium")
    await deliver_in_process(world, emitted(fake, "checkout.session.completed", purchase.session_id))
    fake.state.refund_charge(purchase.charge_id, amount_minor=1250)  # its charge.refunded never arrives

    report = await run(world, fake)

    assert await balance(world, purchase.user_id) == 550 - 275
    [item] = report.items
    assert (item["kind"], item["action"], item["credits_delta"]) == ("missing_refund", "repaired", -275)
    assert (item["stripe_amount_refunded_minor"], item["ledger_amount_refunded_minor"]) == (1250, 0)
    assert (await payment_of(world, purchase.payment_intent_id)).amount_refunded_minor == 1250

    fake.state.refund_charge(purchase.charge_id)  # the rest, lost too
    await run(world, fake)
    assert await balance(world, purchase.user_id) == 0
    assert (await payment_of(world, purchase.payment_intent_id)).status == pb.PAYMENT_STATUS_REFUNDED


async def test_purchase_and_refund_both_lost_end_refunded(world, fake) -> None:
    purchase = buy(fake)
    fake.state.refund_charge(purchase.charge_id)

    report = await run(world, fake)

    assert [item["kind"] for item in report.items] == ["missing_credit", "missing_refund"]
    assert all(item["action"] == "repaired" for item in report.items)
    assert await balance(world, purchase.user_id) == 0
    assert (await payment_of(world, purchase.payment_intent_id)).status == pb.PAYMENT_STATUS_REFUNDED


async def test_lost_dispute_webhooks_claw_back_then_reinstate_when_won(world, fake) -> None:
    purchase = buy(fake, package_id="large")
    await deliver_in_process(world, emitted(fake, "checkout.session.completed", purchase.session_id))
    dispute = fake.state.dispute_charge(purchase.charge_id, status="needs_response")

    report = await run(world, fake)

    assert await balance(world, purchase.user_id) == 0
    payment = await payment_of(world, purchase.payment_intent_id)
    assert payment.status == pb.PAYMENT_STATUS_CHARGEBACK
    assert payment.dispute_id == dispute["id"]
    [item] = report.items
    assert (item["kind"], item["action"], item["credits_delta"]) == ("dispute_state", "repaired", -1200)
    assert (item["stripe_dispute_status"], item["ledger_dispute_status"]) == ("needs_response", None)

    fake.state.set_dispute_status(dispute["id"], "won")
    report = await run(world, fake)

    assert await balance(world, purchase.user_id) == 1200
    [item] = report.items
    assert (item["kind"], item["credits_delta"]) == ("dispute_state", 1200)
    assert (item["stripe_dispute_status"], item["ledger_dispute_status"]) == ("won", "needs_response")
    assert (await run(world, fake)).items == []  # won is final: nothing more to look up


async def test_dispute_inquiry_moves_no_credits(world, fake) -> None:
    purchase = buy(fake)
    await deliver_in_process(world, emitted(fake, "checkout.session.completed", purchase.session_id))
    fake.state.dispute_charge(purchase.charge_id, status="warning_needs_response")

    report = await run(world, fake)

    [item] = report.items
    assert (item["kind"], item["action"], item["credits_delta"]) == ("dispute_state", "repaired", 0)
    assert await balance(world, purchase.user_id) == 100


async def test_ledger_only_payment_is_reported_and_untouched(world, fake) -> None:
    user_id = new_user()
    details = pb.PaymentDetails(
        user_id=user_id,
        payment_intent_id="pi_only_in_the_ledger_0001",
        package_id="small",
        credits=100,
        amount_minor=500,
        currency_code="eur",
    )
    await world.payments.settle_payment(details)
    before = await ledger_snapshot(world)

    report = await run(world, fake)

    [item] = report.items
    assert (item["kind"], item["action"]) == ("ledger_only", "reported")
    assert (item["user_id"], item["payment_intent_id"], item["ledger_status"]) == (
        user_id,
        "pi_only_in_the_ledger_0001",
        "CREDITED",
    )
    assert await ledger_snapshot(world) == before
    assert await balance(world, user_id) == 100
    assert report.summary.exit_code == EXIT_DRIFT_REMAINS


async def test_ledger_payment_of_an_older_charge_is_not_ledger_only(world, fake) -> None:
    """A charge from before the window, credited late (payment created inside the window), is found in Stripe."""
    user_id = new_user()
    old = fake.state.add_charge(
        amount_minor=500,
        metadata=se.purchase_metadata(user_id, "small"),
        payment_intent_id="pi_old_charge_credited_late",
        created_seconds=int(fake.state.now_seconds()) - 10 * 86_400,
    )
    details = pb.PaymentDetails(
        user_id=user_id,
        payment_intent_id="pi_old_charge_credited_late",
        charge_id=old["id"],
        package_id="small",
        credits=100,
        amount_minor=500,
        currency_code="eur",
    )
    await world.payments.settle_payment(details)

    report = await run(world, fake)

    assert report.items == []
    assert report.summary.charges_scanned == 0


async def test_catalog_mismatch_is_reported_not_credited(world, fake) -> None:
    user_id = new_user()
    charge = fake.state.add_charge(
        amount_minor=400, metadata=se.purchase_metadata(user_id, "small"), payment_intent_id="pi_underpaid_0001"
    )

    report = await run(world, fake)

    [item] = report.items
    assert (item["kind"], item["action"], item["code"]) == ("paid_not_credited", "reported", "catalog_mismatch")
    assert (item["charge_id"], item["amount_minor"], item["credits_delta"]) == (charge["id"], 400, None)
    assert item["operator_action"].startswith(f"refund 400 eur of charge {charge['id']} in Stripe, or grant")
    assert await balance(world, user_id) == 0
    assert await ledger_snapshot(world) == []
    assert report.summary.exit_code == EXIT_DRIFT_REMAINS


async def test_catalog_changed_after_the_purchase_is_not_a_mismatch(world, fake) -> None:
    """The ledger's own record of the price stands; the refund is still repaired against it."""
    purchase = buy(fake, package_id="small")
    await deliver_in_process(world, emitted(fake, "checkout.session.completed", purchase.session_id))
    fake.state.refund_charge(purchase.charge_id)
    repriced = {"small": {"credits": 100, "amount_minor": 700, "currency": "eur"}}

    report = await run(world, fake, catalog=Catalog.from_json_value(repriced))

    [item] = report.items
    assert (item["kind"], item["action"], item["credits_delta"]) == ("missing_refund", "repaired", -100)


async def test_foreign_and_failed_charges_are_not_credited(world, fake) -> None:
    user_id = new_user()
    fake.state.add_charge(amount_minor=500, metadata={"order": "42"}, payment_intent_id="pi_other_product_01")
    fake.state.add_charge(
        amount_minor=500,
        metadata=se.purchase_metadata(user_id, "small"),
        payment_intent_id="pi_declined_card_0001",
        status="failed",
    )

    report = await run(world, fake)

    assert report.items == []
    assert (report.summary.charges_scanned, report.summary.charges_suite) == (2, 0)
    assert await ledger_snapshot(world) == []
    assert world.counter.list_payments_by_intent() == 1  # the paid one is looked up: the ledger does not know it


async def test_repair_is_idempotent_two_runs_one_credit(world, fake) -> None:
    purchase = buy(fake)

    first = await run(world, fake)
    second = await run(world, fake)

    assert [item["kind"] for item in first.items] == ["missing_credit"]
    assert second.items == []
    assert second.summary.exit_code == EXIT_OK
    assert len(await purchases_of(world, purchase.user_id)) == 1
    assert await balance(world, purchase.user_id) == 100


async def test_late_webhook_after_the_repair_is_a_no_op(world, fake) -> None:
    purchase = buy(fake)
    await run(world, fake)

    applied = await deliver_in_process(world, emitted(fake, "checkout.session.completed", purchase.session_id))

    assert applied.credits_delta == 0
    assert len(await purchases_of(world, purchase.user_id)) == 1


async def test_run_racing_the_late_webhook_credits_once(world, fake) -> None:
    """The run and a real gateway delivery of the same purchase, concurrently: one credit, whoever wins."""
    purchases = [buy(fake) for _ in range(20)]
    events = [emitted(fake, "checkout.session.completed", purchase.session_id) for purchase in purchases]
    async with (
        running_gateway(gateway_environ(world.target, fake)) as gateway,
        aiohttp.ClientSession() as http,
    ):
        answers_and_report = await asyncio.gather(
            *(deliver(http, gateway, event) for event in events), run(world, fake)
        )
    *answers, report = answers_and_report

    assert all(answer.status == 200 for answer in answers)
    for purchase in purchases:
        assert len(await purchases_of(world, purchase.user_id)) == 1
        assert await balance(world, purchase.user_id) == 100
    assert all(item["kind"] == "missing_credit" and item["action"] == "repaired" for item in report.items)
    assert all(item["credits_delta"] in (0, 100) for item in report.items)
    assert report.summary.exit_code == EXIT_OK


async def test_dry_run_changes_nothing_but_reports(world, fake) -> None:
    lost = buy(fake)
    refunded = buy(fake)
    await deliver_in_process(world, emitted(fake, "checkout.session.completed", refunded.session_id))
    fake.state.refund_charge(refunded.charge_id)
    disputed = buy(fake)
    await deliver_in_process(world, emitted(fake, "checkout.session.completed", disputed.session_id))
    fake.state.dispute_charge(disputed.charge_id)
    before = await ledger_snapshot(world)
    journals_before = [await journal(world, purchase.user_id) for purchase in (lost, refunded, disputed)]

    report = await run(world, fake, dry_run=True)

    assert await ledger_snapshot(world) == before
    assert [await journal(world, purchase.user_id) for purchase in (lost, refunded, disputed)] == journals_before
    assert sorted((item["kind"], item["action"]) for item in report.items) == [
        ("dispute_state", "would_repair"),
        ("missing_credit", "would_repair"),
        ("missing_refund", "would_repair"),
    ]
    assert all(item["credits_delta"] is None for item in report.items)
    assert report.summary.exit_code == EXIT_DRIFT_REMAINS
    assert report.summary.drift_repaired == {}
    mutations = {"SettlePayment", "ApplyRefund", "ApplyDispute", "FailPayment", "RecordEvent", "OpenPayment"}
    assert not mutations & set(world.counter.calls)

    repaired = await run(world, fake)
    assert len(repaired.items) == 3


async def test_charge_of_a_payment_held_for_another_user_is_reported_not_credited_twice(world, fake) -> None:
    owner, claimant = new_user(), new_user()
    details = pb.PaymentDetails(
        user_id=owner,
        payment_intent_id="pi_shared_intent_0001",
        package_id="small",
        credits=100,
        amount_minor=500,
        currency_code="eur",
    )
    await world.payments.settle_payment(details)
    fake.state.add_charge(
        amount_minor=500, metadata=se.purchase_metadata(claimant, "small"), payment_intent_id="pi_shared_intent_0001"
    )

    report = await run(world, fake)

    [item] = report.items
    assert (item["kind"], item["action"], item["user_id"]) == ("user_mismatch", "reported", claimant)
    assert (await balance(world, owner), await balance(world, claimant)) == (100, 0)


async def test_charge_that_lost_its_metadata_is_checked_against_the_ledgers_record(world, fake) -> None:
    user_id = new_user()
    details = pb.PaymentDetails(
        user_id=user_id,
        checkout_session_id="cs_test_metadata_lost_0001",
        payment_intent_id="pi_metadata_lost_0001",
        package_id="medium",
        credits=550,
        amount_minor=2500,
        currency_code="eur",
    )
    await world.payments.settle_payment(details)
    fake.state.add_charge(amount_minor=2500, payment_intent_id="pi_metadata_lost_0001", amount_refunded_minor=2500)

    report = await run(world, fake)

    [item] = report.items  # refunded and repaired; not ledger_only, not a mismatch
    assert (item["kind"], item["action"], item["credits_delta"]) == ("missing_refund", "repaired", -550)
    assert await balance(world, user_id) == 0
    assert report.summary.charges_suite == 0
