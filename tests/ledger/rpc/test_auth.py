"""The authorization matrix: every RPC of LedgerService x no token / unknown token / each role.

ROLES_BY_METHOD in services/ledger/rpc/auth.py is the source of truth; the matrix is checked to
cover every method of the service descriptor. A refused call must be refused before its
handler runs: no effect in the database, and UNAUTHENTICATED / PERMISSION_DENIED even for an
empty request (the interceptor decides before any validation).
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from credits.ledger.v1 import ledger_service_pb2 as pb
from services.ledger.rpc.auth import ROLES, ROLES_BY_METHOD
from tests.conftest import ROLE_TOKENS, new_key
from tests.ledger.helpers import assert_refusal, call, credit_request, parse_refusal

SERVICE = pb.DESCRIPTOR.services_by_name["LedgerService"]
METHODS = sorted(SERVICE.methods_by_name)
# RPCs whose handlers this suite tests in depth; the right role must succeed on them.
ACCOUNT_METHODS = frozenset({"GetBalance", "Credit", "Debit", "ListTransactions", "AdminAdjust", "Anonymize"})
HOLD_METHODS = frozenset({"ReserveCredits", "ListHolds"})
UNKNOWN_TOKEN = "not-a-known-token-000000"


def test_matrix_covers_every_method_of_the_service():
    assert set(ROLES_BY_METHOD) == set(METHODS)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_allows_only_known_roles(method):
    assert ROLES_BY_METHOD[method]
    assert ROLES_BY_METHOD[method] <= ROLES


def test_every_role_has_a_test_token():
    assert set(ROLE_TOKENS) == set(ROLES)


def request_for(method: str, user_id: str) -> Any:
    """A valid request for the account RPCs and some hold RPCs; an empty one for the others."""
    key = new_key()
    valid = {
        "GetBalance": lambda: pb.GetBalanceRequest(user_id=user_id),
        "Credit": lambda: credit_request(user_id, 10, key),
        "Debit": lambda: pb.DebitRequest(user_id=user_id, amount=1, idempotency_key=key, reason="spend"),
        "ListTransactions": lambda: pb.ListTransactionsRequest(user_id=user_id),
        "AdminAdjust": lambda: pb.AdminAdjustRequest(
            user_id=user_id, amount=1, idempotency_key=key, actor="alice", reason="fix"
        ),
        "Anonymize": lambda: pb.AnonymizeRequest(user_id=user_id),
        "ReserveCredits": lambda: pb.ReserveCreditsRequest(
            user_id=user_id, amount=1, idempotency_key=key, reason="job", ttl_seconds=60
        ),
        "ListHolds": lambda: pb.ListHoldsRequest(user_id=user_id),
    }
    if method in valid:
        return valid[method]()
    return getattr(pb, SERVICE.methods_by_name[method].input_type.name)()


async def state_of(db: Any) -> tuple[Any, ...]:
    """Everything a refused call could have changed (tests run one at a time)."""
    return tuple(
        await db.fetchrow(
            "SELECT (SELECT count(*) FROM accounts), (SELECT count(*) FROM credit_transactions),"
            " (SELECT count(*) FROM admin_actions), (SELECT count(*) FROM transaction_metadata),"
            " (SELECT count(*) FROM payments), (SELECT count(*) FROM processed_events),"
            " (SELECT count(*) FROM accounts WHERE status = 'anonymized'), (SELECT sum(balance) FROM accounts),"
            # Holds: the sweeper may expire earlier tests' holds meanwhile; nothing else writes without a call.
            " (SELECT count(*) FROM holds), (SELECT count(*) FROM hold_events WHERE kind <> 'expired')"
        )
    )


async def raw_call(stub: Any, method: str, request: Any, metadata: tuple[tuple[str, str], ...]) -> Any:
    return await getattr(stub, method)(request, metadata=metadata, timeout=10)


# (method, credentials label, token or None, the refusal expected)
REFUSED_CELLS = [
    *[(method, "no-token", None, grpc.StatusCode.UNAUTHENTICATED) for method in METHODS],
    *[(method, "unknown-token", UNKNOWN_TOKEN, grpc.StatusCode.UNAUTHENTICATED) for method in METHODS],
    *[
        (method, f"role-{role}", ROLE_TOKENS[role], grpc.StatusCode.PERMISSION_DENIED)
        for method in METHODS
        for role in sorted(ROLES - ROLES_BY_METHOD[method])
    ],
]
ALLOWED_CELLS = [(method, role) for method in METHODS for role in sorted(ROLES_BY_METHOD[method])]


@pytest.mark.parametrize("cell", REFUSED_CELLS, ids=[f"{cell[0]}-{cell[1]}" for cell in REFUSED_CELLS])
async def test_refused_before_the_handler_runs(stub, db, user_id, cell):
    method, _, token, code = cell
    await call(stub.Credit, credit_request(user_id, 100))  # so that a Debit would succeed if it ran
    before = await state_of(db)
    metadata = () if token is None else (("authorization", f"Bearer {token}"),)

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await raw_call(stub, method, request_for(method, user_id), metadata)

    assert_refusal(parse_refusal(raised.value), code, code.name)
    assert await state_of(db) == before


@pytest.mark.parametrize(("method", "role"), ALLOWED_CELLS, ids=[f"{m}-role-{r}" for m, r in ALLOWED_CELLS])
async def test_allowed_role_passes_authorization(stub, db, user_id, method, role):
    await call(stub.Credit, credit_request(user_id, 100))
    metadata = (("authorization", f"Bearer {ROLE_TOKENS[role]}"),)
    request = request_for(method, user_id)
    try:
        response = await raw_call(stub, method, request, metadata)
    except grpc.aio.AioRpcError as exc:
        in_depth = ACCOUNT_METHODS | HOLD_METHODS
        assert method not in in_depth, f"{method} refused for role {role}: {exc.code()} {exc.details()}"
        assert exc.code() not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED), exc.details()
        return
    if method in ("Credit", "Debit", "AdminAdjust"):
        assert response.replayed is False
        assert response.transaction.idempotency_key == request.idempotency_key
    elif method in ("GetBalance", "Anonymize"):
        assert response.user_id == user_id
    elif method == "ReserveCredits":
        assert (response.replayed, response.hold.user_id) == (False, user_id)


async def test_caller_with_several_roles_gets_each_role(ledger_target, ledger, user_id):
    """The all-roles caller of the fixtures can spend and adjust (spender + admin)."""
    await ledger.credit(user_id, 10, new_key(), "grant")
    await ledger.debit(user_id, 3, new_key(), "spend")
    adjusted = await ledger.admin_adjust(user_id, 1, new_key(), "alice", "fix")
    assert adjusted.transaction.balance_after == 8


@pytest.mark.parametrize("admin_first", [True, False], ids=["admin-first", "admin-second"])
async def test_two_authorization_entries_are_refused(stub, db, user_id, admin_first):
    # Found by tests/hostile: the last entry counted, so a spender's call carrying an admin token second was
    # an AdminAdjust; whichever entry a proxy or the server reads, two of them are refused.
    entries = [
        ("authorization", f"Bearer {ROLE_TOKENS['admin']}"),
        ("authorization", f"Bearer {ROLE_TOKENS['spender']}"),
    ]
    metadata = tuple(entries if admin_first else reversed(entries))
    request = pb.AdminAdjustRequest(user_id=user_id, amount=5, idempotency_key=new_key(), actor="mallory", reason="x")
    before = await state_of(db)

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await raw_call(stub, "AdminAdjust", request, metadata)

    assert_refusal(parse_refusal(raised.value), grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")
    assert await state_of(db) == before
