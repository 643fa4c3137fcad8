"""Request validation: pure functions that raise InvalidArgument naming the field.

Every limit is declared once here and documented in the proto and docs/errors.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from services.ledger.errors import InvalidArgument

USER_ID_CHARS_MAX = 128
IDEMPOTENCY_KEY_CHARS_MAX = 128
REASON_CHARS_MAX = 500
REFERENCE_CHARS_MAX = 128
ACTOR_CHARS_MAX = 128
METADATA_PAIRS_MAX = 20
METADATA_KEY_CHARS_MAX = 40
METADATA_VALUE_CHARS_MAX = 500
AMOUNT_CREDITS_MAX = 1_000_000_000
PAGE_SIZE_DEFAULT = 50
BATCH_POSTINGS_MAX = 1_000  # PostBatch
GRANT_PRIORITY_MIN = 0
GRANT_PRIORITY_MAX = 100
GRANT_LIFETIME_MAX = timedelta(days=3650)  # how far ahead a grant's expire_time may be
PAGE_SIZE_MAX = 100
STRIPE_ID_CHARS_MAX = 255

# Ids are printable, without spaces or control characters, so that they are safe in logs and keys.
_ID_PATTERN = re.compile(r"[\x21-\x7e]+")
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def identifier(field: str, value: str, chars_max: int) -> str:
    if not value:
        raise InvalidArgument(field, "must not be empty")
    if len(value) > chars_max:
        raise InvalidArgument(field, f"must be at most {chars_max} characters")
    if not _ID_PATTERN.fullmatch(value):
        raise InvalidArgument(field, "must be printable ASCII without spaces")
    return value


def user_id(value: str, field: str = "user_id") -> str:
    return identifier(field, value, USER_ID_CHARS_MAX)


# Keys the ledger derives itself for payment entries (payment:{id}:purchase, ...); a caller's key
# in that namespace could collide with them.
RESERVED_KEY_PREFIXES = ("payment:", "hold:", "grant:")
RESERVED_KEY_PREFIXES_TEXT = ", ".join(RESERVED_KEY_PREFIXES[:-1]) + f" or {RESERVED_KEY_PREFIXES[-1]}"


def idempotency_key(value: str, field: str = "idempotency_key") -> str:
    identifier(field, value, IDEMPOTENCY_KEY_CHARS_MAX)
    if value.startswith(RESERVED_KEY_PREFIXES):
        raise InvalidArgument(field, f"must not start with {RESERVED_KEY_PREFIXES_TEXT} (reserved)")
    return value


def text(field: str, value: str, chars_max: int, *, required: bool) -> str:
    if required and not value.strip():
        raise InvalidArgument(field, "must not be empty")
    if len(value) > chars_max:
        raise InvalidArgument(field, f"must be at most {chars_max} characters")
    if _CONTROL_CHARACTERS.search(value):
        raise InvalidArgument(field, "must not contain control characters")
    return value


def reason(value: str) -> str:
    return text("reason", value, REASON_CHARS_MAX, required=True)


def reference(value: str) -> str | None:
    return text("reference", value, REFERENCE_CHARS_MAX, required=False) or None


def positive_amount(value: int, field: str = "amount") -> int:
    if value <= 0:
        raise InvalidArgument(field, "must be greater than 0")
    if value > AMOUNT_CREDITS_MAX:
        raise InvalidArgument(field, f"must be at most {AMOUNT_CREDITS_MAX}")
    return value


def signed_amount(value: int, field: str = "amount") -> int:
    if value == 0:
        raise InvalidArgument(field, "must not be 0")
    if abs(value) > AMOUNT_CREDITS_MAX:
        raise InvalidArgument(field, f"must be between -{AMOUNT_CREDITS_MAX} and {AMOUNT_CREDITS_MAX}")
    return value


def metadata(value: Mapping[str, str]) -> dict[str, str] | None:
    if len(value) > METADATA_PAIRS_MAX:
        raise InvalidArgument("metadata", f"must have at most {METADATA_PAIRS_MAX} pairs")
    for key, item in value.items():
        text("metadata", key, METADATA_KEY_CHARS_MAX, required=True)
        text(f"metadata[{key}]", item, METADATA_VALUE_CHARS_MAX, required=False)
    return dict(value) or None


def page_size(value: int, default: int = PAGE_SIZE_DEFAULT, maximum: int = PAGE_SIZE_MAX) -> int:
    if value < 0 or value > maximum:
        raise InvalidArgument("page_size", f"must be between 0 and {maximum}")
    return value or default


def enum_value(field: str, value: int, known: Mapping[int, str]) -> str:
    """Maps a proto enum number to its domain name; unknown or unspecified numbers are refused."""
    name = known.get(value)
    if name is None:
        raise InvalidArgument(field, f"unknown value {value}")
    return name


def batch_size(count: int, field: str = "postings") -> int:
    """How many items a batch call carries: 1 to BATCH_POSTINGS_MAX, refused before anything applies."""
    if count == 0:
        raise InvalidArgument(field, "must not be empty")
    if count > BATCH_POSTINGS_MAX:
        raise InvalidArgument(field, f"must be at most {BATCH_POSTINGS_MAX} (got {count}); split the batch")
    return count


def grant_priority(value: int | None, field: str = "priority") -> int | None:
    """0 to 100 (lower burns first); None: unset."""
    if value is not None and not GRANT_PRIORITY_MIN <= value <= GRANT_PRIORITY_MAX:
        raise InvalidArgument(field, f"must be between {GRANT_PRIORITY_MIN} and {GRANT_PRIORITY_MAX}")
    return value


def grant_expiry(value: datetime | None, field: str = "expire_time", *, now: datetime | None = None) -> datetime | None:
    """After now and at most GRANT_LIFETIME_MAX ahead; None: never expires."""
    if value is None:
        return None
    now = now or datetime.now(UTC)
    if value <= now:
        raise InvalidArgument(field, "must be in the future")
    if value > now + GRANT_LIFETIME_MAX:
        raise InvalidArgument(field, f"must be at most {GRANT_LIFETIME_MAX.days} days ahead")
    return value
