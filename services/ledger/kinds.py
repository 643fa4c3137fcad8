"""The journal's kinds: why an entry exists (the `kind` column of credit_transactions).

A module of its own because every room writes entries and the ledger's metrics count them by kind:
it imports nothing of the ledger, so none of them depends on a room for it.
"""

from __future__ import annotations

from enum import StrEnum


class Kind(StrEnum):
    """Why a journal entry exists (the journal's `kind` column)."""

    PURCHASE = "purchase"
    SPEND = "spend"
    GRANT = "grant"
    REFUND = "refund"
    CHARGEBACK = "chargeback"
    CHARGEBACK_REVERSAL = "chargeback_reversal"
    ADMIN_ADJUSTMENT = "admin_adjustment"
    HOLD_CAPTURE = "hold_capture"
    REFUND_REVERSAL = "refund_reversal"
    EXPIRY = "expiry"
