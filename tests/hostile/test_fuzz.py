"""Fuzzing with hypothesis: the webhook route (headers and bodies, unsigned and validly signed) and every gRPC
request message of LedgerService (random field values per message type, built from the descriptors).

Whatever comes in: no 5xx, no INTERNAL / UNKNOWN, the service still healthy, SPEC §2 invariants 1 and 2 intact
over the whole database. `FUZZ_EXAMPLES` sets the examples per target (default 150; the long run is
`FUZZ_EXAMPLES=10000 .venv/bin/python -m pytest tests/hostile/test_fuzz.py -q`: 30,000 cases).

The tests are synchronous (hypothesis drives them) and run their async parts on the session's loop.
"""

from __future__ import annotations

import collections
import json
import os
import time
from collections.abc import Callable
from typing import Any, Final

import grpc
import pytest
from google.protobuf import descriptor as pb_descriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from credits.ledger.v1 import ledger_service_pb2 as pb
from services.stripe_bridge.events import HANDLED_TYPES
from tests.conftest import ALL_ROLES_TOKEN
from tests.fakes import stripe_events as se
from tests.hostile.conftest import gateway_healthy, invariant_violations, leaks, ledger_healthy
from tests.webhook_gateway.conftest import WEBHOOK_SECRET

EXAMPLES: Final = int(os.environ.get("FUZZ_EXAMPLES") or 150)
FUZZ_SETTINGS: Final = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
SERVICE: Final = pb.DESCRIPTOR.services_by_name["LedgerService"]
# Codes that mean a bug (INTERNAL, UNKNOWN) or a service that stopped answering.
FORBIDDEN_CODES: Final = frozenset(
    {
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.DATA_LOSS,
    }
)
CALL_TIMEOUT_SECONDS: Final = 20.0
HEADER_TEXT: Final = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300)
FUZZ_USERS: Final = ("fuzz-user-1", "fuzz-user-2", "fuzz-user-3")
FUZZ_TARGETS: Final = ("webhook-headers-and-bodies", "validly-signed-events", "grpc-request-messages")


@pytest.fixture(scope="session")
def fuzz_examples_passed() -> collections.Counter[str]:
    """Examples each fuzz target ran to the end, for the check after the fuzz (which requires all three)."""
    return collections.Counter()

# --- JSON values and Stripe-shaped objects ---------------------------------------------------------

JSON_SCALARS: Final = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=60),
    st.sampled_from(
        [
            "small",
            "medium",
            "large",
            "eur",
            "usd",
            "paid",
            "unpaid",
            "succeeded",
            "won",
            "lost",
            "needs_response",
            "warning_closed",
            *FUZZ_USERS,
        ]
    ),
)
JSON_VALUES: Final = st.recursive(
    JSON_SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
OBJECT_FIELDS: Final = {
    "object": st.sampled_from(["checkout.session", "payment_intent", "charge", "dispute", "customer"]) | JSON_VALUES,
    "id": st.sampled_from(["cs_fuzz", "pi_fuzz", "ch_fuzz", "dp_fuzz"]) | JSON_VALUES,
    "metadata": st.fixed_dictionaries(
        {}, optional={"user_id": st.sampled_from(FUZZ_USERS) | JSON_VALUES, "package_id": JSON_VALUES}
    )
    | JSON_VALUES,
    "client_reference_id": st.sampled_from(FUZZ_USERS) | JSON_VALUES,
    "payment_intent": st.sampled_from(["pi_fuzz", "pi_other"]) | JSON_VALUES,
    "charge": st.sampled_from(["ch_fuzz", "ch_unknown"]) | JSON_VALUES,
    "latest_charge": JSON_VALUES,
    "amount": st.sampled_from([500, 2500, 5000]) | JSON_VALUES,
    "amount_total": st.sampled_from([500, 2500, 5000]) | JSON_VALUES,
    "amount_refunded": JSON_VALUES,
    "currency": st.sampled_from(["eur", "EUR", "usd"]) | JSON_VALUES,
    "payment_status": JSON_VALUES,
    "status": JSON_VALUES,
    "customer_details": JSON_VALUES,
    "customer_email": JSON_VALUES,
}
EVENT_TYPES: Final = st.sampled_from(sorted(HANDLED_TYPES)) | st.text(max_size=120)


@st.composite
def stripe_events(draw: st.DrawFn) -> dict[str, Any]:
    data_object = draw(st.fixed_dictionaries({}, optional=OBJECT_FIELDS))
    event: dict[str, Any] = {
        "id": draw(st.just(f"evt_fuzz_{time.time_ns()}") | JSON_VALUES),
        "object": "event",
        "type": draw(EVENT_TYPES | JSON_VALUES),
        "data": draw(st.just({"object": data_object}) | JSON_VALUES),
    }
    return draw(st.just(event) | st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=4))


# --- the webhook route ---------------------------------------------------------------------------


def _post(loop, http, gateway, body: bytes, headers: list[tuple[str, str]]) -> tuple[int, str]:
    async def post() -> tuple[int, str]:
        async with http.post(gateway.url("/webhooks/stripe"), data=body, headers=headers) as response:
            return response.status, await response.text()

    return loop.run_until_complete(post())


SIGNATURE_HEADERS: Final = st.one_of(
    HEADER_TEXT,
    st.builds(lambda t, v: f"t={t},v1={v}", st.integers(-(2**70), 2**70), st.text("0123456789abcdef", max_size=70)),
    st.builds(lambda t, rest: f"t={t},{rest}", st.integers(0, 2**40), HEADER_TEXT),
)


@FUZZ_SETTINGS
@given(
    body=st.binary(max_size=4096)
    | st.text(max_size=2000).map(str.encode)
    | JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    signatures=st.lists(SIGNATURE_HEADERS, max_size=2),
    content_type=st.none() | HEADER_TEXT,
)
def test_fuzz_webhook_headers_and_bodies(
    hostile_loop, hostile_http, hostile_gateway, fuzz_examples_passed, body, signatures, content_type
):
    headers = [("Stripe-Signature", signature) for signature in signatures]
    if content_type is not None:
        headers.append(("Content-Type", content_type))
    status, text = _post(hostile_loop, hostile_http, hostile_gateway, body, headers)
    assert status in (400, 413), text  # nothing unsigned gets further than the signature
    assert not leaks(text)
    fuzz_examples_passed["webhook-headers-and-bodies"] += 1


@FUZZ_SETTINGS
@given(event=stripe_events(), pretty=st.booleans())
def test_fuzz_validly_signed_events(hostile_loop, hostile_http, hostile_gateway, fuzz_examples_passed, event, pretty):
    body = json.dumps(event, indent=2 if pretty else None).encode()
    headers = [("Content-Type", "application/json"), ("Stripe-Signature", se.sign(body, WEBHOOK_SECRET))]
    status, text = _post(hostile_loop, hostile_http, hostile_gateway, body, headers)
    assert status in (200, 400), text
    if status == 200:
        assert json.loads(text)["outcome"] in ("applied", "duplicate", "ignored", "refused"), text
    assert not leaks(text)
    fuzz_examples_passed["validly-signed-events"] += 1


# --- the gRPC API: messages built from the descriptors ---------------------------------------------

FD = pb_descriptor.FieldDescriptor
INTERESTING_STRINGS: Final = st.sampled_from(
    [
        "",
        " ",
        "user-1",
        *FUZZ_USERS,
        "pi_fuzz",
        "cs_fuzz",
        "ch_fuzz",
        "evt_fuzz",
        "small",
        "eur",
        "payment:1:purchase",
        "hold:1",
        "x" * 129,
        "x" * 256,
        "\u00e9\u00e8",
        "a\x00b",
        "dDE6NQ==",
        "cDE6MDox",
    ]
)
INT64_SPECIAL: Final = st.sampled_from([0, 1, -1, 100, 10**9, 10**9 + 1, 10**12, 10**12 + 1, 2**63 - 1, -(2**63)])
TIMESTAMP_SECONDS: Final = st.integers(-(2**40), 2**40) | st.integers(0, 2_000_000_000)


def scalar_strategy(field: pb_descriptor.FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == FD.TYPE_STRING:
        return INTERESTING_STRINGS | st.text(max_size=200) | st.from_regex(r"[\x21-\x7e]{1,140}", fullmatch=True)
    if kind == FD.TYPE_BYTES:
        return st.binary(max_size=40) | st.binary(min_size=32, max_size=32)
    if kind == FD.TYPE_BOOL:
        return st.booleans()
    if kind in (FD.TYPE_INT64, FD.TYPE_SINT64, FD.TYPE_SFIXED64):
        return INT64_SPECIAL | st.integers(-(2**63), 2**63 - 1) | st.integers(-10, 5000)
    if kind in (FD.TYPE_UINT64, FD.TYPE_FIXED64):
        return st.integers(0, 2**64 - 1)
    if kind in (FD.TYPE_INT32, FD.TYPE_SINT32, FD.TYPE_SFIXED32):
        return st.integers(-(2**31), 2**31 - 1) | st.integers(-5, 600)
    if kind in (FD.TYPE_UINT32, FD.TYPE_FIXED32):
        return st.integers(0, 2**32 - 1)
    if kind == FD.TYPE_ENUM:
        known = [value.number for value in field.enum_type.values]
        return st.sampled_from(known) | st.integers(-(2**31), 2**31 - 1)
    if kind in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        return st.floats(width=32 if kind == FD.TYPE_FLOAT else 64)
    raise AssertionError(f"field {field.full_name}: type {kind} has no strategy")


def fill(message: Message, data: st.DataObject, depth: int = 0) -> None:
    """Sets a random subset of `message`'s fields to random values (nested messages up to depth 3)."""
    for field in message.DESCRIPTOR.fields:
        if not data.draw(st.booleans(), label=f"set {field.full_name}"):
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key_field, value_field = (
                field.message_type.fields_by_name["key"],
                field.message_type.fields_by_name["value"],
            )
            entries = data.draw(st.dictionaries(scalar_strategy(key_field), scalar_strategy(value_field), max_size=25))
            getattr(message, field.name).update(entries)
        elif field.message_type is not None:
            if depth >= 3:
                continue
            targets = (
                [getattr(message, field.name).add() for _ in range(data.draw(st.integers(0, 3)))]
                if field.is_repeated
                else [getattr(message, field.name)]
            )
            for target in targets:
                _fill_message(target, data, depth)
        elif field.is_repeated:
            getattr(message, field.name).extend(data.draw(st.lists(scalar_strategy(field), max_size=6)))
        else:
            setattr(message, field.name, data.draw(scalar_strategy(field), label=field.full_name))


def _fill_message(target: Message, data: st.DataObject, depth: int) -> None:
    if target.DESCRIPTOR.full_name == "google.protobuf.Timestamp":
        target.seconds = data.draw(TIMESTAMP_SECONDS)
        target.nanos = data.draw(st.integers(0, 999_999_999) | st.integers(-(2**31), 2**31 - 1))
        return
    target.SetInParent()
    fill(target, data, depth + 1)


def request_class(method_name: str) -> Callable[[], Message]:
    return getattr(pb, SERVICE.methods_by_name[method_name].input_type.name)


@FUZZ_SETTINGS
@given(method=st.sampled_from(sorted(SERVICE.methods_by_name)), data=st.data())
def test_fuzz_every_grpc_request_message(hostile_loop, hostile_stub, fuzz_examples_passed, method, data):
    request = request_class(method)()
    fill(request, data)

    async def call() -> grpc.StatusCode:
        try:
            await getattr(hostile_stub, method)(
                request, metadata=(("authorization", f"Bearer {ALL_ROLES_TOKEN}"),), timeout=CALL_TIMEOUT_SECONDS
            )
        except grpc.aio.AioRpcError as exc:
            assert not leaks(exc.details() or ""), exc.details()
            return exc.code()
        return grpc.StatusCode.OK

    code = hostile_loop.run_until_complete(call())
    assert code not in FORBIDDEN_CODES, f"{method}: {code.name} for {request}"
    fuzz_examples_passed["grpc-request-messages"] += 1


async def test_after_the_fuzz_everything_is_healthy_and_consistent(
    fuzz_examples_passed, hostile_channel, hostile_http, hostile_gateway, hostile_db
) -> None:
    """Defined last, so pytest runs it after the three fuzz targets; it fails when any of them did not run
    (selected alone, deselected, reordered), since the health it checks would then prove nothing."""
    not_run = [target for target in FUZZ_TARGETS if fuzz_examples_passed[target] == 0]
    assert not_run == [], f"the check after the fuzz ran without these fuzz targets: {not_run}"
    assert await ledger_healthy(hostile_channel)
    assert await gateway_healthy(hostile_http, hostile_gateway)
    assert await invariant_violations(hostile_db) == []
