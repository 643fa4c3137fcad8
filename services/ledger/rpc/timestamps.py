"""Database times as protobuf Timestamps, exactly."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

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
