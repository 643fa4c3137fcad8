"""Database times to protobuf Timestamps (services/ledger/accounts/server.py `timestamp`): exact to the microsecond,
whatever the zone the driver hands back, and the same as protobuf's own FromDatetime."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf import timestamp_pb2

from services.ledger.rpc.timestamps import timestamp

TIMES = [
    datetime(1970, 1, 1, tzinfo=UTC),
    datetime(2026, 11, 27, 12, 0, 0, 999_999, tzinfo=UTC),
    datetime(2026, 11, 27, 12, 0, 0, 1, tzinfo=timezone(timedelta(hours=-7, minutes=-30))),
    datetime(2038, 1, 19, 3, 14, 8, 123_456, tzinfo=timezone(timedelta(hours=14))),
    datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
]


@pytest.mark.parametrize("value", TIMES, ids=[value.isoformat() for value in TIMES])
def test_a_time_converts_exactly(value: datetime) -> None:
    expected = timestamp_pb2.Timestamp()
    expected.FromDatetime(value)

    converted = timestamp(value)

    assert converted == expected
    assert converted is not None and converted.ToDatetime(tzinfo=UTC) == value


def test_no_time_is_no_timestamp() -> None:
    assert timestamp(None) is None
