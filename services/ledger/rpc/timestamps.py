"""Database times as protobuf Timestamps, exactly."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

from services.ledger.errors import InvalidArgument

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SECONDS_PER_DAY = 86400


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    """A database time (timestamptz: always aware) as a Timestamp, by integer arithmetic (exact)."""
    if value is None:
        return None
    since_epoch = value - EPOCH
    return timestamp_pb2.Timestamp(
        seconds=since_epoch.days * SECONDS_PER_DAY + since_epoch.seconds, nanos=since_epoch.microseconds * 1000
    )


def from_timestamp(value: timestamp_pb2.Timestamp, field: str) -> datetime:
    """A caller's Timestamp as an aware datetime; one outside 0001-9999 or with invalid nanos is refused."""
    if not 0 <= value.nanos < 1_000_000_000:
        raise InvalidArgument(field, "nanos must be between 0 and 999,999,999")
    try:
        return value.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError) as exc:
        raise InvalidArgument(field, "is not a valid time") from exc
