"""`stripe trigger` through the real gateway, ledger and PostgreSQL: the event sequences the Stripe CLI's trigger
fixtures produce (tests/fakes/stripe_cli_triggers/triggers.json, derived from stripe-cli's pkg/fixtures/triggers),
with the `--add` / `--override` flags docs/stripe.md gives, reach the money paths: one credit per purchase and
the right final state per flow (purchase, async purchase, refund, a refund that fails, dispute, inquiry).

The flags are applied to the trigger's requests as stripe-cli applies them (`<request>:<dotted.path>=<value>`,
`--add` fills what is missing, `--override` replaces), and the events are built from those request parameters on
Stripe's published object shapes (tests/fakes/stripe_events.py). Each flow is delivered in Stripe's order, then,
for a second purchase, backwards with every event delivered twice: both end in the same state.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest

from credits.ledger.v1 import ledger_service_pb2 as pb
from tests.fakes import stripe_events as se
from tests.webhook_gateway.conftest import balance_of, deliver, journal_of, payment_by_intent

ROOT: Final = Path(__file__).resolve().parents[2]
TRIGGERS: Final = json.loads((ROOT / "tests/fakes/stripe_cli_triggers/triggers.json").read_text(encoding="utf-8"))
DOC: Final = ROOT / "docs/stripe.md"
USER_PLACEHOLDER: Final = "{user_id}"
DOC_USER: Final = "$USER_ID"
CREDITS, AMOUNT_MINOR = 550, 2500  # "medium"
# Stripe's test payment methods (docs.stripe.com/testing) and what they make of a dispute or a refund.
DISPUTE_STATUS_BY_PAYMENT_METHOD: Final = {
    "pm_card_createDispute": "needs_response",
    "pm_card_createDisputeInquiry": "warning_needs_response",
}
REFUND_FAILS_PAYMENT_METHOD: Final = "pm_card_refundFail"


# --- stripe-cli's rewrite rules, for the documented flags --------------------------------------------------


def rewrites(flags: list[str], user_id: str) -> dict[str, dict[str, Any]]:
    """`name:a.b.c=value` flags as stripe-cli's buildRewrites makes them: per request name, a nested map."""
    built: dict[str, dict[str, Any]] = {}
    for flag in flags:
        path, value = flag.replace(USER_PLACEHOLDER, user_id).split("=", 1)
        name, keys = path.split(":", 1)
        nested: Any = value
        for key in reversed(keys.split(".")):
            nested = {key: nested}
        merge(built.setdefault(name, {}), nested, override=False)
    return built


def merge(target: dict[str, Any], source: dict[str, Any], *, override: bool) -> None:
    """mergo.Merge on maps: nested maps merge; a leaf is set when missing, or replaced with `override`."""
    for key, value in source.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value, override=override)
        elif key not in target or override:
            target[key] = copy.deepcopy(value)


def requests_of(flow: dict[str, Any], user_id: str) -> dict[str, dict[str, Any]]:
    """The trigger's request parameters by request name, after `--override` then `--add` (stripe-cli's order)."""
    params = {request["name"]: copy.deepcopy(request["params"]) for request in flow["requests"]}
    for flags, override in ((flow["override"], True), (flow["add"], False)):
        for name, changes in rewrites(flags, user_id).items():
            assert name in params, f"{name} is not a request of the {flow['trigger']} fixture"
            merge(params[name], changes, override=override)
    return params


# --- what Stripe does with those requests ------------------------------------------------------------------


@dataclass
class Payment:
    """The payment the trigger's requests make, as Stripe would record it."""

    amount_minor: int
    currency: str
    intent_metadata: dict[str, str]
    session_metadata: dict[str, str] | None
    client_reference_id: str | None
    payment_method: str
    session_id: str
    intent_id: str
    charge_id: str


def payment_of(flow: dict[str, Any], user_id: str) -> Payment:
    params = requests_of(flow, user_id)
    suffix = uuid.uuid4().hex[:16]
    ids = {"session_id": f"cs_test_{suffix}", "intent_id": f"pi_{suffix}", "charge_id": f"ch_{suffix}"}
    if "checkout_session" in params:
        price, session = params["price"], params["checkout_session"]
        [line_item] = session["line_items"]
        amount_minor = int(price["unit_amount"]) * int(line_item["quantity"])
        # The payment page refuses a confirmation whose expected_amount is not the session's total.
        assert int(params["payment_page_confirm"]["expected_amount"]) == amount_minor
        return Payment(
            amount_minor=amount_minor,
            currency=price["currency"],
            intent_metadata=session["payment_intent_data"].get("metadata", {}),
            session_metadata=session.get("metadata", {}),
            client_reference_id=session.get("client_reference_id"),
            payment_method=params["payment_method"]["type"],
            **ids,
        )
    intent = params["payment_intent"]
    return Payment(
        amount_minor=int(intent["amount"]),
        currency=intent["currency"],
        intent_metadata=intent.get("metadata", {}),
        session_metadata=None,
        client_reference_id=None,
        payment_method=intent["payment_method"],
        **ids,
    )


def events_of(flow: dict[str, Any], payment: Payment) -> list[dict[str, Any]]:
    """The flow's events in Stripe's order, each a snapshot of its object at that moment."""
    fields = se.ChargeFields(
        charge_id=payment.charge_id,
        amount_minor=payment.amount_minor,
        currency=payment.currency,
        created_seconds=se.now_seconds(),
        metadata=dict(payment.intent_metadata),
        payment_intent_id=payment.intent_id,
    )
    refund = se.refund_object(
        charge_id=payment.charge_id,
        amount_minor=payment.amount_minor,
        currency=payment.currency,
        payment_intent_id=payment.intent_id,
    )
    built: list[dict[str, Any]] = []
    for event_type in flow["events"]:
        data_object = _object_for(event_type, payment, fields, refund)
        built.append(se.event(event_type, data_object))
    return built


def _object_for(event_type: str, payment: Payment, fields: se.ChargeFields, refund: dict[str, Any]) -> dict[str, Any]:
    if event_type.startswith("payment_intent."):
        status = event_type.removeprefix("payment_intent.")
        return se.payment_intent_object(
            amount_minor=payment.amount_minor,
            currency=payment.currency,
            metadata=payment.intent_metadata,
            payment_intent_id=payment.intent_id,
            status="requires_payment_method" if status == "created" else status,  # type: ignore[arg-type]
            latest_charge_id=payment.charge_id if status == "succeeded" else None,
        )
    if event_type.startswith("checkout.session."):
        assert payment.session_metadata is not None
        async_method = payment.payment_method != "card"
        paid = event_type != "checkout.session.completed" or not async_method
        session = se.checkout_session_object(
            amount_minor=payment.amount_minor,
            currency=payment.currency,
            metadata=payment.session_metadata,
            client_reference_id=payment.client_reference_id,
            session_id=payment.session_id,
            status="complete",
            payment_status="paid" if paid else "unpaid",
            payment_intent_id=payment.intent_id,
        )
        session["payment_method_types"] = [payment.payment_method]
        return session
    if event_type == "charge.succeeded":
        return se.charge_object(fields)
    if event_type == "charge.refunded":
        fields.refunds.append(copy.deepcopy(refund))
        return se.charge_object(fields)
    if event_type.startswith(("refund.", "charge.refund.")):
        if event_type != "refund.created" and payment.payment_method == REFUND_FAILS_PAYMENT_METHOD:
            se.set_refund_status(refund, "failed")  # asynchronously, after it first looked successful
        return copy.deepcopy(refund)
    assert event_type.startswith("charge.dispute."), event_type
    return se.dispute_object(
        charge_id=payment.charge_id,
        amount_minor=payment.amount_minor,
        currency=payment.currency,
        status=DISPUTE_STATUS_BY_PAYMENT_METHOD[payment.payment_method],
        payment_intent_id=payment.intent_id,
        dispute_id=f"dp_{payment.intent_id.removeprefix('pi_')}",
    )


# --- the tests ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    status: int
    balance: int
    kinds: tuple[int, ...]  # the journal, oldest first, in Stripe's order (backwards, a failure seen first
    # leaves no refund and reversal pair: the same balance by fewer entries)
    dispute_status: int = pb.DISPUTE_STATUS_UNSPECIFIED


PURCHASE, REFUND = pb.TRANSACTION_KIND_PURCHASE, pb.TRANSACTION_KIND_REFUND
REVERSAL = pb.TRANSACTION_KIND_REFUND_REVERSAL
EXPECTED: Final = {
    "purchase": Expected(pb.PAYMENT_STATUS_CREDITED, CREDITS, (PURCHASE,)),
    "async_purchase": Expected(pb.PAYMENT_STATUS_CREDITED, CREDITS, (PURCHASE,)),
    "refund": Expected(pb.PAYMENT_STATUS_REFUNDED, 0, (PURCHASE, REFUND)),
    "refund_that_fails": Expected(pb.PAYMENT_STATUS_CREDITED, CREDITS, (PURCHASE, REFUND, REVERSAL)),
    "dispute": Expected(
        pb.PAYMENT_STATUS_CHARGEBACK, 0, (PURCHASE, pb.TRANSACTION_KIND_CHARGEBACK), pb.DISPUTE_STATUS_NEEDS_RESPONSE
    ),
    "dispute_inquiry": Expected(
        pb.PAYMENT_STATUS_CREDITED, CREDITS, (PURCHASE,), pb.DISPUTE_STATUS_WARNING_NEEDS_RESPONSE
    ),
}


def test_every_flow_has_an_expectation() -> None:
    assert set(EXPECTED) == set(TRIGGERS["flows"])


async def _run(http: Any, gateway: Any, ledger: Any, fake_stripe: Any, flow: dict[str, Any], backwards: bool) -> Any:
    user_id = f"user-cli-{uuid.uuid4().hex[:12]}"
    payment = payment_of(flow, user_id)
    assert (payment.amount_minor, payment.currency) == (AMOUNT_MINOR, "eur")
    # Stripe holds the charge: a refund or dispute that outruns the purchase is resolved through it.
    fake_stripe.state.add_charge(
        amount_minor=payment.amount_minor,
        currency=payment.currency,
        metadata=payment.intent_metadata,
        payment_intent_id=payment.intent_id,
        charge_id=payment.charge_id,
    )
    events = events_of(flow, payment)
    order = [event for event in reversed(events) for _ in range(2)] if backwards else events
    outcomes = []
    for event in order:
        answer = await deliver(http, gateway, event)
        assert answer.status == 200, (event["type"], answer.body)
        outcomes.append((event["type"], answer.body["outcome"]))
    assert all(outcome != "refused" for _, outcome in outcomes), outcomes
    got = await payment_by_intent(ledger, payment.intent_id)
    kinds = tuple(entry.kind for entry in reversed(await journal_of(ledger, user_id)))
    return got, await balance_of(ledger, user_id), kinds, outcomes


@pytest.mark.parametrize("name", sorted(TRIGGERS["flows"]))
@pytest.mark.parametrize("backwards", [False, True], ids=["stripe-order", "backwards-twice"])
async def test_a_trigger_reaches_the_money_path(http, gateway, ledger, fake_stripe, name: str, backwards: bool) -> None:
    flow, expected = TRIGGERS["flows"][name], EXPECTED[name]

    payment, balance, kinds, outcomes = await _run(http, gateway, ledger, fake_stripe, flow, backwards)

    assert (payment.status, balance, payment.dispute_status) == (
        expected.status,
        expected.balance,
        expected.dispute_status,
    ), outcomes
    assert kinds.count(PURCHASE) == 1  # one credit per purchase, whatever the number of events that prove it
    if not backwards:
        assert kinds == expected.kinds, outcomes


async def test_without_the_flags_a_trigger_credits_nothing(http, gateway, ledger, fake_stripe) -> None:
    """The fixture as stripe-cli ships it (no metadata, USD): every event is refused or ignored, none credits."""
    flow = {**TRIGGERS["flows"]["purchase"], "add": [], "override": ["payment_page_confirm:expected_amount=3000"]}
    user_id = f"user-cli-{uuid.uuid4().hex[:12]}"
    payment = payment_of(flow, user_id)
    assert (payment.amount_minor, payment.currency) == (3000, "usd")
    for event in events_of(flow, payment):
        answer = await deliver(http, gateway, event)
        assert answer.status == 200
        assert answer.body["outcome"] in ("refused", "ignored"), (event["type"], answer.body)
    assert await balance_of(ledger, user_id) == 0


def command_of(flow: dict[str, Any]) -> str:
    flags = [f"--add {flag}" for flag in flow["add"]] + [f"--override {flag}" for flag in flow["override"]]
    return " ".join(["stripe trigger", flow["trigger"], *flags]).replace(USER_PLACEHOLDER, DOC_USER)


@pytest.mark.parametrize("name", sorted(TRIGGERS["flows"]))
def test_docs_show_the_exact_command(name: str) -> None:
    text = re.sub(r"\s*\\\n\s*", " ", DOC.read_text(encoding="utf-8"))
    assert command_of(TRIGGERS["flows"][name]) + "\n" in text  # the whole command: no flag more, none less
