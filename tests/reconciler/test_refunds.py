"""The reconciler compares refunds both ways and repairs both ways (real ledger, real PostgreSQL, the fake Stripe
over HTTP): a ledger that clawed back for a refund that then failed at Stripe (its webhooks lost) gets the
credits back; a lost refund is clawed back with the refund recorded by its id; an undelivered refund.failed is
applied by the events pass; a dry run changes nothing; a second run finds nothing."""

from __future__ import annotations

from typing import Any

from credits.ledger.v1 import ledger_service_pb2 as pb
from tests.fakes import stripe_events as se
from tests.reconciler.conftest import (
    balance,
    buy,
    deliver_in_process,
    emitted,
    journal,
    ledger_snapshot,
    payment_of,
    run,
)

CREDITS = 550  # medium
HALF_CLAWBACK = 275  # 1250 of 2500 refunded


async def _bought_and_half_refunded(world: Any, fake: Any) -> tuple[Any, str]:
    """A delivered purchase and a delivered refund of half of it; the refund id."""
    purchase = buy(fake, package_id="medium")
    await deliver_in_process(world, emitted(fake, "checkout.session.completed", purchase.session_id))
    fake.state.refund_charge(purchase.charge_id, amount_minor=1250, status="pending")
    created = [e for e in fake.state.events("refund.created") if e["data"]["object"]["charge"] == purchase.charge_id]
    await deliver_in_process(world, created[-1])
    assert await balance(world, purchase.user_id) == CREDITS - HALF_CLAWBACK
    return purchase, created[-1]["data"]["object"]["id"]


async def test_a_refund_that_failed_after_its_webhooks_were_lost_is_reinstated(world, fake) -> None:
    purchase, refund_id = await _bought_and_half_refunded(world, fake)
    fake.state.set_refund_status(refund_id, "failed")  # refund.updated / refund.failed never arrive

    report = await run(world, fake)

    assert await balance(world, purchase.user_id) == CREDITS
    [item] = report.items
    assert (item["kind"], item["action"], item["credits_delta"]) == ("excess_refund", "repaired", HALF_CLAWBACK)
    assert (item["stripe_amount_refunded_minor"], item["ledger_amount_refunded_minor"]) == (0, 1250)
    assert "1 failed or canceled" in item["detail"]
    payment = await payment_of(world, purchase.payment_intent_id)
    assert (payment.amount_refunded_minor, payment.status) == (0, pb.PAYMENT_STATUS_CREDITED)
    assert [(refund.refund_id, refund.status) for refund in payment.refunds] == [(refund_id, pb.REFUND_STATUS_FAILED)]
    assert (await journal(world, purchase.user_id))[0].kind == pb.TRANSACTION_KIND_REFUND_REVERSAL
    assert report.summary.drift_repaired == {"excess_refund": 1}
    assert (await run(world, fake)).items == []  # repaired for good


async def test_a_lost_refund_is_clawed_back_with_the_refund_recorded_by_its_id(world, fake) -> None:
    purchase = buy(fake, package_id="medium")
    await deliver_in_process(world, emitted(fake, "checkout.session.completed", purchase.session_id))
    fake.state.refund_charge(purchase.charge_id, amount_minor=1250)  # charge.refunded and refund.created lost

    report = await run(world, fake)

    [item] = report.items
    assert (item["kind"], item["action"], item["credits_delta"]) == ("missing_refund", "repaired", -HALF_CLAWBACK)
    payment = await payment_of(world, purchase.payment_intent_id)
    [created] = [e for e in fake.state.events("refund.created") if e["data"]["object"]["charge"] == purchase.charge_id]
    assert [refund.refund_id for refund in payment.refunds] == [created["data"]["object"]["id"]]
    assert (payment.amount_refunded_minor, payment.charge_amount_refunded_minor) == (1250, 1250)


async def test_an_undelivered_refund_failed_event_is_applied_by_the_events_pass(world, fake) -> None:
    purchase, refund_id = await _bought_and_half_refunded(world, fake)
    fake.state.emit_events = False
    failed = fake.state.set_refund_status(refund_id, "failed")
    fake.state.emit_events = True
    event = fake.state.add_event(se.refund_event("refund.failed", failed), delivery_success=False)

    report = await run(world, fake)

    [item] = report.items
    assert (item["kind"], item["action"], item["credits_delta"]) == ("missed_event", "repaired", HALF_CLAWBACK)
    assert (item["event_id"], item["event_type"]) == (event["id"], "refund.failed")
    assert (item["charge_id"], item["credits"]) == (purchase.charge_id, None)  # a refund object names no package
    assert await balance(world, purchase.user_id) == CREDITS
    applied = await deliver_in_process(world, event)  # the webhook arrives late after all
    assert applied.outcome.value == "duplicate"


async def test_a_dry_run_reports_the_excess_and_changes_nothing(world, fake) -> None:
    purchase, refund_id = await _bought_and_half_refunded(world, fake)
    fake.state.set_refund_status(refund_id, "failed")
    before = await ledger_snapshot(world)

    report = await run(world, fake, dry_run=True)

    [item] = report.items
    assert (item["kind"], item["action"]) == ("excess_refund", "would_repair")
    assert await ledger_snapshot(world) == before
    assert await balance(world, purchase.user_id) == CREDITS - HALF_CLAWBACK


async def test_refunds_delivered_by_their_refund_events_are_no_drift(world, fake) -> None:
    purchase, _ = await _bought_and_half_refunded(world, fake)
    second = fake.state.refund_charge(purchase.charge_id, amount_minor=500)
    created = [e for e in fake.state.events("refund.created") if e["data"]["object"]["charge"] == second["id"]]
    await deliver_in_process(world, created[-1])

    report = await run(world, fake)

    assert report.items == []
    assert await balance(world, purchase.user_id) == CREDITS - CREDITS * 1750 // 2500
