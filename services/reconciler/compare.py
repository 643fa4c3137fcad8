"""Pure comparison of what Stripe knows with what the ledger recorded: which drift, and which action repairs it.

No I/O here. Stripe's objects are read by services.reconciler.stripe_source (ChargeFacts) and
translated by the suite's one translation, services.stripe_bridge.events; ledger payments come in as
`LedgerPayment` values. The actions returned are the ones the gateway applies
(services.stripe_bridge.apply.apply_action), with `source=NO_EVENT` for objects read directly.

    kind               Stripe says                                ledger has                       repair
    missing_credit     charge succeeded                           no payment, or INIT / FAILED     Settle
    missing_refund     its refunds standing add up to R           amount_refunded < R              Refund (R and
                                                                                                     every refund)
    excess_refund      its refunds standing add up to R (one      amount_refunded > R: clawed      Refund (R and
                       failed or was canceled)                    back more than Stripe kept       every refund)
    dispute_state      the charge's dispute has status S          a lower dispute rank than S      Dispute (S)
    missed_event       an undelivered event                       state behind the event           the event
    catalog_mismatch   package / amount / currency off-catalog    a credited payment, another      report
                                                                  price
    paid_not_credited  charge succeeded (the customer paid)       no credit: the price matches no  report, with what
                                                                  pack (no payment, or INIT /       to do (refund, or
                                                                  FAILED / EXPIRED), or PAID        grant by hand)
                                                                  uncredited (anonymized account)
    user_mismatch      metadata user U                            the payment belongs to another   report
    unusable_charge    metadata unusable, or no metadata and a    -                                report
                       price other than the ledger's payment
    ledger_only        no successful charge                       PAID / CREDITED / REFUNDED /     report
                                                                  CHARGEBACK payment in the window

Refunds: a charge whose amount_refunded differs from the ledger's asks for the charge's refunds
(`refund_finding`, after `GET /v1/refunds?charge=`): what stands at Stripe is the sum of the refunds not
failed or canceled, and the repair hands the ledger every refund with its status, so the ledger moves
the clawback to it in either direction (a failed refund reinstates, with a refund_reversal entry).

A charge whose price disagrees with the *current* catalog but matches the ledger's own record of the
payment (the catalog changed after the purchase; or a discount or tax made the charge the amount
the ledger recorded as paid) is checked against that record instead: its refunds and disputes are
still repaired, and it is not reported. So is a charge without the suite's metadata whose payment
intent the ledger knows (exactly one payment, same price).

`paid_not_credited` findings carry `operator_action`: the refund to make in Stripe, or how to grant the
pack by hand (`creditsctl settle-payment`, audited), since the reconciler never decides that itself.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from credits.ledger.v1 import ledger_service_pb2 as pb
from services.ledger.payments.domain import (
    DISPUTE_RANK,
    LIVE_REFUND_STATUSES,
    REFUND_RANK,
    RefundStatus,
    StripeRefund,
    refunded_amount_minor,
)
from services.reconciler.stripe_source import ChargeFacts
from services.stripe_bridge.catalog import NEVER_EXPIRES, Catalog
from services.stripe_bridge.events import (
    NO_EVENT,
    Action,
    Dispute,
    Expire,
    Fail,
    Ignore,
    PaymentDetails,
    Problem,
    Refund,
    RefundFact,
    Refuse,
    Settle,
    details_from_charge,
    refund_fact,
)

PAYMENT_STATUS_PREFIX: Final = "PAYMENT_STATUS_"
DISPUTE_STATUS_PREFIX: Final = "DISPUTE_STATUS_"
REFUND_STATUS_PREFIX: Final = "REFUND_STATUS_"
NOT_PAID_STATUSES: Final = frozenset({"INIT", "FAILED", "EXPIRED"})
PAID_STATUSES: Final = frozenset({"PAID", "CREDITED", "REFUNDED", "CHARGEBACK"})
FINAL_DISPUTE_STATUSES: Final = frozenset({"won", "lost"})
CATALOG_PROBLEM_CODES: Final = frozenset({"catalog_mismatch", "unknown_package"})


class DriftKind(enum.StrEnum):
    """What disagrees between Stripe and the ledger (see the module docstring's table)."""

    MISSING_CREDIT = "missing_credit"
    MISSING_REFUND = "missing_refund"
    EXCESS_REFUND = "excess_refund"
    DISPUTE_STATE = "dispute_state"
    MISSED_EVENT = "missed_event"
    CATALOG_MISMATCH = "catalog_mismatch"
    USER_MISMATCH = "user_mismatch"
    UNUSABLE_CHARGE = "unusable_charge"
    LEDGER_ONLY = "ledger_only"
    PAID_NOT_CREDITED = "paid_not_credited"


@dataclass(frozen=True, slots=True)
class LedgerPayment:
    """The parts of a ledger payment the comparison reads (no personal data)."""

    payment_id: int
    user_id: str
    checkout_session_id: str
    payment_intent_id: str
    charge_id: str
    package_id: str
    credits: int
    amount_minor: int
    currency: str
    status: str  # INIT, PAID, CREDITED, REFUNDED, CHARGEBACK, FAILED or EXPIRED
    amount_refunded_minor: int
    dispute_status: str | None  # Stripe's name (needs_response, won, ...), None without a dispute
    dispute_id: str
    charge_amount_refunded_minor: int = 0
    refunds: tuple[StripeRefund, ...] = ()  # by Stripe refund id, with the latest status the ledger saw
    amount_paid_minor: int | None = None  # what the customer paid (after discounts, with tax), when known
    amount_tax_minor: int | None = None
    amount_discount_minor: int | None = None
    settle_refusal: str = ""  # why a PAID payment was not credited (account_anonymized)

    @classmethod
    def from_proto(cls, payment: pb.Payment) -> LedgerPayment:
        status = pb.PaymentStatus.Name(payment.status).removeprefix(PAYMENT_STATUS_PREFIX)
        dispute_status = None
        if payment.dispute_status != pb.DISPUTE_STATUS_UNSPECIFIED:
            dispute_status = pb.DisputeStatus.Name(payment.dispute_status).removeprefix(DISPUTE_STATUS_PREFIX).lower()
        return cls(
            payment_id=payment.id,
            user_id=payment.user_id,
            checkout_session_id=payment.checkout_session_id,
            payment_intent_id=payment.payment_intent_id,
            charge_id=payment.charge_id,
            package_id=payment.package_id,
            credits=payment.credits,
            amount_minor=payment.amount_minor,
            currency=payment.currency_code,
            status=status,
            amount_refunded_minor=payment.amount_refunded_minor,
            dispute_status=dispute_status,
            dispute_id=payment.dispute_id,
            charge_amount_refunded_minor=payment.charge_amount_refunded_minor,
            refunds=tuple(
                StripeRefund(
                    refund.refund_id,
                    refund.amount_minor,
                    RefundStatus(pb.RefundStatus.Name(refund.status).removeprefix(REFUND_STATUS_PREFIX).lower()),
                )
                for refund in payment.refunds
                if refund.status != pb.REFUND_STATUS_UNSPECIFIED
            ),
            amount_paid_minor=payment.amount_paid_minor if payment.HasField("amount_paid_minor") else None,
            amount_tax_minor=payment.amount_tax_minor if payment.HasField("amount_tax_minor") else None,
            amount_discount_minor=payment.amount_discount_minor if payment.HasField("amount_discount_minor") else None,
            settle_refusal=payment.settle_refusal,
        )

    @property
    def is_paid(self) -> bool:
        """The ledger holds this payment as paid (credited, or clawed back since)."""
        return self.status in PAID_STATUSES


@dataclass(frozen=True, slots=True)
class Finding:
    """One drift: its kind, the action that repairs it (None: report only), a PII-free explanation."""

    kind: DriftKind
    repair: Action | None
    detail: str
    code: str = ""
    operator_action: str = ""  # paid_not_credited: what an operator should do (refund or grant)


@dataclass(frozen=True, slots=True)
class ChargeCheck:
    """What one succeeded suite charge needs.

    `payment` is the ledger payment the charge matches (None when the ledger has none for its user);
    `lookup_dispute` asks the caller to read the charge's dispute from Stripe and call `dispute_finding`.
    """

    findings: tuple[Finding, ...]
    payment: LedgerPayment | None
    lookup_dispute: bool


def select_payment(payments: Sequence[LedgerPayment], user_id: str) -> LedgerPayment | None:
    """The payment of `user_id` among those sharing a payment intent (the ledger keys payments per user)."""
    for payment in payments:
        if payment.user_id == user_id:
            return payment
    return None


def check_charge(facts: ChargeFacts, payments: Sequence[LedgerPayment], catalog: Catalog) -> ChargeCheck:
    """The drift of one succeeded charge, given the ledger payments with its payment intent.

    A charge of the suite (metadata user_id + package_id) is always compared. Another charge is compared only
    when the ledger holds exactly one payment of its payment intent (its metadata did not reach the charge):
    the ledger's record of the purchase then prices it. Any other charge is not the suite's: no finding.
    """
    assert facts.succeeded, facts.charge_id
    if facts.belongs_to_suite:
        payment = select_payment(payments, facts.user_id)
        if payment is None and payments:
            owner = payments[0]
            detail = f"the ledger holds payment {owner.payment_id} of this payment intent for another user"
            return ChargeCheck((Finding(DriftKind.USER_MISMATCH, None, detail, "user_mismatch"),), owner, False)
    elif len(payments) == 1:
        payment = payments[0]
        if not _same_price(facts, payment):
            detail = (
                f"charge of {facts.amount_minor} {facts.currency} without metadata; the ledger's payment "
                f"{payment.payment_id} of its payment intent is {payment.amount_minor} {payment.currency}"
            )
            return ChargeCheck((Finding(DriftKind.UNUSABLE_CHARGE, None, detail, "price_mismatch"),), payment, False)
    else:
        return ChargeCheck((), None, False)
    details = priced_details(facts, payment, catalog)
    if isinstance(details, Problem):
        if details.code in CATALOG_PROBLEM_CODES and (payment is None or payment.status in NOT_PAID_STATUSES):
            return ChargeCheck((off_catalog_finding(facts, payment, details),), payment, False)
        kind = DriftKind.CATALOG_MISMATCH if details.code in CATALOG_PROBLEM_CODES else DriftKind.UNUSABLE_CHARGE
        return ChargeCheck((Finding(kind, None, details.reason, details.code),), payment, False)
    return ChargeCheck(_money_findings(facts, details, payment), payment, _needs_dispute_lookup(facts, payment))


def off_catalog_finding(facts: ChargeFacts, payment: LedgerPayment | None, problem: Problem) -> Finding:
    """A suite charge the customer paid whose price matches no pack: nothing was credited for it."""
    shown = "no payment" if payment is None else f"payment {payment.payment_id} in status {payment.status}"
    detail = f"{problem.reason}; the customer paid and the ledger has {shown}"
    grant = (
        f"creditsctl settle-payment {payment.payment_id} --reason '...'"
        if payment is not None
        else "creditsctl settle-payment <the charge's Checkout Session cs_...> --reason '...' (when the ledger "
        f"opened it), else creditsctl adjust {facts.user_id} <credits> --reason '...'"
    )
    action = f"refund {_money(facts)} of charge {facts.charge_id} in Stripe, or grant the pack by hand: {grant}"
    return Finding(DriftKind.PAID_NOT_CREDITED, None, detail, problem.code, action)


def _uncredited_finding(facts: ChargeFacts, payment: LedgerPayment) -> Finding:
    """A paid payment the ledger holds without credit: the account was anonymized before the purchase settled."""
    code = payment.settle_refusal or "not_credited"
    detail = f"charge succeeded in Stripe; the ledger holds payment {payment.payment_id} PAID, not credited ({code})"
    action = (
        f"refund {_money(facts)} of charge {facts.charge_id} in Stripe: the account was anonymized and takes no "
        "credits"
    )
    return Finding(DriftKind.PAID_NOT_CREDITED, None, detail, code, action)


def _money(facts: ChargeFacts) -> str:
    return f"{facts.amount_minor - facts.amount_refunded_minor} {facts.currency}"


def _money_findings(facts: ChargeFacts, details: PaymentDetails, payment: LedgerPayment | None) -> tuple[Finding, ...]:
    if not details.payment_intent_id:
        return (Finding(DriftKind.UNUSABLE_CHARGE, None, "charge has no payment intent", "missing_payment_intent"),)
    findings: list[Finding] = []
    if payment is not None and payment.status == "PAID" and facts.amount_refunded_minor < facts.amount_minor:
        findings.append(_uncredited_finding(facts, payment))
    if payment is None or payment.status in NOT_PAID_STATUSES:
        shown = "no payment" if payment is None else f"payment {payment.payment_id} in status {payment.status}"
        detail = f"charge succeeded in Stripe; the ledger has {shown}"
        findings.append(Finding(DriftKind.MISSING_CREDIT, Settle(NO_EVENT, details), detail))
    ledger_refunded_minor = 0 if payment is None else payment.amount_refunded_minor
    if facts.amount_refunded_minor > facts.amount_minor:
        detail = f"amount_refunded {facts.amount_refunded_minor} exceeds the amount {facts.amount_minor}"
        findings.append(Finding(DriftKind.UNUSABLE_CHARGE, None, detail, "malformed_object"))
    elif facts.amount_refunded_minor != ledger_refunded_minor:
        # Provisional, from the charge alone: the caller reads the charge's refunds and settles it (refund_finding).
        missing = facts.amount_refunded_minor > ledger_refunded_minor
        kind = DriftKind.MISSING_REFUND if missing else DriftKind.EXCESS_REFUND
        detail = f"Stripe refunded {facts.amount_refunded_minor}, the ledger applied {ledger_refunded_minor}"
        findings.append(Finding(kind, Refund(NO_EVENT, details, facts.amount_refunded_minor), detail))
    return tuple(findings)


def refund_finding(
    facts: ChargeFacts, provisional: Refund, payment: LedgerPayment | None, refunds: Sequence[Mapping[str, Any]]
) -> Finding | None:
    """The refund drift of a charge, given its refunds as Stripe lists them (None: the ledger agrees).

    What stands at Stripe is what the ledger's own rule makes of the charge and all its refunds (the refunds
    not failed or canceled); the repair gives the ledger every refund, so it moves the clawback either way."""
    listed: list[RefundFact] = []
    for item in refunds:
        fact = refund_fact(item)
        if isinstance(fact, Problem):
            return Finding(DriftKind.UNUSABLE_CHARGE, None, f"a refund of the charge: {fact.reason}", fact.code)
        listed.append(fact)
    known = [StripeRefund(fact.refund_id, fact.amount_minor, RefundStatus(fact.status.value)) for fact in listed]
    standing_minor = refunded_amount_minor(facts.amount_minor, facts.amount_refunded_minor, known)
    ledger_refunded_minor = 0 if payment is None else payment.amount_refunded_minor
    if standing_minor == ledger_refunded_minor:
        return None
    ended = [refund for refund in known if refund.status not in LIVE_REFUND_STATUSES]
    detail = (
        f"Stripe's refunds standing add up to {standing_minor} ({len(known)} refunds, {len(ended)} failed or "
        f"canceled); the ledger applied {ledger_refunded_minor}"
    )
    kind = DriftKind.MISSING_REFUND if standing_minor > ledger_refunded_minor else DriftKind.EXCESS_REFUND
    repair = Refund(NO_EVENT, provisional.details, facts.amount_refunded_minor, tuple(listed))
    return Finding(kind, repair, detail)


def _needs_dispute_lookup(facts: ChargeFacts, payment: LedgerPayment | None) -> bool:
    """Disputed, and the ledger's dispute status is not final yet (won and lost never change)."""
    return facts.disputed and not (payment is not None and payment.dispute_status in FINAL_DISPUTE_STATUSES)


def priced_details(facts: ChargeFacts, payment: LedgerPayment | None, catalog: Catalog) -> PaymentDetails | Problem:
    """The charge priced by the catalog; by the ledger's own record of the purchase when the catalog changed
    since, or when the charge carries no metadata."""
    details = details_from_charge(facts.raw, catalog)
    if not isinstance(details, Problem):
        return details
    if details.code not in CATALOG_PROBLEM_CODES and facts.belongs_to_suite:
        return details
    if payment is None or not _same_price(facts, payment):
        return details
    # The ledger's payment records no validity: the pack's, while the catalog still has it; else never expiring
    # (a customer loses nothing because the catalog changed).
    package = catalog.get(payment.package_id)
    return PaymentDetails(
        user_id=payment.user_id,
        package_id=payment.package_id,
        credits=payment.credits,
        amount_minor=payment.amount_minor,
        currency=payment.currency,
        payment_intent_id=facts.payment_intent_id,
        charge_id=facts.charge_id,
        grant_valid_days=NEVER_EXPIRES if package is None else package.valid_days,
    )


def _same_price(facts: ChargeFacts, payment: LedgerPayment) -> bool:
    """The charge is the ledger's payment: its package, and its price or what the ledger recorded as paid."""
    return (
        (not facts.package_id or payment.package_id == facts.package_id)
        and facts.amount_minor in (payment.amount_minor, payment.amount_paid_minor)
        and payment.currency == facts.currency
    )


def dispute_finding(dispute: Dispute, payment: LedgerPayment | None) -> Finding | None:
    """A dispute whose status ranks above the ledger's (statuses only move up; won and lost are final)."""
    ledger_status = None if payment is None else payment.dispute_status
    if DISPUTE_RANK[dispute.status] <= DISPUTE_RANK[ledger_status]:  # type: ignore[index]
        return None
    shown = ledger_status or "no dispute"
    detail = f"Stripe's dispute {dispute.dispute_id} is {dispute.status.value}; the ledger has {shown}"
    return Finding(DriftKind.DISPUTE_STATE, dispute, detail)


def action_payment_intent_id(action: Action) -> str:
    """The payment intent an action is about ('' when unknown)."""
    if isinstance(action, Settle | Fail | Refund):
        return action.details.payment_intent_id
    return action.payment_intent_id  # Expire, Dispute, Ignore, Refuse


def action_user_id(action: Action) -> str:
    """The user an action names ('' for disputes, which carry no metadata)."""
    if isinstance(action, Settle | Fail | Refund):
        return action.details.user_id
    if isinstance(action, Expire | Ignore | Refuse):
        return action.user_id
    return ""


def event_finding(action: Action, payments: Sequence[LedgerPayment]) -> Finding | None:
    """The drift an undelivered event shows: the ledger is behind what the event says (None: it is not)."""
    if isinstance(action, Ignore | Refuse):
        return None
    user_id = action_user_id(action)
    payment = select_payment(payments, user_id) if user_id else (payments[0] if payments else None)
    if payment is None and payments:
        detail = f"the ledger holds payment {payments[0].payment_id} of this payment intent for another user"
        return Finding(DriftKind.USER_MISMATCH, None, detail, "user_mismatch")
    if not _event_is_ahead(action, payment):
        return None
    shown = "no payment" if payment is None else f"payment {payment.payment_id} in status {payment.status}"
    return Finding(DriftKind.MISSED_EVENT, action, f"undelivered event not applied; the ledger has {shown}")


def _event_is_ahead(action: Settle | Fail | Expire | Refund | Dispute, payment: LedgerPayment | None) -> bool:
    if isinstance(action, Expire):
        # Only a payment opened at checkout and still INIT has something to end (no row is made for it).
        return payment is not None and payment.status == "INIT"
    if payment is None:
        return True
    if isinstance(action, Settle):
        # A paid session the ledger never linked to its payment (settled from the intent or the charge while
        # the row opened at checkout still holds the session alone): applying the event merges the two rows.
        unlinked_session = bool(action.details.checkout_session_id) and not payment.checkout_session_id
        return payment.status in NOT_PAID_STATUSES or unlinked_session
    if isinstance(action, Fail):
        return payment.status == "INIT"
    if isinstance(action, Refund):
        return action.amount_refunded_minor > payment.charge_amount_refunded_minor or _refunds_ahead(action, payment)
    return DISPUTE_RANK[action.status] > DISPUTE_RANK[payment.dispute_status]  # type: ignore[index]


def _refunds_ahead(action: Refund, payment: LedgerPayment) -> bool:
    """A refund the event names that the ledger does not know, or knows in a status of a lower rank."""
    known = {refund.refund_id: refund.status for refund in payment.refunds}
    for fact in action.refunds:
        status = known.get(fact.refund_id)
        if status is None or REFUND_RANK[RefundStatus(fact.status.value)] > REFUND_RANK[status]:
            return True
    return False


class PaymentIdSet:
    """Ledger payment ids, exactly, one bit each in blocks of BLOCK_IDS consecutive ids.

    Payment ids grow with time, so a run's matched ids fill few blocks: about one bit per payment of
    the window's span instead of a Python int each (memory stays flat as the window grows).
    """

    BLOCK_IDS: Final = 4096

    def __init__(self) -> None:
        self._blocks: dict[int, bytearray] = {}
        self._count = 0

    def add(self, payment_id: int) -> None:
        assert payment_id > 0, payment_id
        block_index, offset = divmod(payment_id, self.BLOCK_IDS)
        block = self._blocks.get(block_index)
        if block is None:
            block = self._blocks[block_index] = bytearray(self.BLOCK_IDS // 8)
        byte_index, bit = divmod(offset, 8)
        if not block[byte_index] & (1 << bit):
            block[byte_index] |= 1 << bit
            self._count += 1

    def __contains__(self, payment_id: object) -> bool:
        if not isinstance(payment_id, int) or payment_id <= 0:
            return False
        block_index, offset = divmod(payment_id, self.BLOCK_IDS)
        block = self._blocks.get(block_index)
        if block is None:
            return False
        byte_index, bit = divmod(offset, 8)
        return bool(block[byte_index] & (1 << bit))

    def __len__(self) -> int:
        return self._count
