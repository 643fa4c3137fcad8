"""Request bytes that are no valid message of their RPC (services/ledger/rpc/decoding.py): INVALID_ARGUMENT with
the ledger's ErrorInfo, nothing applied, and a valid message sent the same raw way still works."""

from __future__ import annotations

import grpc
import pytest

from credits.ledger.v1 import ledger_service_pb2 as pb
from tests.conftest import ALL_ROLES_TOKEN, new_key
from tests.ledger.helpers import assert_refusal, bearer, parse_refusal

CREDIT_PATH = "/credits.ledger.v1.LedgerService/Credit"


def _raw_credit(user_id: str, amount_varint: bytes, user_id_bytes: bytes | None = None) -> bytes:
    """CreditRequest's wire form by hand: user_id (1), amount (2, varint), idempotency_key (3), reason (4)."""
    user = user_id_bytes if user_id_bytes is not None else user_id.encode()
    key = new_key().encode()
    return (
        b"\x0a" + bytes([len(user)]) + user + b"\x10" + amount_varint + b"\x1a" + bytes([len(key)]) + key + b"\x22\x01r"
    )


async def _call_raw(channel: grpc.aio.Channel, raw: bytes) -> pb.CreditResponse:
    call = channel.unary_unary(CREDIT_PATH, request_serializer=None, response_deserializer=pb.CreditResponse.FromString)
    return await call(raw, metadata=bearer(ALL_ROLES_TOKEN), timeout=10)


@pytest.mark.parametrize(
    ("amount_varint", "user_id_bytes"),
    [
        # Found by tests/hostile: an integer beyond int64 was answered UNKNOWN, naming protobuf's DecodeError.
        pytest.param(b"\xff" * 10 + b"\x01", None, id="varint-beyond-64-bits"),
        pytest.param(b"\x05", b"user-\xff\xfe", id="user-id-not-utf8"),
        pytest.param(b"\xff\xff", None, id="truncated-varint"),
    ],
)
async def test_undecodable_request_is_invalid_argument(channel, db, user_id, amount_varint, user_id_bytes):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _call_raw(channel, _raw_credit(user_id, amount_varint, user_id_bytes))

    assert_refusal(parse_refusal(raised.value), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert "DecodeError" not in (raised.value.details() or "")
    assert await db.fetchval("SELECT count(*) FROM credit_transactions WHERE user_id = $1", user_id) == 0


async def test_a_valid_message_sent_raw_is_applied(channel, user_id):
    response = await _call_raw(channel, _raw_credit(user_id, b"\x05"))
    assert (response.transaction.delta, response.replayed) == (5, False)
