"""creditsctl post's file: every line checked as the ledger checks a posting, and the batches it is cut into.

Pure functions; the command end to end (a real ledger) is in test_post.py.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from credits.ledger.v1 import ledger_service_pb2 as pb
from services.cli import postings_file
from services.cli.errors import UsageError
from services.cli.postings_file import (
    BATCH_POSTINGS_MAX,
    LINE_BYTES_MAX,
    LINE_ERRORS_SHOWN_MAX,
    REQUEST_BYTES_MAX,
    Batch,
    LineError,
    parse_line,
    plan_batches,
    read_postings,
)

VALID: dict[str, Any] = {
    "kind": "credit",
    "user_id": "user-1",
    "amount": 100,
    "idempotency_key": "grant-1",
    "reason": "monthly grant",
}


def line(**changes: Any) -> str:
    fields = {**VALID, **changes}
    return json.dumps({name: value for name, value in fields.items() if value is not ...})


def test_a_credit_and_a_debit_become_the_rpcs_own_requests() -> None:
    credit = parse_line(line(reference="r-1", metadata={"plan": "pro"}), 7)
    assert (credit.line, credit.kind, credit.user_id, credit.amount, credit.idempotency_key) == (
        7,
        "credit",
        "user-1",
        100,
        "grant-1",
    )
    assert credit.message() == pb.BatchPosting(
        credit=pb.CreditRequest(
            user_id="user-1",
            amount=100,
            idempotency_key="grant-1",
            reason="monthly grant",
            reference="r-1",
            metadata={"plan": "pro"},
        )
    )
    debit = parse_line(line(kind="debit", reference=None, metadata=None), 8)
    assert debit.message().WhichOneof("posting") == "debit"
    assert debit.message().debit.amount == 100
    assert debit.message().debit.reference == ""
    single = pb.PostBatchRequest(postings=[debit.message()]).ByteSize()
    assert debit.size_bytes == single, "the size is the posting's share of the encoded request"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "not JSON (Expecting property name enclosed in double quotes at column 2)"),
        ("[1, 2]", "expected a JSON object {...}"),
        (line(amount=...), "missing amount"),
        (line(reason=None, user_id=...), "missing user_id, reason"),
        (
            line(ammount=5),
            "ammount: unknown field (expected kind, user_id, amount, idempotency_key, reason, reference, metadata)",
        ),
        ('{"kind": "credit", "kind": "debit"}', "kind: appears twice in the object"),
        (line(kind="refund"), 'kind: expected "credit" or "debit", got "refund"'),
        (line(amount=10.0), "amount: expected a whole number of credits, got 10.0"),
        (line(amount="10"), 'amount: expected a whole number of credits, got "10"'),
        (line(amount=True), "amount: expected a whole number of credits, got true"),
        (line(amount=0), "amount: must be greater than 0"),
        (line(amount=-5), "amount: must be greater than 0"),
        (line(amount=1_000_000_001), "amount: must be at most 1000000000"),
        (line(user_id=42), "user_id: expected a string, got 42"),
        (line(user_id="a user"), "user_id: must be printable ASCII without spaces"),
        (line(user_id="u" * 129), "user_id: must be at most 128 characters"),
        (
            line(idempotency_key="payment:1:purchase"),
            "idempotency_key: must not start with payment:, hold: or grant: (reserved)",
        ),
        (line(reason="   "), "reason: must not be empty"),
        (line(reason="r" * 501), "reason: must be at most 500 characters"),
        (line(reference="x\u0007"), "reference: must not contain control characters"),
        (line(metadata=["a"]), "metadata: expected an object of string values"),
        (line(metadata={"n": 1}), "metadata[n]: expected a string, got 1"),
        (line(metadata={str(i): "v" for i in range(21)}), "metadata: must have at most 20 pairs"),
        (line(reason="\ud800"), "not valid Unicode text"),
    ],
    ids=[
        "not-json",
        "not-an-object",
        "missing-amount",
        "missing-two",
        "unknown-field",
        "repeated-field",
        "bad-kind",
        "float-amount",
        "string-amount",
        "bool-amount",
        "zero",
        "negative",
        "too-much",
        "user-not-string",
        "user-with-space",
        "user-too-long",
        "reserved-key",
        "blank-reason",
        "long-reason",
        "control-character",
        "metadata-not-object",
        "metadata-not-string",
        "metadata-too-many",
        "lone-surrogate",
    ],
)
def test_a_bad_line_is_refused_naming_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(LineError) as refused:
        parse_line(text, 1)
    assert str(refused.value).startswith(problem)


def read(text: str | bytes) -> list[Any]:
    data = text.encode() if isinstance(text, str) else text
    return read_postings(io.BytesIO(data), "postings.jsonl")


def test_empty_lines_are_skipped_and_lines_keep_their_numbers() -> None:
    postings = read("\n" + line() + "\n\n   \n" + line(idempotency_key="grant-2") + "\r\n")
    assert [(posting.line, posting.idempotency_key) for posting in postings] == [(2, "grant-1"), (5, "grant-2")]
    assert read("") == []
    assert [p.line for p in read("\ufeff" + line())] == [1], "a byte-order mark is not part of the first line"


def test_every_bad_line_is_named_and_nothing_is_returned() -> None:
    text = "\n".join([line(), line(amount=0), "nope", line(), line(kind="x")])
    with pytest.raises(UsageError) as refused:
        read(text)
    assert str(refused.value).splitlines() == [
        "postings.jsonl: 3 bad lines; nothing was sent (fix and run again):",
        "  line 2: amount: must be greater than 0",
        "  line 3: not JSON (Expecting value at column 1)",
        '  line 5: kind: expected "credit" or "debit", got "x"',
    ]


def test_the_list_of_bad_lines_is_bounded() -> None:
    with pytest.raises(UsageError) as refused:
        read("\n".join(["nope"] * (LINE_ERRORS_SHOWN_MAX + 5)))
    shown = str(refused.value).splitlines()
    assert shown[0].startswith(f"postings.jsonl: {LINE_ERRORS_SHOWN_MAX + 5} bad lines")
    assert len(shown) == 1 + LINE_ERRORS_SHOWN_MAX + 1
    assert shown[-1] == "  ... and 5 more"


def test_bytes_that_are_not_utf8_and_a_line_too_long_are_refused_by_number() -> None:
    long_line = line(reason="r" * LINE_BYTES_MAX).encode()
    data = line().encode() + b"\n" + b'{"reason": "\xff"}\n' + long_line + b"\n" + line().encode()
    with pytest.raises(UsageError) as refused:
        read(data)
    assert str(refused.value).splitlines()[1:] == [
        "  line 2: not UTF-8 text (byte 13)",
        f"  line 3: longer than {LINE_BYTES_MAX:,} bytes",
    ]


def test_batches_hold_at_most_the_batch_size() -> None:
    assert plan_batches([], 1000) == []
    assert plan_batches([10] * 2500, 1000) == [Batch(1, 0, 1000), Batch(2, 1000, 2000), Batch(3, 2000, 2500)]
    assert plan_batches([10] * 3, 1) == [Batch(1, 0, 1), Batch(2, 1, 2), Batch(3, 2, 3)]
    with pytest.raises(AssertionError):
        plan_batches([10], BATCH_POSTINGS_MAX + 1)


def test_batches_are_split_below_the_message_limit_as_protobuf_measures_it() -> None:
    big = {f"key{i:02d}": "\u00e9" * 500 for i in range(20)}  # 20 pairs of 1,000-byte values: about 21 KB
    postings = [
        parse_line(line(idempotency_key=f"k-{i}", metadata=big, reason="\u4e2d" * 500), i + 1) for i in range(400)
    ]
    total_bytes = sum(posting.size_bytes for posting in postings)
    assert total_bytes > 2 * REQUEST_BYTES_MAX
    for atomic in (False, True):
        batches = plan_batches([posting.size_bytes for posting in postings], 1000, atomic=atomic)
        assert len(batches) == 3
        assert [batch.start for batch in batches] == [0, batches[0].end, batches[1].end]
        assert batches[-1].end == len(postings)
        for batch in batches:
            request = pb.PostBatchRequest(
                postings=[posting.message() for posting in postings[batch.start : batch.end]], atomic=atomic
            )
            assert request.ByteSize() <= REQUEST_BYTES_MAX
            one_more = postings[batch.start : batch.end + 1]
            if batch.end < len(postings):
                request_plus = pb.PostBatchRequest(postings=[p.message() for p in one_more], atomic=atomic)
                assert request_plus.ByteSize() > REQUEST_BYTES_MAX, "batches are as full as the limit allows"


def test_a_file_above_the_postings_limit_is_refused_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postings_file, "POSTINGS_MAX", 3)
    assert len(read("\n".join(line(idempotency_key=f"k-{i}") for i in range(3)))) == 3
    with pytest.raises(UsageError) as refused:
        read("\n".join(line(idempotency_key=f"k-{i}") for i in range(4)))
    assert str(refused.value) == (
        "postings.jsonl: more than 3 postings; split the file and post each part "
        "(a re-run of any part is safe: its keys replay); nothing was sent"
    )
