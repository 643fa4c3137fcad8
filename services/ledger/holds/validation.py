"""Validation of the hold RPCs' fields: pure functions that raise InvalidArgument naming the field.

Every limit of holds is declared once here and documented in the proto and docs/errors.md.
"""

from __future__ import annotations

from services.ledger.accounts import validation
from services.ledger.errors import InvalidArgument

TTL_SECONDS_MIN = 1
TTL_SECONDS_MAX = 86_400  # one day: a paid action that takes longer reserves again
# Active holds one user may have at once. It bounds the work of lazy expiry inside every Debit and
# reserve of that user, and the damage of a caller that leaks holds (they also expire by themselves).
HOLDS_ACTIVE_PER_USER_MAX = 1000


def ttl_seconds(value: int) -> int:
    if not TTL_SECONDS_MIN <= value <= TTL_SECONDS_MAX:
        raise InvalidArgument("ttl_seconds", f"must be between {TTL_SECONDS_MIN} and {TTL_SECONDS_MAX}")
    return value


def hold_id(value: int) -> int:
    if value <= 0:  # an int64 on the wire: never above holds.id's bigint range
        raise InvalidArgument("hold_id", "must be greater than 0")
    return value


def capture_amount(value: int) -> int:
    """0 (the whole hold) up to the amount limit; the hold's own amount is checked by the database."""
    if value < 0:
        raise InvalidArgument("amount", "must be 0 (the whole hold) or greater")
    if value > validation.AMOUNT_CREDITS_MAX:
        raise InvalidArgument("amount", f"must be at most {validation.AMOUNT_CREDITS_MAX}")
    return value
