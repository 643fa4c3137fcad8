"""Stripe's side of a fault run: the fake Stripe account (tests/fakes/stripe_api.py), what the customers do
in it (pay, get refunds, dispute), and the truth the checker compares the ledger with.

`ObservedFakeStripe` is the fake with two additions the delivery simulator needs: every event the fake
emits is handed to a listener, and an event counts as undelivered (`delivery_success=false` in the
Events API, which the reconciler reads) until the simulator saw a 2xx for it.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from services.stripe_bridge.catalog import Catalog, Package
from tests.fakes.stripe_api import FakeStripe
from tests.fakes.stripe_events import JsonObject, purchase_metadata

REAL_DISPUTE_OPEN: Final = frozenset({"needs_response", "under_review"})
INQUIRY_OPEN: Final = frozenset({"warning_needs_response", "warning_under_review"})
CUSTOMER_EMAIL_DOMAIN: Final = "customers.example.test"


class ObservedFakeStripe(FakeStripe):
    """The fake Stripe account, telling `listener` about each event it emits (see the module docstring)."""

    def __init__(self, api_key: str, listener: Callable[[JsonObject], None]) -> None:
        super().__init__(api_key)
        self._listener = listener

    def add_event(self, event: Mapping[str, Any], *, delivery_success: bool = True) -> JsonObject:
        # Pending until acknowledged: Stripe's `delivery_success=false` lists pending and failed events alike.
        stored = super().add_event(event, delivery_success=False)
        self._listener(stored)
        return stored

    def mark_delivered(self, event_id: str) -> None:
        with self._lock:
            self._event_delivery_success[event_id] = True


@dataclass
class Purchase:
    """One paid (or paying) Checkout Session of the run, as the customer side knows it."""

    user_id: str
    package: Package
    session_id: str
    via_gateway: bool
    payment_intent_id: str = ""
    charge_id: str = ""
    asynchronous: bool = False
    async_outcome: str = ""  # "", "succeeded" or "failed"
    dispute_id: str = ""


@dataclass(frozen=True)
class PaymentTruth:
    """What Stripe says about one purchase at the end of the run: the state the ledger must hold."""

    user_id: str
    package_id: str
    credits: int
    amount_minor: int
    session_id: str
    payment_intent_id: str
    charge_id: str
    paid: bool
    failed: bool
    amount_refunded_minor: int
    dispute_status: str | None


class StripeWorld:
    """The customers' actions on the fake account, chosen by a seeded random generator."""

    def __init__(self, fake: ObservedFakeStripe, catalog: Catalog, rng: random.Random) -> None:
        self.fake = fake
        self.catalog = catalog
        self.rng = rng
        self.purchases: list[Purchase] = []
        self._by_charge: dict[str, Purchase] = {}
        self._lock = threading.Lock()

    def packages(self) -> list[Package]:
        return list(self.catalog)

    def open_session_directly(self, user_id: str, package: Package) -> str:
        """A session created outside the gateway (another tool, or a checkout whose ledger write was lost)."""
        metadata = purchase_metadata(user_id, package.package_id)
        session = self.fake.create_session(
            amount_minor=package.amount_minor,
            currency=package.currency,
            metadata=metadata,
            payment_intent_metadata=metadata,
            client_reference_id=user_id,
            customer_email=f"{user_id}@{CUSTOMER_EMAIL_DOMAIN}",
        )
        return str(session["id"])

    def pay(
        self, user_id: str, package: Package, session_id: str, *, via_gateway: bool, asynchronous: bool
    ) -> Purchase:
        """The customer completes the session: Stripe emits charge, payment intent and session events."""
        session = self.fake.complete_session(session_id, payment_status="unpaid" if asynchronous else "paid")
        intent_id = str(session["payment_intent"])
        charge_id = str(self.fake.payment_intent(intent_id)["latest_charge"])
        purchase = Purchase(user_id, package, session_id, via_gateway, intent_id, charge_id, asynchronous)
        with self._lock:
            self.purchases.append(purchase)
            self._by_charge[charge_id] = purchase
        return purchase

    def finish_async(self, purchase: Purchase, succeeded: bool) -> None:
        self.fake.finish_async_payment(purchase.session_id, succeeded=succeeded)
        purchase.async_outcome = "succeeded" if succeeded else "failed"

    def refundable(self) -> list[Purchase]:
        """Paid, not fully refunded, and no real dispute open or lost (Stripe refuses those refunds)."""
        found = []
        for purchase in self._paid():
            charge = self.fake.charge(purchase.charge_id)
            if charge["amount_refunded"] >= charge["amount"]:
                continue
            status = self._dispute_status(purchase)
            if status in REAL_DISPUTE_OPEN or status == "lost":
                continue
            found.append(purchase)
        return found

    def refund(self, purchase: Purchase) -> int:
        """A partial refund (or the rest of the charge); the charge.refunded event carries the new total."""
        charge = self.fake.charge(purchase.charge_id)
        left = int(charge["amount"]) - int(charge["amount_refunded"])
        amount = left if self.rng.random() < 0.3 else self.rng.randint(1, left)
        self.fake.refund_charge(purchase.charge_id, amount_minor=amount)
        return amount

    def disputable(self) -> list[Purchase]:
        found = []
        for purchase in self._paid():
            if purchase.dispute_id:
                continue
            charge = self.fake.charge(purchase.charge_id)
            if charge["amount_refunded"] < charge["amount"]:
                found.append(purchase)
        return found

    def dispute(self, purchase: Purchase) -> str:
        status = "warning_needs_response" if self.rng.random() < 0.25 else "needs_response"
        dispute = self.fake.dispute_charge(purchase.charge_id, status=status)
        purchase.dispute_id = str(dispute["id"])
        return status

    def open_disputes(self) -> list[Purchase]:
        return [p for p in self._paid() if p.dispute_id and self._dispute_status(p) in REAL_DISPUTE_OPEN | INQUIRY_OPEN]

    def move_dispute(self, purchase: Purchase) -> str:
        """An open dispute moves on: under review, or closed (won / lost; an inquiry closes as warning_closed)."""
        status = self._dispute_status(purchase)
        roll = self.rng.random()
        if status in INQUIRY_OPEN:
            new_status = (
                "warning_under_review" if status == "warning_needs_response" and roll < 0.3 else "warning_closed"
            )
        elif status == "needs_response" and roll < 0.3:
            new_status = "under_review"
        else:
            new_status = "won" if self.rng.random() < 0.5 else "lost"
        self.fake.set_dispute_status(purchase.dispute_id, new_status)
        return new_status

    def _paid(self) -> list[Purchase]:
        with self._lock:
            purchases = list(self.purchases)
        return [p for p in purchases if not p.asynchronous or p.async_outcome == "succeeded"]

    def _dispute_status(self, purchase: Purchase) -> str | None:
        if not purchase.dispute_id:
            return None
        return str(self.fake.dispute(purchase.dispute_id)["status"])

    def truth(self) -> list[PaymentTruth]:
        """Every purchase as Stripe holds it now (read from the fake, not from what the workload meant)."""
        truths = []
        with self._lock:
            purchases = list(self.purchases)
        for purchase in purchases:
            charge = self.fake.charge(purchase.charge_id)
            truths.append(
                PaymentTruth(
                    user_id=purchase.user_id,
                    package_id=purchase.package.package_id,
                    credits=purchase.package.credits,
                    amount_minor=purchase.package.amount_minor,
                    session_id=purchase.session_id,
                    payment_intent_id=purchase.payment_intent_id,
                    charge_id=purchase.charge_id,
                    paid=charge["status"] == "succeeded",
                    failed=charge["status"] == "failed",
                    amount_refunded_minor=int(charge["amount_refunded"]),
                    dispute_status=self._dispute_status(purchase),
                )
            )
        return truths
