"""Every refusal reason, on the wire (status, google.rpc.Status, ErrorInfo) and through the
client's exception mapping: IDEMPOTENCY_KEY_REUSED, INSUFFICIENT_CREDITS, ACCOUNT_ANONYMIZED,
UNAUTHENTICATED, PERMISSION_DENIED."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from credits.ledger.v1 import ledger_service_pb2 as pb
from credits.ledger.v1 import ledger_service_pb2_grpc as pb_grpc
from services.ledger import app, errors
from services.ledger.client import LedgerClient
from tests.conftest import ALL_ROLES_TOKEN, ROLE_TOKENS, ledger_settings, new_key
from tests.ledger.helpers import (
    adjust_request,
    assert_journal_consistent,
    assert_refusal,
    bearer,
    call,
    credit_request,
    debit_request,
    journal,
    parse_refusal,
    refusal,
    wait_for_health,
)

# --- IDEMPOTENCY_KEY_REUSED -------------------------------------------------------------------

REUSED_VARIANTS = {
    "credit-other-amount": ("Credit", lambda u, k: credit_request(u, 101, k)),
    "credit-other-reason": ("Credit", lambda u, k: credit_request(u, 100, k, reason="another reason")),
    "credit-other-reference": ("Credit", lambda u, k: credit_request(u, 100, k, reference="ref-2")),
    "credit-other-metadata": ("Credit", lambda u, k: credit_request(u, 100, k, metadata={"a": "c"})),
    "credit-without-metadata": ("Credit", lambda u, k: credit_request(u, 100, k)),
    "debit-kind": ("Debit", lambda u, k: debit_request(u, 100, k, reason="grant", metadata={"a": "b"})),
    "admin-adjust-kind": (
        "AdminAdjust",
        lambda u, k: adjust_request(u, 100, k, reason="grant"),
    ),
}


@pytest.mark.parametrize("variant", REUSED_VARIANTS.values(), ids=REUSED_VARIANTS.keys())
async def test_same_key_with_other_parameters_is_refused(stub, db, user_id, variant):
    key = new_key()
    original = await call(stub.Credit, credit_request(user_id, 100, key, metadata={"a": "b"}))
    rpc, build = variant

    refused = await refusal(getattr(stub, rpc), build(user_id, key))

    assert_refusal(refused, grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")
    assert refused.metadata["idempotency_key"] == key
    assert refused.metadata["transaction_id"] == str(original.transaction.id)
    assert [row["id"] for row in await journal(db, user_id)] == [original.transaction.id]
    assert await assert_journal_consistent(db, user_id) == 100


@pytest.mark.parametrize(
    "variant",
    ["other-amount", "other-actor", "other-reason", "other-sign", "credit-same-amount"],
)
async def test_admin_adjust_key_with_other_parameters_is_refused(stub, db, user_id, variant):
    key = new_key()
    await call(stub.Credit, credit_request(user_id, 1000))
    await call(stub.AdminAdjust, adjust_request(user_id, 50, key, actor="alice", reason="fix"))
    method, request = {
        "other-amount": (stub.AdminAdjust, adjust_request(user_id, 51, key, actor="alice", reason="fix")),
        "other-actor": (stub.AdminAdjust, adjust_request(user_id, 50, key, actor="bob", reason="fix")),
        "other-reason": (stub.AdminAdjust, adjust_request(user_id, 50, key, actor="alice", reason="fix 2")),
        "other-sign": (stub.AdminAdjust, adjust_request(user_id, -50, key, actor="alice", reason="fix")),
        "credit-same-amount": (stub.Credit, credit_request(user_id, 50, key, reason="fix")),
    }[variant]
    refused = await refusal(method, request)
    assert_refusal(refused, grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")
    assert await db.fetchval("SELECT count(*) FROM admin_actions WHERE user_id = $1", user_id) == 1
    assert await assert_journal_consistent(db, user_id) == 1050


async def test_debit_key_reused_by_credit_is_refused(stub, db, user_id):
    await call(stub.Credit, credit_request(user_id, 100))
    key = new_key()
    await call(stub.Debit, debit_request(user_id, 10, key, reason="same"))
    refused = await refusal(stub.Credit, credit_request(user_id, 10, key, reason="same"))
    assert_refusal(refused, grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED")
    assert await assert_journal_consistent(db, user_id) == 90


async def test_client_raises_idempotency_key_reused(ledger, user_id):
    key = new_key()
    await ledger.credit(user_id, 10, key, "grant")
    with pytest.raises(errors.IdempotencyKeyReused) as raised:
        await ledger.credit(user_id, 11, key, "grant")
    assert raised.value.code == grpc.StatusCode.ALREADY_EXISTS
    assert raised.value.metadata["idempotency_key"] == key


# --- INSUFFICIENT_CREDITS, ACCOUNT_ANONYMIZED through the client --------------------------------


async def test_client_raises_insufficient_credits_with_balance_and_amount(ledger, user_id):
    await ledger.credit(user_id, 30, new_key(), "grant")
    with pytest.raises(errors.InsufficientCredits) as raised:
        await ledger.debit(user_id, 31, new_key(), "spend")
    assert isinstance(raised.value, errors.FailedPrecondition)
    assert raised.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert raised.value.reason == "INSUFFICIENT_CREDITS"
    assert raised.value.metadata["balance"] == "30"
    assert raised.value.metadata["amount"] == "31"


async def test_client_raises_account_anonymized(ledger, user_id):
    await ledger.anonymize(user_id)
    with pytest.raises(errors.AccountAnonymized) as raised:
        await ledger.credit(user_id, 1, new_key(), "grant")
    assert raised.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert raised.value.reason == "ACCOUNT_ANONYMIZED"


# --- UNAUTHENTICATED, PERMISSION_DENIED --------------------------------------------------------

BAD_AUTHORIZATIONS = {
    "unknown-token": "Bearer not-a-known-token-0000",
    "wrong-scheme": f"Basic {ROLE_TOKENS['admin']}",
    "no-scheme": ROLE_TOKENS["admin"],
    "empty-bearer": "Bearer ",
    "token-prefix": f"Bearer {ROLE_TOKENS['admin'][:-1]}",
    "token-too-long": "Bearer " + "x" * 5000,
}


@pytest.mark.parametrize("authorization", BAD_AUTHORIZATIONS.values(), ids=BAD_AUTHORIZATIONS.keys())
async def test_bad_authorization_is_unauthenticated(stub, db, user_id, authorization):
    request = credit_request(user_id, 10)
    try:
        await stub.Credit(request, metadata=(("authorization", authorization),), timeout=10)
    except grpc.aio.AioRpcError as exc:
        assert_refusal(parse_refusal(exc), grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")
    else:
        raise AssertionError("a call with a bad authorization was answered")
    assert await journal(db, user_id) == []


async def test_missing_authorization_is_unauthenticated(stub, db, user_id):
    try:
        await stub.Credit(credit_request(user_id, 10), timeout=10)
    except grpc.aio.AioRpcError as exc:
        assert_refusal(parse_refusal(exc), grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")
    else:
        raise AssertionError("a call without authorization was answered")
    assert await journal(db, user_id) == []


async def test_wrong_role_is_permission_denied(stub, db, user_id):
    refused = await refusal(stub.Credit, credit_request(user_id, 10), token=ROLE_TOKENS["spender"])
    assert_refusal(refused, grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED")
    assert "Credit" in refused.message
    assert await journal(db, user_id) == []


async def test_client_raises_unauthenticated_and_permission_denied(ledger_target, user_id):
    async with LedgerClient(ledger_target, "not-a-known-token-0000") as stranger:
        with pytest.raises(errors.Unauthenticated) as unauthenticated:
            await stranger.get_balance(user_id)
    assert unauthenticated.value.code == grpc.StatusCode.UNAUTHENTICATED
    async with LedgerClient(ledger_target, ROLE_TOKENS["reader"]) as reader:
        with pytest.raises(errors.PermissionDenied) as denied:
            await reader.debit(user_id, 1, new_key(), "spend")
        assert (await reader.get_balance(user_id)).balance == 0
    assert denied.value.code == grpc.StatusCode.PERMISSION_DENIED


# --- INTERNAL: unexpected database errors are opaque --------------------------------------------


@pytest.fixture
async def unmigrated_ledger(databases) -> AsyncIterator[pb_grpc.LedgerServiceStub]:
    """A ledger on a database that answers but has no schema: every query is a programming error."""
    server = await app.start(ledger_settings(databases.create(migrate=False)))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        try:
            await wait_for_health(channel, serving=True)
            yield pb_grpc.LedgerServiceStub(channel)
        finally:
            await server.stop(grace_seconds=1.0)


@pytest.mark.parametrize("method", ["GetBalance", "Credit", "ListTransactions", "Anonymize"])
async def test_unexpected_database_error_is_internal_without_details(unmigrated_ledger, user_id, method):
    request = {
        "GetBalance": pb.GetBalanceRequest(user_id=user_id),
        "Credit": credit_request(user_id, 1),
        "ListTransactions": pb.ListTransactionsRequest(user_id=user_id),
        "Anonymize": pb.AnonymizeRequest(user_id=user_id),
    }[method]
    refused = await refusal(getattr(unmigrated_ledger, method), request)
    assert_refusal(refused, grpc.StatusCode.INTERNAL, "INTERNAL")
    for leak in ("accounts", "ledger_post", "ledger_anonymize", "credit_transactions", "does not exist", "asyncpg"):
        assert leak not in refused.message


# --- Default deny outside the table ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "token", "code"),
    [
        ("/credits.ledger.v1.LedgerService/NoSuchMethod", ALL_ROLES_TOKEN, grpc.StatusCode.PERMISSION_DENIED),
        ("/credits.ledger.v1.LedgerService/NoSuchMethod", None, grpc.StatusCode.UNAUTHENTICATED),
        ("/other.v1.OtherService/GetBalance", ALL_ROLES_TOKEN, grpc.StatusCode.PERMISSION_DENIED),
        ("/other.v1.OtherService/GetBalance", None, grpc.StatusCode.UNAUTHENTICATED),
    ],
    ids=["unknown-method-all-roles", "unknown-method-no-token", "other-service-all-roles", "other-service-no-token"],
)
async def test_methods_outside_the_roles_table_are_denied(channel, path, token, code):
    method = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
    metadata = () if token is None else bearer(token)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await method(b"", metadata=metadata, timeout=10)
    assert_refusal(parse_refusal(raised.value), code, code.name)


async def test_bearer_scheme_is_case_insensitive(stub, user_id):
    response = await stub.GetBalance(
        pb.GetBalanceRequest(user_id=user_id), metadata=(("authorization", f"bearer {ROLE_TOKENS['reader']}"),)
    )
    assert response.balance == 0
