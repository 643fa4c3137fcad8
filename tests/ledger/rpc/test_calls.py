"""The ledger's call interceptor (services/ledger/rpc/calls.py), through the running ledger: every call is
counted and timed under its method with the code the client sees (auth refusals and undecodable requests
included), methods the server lacks are refused and counted under one `unknown` label (a caller cannot grow
the label set), and the caller's request id is bound for the call's log lines."""

from __future__ import annotations

import logging
import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from credits.ledger.v1 import ledger_service_pb2 as pb
from services.common.logs import request_id_var
from tests.conftest import ROLE_TOKENS, new_key
from tests.ledger.helpers import bearer, call
from tests.rpc_metrics import counted, durations_count, method_labels, requests_total

BALANCE_PATH = "/credits.ledger.v1.LedgerService/GetBalance"
CREDIT_PATH = "/credits.ledger.v1.LedgerService/Credit"


async def test_a_served_call_is_counted_and_timed(stub, user_id):
    ok, timed = requests_total("GetBalance", "OK"), durations_count("GetBalance")

    await call(stub.GetBalance, pb.GetBalanceRequest(user_id=user_id))

    assert await counted("GetBalance", "OK", ok + 1) == ok + 1
    assert durations_count("GetBalance") == timed + 1


async def test_health_checks_are_counted_without_a_token(channel):
    ok = requests_total("Check", "OK")

    answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)

    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    assert await counted("Check", "OK", ok + 1) == ok + 1


@pytest.mark.parametrize(
    ("metadata", "code"),
    [
        pytest.param((), "UNAUTHENTICATED", id="no-token"),
        pytest.param(bearer("not-a-caller-token-0000"), "UNAUTHENTICATED", id="unknown-token"),
        pytest.param(bearer(ROLE_TOKENS["reader"]) * 2, "UNAUTHENTICATED", id="two-tokens"),
        pytest.param(bearer(ROLE_TOKENS["spender"]), "PERMISSION_DENIED", id="role-not-allowed"),
    ],
)
async def test_an_auth_refusal_is_counted_under_its_method(stub, user_id, metadata, code):
    refused, ok = requests_total("Credit", code), requests_total("Credit", "OK")
    request = pb.CreditRequest(user_id=user_id, amount=1, idempotency_key=new_key(), reason="calls")

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Credit(request, metadata=metadata, timeout=10)

    assert raised.value.code().name == code
    assert await counted("Credit", code, refused + 1) == refused + 1
    assert requests_total("Credit", "OK") == ok


async def test_an_undecodable_request_is_counted_under_its_method(channel):
    refused = requests_total("Credit", "INVALID_ARGUMENT")
    credit = channel.unary_unary(CREDIT_PATH, request_serializer=None, response_deserializer=None)

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await credit(b"\x10" + b"\xff" * 10 + b"\x01", metadata=bearer(ROLE_TOKENS["admin"]), timeout=10)

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await counted("Credit", "INVALID_ARGUMENT", refused + 1) == refused + 1


async def test_a_method_the_server_lacks_is_refused_under_one_label(channel):
    made_up = f"NoSuchMethod{uuid.uuid4().hex}"
    refused = requests_total("unknown", "PERMISSION_DENIED")
    method = channel.unary_unary(f"/credits.ledger.v1.LedgerService/{made_up}")

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await method(b"", metadata=bearer(ROLE_TOKENS["admin"]), timeout=10)

    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert await counted("unknown", "PERMISSION_DENIED", refused + 1) == refused + 1
    assert made_up not in method_labels()


class RequestIds(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str | None] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("purchase for an anonymized account"):
            self.seen.append(request_id_var.get())


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        pytest.param("req-calls-1", True, id="plain-token"),
        pytest.param("req calls; x=1", False, id="not-a-plain-token"),
    ],
)
async def test_the_callers_request_id_is_bound_for_the_calls_log_lines(stub, user_id, sent, kept):
    """An anonymized account's settle logs a warning inside the call: the line carries the call's request id."""
    watcher = RequestIds()
    logger = logging.getLogger("services.ledger.payments.store")
    logger.addHandler(watcher)
    try:
        await call(stub.Anonymize, pb.AnonymizeRequest(user_id=user_id))
        details = pb.PaymentDetails(
            user_id=user_id, checkout_session_id=f"cs_test_{uuid.uuid4().hex}", package_id="small", credits=100,
            amount_minor=500, currency_code="eur",
        )
        metadata = (*bearer(ROLE_TOKENS["payments"]), ("x-request-id", sent))
        with pytest.raises(grpc.aio.AioRpcError) as refused:  # PURCHASE_ON_ANONYMIZED_ACCOUNT, recorded
            await stub.SettlePayment(pb.SettlePaymentRequest(details=details), metadata=metadata, timeout=10)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        logger.removeHandler(watcher)

    assert len(watcher.seen) == 1
    if kept:
        assert watcher.seen == [sent]
    else:
        assert watcher.seen[0] not in (None, sent)
