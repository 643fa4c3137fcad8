"""The Events API pass: undelivered events of the handled types are applied once, through the gateway's path."""

from __future__ import annotations

from credits.ledger.v1 import ledger_service_pb2 as pb
from services.reconciler.report import EXIT_OK
from services.stripe_bridge.apply import Outcome
from tests.fakes import stripe_events as se
from tests.fakes.stripe_events import new_id
from tests.reconciler.conftest import (
    balance,
    deliver_in_process,
    ledger_snapshot,
    new_user,
    payment_of,
    purchases_of,
    run,
)

DAY_SECONDS = 86_400


def _old_purchase(fake, days_ago: int = 5) -> tuple[str, str, str, dict]:
    """A purchase outside the charges window: its charge in Stripe and its completed-session event."""
    user_id, payment_intent_id = new_user(), new_id("pi_")
    created_seconds = fake.state.now_seconds() - days_ago * DAY_SECONDS
    charge = fake.state.add_charge(
        amount_minor=500,
        metadata=se.purchase_metadata(user_id, "small"),
        payment_intent_id=payment_intent_id,
        created_seconds=created_seconds,
    )
    completed = se.checkout_session_completed(
        user_id, "small", 500, "eur", payment_intent_id=payment_intent_id, created_seconds=created_seconds
    )
    return user_id, payment_intent_id, charge["id"], completed


async def test_undelivered_purchase_event_is_applied_once(world, fake) -> None:
    user_id, payment_intent_id, _, completed = _old_purchase(fake)
    fake.state.add_event(completed, delivery_success=False)

    first = await run(world, fake)
    second = await run(world, fake)

    [item] = first.items
    assert (item["kind"], item["action"], item["credits_delta"]) == ("missed_event", "repaired", 100)
    assert (item["event_id"], item["event_type"]) == (completed["id"], "checkout.session.completed")
    assert first.summary.charges_scanned == 0  # the charge is older than the window: only the event finds it
    assert second.items == []
    assert second.summary.events_scanned == 1
    assert second.summary.exit_code == EXIT_OK
    assert len(await purchases_of(world, user_id)) == 1
    assert (await payment_of(world, payment_intent_id)).status == pb.PAYMENT_STATUS_CREDITED
    # The ledger recorded the event id with its effect: the webhook arriving at last is a duplicate.
    assert (await deliver_in_process(world, completed)).outcome is Outcome.DUPLICATE


async def test_undelivered_refund_and_dispute_events_are_applied_once(world, fake) -> None:
    user_id, payment_intent_id, charge_id, completed = _old_purchase(fake, days_ago=10)
    await deliver_in_process(world, completed)
    refunded = se.charge_refunded(
        user_id,
        "small",
        500,
        "eur",
        amount_refunded_minor=250,
        charge_id=charge_id,
        payment_intent_id=payment_intent_id,
    )
    disputed = se.charge_dispute(
        "charge.dispute.created",
        status="needs_response",
        charge_id=charge_id,
        payment_intent_id=payment_intent_id,
        amount_minor=500,
        currency="eur",
    )
    fake.state.add_event(refunded, delivery_success=False)
    fake.state.add_event(disputed, delivery_success=False)

    first = await run(world, fake)
    second = await run(world, fake)

    assert sorted(item["event_type"] for item in first.items) == ["charge.dispute.created", "charge.refunded"]
    assert {item["action"] for item in first.items} == {"repaired"}
    assert sum(item["credits_delta"] for item in first.items) == -100
    assert second.items == []
    assert await balance(world, user_id) == 0
    payment = await payment_of(world, payment_intent_id)
    assert (payment.status, payment.amount_refunded_minor) == (pb.PAYMENT_STATUS_CHARGEBACK, 250)


async def test_delivered_events_are_not_fetched_again(world, fake) -> None:
    _, _, _, completed = _old_purchase(fake)
    fake.state.add_event(completed, delivery_success=True)

    report = await run(world, fake)

    assert report.summary.events_scanned == 0
    assert report.items == []
    [events_request] = [request for request in fake.state.requests if request.path == "/v1/events"]
    assert events_request.query["delivery_success"] == "false"
    assert "checkout.session.completed" in events_request.query.values()


async def test_undelivered_event_refused_by_the_catalog_is_recorded_not_credited(world, fake) -> None:
    user_id = new_user()
    underpaid = se.checkout_session_completed(user_id, "small", 400, "eur", payment_intent_id=new_id("pi_"))
    fake.state.add_event(underpaid, delivery_success=False)

    report = await run(world, fake)

    assert report.items == []
    assert report.summary.events_recorded == 1
    assert await balance(world, user_id) == 0
    assert (await deliver_in_process(world, underpaid)).outcome is Outcome.DUPLICATE  # recorded once, refused


async def test_dry_run_reports_undelivered_events_and_changes_nothing(world, fake) -> None:
    user_id, _, _, completed = _old_purchase(fake)
    fake.state.add_event(completed, delivery_success=False)

    report = await run(world, fake, dry_run=True)

    [item] = report.items
    assert (item["kind"], item["action"], item["event_id"]) == ("missed_event", "would_repair", completed["id"])
    assert await ledger_snapshot(world) == []
    assert await balance(world, user_id) == 0


async def test_events_pass_can_be_turned_off(world, fake) -> None:
    _, _, _, completed = _old_purchase(fake)
    fake.state.add_event(completed, delivery_success=False)

    report = await run(world, fake, events_enabled=False)

    assert report.items == []
    assert report.summary.events_since is None
    assert not [request for request in fake.state.requests if request.path == "/v1/events"]
