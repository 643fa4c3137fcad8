"""Structured JSON logging: the line shape, trace and request ids, and redaction of PII and secrets."""

from __future__ import annotations

import io
import json
import logging
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from services.common.logs import (
    REDACTED,
    JsonFormatter,
    configure_logging,
    redact_text,
    redact_value,
    register_secret,
    request_id_scope,
    request_id_var,
)
from services.common.tracing import in_memory_tracing

RFC3339_UTC_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


class Capture:
    """A logger whose records land, formatted, in a buffer."""

    def __init__(self, logger: logging.Logger, buffer: io.StringIO) -> None:
        self.logger = logger
        self.buffer = buffer

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.buffer.getvalue().splitlines()]

    def last(self) -> dict[str, Any]:
        return self.lines()[-1]


@pytest.fixture
def capture() -> Iterator[Capture]:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter("test-service"))
    logger = logging.getLogger(f"tests.common.logs.{uuid.uuid4().hex}")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield Capture(logger, buffer)
    logger.removeHandler(handler)


def test_line_has_the_standard_keys(capture: Capture) -> None:
    capture.logger.info("hello %s", "world")
    line = capture.last()
    assert RFC3339_UTC_MS.match(line["time"])
    assert line["level"] == "INFO"
    assert line["service"] == "test-service"
    assert line["logger"] == capture.logger.name
    assert line["message"] == "hello world"


def test_line_without_span_or_request_has_no_ids(capture: Capture) -> None:
    capture.logger.info("plain")
    line = capture.last()
    assert "trace_id" not in line
    assert "span_id" not in line
    assert "request_id" not in line


def test_extra_fields_are_kept(capture: Capture) -> None:
    capture.logger.info("credited", extra={"user_id": "u_1", "credits": 100, "replay": False})
    line = capture.last()
    assert (line["user_id"], line["credits"], line["replay"]) == ("u_1", 100, False)


def test_extra_colliding_with_a_standard_key_is_prefixed(capture: Capture) -> None:
    capture.logger.info("x", extra={"service": "spoofed"})
    line = capture.last()
    assert line["service"] == "test-service"
    assert line["extra_service"] == "spoofed"


def test_trace_and_span_ids_inside_a_span(capture: Capture) -> None:
    provider, _ = in_memory_tracing()
    with provider.get_tracer("test").start_as_current_span("work") as span:
        capture.logger.info("inside")
    context = span.get_span_context()
    line = capture.last()
    assert line["trace_id"] == format(context.trace_id, "032x")
    assert line["span_id"] == format(context.span_id, "016x")


def test_request_id_inside_a_scope(capture: Capture) -> None:
    with request_id_scope("req-123") as request_id:
        capture.logger.info("inside")
    capture.logger.info("after")
    first, second = capture.lines()
    assert request_id == "req-123"
    assert first["request_id"] == "req-123"
    assert "request_id" not in second
    assert request_id_var.get() is None


def test_request_id_scope_generates_an_id() -> None:
    with request_id_scope() as request_id:
        assert request_id_var.get() == request_id
    assert len(request_id) == 32


def test_exception_is_a_redacted_string(capture: Capture) -> None:
    try:
        raise RuntimeError("stripe said no to sk_live_51Hexceptionkey")
    except RuntimeError:
        capture.logger.exception("failed")
    line = capture.last()
    assert "RuntimeError" in line["exception"]
    assert "sk_live_51Hexceptionkey" not in line["exception"]
    assert REDACTED in line["exception"]


SECRET_CASES = [
    pytest.param("key sk_live_51HabcDEF123 used", "sk_live_51HabcDEF123", id="stripe-secret-live"),
    pytest.param("key sk_test_51HabcDEF123 used", "sk_test_51HabcDEF123", id="stripe-secret-test"),
    pytest.param("key rk_live_51HabcDEF123 used", "rk_live_51HabcDEF123", id="stripe-restricted"),
    pytest.param("key pk_test_51HabcDEF123 used", "pk_test_51HabcDEF123", id="stripe-publishable"),
    pytest.param(
        "secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", id="webhook"
    ),
    pytest.param(
        "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1XzEifQ.c2lnbmF0dXJlLXZhbHVl end",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1XzEifQ.c2lnbmF0dXJlLXZhbHVl",
        id="jwt",
    ),
    pytest.param("authorization: Bearer opaque-token.value_123", "opaque-token.value_123", id="bearer"),
    # Only the Bearer pattern ignores case; the one search that screens each text first must keep that.
    pytest.param("authorization: bEARER opaque-token.value_123", "opaque-token.value_123", id="bearer-any-case"),
]


@pytest.mark.parametrize(("text", "secret"), SECRET_CASES)
def test_secret_in_message_is_redacted(capture: Capture, text: str, secret: str) -> None:
    capture.logger.info(text)
    message = capture.last()["message"]
    assert secret not in message
    assert REDACTED in message


@pytest.mark.parametrize(("text", "secret"), SECRET_CASES)
def test_secret_in_extra_is_redacted(capture: Capture, text: str, secret: str) -> None:
    capture.logger.info("event", extra={"detail": text})
    detail = capture.last()["detail"]
    assert secret not in detail
    assert REDACTED in detail


EMAIL_CASES = [
    pytest.param("jane.doe@example.com", "j***@example.com", id="dotted-local-part"),
    pytest.param("a@b.co", "a***@b.co", id="one-letter-local-part"),
    pytest.param("mail John+tag@mail.example.org now", "mail J***@mail.example.org now", id="inside-text"),
    pytest.param("x j***@example.com", "x j***@example.com", id="already-masked"),
]


@pytest.mark.parametrize(("text", "expected"), EMAIL_CASES)
def test_email_is_masked(text: str, expected: str) -> None:
    assert redact_text(text) == expected


@pytest.mark.parametrize(
    "key",
    ["password", "access_token", "client_secret", "Authorization", "api_key", "stripe_signature", "cookie", "api-key"],
)
def test_sensitive_key_value_is_redacted(capture: Capture, key: str) -> None:
    capture.logger.info("event", extra={"context": {key: "plain-looking-value"}})
    assert capture.last()["context"][key] == REDACTED


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("idempotency_key=credit-42 user_id=u_1", id="ids"),
        pytest.param("checkout cs_test_a1b2c3 for pi_3Nabc and ch_3Nabc", id="stripe-object-ids"),
        pytest.param("balance 1200 after delta -100", id="amounts"),
        pytest.param("the skeleton_key is not a stripe key", id="look-alike-word"),
    ],
)
def test_ordinary_text_is_untouched(text: str) -> None:
    assert redact_text(text) == text


@pytest.mark.parametrize(
    "key", ["user_id", "idempotency_key", "payment_intent", "amount_minor", "request_id", "event_type"]
)
def test_ordinary_key_is_kept(key: str) -> None:
    assert redact_value({key: "value"}) == {key: "value"}


def test_nested_extras_are_redacted(capture: Capture) -> None:
    extra = {
        "customer": {
            "email": "jane@example.com",
            "cards": [{"token": "tok_visa", "last4": "4242"}],
            "notes": ("called with sk_live_51Hnested", {"headers": {"Cookie": "session=abc"}}),
        },
        "user_id": "u_1",
    }
    capture.logger.info("nested", extra=extra)
    customer = capture.last()["customer"]
    assert customer["email"] == "j***@example.com"
    assert customer["cards"] == [{"token": REDACTED, "last4": "4242"}]
    assert customer["notes"][0] == f"called with {REDACTED}"
    assert customer["notes"][1] == {"headers": {"Cookie": REDACTED}}
    assert capture.last()["user_id"] == "u_1"


def test_registered_secret_is_scrubbed_verbatim(capture: Capture) -> None:
    secret = f"caller-token-{uuid.uuid4().hex}"
    assert register_secret(secret)
    capture.logger.info("token was %s", secret, extra={"detail": [f"prefix{secret}suffix"]})
    line = capture.last()
    assert secret not in json.dumps(line)
    assert line["detail"] == [f"prefix{REDACTED}suffix"]


def test_too_short_secret_is_not_registered() -> None:
    assert not register_secret("short")
    assert redact_text("a short word") == "a short word"


def test_deep_nesting_is_truncated_not_recursed() -> None:
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    redacted = redact_value(cyclic)
    while isinstance(redacted, list):
        redacted = redacted[0]
    assert redacted == "[TRUNCATED]"


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str")


def test_unprintable_extra_never_raises(capture: Capture) -> None:
    capture.logger.info("odd", extra={"thing": Unprintable()})
    assert capture.last()["thing"] == REDACTED


def test_object_extra_is_logged_through_redacted_str(capture: Capture) -> None:
    capture.logger.info("odd", extra={"error": ValueError("bad key sk_test_51Hobj")})
    assert capture.last()["error"] == f"bad key {REDACTED}"


def test_bad_format_arguments_keep_the_line() -> None:
    # Formatted directly: pytest's own log handlers re-raise formatting errors inside tests.
    record = logging.LogRecord("tests", logging.INFO, __file__, 1, "two %s %s", ("only-one",), None)
    line = json.loads(JsonFormatter("test-service").format(record))
    assert line["message"].startswith("two %s %s")


def test_configure_logging_installs_one_root_handler() -> None:
    root = logging.getLogger()
    level_before = root.level
    first_stream, second_stream = io.StringIO(), io.StringIO()
    first = configure_logging("ledger", "debug", stream=first_stream)
    second = configure_logging("ledger", "INFO", stream=second_stream)
    try:
        assert first not in root.handlers
        assert second in root.handlers
        logging.getLogger("tests.common.root").info("to root", extra={"password": "hunter2"})
        line = json.loads(second_stream.getvalue().splitlines()[-1])
        assert (line["service"], line["message"], line["password"]) == ("ledger", "to root", REDACTED)
        assert first_stream.getvalue() == ""
    finally:
        root.removeHandler(second)
        root.setLevel(level_before)


def test_configure_logging_refuses_an_unknown_level() -> None:
    with pytest.raises(ValueError, match="VERBOSE"):
        configure_logging("ledger", "VERBOSE")
