"""Checkout outcomes through the real gateway, the real ledger and PostgreSQL (issue 16, point 4).

    case                                                   answer    ledger
    promotion codes / automatic tax turned on              -         the session request carries them (off: not)
    paid with a discount and tax                           applied   the pack credited (matched on amount_subtotal);
                                                                     amount paid, tax and discount recorded
    payment_intent.succeeded of a discounted purchase      ignored   settled_by_session (never a catalog refusal)
    a subtotal that is not the catalog price               refused   catalog_mismatch, even with amount_total at it
    100% off (no_payment_required, no payment intent)      applied   the pack credited, 0 paid
    no_payment_required with something to pay              refused   malformed_object
    legacy Adaptive Pricing (customer's currency)          refused   catalog_mismatch; the INIT payment stays INIT
    an anonymized account                                  refused   account_anonymized: PAID, not credited, counted
    checkout.session.expired                               applied   INIT -> EXPIRED; a late completion still credits
    an expired session of no user of ours                  ignored   not_a_suite_session
    a refund of a discounted or taxed purchase             applied   clawed back in proportion to what was
                                                                     charged (not the price): all at a full refund

Events are Stripe's published session fixture (tests/fakes/stripe_events.py) with the fields of the current API
version a discounted, taxed or expired session carries: amount_subtotal, amount_total, total_details, discounts,
automatic_tax, currency_conversion (legacy Adaptive Pricing), payment_status.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
from prometheus_client import REGISTRY

from credits.ledger.v1 import ledger_service_pb2 as pb
from services.common.config import ConfigError
from services.webhook_gateway.config import GatewaySettings
from tests.fakes import stripe_events as se
from tests.webhook_gateway.conftest import (
    balance_of,
    deliver,
    gateway_environ,
    payment_by_session,
    post,
    processed_event,
    running_gateway,
    user_token,
)

MEDIUM_CREDITS = 550
MEDIUM_PRICE_MINOR = 2500


def _user() -> str:
    return f"user-{uuid.uuid4().hex[:16]}"


def _refused_count(code: str) -> float:
    return REGISTRY.get_sample_value("payment_events_refused_total", {"code": code}) or 0.0


async def _checkout(http, gateway, user_id: str, package_id: str = "medium") -> str:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {user_token(user_id)}"}
    answer = await post(http, gateway.url("/checkout"), f'{{"package_id": "{package_id}"}}'.encode(), headers)
    assert answer.status == 200, answer.body
    session_id: str = answer.body["checkout_session_id"]
    return session_id


def _session_requests(fake_stripe, since: int) -> list[Any]:
    return [r for r in fake_stripe.state.requests[since:] if r.method == "POST" and r.path == "/v1/checkout/sessions"]


def _completed(
    session: dict[str, Any],
    *,
    amount_total: int,
    tax: int = 0,
    discount: int = 0,
    payment_status: str = "paid",
    payment_intent_id: str | None = None,
    event_type: str = "checkout.session.completed",
) -> dict[str, Any]:
    """The session as Stripe completes it: paid (or not), what was charged, tax and discount apart."""
    session = dict(session)
    session.update(
        status="complete",
        url=None,
        payment_status=payment_status,
        payment_intent=payment_intent_id if payment_intent_id is not None else se.new_id("pi_"),
        amount_total=amount_total,
        total_details={"amount_discount": discount, "amount_shipping": 0, "amount_tax": tax},
        customer_details=se.session_customer_details("jenny.rosen@example.com"),
    )
    if discount:
        session["discounts"] = [{"coupon": None, "promotion_code": se.new_id("promo_")}]
    if tax:
        session["automatic_tax"] = {**session["automatic_tax"], "enabled": True, "status": "complete"}
    return se.event(event_type, session)


# --- POST /checkout: the settings ------------------------------------------------------------------


async def test_checkout_offers_promotion_codes_and_automatic_tax_when_turned_on(
    http, ledger_target, fake_stripe
) -> None:
    environ = gateway_environ(
        ledger_target,
        fake_stripe,
        CHECKOUT_ALLOW_PROMOTION_CODES="true",
        CHECKOUT_AUTOMATIC_TAX="true",
        CHECKOUT_TAX_BEHAVIOR="inclusive",
    )
    async with running_gateway(environ) as gateway:
        before = len(fake_stripe.state.requests)
        session_id = await _checkout(http, gateway, _user())
    (sent,) = _session_requests(fake_stripe, before)
    assert sent.form["allow_promotion_codes"] == "true"
    assert sent.form["automatic_tax[enabled]"] == "true"
    assert sent.form["line_items[0][price_data][tax_behavior]"] == "inclusive"
    assert sent.form["line_items[0][price_data][unit_amount]"] == str(MEDIUM_PRICE_MINOR)
    session = fake_stripe.state.session(session_id)
    assert session["allow_promotion_codes"] is True and session["automatic_tax"]["enabled"] is True


async def test_checkout_offers_neither_by_default(http, gateway, fake_stripe) -> None:
    before = len(fake_stripe.state.requests)
    await _checkout(http, gateway, _user())
    (sent,) = _session_requests(fake_stripe, before)
    assert not {key for key in sent.form if key.startswith(("allow_promotion_codes", "automatic_tax"))}
    assert "line_items[0][price_data][tax_behavior]" not in sent.form


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        pytest.param({"CHECKOUT_ALLOW_PROMOTION_CODES": "yes"}, "CHECKOUT_ALLOW_PROMOTION_CODES", id="not-a-boolean"),
        pytest.param({"CHECKOUT_AUTOMATIC_TAX": "1"}, "CHECKOUT_AUTOMATIC_TAX", id="number-is-not-a-boolean"),
        pytest.param(
            {"CHECKOUT_AUTOMATIC_TAX": "true", "CHECKOUT_TAX_BEHAVIOR": "included"},
            "CHECKOUT_TAX_BEHAVIOR",
            id="unknown-tax-behavior",
        ),
        pytest.param({"CHECKOUT_TAX_BEHAVIOR": "exclusive"}, "CHECKOUT_TAX_BEHAVIOR", id="behavior-without-tax"),
    ],
)
def test_bad_checkout_settings_stop_start_up_naming_the_variable(ledger_target, fake_stripe, overrides, variable):
    with pytest.raises(ConfigError) as refused:
        GatewaySettings.from_env(gateway_environ(ledger_target, fake_stripe, **overrides))
    assert str(refused.value).startswith(f"{variable}:")


# --- discounts and tax -----------------------------------------------------------------------------


@pytest.mark.parametrize("intent_first", [False, True], ids=["session-first", "intent-first"])
async def test_a_discounted_taxed_purchase_credits_its_pack_and_records_what_was_paid(
    http, gateway, ledger, fake_stripe, intent_first
) -> None:
    user_id = _user()
    session_id = await _checkout(http, gateway, user_id)
    # 5.00 off with a promotion code, 20% tax on the 20.00 left: 24.00 charged, 4.00 of it tax.
    completed = _completed(fake_stripe.state.session(session_id), amount_total=2400, tax=400, discount=500)
    intent_id = completed["data"]["object"]["payment_intent"]
    intent = se.payment_intent_succeeded(user_id, "medium", 2400, "eur", payment_intent_id=intent_id)
    order = [intent, completed] if intent_first else [completed, intent]

    answers = [await deliver(http, gateway, event) for event in order + order]

    outcomes = {event["type"]: answer.body["outcome"] for event, answer in zip(order, answers, strict=False)}
    assert outcomes == {"checkout.session.completed": "applied", "payment_intent.succeeded": "ignored"}
    assert [answer.body["outcome"] for answer in answers[2:]] == ["duplicate", "duplicate"]
    assert await balance_of(ledger, user_id) == MEDIUM_CREDITS
    payment = await payment_by_session(ledger, session_id)
    assert payment.status == pb.PAYMENT_STATUS_CREDITED and payment.payment_intent_id == intent_id
    assert (payment.amount_minor, payment.currency_code) == (MEDIUM_PRICE_MINOR, "eur")
    assert (payment.amount_paid_minor, payment.amount_tax_minor, payment.amount_discount_minor) == (2400, 400, 500)


async def test_the_intent_of_a_discounted_purchase_is_recorded_as_settled_by_its_session(
    http, gateway, db, fake_stripe
) -> None:
    user_id = _user()
    intent = se.payment_intent_succeeded(user_id, "medium", 2000, "eur")
    answer = await deliver(http, gateway, intent)
    assert answer.body["outcome"] == "ignored"
    row = await processed_event(db, intent["id"])
    assert row["outcome"] == "ignored" and row["detail"].startswith("settled_by_session:")


async def test_a_subtotal_off_the_catalog_is_refused_even_when_the_total_is_the_price(
    http, gateway, ledger, db, fake_stripe
) -> None:
    """amount_total is what was charged (here: a 20.00 subtotal plus 5.00 tax); only amount_subtotal is the price."""
    user_id = _user()
    session_id = await _checkout(http, gateway, user_id)
    session = {**fake_stripe.state.session(session_id), "amount_subtotal": 2000}
    event = _completed(session, amount_total=MEDIUM_PRICE_MINOR, tax=500)
    before = _refused_count("catalog_mismatch")

    answer = await deliver(http, gateway, event)

    assert answer.body["outcome"] == "refused"
    assert _refused_count("catalog_mismatch") == before + 1
    assert (await processed_event(db, event["id"]))["detail"].startswith("catalog_mismatch:")
    assert await balance_of(ledger, user_id) == 0
    assert (await payment_by_session(ledger, session_id)).status == pb.PAYMENT_STATUS_INIT


async def test_a_session_a_promotion_code_made_free_credits_its_pack(http, gateway, ledger, fake_stripe) -> None:
    """100% off: Stripe completes the session with payment_status no_payment_required and no payment intent. The
    merchant issued the code: the customer gets the pack, and the ledger records 0 paid."""
    user_id = _user()
    session_id = await _checkout(http, gateway, user_id)
    event = _completed(
        fake_stripe.state.session(session_id),
        amount_total=0,
        discount=MEDIUM_PRICE_MINOR,
        payment_status="no_payment_required",
        payment_intent_id="",
    )
    event["data"]["object"]["payment_intent"] = None

    answer = await deliver(http, gateway, event)

    assert answer.body["outcome"] == "applied"
    assert await balance_of(ledger, user_id) == MEDIUM_CREDITS
    payment = await payment_by_session(ledger, session_id)
    assert payment.status == pb.PAYMENT_STATUS_CREDITED and payment.payment_intent_id == ""
    assert payment.HasField("amount_paid_minor") and payment.amount_paid_minor == 0
    assert payment.amount_discount_minor == MEDIUM_PRICE_MINOR


async def test_no_payment_required_with_something_to_pay_is_refused(http, gateway, ledger, fake_stripe) -> None:
    user_id = _user()
    session_id = await _checkout(http, gateway, user_id)
    event = _completed(fake_stripe.state.session(session_id), amount_total=100, payment_status="no_payment_required")
    event["data"]["object"]["payment_intent"] = None
    assert (await deliver(http, gateway, event)).body["outcome"] == "refused"
    assert await balance_of(ledger, user_id) == 0


async def test_a_legacy_adaptive_pricing_session_in_the_customers_currency_is_refused(
    http, gateway, ledger, db, fake_stripe
) -> None:
    """Before API version 2025-03-31 an Adaptive Pricing session's currency was the customer's; the catalog's
    currency and price sat in currency_conversion. It is charged but matches no pack: refused, for an operator."""
    user_id = _user()
    session_id = await _checkout(http, gateway, user_id)
    session = {
        **fake_stripe.state.session(session_id),
        "currency": "usd",
        "amount_subtotal": 2712,
        "currency_conversion": {
            "amount_subtotal": MEDIUM_PRICE_MINOR,
            "amount_total": MEDIUM_PRICE_MINOR,
            "fx_rate": "1.0848",
            "source_currency": "eur",
        },
    }
    event = _completed(session, amount_total=2712)

    answer = await deliver(http, gateway, event)

    assert answer.body["outcome"] == "refused"
    row = await processed_event(db, event["id"])
    assert row["detail"].startswith("catalog_mismatch:") and "usd" in row["detail"]
    assert (row["user_id"], row["payment_intent_id"]) == (user_id, event["data"]["object"]["payment_intent"])
    assert await balance_of(ledger, user_id) == 0
    assert (await payment_by_session(ledger, session_id)).status == pb.PAYMENT_STATUS_INIT


# --- anonymized accounts ---------------------------------------------------------------------------


async def test_a_purchase_for_an_anonymized_account_is_refused_recorded_counted_and_logged(
    http, gateway, ledger, db, fake_stripe, caplog
) -> None:
    user_id = _user()
    session_id = await _checkout(http, gateway, user_id)
    await ledger.anonymize(user_id)
    event = _completed(fake_stripe.state.session(session_id), amount_total=MEDIUM_PRICE_MINOR)
    before = _refused_count("account_anonymized")

    with caplog.at_level(logging.WARNING, logger="services.stripe_bridge.apply"):
        answer = await deliver(http, gateway, event)

    assert answer.status == 200 and answer.body == {"received": True, "outcome": "refused"}
    assert _refused_count("account_anonymized") == before + 1
    assert any("anonymized" in record.getMessage() for record in caplog.records)
    payment = await payment_by_session(ledger, session_id)
    assert payment.status == pb.PAYMENT_STATUS_PAID and payment.credit_transaction_id == 0
    assert payment.settle_refusal == "account_anonymized"
    row = await processed_event(db, event["id"])
    assert (row["outcome"], row["payment_id"]) == ("refused", payment.id)
    assert row["detail"].startswith("account_anonymized:")
    assert await balance_of(ledger, user_id) == 0
    again = await deliver(http, gateway, event)
    assert again.body["outcome"] == "duplicate"
    assert _refused_count("account_anonymized") == before + 1


async def test_a_refund_on_an_anonymized_account_still_claws_back(http, gateway, ledger, fake_stripe) -> None:
    user_id = _user()
    session_id = await _checkout(http, gateway, user_id)
    completed = _completed(fake_stripe.state.session(session_id), amount_total=MEDIUM_PRICE_MINOR)
    assert (await deliver(http, gateway, completed)).body["outcome"] == "applied"
    await ledger.anonymize(user_id)
    intent_id = completed["data"]["object"]["payment_intent"]
    refunded = se.charge_refunded(
        user_id,
        "medium",
        MEDIUM_PRICE_MINOR,
        "eur",
        amount_refunded_minor=MEDIUM_PRICE_MINOR,
        payment_intent_id=intent_id,
    )
    answer = await deliver(http, gateway, refunded)
    assert answer.body["outcome"] == "applied"
    assert await balance_of(ledger, user_id) == 0
    assert (await payment_by_session(ledger, session_id)).status == pb.PAYMENT_STATUS_REFUNDED


# --- refunds of what was charged ------------------------------------------------------------------


async def _paid(http, gateway, fake_stripe, user_id: str, *, amount_total: int, tax: int, discount: int) -> tuple:
    """A medium pack bought through Checkout and paid with `amount_total` charged: (session id, intent id)."""
    session_id = await _checkout(http, gateway, user_id)
    completed = _completed(fake_stripe.state.session(session_id), amount_total=amount_total, tax=tax, discount=discount)
    assert (await deliver(http, gateway, completed)).body["outcome"] == "applied"
    return session_id, completed["data"]["object"]["payment_intent"]


@pytest.mark.parametrize(
    ("amount_total", "tax", "discount"),
    [(2000, 0, 500), (3000, 500, 0), (2400, 400, 500)],
    ids=["discount", "tax-on-top", "discount-and-tax"],
)
async def test_a_full_refund_of_what_was_charged_takes_back_every_credit(
    http, gateway, ledger, fake_stripe, amount_total, tax, discount
) -> None:
    user_id = _user()
    session_id, intent_id = await _paid(
        http, gateway, fake_stripe, user_id, amount_total=amount_total, tax=tax, discount=discount
    )
    refunded = se.charge_refunded(
        user_id, "medium", amount_total, "eur", amount_refunded_minor=amount_total, payment_intent_id=intent_id
    )

    answer = await deliver(http, gateway, refunded)

    assert answer.body["outcome"] == "applied"
    assert await balance_of(ledger, user_id) == 0
    payment = await payment_by_session(ledger, session_id)
    assert payment.status == pb.PAYMENT_STATUS_REFUNDED
    assert (payment.amount_refunded_minor, payment.credits_clawed_back) == (amount_total, MEDIUM_CREDITS)


@pytest.mark.parametrize("by", ["charge", "refund-object"])
async def test_a_partial_refund_of_a_taxed_purchase_claws_back_its_share_of_what_was_charged(
    http, gateway, ledger, fake_stripe, by
) -> None:
    user_id = _user()
    session_id, intent_id = await _paid(http, gateway, fake_stripe, user_id, amount_total=3000, tax=500, discount=0)
    if by == "charge":
        event = se.charge_refunded(
            user_id, "medium", 3000, "eur", amount_refunded_minor=1200, payment_intent_id=intent_id
        )
    else:
        refund = se.refund_object(
            charge_id=se.new_id("ch_"), amount_minor=1200, currency="eur", payment_intent_id=intent_id
        )
        event = se.refund_event("refund.created", refund)

    assert (await deliver(http, gateway, event)).body["outcome"] == "applied"

    clawed_back = MEDIUM_CREDITS * 1200 // 3000  # 220 of 550: 40 % of what was charged, not 48 % of the price
    assert await balance_of(ledger, user_id) == MEDIUM_CREDITS - clawed_back
    payment = await payment_by_session(ledger, session_id)
    assert (payment.status, payment.credits_clawed_back) == (pb.PAYMENT_STATUS_CREDITED, clawed_back)


async def test_a_refund_above_what_was_charged_is_refused(http, gateway, ledger, fake_stripe) -> None:
    user_id = _user()
    session_id, intent_id = await _paid(http, gateway, fake_stripe, user_id, amount_total=2000, tax=0, discount=500)
    refund = se.refund_object(
        charge_id=se.new_id("ch_"), amount_minor=2001, currency="eur", payment_intent_id=intent_id
    )

    answer = await deliver(http, gateway, se.refund_event("refund.created", refund))

    assert answer.body["outcome"] == "refused"
    assert await balance_of(ledger, user_id) == MEDIUM_CREDITS
    assert (await payment_by_session(ledger, session_id)).amount_refunded_minor == 0


# --- expired sessions ------------------------------------------------------------------------------


async def test_an_expired_session_ends_its_payment_and_a_late_completion_still_credits(
    http, gateway, ledger, db, fake_stripe
) -> None:
    user_id = _user()
    session_id = await _checkout(http, gateway, user_id)
    open_session = fake_stripe.state.session(session_id)
    events_before = len(fake_stripe.state.events())
    fake_stripe.state.expire_session(session_id)
    (expired,) = fake_stripe.state.events()[events_before:]
    assert expired["type"] == "checkout.session.expired"

    answer = await deliver(http, gateway, expired)

    assert answer.body["outcome"] == "applied"
    assert (await payment_by_session(ledger, session_id)).status == pb.PAYMENT_STATUS_EXPIRED
    assert (await processed_event(db, expired["id"]))["outcome"] == "applied"
    assert (await deliver(http, gateway, expired)).body["outcome"] == "duplicate"
    # Stripe's order is not the order of delivery: a completion delivered after the expiry still credits.
    late = _completed(open_session, amount_total=MEDIUM_PRICE_MINOR)
    assert (await deliver(http, gateway, late)).body["outcome"] == "applied"
    assert await balance_of(ledger, user_id) == MEDIUM_CREDITS
    assert (await payment_by_session(ledger, session_id)).status == pb.PAYMENT_STATUS_CREDITED


async def test_an_expiry_delivered_after_the_completion_changes_nothing(http, gateway, ledger, fake_stripe) -> None:
    user_id = _user()
    session_id = await _checkout(http, gateway, user_id)
    session = fake_stripe.state.session(session_id)
    completed = _completed(session, amount_total=MEDIUM_PRICE_MINOR)
    expired = se.event("checkout.session.expired", {**session, "status": "expired", "url": None})
    for event in (completed, expired):
        assert (await deliver(http, gateway, event)).body["outcome"] == "applied"
    assert (await payment_by_session(ledger, session_id)).status == pb.PAYMENT_STATUS_CREDITED
    assert await balance_of(ledger, user_id) == MEDIUM_CREDITS


async def test_an_expired_session_of_no_user_of_ours_is_ignored(http, gateway, db) -> None:
    """Dashboard-made and Payment Link sessions expire too: nothing was paid, nothing to end or flag."""
    session = se.checkout_session_object(amount_minor=1000, currency="eur", metadata={}, status="expired")
    session["url"] = None
    event = se.event("checkout.session.expired", session)
    answer = await deliver(http, gateway, event)
    assert answer.body["outcome"] == "ignored"
    assert (await processed_event(db, event["id"]))["detail"].startswith("not_a_suite_session:")
