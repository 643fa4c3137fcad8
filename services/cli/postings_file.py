"""The file `creditsctl post` reads, checked line by line as the ledger would check each posting, and its batches.

One JSON object per line, UTF-8; empty lines are skipped:

    {"kind": "credit", "user_id": "u-1", "amount": 100, "idempotency_key": "grant-2026-12:u-1", "reason": "grant"}
    {"kind": "debit", "user_id": "u-2", "amount": 5, "idempotency_key": "usage-881", "reason": "usage",
     "reference": "job-881", "metadata": {"job": "881"}}

(one object per line; the second is folded here). The fields are exactly those of the Credit and Debit RPCs,
with their limits (services.ledger.accounts.validation, the ledger's own functions): `kind` "credit" or "debit";
`user_id` 1 to 128 printable ASCII characters; `amount` a whole number of credits, 1 to 1,000,000,000;
`idempotency_key` 1 to 128 printable ASCII characters, not `payment:...` or `hold:...`; `reason` 1 to 500
characters; `reference` (up to 128) and `metadata` (up to 20 string pairs) optional. An unknown or repeated
field is refused too: a misspelt `"refrence"` must not vanish silently.

`read_postings` reads the whole file before anything is sent, and refuses it (services.cli.errors.UsageError,
every bad line named, up to LINE_ERRORS_SHOWN_MAX) if any line is bad. `plan_batches` cuts the postings into
requests of at most `postings_max` postings and REQUEST_BYTES_MAX bytes (as protobuf encodes them).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Final

from credits.ledger.v1 import ledger_service_pb2 as pb
from services.cli.errors import UsageError
from services.ledger.accounts import validation
from services.ledger.errors import InvalidArgument

KINDS: Final = ("credit", "debit")
FIELDS_REQUIRED: Final = ("kind", "user_id", "amount", "idempotency_key", "reason")
FIELDS_OPTIONAL: Final = ("reference", "metadata")
FIELDS: Final = FIELDS_REQUIRED + FIELDS_OPTIONAL
# The ledger's limits per call (its PostBatch contract; it refuses more as a whole): 1,000 postings, and its gRPC
# receive limit on the encoded request (GRPC_MESSAGE_BYTES_MAX of services/ledger/app.py, which creditsctl may not
# import: keep the two equal).
BATCH_POSTINGS_MAX: Final = validation.BATCH_POSTINGS_MAX
REQUEST_BYTES_MAX: Final = 4 * 1024 * 1024
# The largest valid posting (20 metadata pairs of 540 four-byte characters) encodes to about 45 KB; as JSON with
# every character escaped, about 130 KB. A longer line is refused without being held in memory.
LINE_BYTES_MAX: Final = 256 * 1024
# The whole file is held (encoded) before the first call: 1,000,000 short postings take about 500 MB.
POSTINGS_MAX: Final = 1_000_000
LINE_ERRORS_SHOWN_MAX: Final = 20
_ATOMIC_FIELD_BYTES: Final = 2  # PostBatchRequest.atomic = true: one tag byte, one value byte


class LineError(Exception):
    """What is wrong with one line (the message names the field, as the ledger would)."""


@dataclass(frozen=True, slots=True)
class Posting:
    """One line of the file, checked, with the posting to send (encoded: a protobuf message object takes several
    times the memory) and its encoded size in a PostBatchRequest."""

    line: int
    kind: str
    user_id: str
    amount: int
    idempotency_key: str
    encoded: bytes
    size_bytes: int

    def message(self) -> pb.BatchPosting:
        return pb.BatchPosting.FromString(self.encoded)


@dataclass(frozen=True, slots=True)
class Batch:
    """Postings [start, end) of the file's list, sent as one PostBatch call; `number` counts from 1."""

    number: int
    start: int
    end: int


def _varint_bytes(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


def _unique_fields(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, value in pairs:
        if name in fields:
            raise LineError(f"{name}: appears twice in the object")
        fields[name] = value
    return fields


def _string(fields: Mapping[str, Any], name: str) -> str:
    value = fields.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise LineError(f"{name}: expected a string, got {json.dumps(value)[:40]}")
    return value


def _metadata(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise LineError("metadata: expected an object of string values")
    for key, item in value.items():
        if not isinstance(item, str):
            raise LineError(f"metadata[{key}]: expected a string, got {json.dumps(item)[:40]}")
    return value


def _amount(value: Any) -> int:
    # JSON's 10.0, true and "10" are not a whole number of credits, although Python would take some of them.
    if not isinstance(value, int) or isinstance(value, bool):
        raise LineError(f"amount: expected a whole number of credits, got {json.dumps(value)[:40]}")
    return value


def _checked_fields(text: str) -> dict[str, Any]:
    try:
        fields = json.loads(text, object_pairs_hook=_unique_fields)
    except json.JSONDecodeError as exc:
        raise LineError(f"not JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise LineError("not JSON (nested too deeply)") from None
    if not isinstance(fields, dict):
        raise LineError("expected a JSON object {...}")
    unknown = [name for name in fields if name not in FIELDS]
    if unknown:
        raise LineError(f"{unknown[0]}: unknown field (expected {', '.join(FIELDS)})")
    missing = [name for name in FIELDS_REQUIRED if fields.get(name) is None]
    if missing:
        raise LineError(f"missing {', '.join(missing)}")
    if fields["kind"] not in KINDS:
        raise LineError(f'kind: expected "credit" or "debit", got {json.dumps(fields["kind"])[:40]}')
    return fields


def parse_line(text: str, line: int) -> Posting:
    """One non-empty line as a posting; LineError when the ledger would refuse it (or it is not one)."""
    fields = _checked_fields(text)
    kind: str = fields["kind"]
    try:
        user_id = validation.user_id(_string(fields, "user_id"))
        amount = validation.positive_amount(_amount(fields["amount"]))
        key = validation.idempotency_key(_string(fields, "idempotency_key"))
        reason = validation.reason(_string(fields, "reason"))
        reference = validation.reference(_string(fields, "reference")) or ""
        metadata = validation.metadata(_metadata(fields.get("metadata"))) or {}
    except InvalidArgument as exc:
        raise LineError(exc.message) from None
    try:
        if kind == "credit":
            credit = pb.CreditRequest(
                user_id=user_id,
                amount=amount,
                idempotency_key=key,
                reason=reason,
                reference=reference,
                metadata=metadata,
            )
            message = pb.BatchPosting(credit=credit)
        else:
            debit = pb.DebitRequest(
                user_id=user_id,
                amount=amount,
                idempotency_key=key,
                reason=reason,
                reference=reference,
                metadata=metadata,
            )
            message = pb.BatchPosting(debit=debit)
    except ValueError as exc:  # a lone surrogate (JSON's "\ud800") is no UTF-8 text: protobuf refuses it
        raise LineError(f"not valid Unicode text ({exc})") from None
    encoded = message.SerializeToString()
    # As a repeated field of PostBatchRequest: a tag byte, the length, the body.
    size_bytes = 1 + _varint_bytes(len(encoded)) + len(encoded)
    return Posting(line, kind, user_id, amount, key, encoded, size_bytes)


def _raw_lines(stream: BinaryIO) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes) per line; None for a line longer than LINE_BYTES_MAX (skipped, not held)."""
    number = 0
    while True:
        raw = stream.readline(LINE_BYTES_MAX + 1)
        if not raw:
            return
        number += 1
        if len(raw) > LINE_BYTES_MAX and not raw.endswith(b"\n"):
            rest = raw
            while rest and not rest.endswith(b"\n"):
                rest = stream.readline(LINE_BYTES_MAX)
            yield number, None
            continue
        yield number, raw


def _decoded(raw: bytes | None, number: int) -> str:
    if raw is None:
        raise LineError(f"longer than {LINE_BYTES_MAX:,} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LineError(f"not UTF-8 text (byte {exc.start + 1})") from None
    return text.removeprefix("\ufeff") if number == 1 else text


def read_postings(stream: BinaryIO, name: str) -> list[Posting]:
    """Every posting of the file, in order; UsageError naming every bad line (nothing is sent then)."""
    postings: list[Posting] = []
    problems: list[str] = []
    problem_count = 0
    for number, raw in _raw_lines(stream):
        try:
            text = _decoded(raw, number)
            if not text.strip():
                continue
            postings.append(parse_line(text, number))
        except LineError as exc:
            problem_count += 1
            if len(problems) < LINE_ERRORS_SHOWN_MAX:
                problems.append(f"  line {number}: {exc}")
        if len(postings) > POSTINGS_MAX:
            raise UsageError(
                f"{name}: more than {POSTINGS_MAX:,} postings; split the file and post each part "
                "(a re-run of any part is safe: its keys replay); nothing was sent"
            )
    if problem_count:
        more = problem_count - len(problems)
        shown = problems + ([f"  ... and {more:,} more"] if more else [])
        plural = "s" if problem_count > 1 else ""
        raise UsageError(
            f"{name}: {problem_count:,} bad line{plural}; nothing was sent (fix and run again):\n" + "\n".join(shown)
        )
    return postings


def plan_batches(sizes_bytes: Sequence[int], postings_max: int, *, atomic: bool = False) -> list[Batch]:
    """Consecutive batches of at most `postings_max` postings whose PostBatchRequest encodes to at most
    REQUEST_BYTES_MAX bytes (`sizes_bytes`: each posting's Posting.size_bytes)."""
    assert 1 <= postings_max <= BATCH_POSTINGS_MAX, postings_max
    bytes_max = REQUEST_BYTES_MAX - (_ATOMIC_FIELD_BYTES if atomic else 0)
    batches: list[Batch] = []
    start, batch_bytes = 0, 0
    for index, size in enumerate(sizes_bytes):
        assert size <= bytes_max, size  # LINE_BYTES_MAX and the field limits keep a posting far below
        if index - start == postings_max or batch_bytes + size > bytes_max:
            batches.append(Batch(len(batches) + 1, start, index))
            start, batch_bytes = index, 0
        batch_bytes += size
    if start < len(sizes_bytes):
        batches.append(Batch(len(batches) + 1, start, len(sizes_bytes)))
    return batches
