"""Every validation rule, on the wire: INVALID_ARGUMENT, one ErrorInfo and one BadRequest
field violation naming the field, and no effect. Each refusal has an accepted boundary twin."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from credits.ledger.v1 import ledger_service_pb2 as pb
from services.ledger import errors
from services.ledger.accounts import validation
from tests.conftest import new_key
from tests.ledger.helpers import assert_refusal, call, journal, refusal

RPCS_WITH_USER_ID = ["GetBalance", "Credit", "Debit", "ListTransactions", "AdminAdjust", "Anonymize"]
RPCS_WITH_KEY = ["Credit", "Debit", "AdminAdjust"]
RPCS_WITH_REASON = ["Credit", "Debit", "AdminAdjust"]
RPCS_MOVING_CREDITS = ["Credit", "Debit"]


def valid_request(rpc: str, user_id: str) -> Any:
    """A request that the RPC accepts (Debit: once the user has credits)."""
    requests: dict[str, Callable[[], Any]] = {
        "GetBalance": lambda: pb.GetBalanceRequest(user_id=user_id),
        "Credit": lambda: pb.CreditRequest(user_id=user_id, amount=10, idempotency_key=new_key(), reason="r"),
        "Debit": lambda: pb.DebitRequest(user_id=user_id, amount=10, idempotency_key=new_key(), reason="r"),
        "ListTransactions": lambda: pb.ListTransactionsRequest(user_id=user_id),
        "AdminAdjust": lambda: pb.AdminAdjustRequest(
            user_id=user_id, amount=10, idempotency_key=new_key(), actor="alice", reason="r"
        ),
        "Anonymize": lambda: pb.AnonymizeRequest(user_id=user_id),
    }
    return requests[rpc]()


@dataclass(frozen=True)
class Case:
    rpc: str
    field: str  # the request field changed
    label: str  # what is special about the value (the test id)
    value: Any
    violation: str = ""  # the field named by the violation, for refused cases

    @property
    def id(self) -> str:
        return f"{self.rpc}-{self.field}-{self.label}"


MAX = validation.AMOUNT_CREDITS_MAX
BAD_IDENTIFIERS = {
    "empty": "",
    "129-chars": "u" * 129,
    "space": "has space",
    "tab": "tab\there",
    "nul": "nul\x00byte",
    "control": "bell\x07",
    "non-ascii": "caf\u00e9",
}
BAD_REASONS = {
    "empty": "",
    "blank": "   ",
    "501-chars": "r" * 501,
    "escape": "x\x1b[31m",
    "nul": "nul\x00byte",
}
BAD_REFERENCES = {"129-chars": "f" * 129, "escape": "x\x1b[31m", "nul": "nul\x00byte"}
BAD_AMOUNTS = {"zero": 0, "minus-1": -1, "minus-max": -MAX, "max-plus-1": MAX + 1, "int64-max": 2**63 - 1}
BAD_SIGNED_AMOUNTS = {"zero": 0, "max-plus-1": MAX + 1, "minus-max-minus-1": -MAX - 1, "int64-min": -(2**63)}
BAD_METADATA = {
    "21-pairs": ({f"k{i}": "v" for i in range(validation.METADATA_PAIRS_MAX + 1)}, "metadata"),
    "41-char-key": ({"k" * 41: "v"}, "metadata"),
    "empty-key": ({"": "v"}, "metadata"),
    "control-in-key": ({"bad\x01key": "v"}, "metadata"),
    "501-char-value": ({"k": "v" * 501}, "metadata[k]"),
    "nul-in-value": ({"k": "bad\x00value"}, "metadata[k]"),
}

REFUSED: list[Case] = [
    *[
        Case(rpc, "user_id", label, value, "user_id")
        for rpc in RPCS_WITH_USER_ID
        for label, value in BAD_IDENTIFIERS.items()
    ],
    *[
        Case(rpc, "idempotency_key", label, value, "idempotency_key")
        for rpc in RPCS_WITH_KEY
        for label, value in BAD_IDENTIFIERS.items()
    ],
    *[
        Case(rpc, "idempotency_key", label, value, "idempotency_key")
        for rpc in RPCS_WITH_KEY
        for label, value in {"reserved-payment-prefix": "payment:1:purchase", "reserved-hold-prefix": "hold:1"}.items()
    ],
    *[
        Case(rpc, "amount", label, value, "amount")
        for rpc in RPCS_MOVING_CREDITS
        for label, value in BAD_AMOUNTS.items()
    ],
    *[Case("AdminAdjust", "amount", label, value, "amount") for label, value in BAD_SIGNED_AMOUNTS.items()],
    *[Case(rpc, "reason", label, value, "reason") for rpc in RPCS_WITH_REASON for label, value in BAD_REASONS.items()],
    *[
        Case(rpc, "reference", label, value, "reference")
        for rpc in RPCS_MOVING_CREDITS
        for label, value in BAD_REFERENCES.items()
    ],
    *[Case("AdminAdjust", "actor", label, value, "actor") for label, value in BAD_IDENTIFIERS.items()],
    *[
        Case(rpc, "metadata", label, value, violation)
        for rpc in RPCS_MOVING_CREDITS
        for label, (value, violation) in BAD_METADATA.items()
    ],
    Case("ListTransactions", "page_size", "minus-1", -1, "page_size"),
    Case("ListTransactions", "page_size", "max-plus-1", validation.PAGE_SIZE_MAX + 1, "page_size"),
]

ACCEPTED: list[Case] = [
    *[Case(rpc, "user_id", "128-chars", "u" * 128) for rpc in RPCS_WITH_USER_ID],
    *[Case(rpc, "user_id", "punctuation", "a!~#$%&'()*+,-./:;<=>?@[]^_`{|}") for rpc in RPCS_WITH_USER_ID],
    *[Case(rpc, "idempotency_key", "128-chars", "k" * 128) for rpc in RPCS_WITH_KEY],
    *[Case(rpc, "amount", label, value) for rpc in RPCS_MOVING_CREDITS for label, value in (("1", 1), ("max", MAX))],
    *[Case("AdminAdjust", "amount", label, value) for label, value in (("1", 1), ("minus-1", -1), ("max", MAX))],
    *[Case(rpc, "reason", "500-chars", "r" * 500) for rpc in RPCS_WITH_REASON],
    *[Case(rpc, "reason", "newline-and-tab", "line one\nline two\ttab") for rpc in RPCS_WITH_REASON],
    *[Case(rpc, "reason", "unicode", "\u00e9t\u00e9 \u2713") for rpc in RPCS_WITH_REASON],
    *[Case(rpc, "reference", "128-chars", "f" * 128) for rpc in RPCS_MOVING_CREDITS],
    Case("AdminAdjust", "actor", "128-chars", "a" * 128),
    *[
        Case(rpc, "metadata", "20-pairs-of-40-and-500-chars", {f"{i:02d}" + "k" * 38: "v" * 500 for i in range(20)})
        for rpc in RPCS_MOVING_CREDITS
    ],
    *[Case("ListTransactions", "page_size", str(value), value) for value in (0, 1, validation.PAGE_SIZE_MAX)],
]


def with_field(request: Any, field: str, value: Any) -> Any:
    if field == "metadata":
        request.metadata.clear()
        request.metadata.update(value)
    else:
        setattr(request, field, value)
    return request


async def row_counts(db: Any) -> tuple[int, ...]:
    row = await db.fetchrow(
        "SELECT (SELECT count(*) FROM accounts), (SELECT count(*) FROM credit_transactions),"
        " (SELECT count(*) FROM admin_actions), (SELECT count(*) FROM transaction_metadata)"
    )
    return tuple(row)


async def fund(stub: Any, user_id: str, amount: int) -> None:
    await call(stub.Credit, pb.CreditRequest(user_id=user_id, amount=amount, idempotency_key=new_key(), reason="fund"))


@pytest.mark.parametrize("case", REFUSED, ids=[case.id for case in REFUSED])
async def test_invalid_field_is_refused_with_a_field_violation(stub, db, user_id, case):
    if case.rpc == "Debit":
        await fund(stub, user_id, 100)
    # Tests run one at a time on this database, so whole-table counts show any effect.
    counts_before = await row_counts(db)

    request = with_field(valid_request(case.rpc, user_id), case.field, case.value)
    refused = await refusal(getattr(stub, case.rpc), request)

    assert_refusal(refused, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert refused.metadata == {"field": case.violation}
    assert [violation.field for violation in refused.field_violations] == [case.violation]
    assert refused.field_violations[0].description
    assert refused.message.startswith(f"{case.violation}: ")
    assert await row_counts(db) == counts_before


@pytest.mark.parametrize("case", ACCEPTED, ids=[case.id for case in ACCEPTED])
async def test_boundary_value_is_accepted(stub, db, user_id, case):
    # A fresh account per case: the boundary user id keeps its length and characters.
    target_user_id = (user_id + case.value)[: validation.USER_ID_CHARS_MAX] if case.field == "user_id" else user_id
    if case.field == "user_id":
        assert len(target_user_id) == min(validation.USER_ID_CHARS_MAX, len(user_id) + len(case.value))
    if case.rpc in ("Debit", "AdminAdjust"):
        await fund(stub, target_user_id, validation.AMOUNT_CREDITS_MAX)
    value = target_user_id if case.field == "user_id" else case.value
    request = with_field(valid_request(case.rpc, target_user_id), case.field, value)
    response = await call(getattr(stub, case.rpc), request)
    if case.rpc in ("Credit", "Debit", "AdminAdjust"):
        assert response.replayed is False
        entries = await journal(db, target_user_id)
        assert entries[-1]["id"] == response.transaction.id
        if case.field in ("reason", "reference", "idempotency_key"):
            assert entries[-1][case.field] == case.value
        if case.field == "amount":
            assert abs(entries[-1]["delta"]) == abs(case.value)
    if case.rpc == "GetBalance":
        assert response.user_id == target_user_id


BAD_PAGE_TOKENS = {
    "garbage": "not a token!",
    "not-base64-padding": "abc",
    "no-prefix": base64.urlsafe_b64encode(b"12345").decode(),
    "other-prefix": base64.urlsafe_b64encode(b"t2:12345").decode(),
    "not-a-number": base64.urlsafe_b64encode(b"t1:abc").decode(),
    "zero": base64.urlsafe_b64encode(b"t1:0").decode(),
    "negative": base64.urlsafe_b64encode(b"t1:-5").decode(),
    "beyond-int64": base64.urlsafe_b64encode(b"t1:99999999999999999999").decode(),
    "not-utf8": base64.urlsafe_b64encode(b"\xff\xfe").decode(),
}


@pytest.mark.parametrize("token", BAD_PAGE_TOKENS.values(), ids=BAD_PAGE_TOKENS.keys())
async def test_bad_page_token_is_invalid_argument(stub, user_id, token):
    await fund(stub, user_id, 1)
    request = pb.ListTransactionsRequest(user_id=user_id, page_token=token)
    refused = await refusal(stub.ListTransactions, request)
    assert_refusal(refused, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert [violation.field for violation in refused.field_violations] == ["page_token"]


async def test_client_raises_invalid_argument_naming_the_field(ledger, user_id):
    with pytest.raises(errors.InvalidArgument) as raised:
        await ledger.credit(user_id, 0, new_key(), "r")
    assert raised.value.field == "amount"
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.reason == "INVALID_ARGUMENT"
