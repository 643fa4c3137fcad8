"""Builders of the payment tests: fresh Stripe-like ids, PaymentDetails, EventSources, journal reads."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

import asyncpg

from credits.ledger.v1 import ledger_service_pb2 as pb

# The default catalog's medium package (SPEC §4): 550 credits for 25.00 EUR.
MEDIUM_CREDITS = 550
MEDIUM_AMOUNT_MINOR = 2500
# The small package: 100 credits for 5.00 EUR (0.2 credits per cent: floors show up quickly).
SMALL_CREDITS = 100
SMALL_AMOUNT_MINOR = 500


def stripe_id(prefix: str) -> str:
    return f"{prefix}_test_{uuid.uuid4().hex}"


@dataclass(frozen=True)
class Ids:
    """One purchase's Stripe ids."""

    session: str
    intent: str
    charge: str

    @classmethod
    def new(cls) -> Ids:
        return cls(session=stripe_id("cs"), intent=stripe_id("pi"), charge=stripe_id("ch"))


def details(
    user_id: str,
    *,
    session: str = "",
    intent: str = "",
    charge: str = "",
    package_id: str = "medium",
    credits: int = MEDIUM_CREDITS,
    amount_minor: int = MEDIUM_AMOUNT_MINOR,
    currency_code: str = "eur",
    priced: bool = True,
    email: str = "",
) -> pb.PaymentDetails:
    price = {"package_id": package_id, "credits": credits, "amount_minor": amount_minor, "currency_code": currency_code}
    return pb.PaymentDetails(
        user_id=user_id,
        checkout_session_id=session,
        payment_intent_id=intent,
        charge_id=charge,
        customer_email=email,
        **(price if priced else {}),  # type: ignore[arg-type]
    )


def source(event_type: str = "checkout.session.completed", event_id: str = "", payload: str = "") -> pb.EventSource:
    """An event; the payload hash defaults to one derived from the id (the same event, redelivered)."""
    event_id = event_id or stripe_id("evt")
    digest = hashlib.sha256((payload or event_id).encode()).digest()
    return pb.EventSource(event_id=event_id, event_type=event_type, payload_sha256=digest)


async def payment_row(db: asyncpg.Pool, payment_id: int) -> asyncpg.Record:
    return await db.fetchrow("SELECT * FROM payments WHERE id = $1", payment_id)


async def payment_entries(db: asyncpg.Pool, user_id: str) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT * FROM credit_transactions WHERE user_id = $1 AND payment_id IS NOT NULL ORDER BY id", user_id
    )
