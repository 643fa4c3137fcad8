"""Structured JSON logging with PII and secret redaction.

Every service calls `configure_logging(service)` once at start-up. Each record becomes one JSON
object on one line of stderr:

    {"time": "2026-01-02T03:04:05.678Z", "level": "INFO", "service": "ledger",
     "logger": "services.ledger.accounts.server", "message": "credited", "trace_id": "...",
     "span_id": "...", "request_id": "...", "user_id": "u_1"}

`trace_id` / `span_id` come from the current OpenTelemetry span, `request_id` from
`request_id_var` (set per request with `request_id_scope`), the rest from `extra={...}`.

Redaction runs on the message, the exception text and every extra value (recursively): emails are
masked (`j***@example.com`), Stripe keys, webhook secrets, JWTs and `Bearer` tokens become
`[REDACTED]`, as does any value whose key looks sensitive (`password`, `token`, ...), and every
secret registered with `register_secret` is scrubbed verbatim wherever it appears.
"""

from __future__ import annotations

import contextvars
import datetime
import json
import logging
import re
import sys
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TextIO

from opentelemetry import trace

REDACTED = "[REDACTED]"
REDACTION_DEPTH_MAX = 8  # Deeper nesting is replaced, which also stops reference cycles.
REDACTION_ITEMS_MAX = 256  # Items kept per container; a log line is not a data dump.
REGISTERED_SECRET_CHARS_MIN = 8  # Shorter values would scrub ordinary words from every line.
REGISTERED_SECRETS_MAX = 256

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

_SENSITIVE_KEY = re.compile(
    r"passw(?:or)?d|token|secret|authorization|api[_-]?key|signature|cookie",
    re.IGNORECASE,
)
_SECRET_VALUE = re.compile(
    r"\b(?:sk|rk|pk)_(?:live|test)_[0-9A-Za-z]+"  # Stripe secret, restricted and publishable keys.
    r"|\bwhsec_[0-9A-Za-z+/=_-]+"  # Stripe webhook signing secrets.
    r"|\beyJ[0-9A-Za-z_-]*\.[0-9A-Za-z_-]+\.[0-9A-Za-z_-]*"  # JWTs (the signature may be empty).
)
_BEARER = re.compile(r"\b(Bearer)\s+[0-9A-Za-z._~+/=-]+", re.IGNORECASE)
# The look-behind anchors a match at the start of the local part, which keeps the scan linear.
_EMAIL = re.compile(r"(?<![0-9A-Za-z._%+-])([0-9A-Za-z])[0-9A-Za-z._%+-]*@([0-9A-Za-z.-]+\.[A-Za-z]{2,})")


_REDACTION_PATTERNS_BUILT_IN = (_BEARER, _SECRET_VALUE, _EMAIL)


def _screen(secrets_pattern: re.Pattern[str] | None) -> re.Pattern[str]:
    """One pattern that matches somewhere in a text exactly when one of the redaction patterns does.

    Most logged strings (ids, event types, short messages) contain nothing to redact; one search says
    so for about half the cost of the four substitutions it saves, on every string of every log line.
    """
    patterns = (*((secrets_pattern,) if secrets_pattern is not None else ()), *_REDACTION_PATTERNS_BUILT_IN)
    # Each alternative keeps its own flags (the Bearer pattern ignores case), so it matches what it matches alone.
    return re.compile("|".join(f"(?{_inline_flags(pattern)}:{pattern.pattern})" for pattern in patterns))


def _inline_flags(pattern: re.Pattern[str]) -> str:
    assert pattern.flags & ~(re.IGNORECASE | re.UNICODE) == 0, "only IGNORECASE is carried into the screen"
    return "i" if pattern.flags & re.IGNORECASE else ""


class _SecretRegistry:
    """Configured secrets, compiled into one pattern; readers see the patterns without locking."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.secrets: set[str] = set()
        self.pattern: re.Pattern[str] | None = None
        self.screen: re.Pattern[str] = _screen(None)

    def add(self, secret: str) -> None:
        with self.lock:
            if secret in self.secrets:
                return
            if len(self.secrets) >= REGISTERED_SECRETS_MAX:
                raise ValueError(f"register_secret: more than {REGISTERED_SECRETS_MAX} secrets registered")
            self.secrets.add(secret)
            # Longest first, so a secret that contains another is scrubbed whole.
            ordered = sorted(self.secrets, key=len, reverse=True)
            pattern = re.compile("|".join(re.escape(item) for item in ordered))
            self.screen = _screen(pattern)
            self.pattern = pattern


_registered_secrets = _SecretRegistry()


def register_secret(value: str) -> bool:
    """Scrub `value` verbatim from every later log line; returns False when too short to register.

    Register each configured secret separately (split comma-separated lists first).
    """
    secret = value.strip()
    if len(secret) < REGISTERED_SECRET_CHARS_MIN:
        return False
    _registered_secrets.add(secret)
    return True


def redact_text(text: str) -> str:
    """Mask emails and replace secrets in free text; never raises."""
    try:
        if _registered_secrets.screen.search(text) is None:
            return text  # Nothing below would change it.
        pattern = _registered_secrets.pattern
        if pattern is not None:
            text = pattern.sub(REDACTED, text)
        text = _BEARER.sub(lambda match: f"{match.group(1)} {REDACTED}", text)
        text = _SECRET_VALUE.sub(REDACTED, text)
        return _EMAIL.sub(r"\1***@\2", text)
    except Exception:  # Redaction must never break logging; drop the text rather than leak it.
        return REDACTED


def is_sensitive_key(key: object) -> bool:
    return isinstance(key, str) and _SENSITIVE_KEY.search(key) is not None


def redact_value(value: Any, depth: int = 0) -> Any:
    """Return a JSON-ready copy of `value` with every string redacted; never raises."""
    try:
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, str):
            return redact_text(value)
        if depth >= REDACTION_DEPTH_MAX:
            return "[TRUNCATED]"
        if isinstance(value, Mapping):
            return redact_mapping(value, depth + 1)
        if isinstance(value, list | tuple | set | frozenset):
            return [redact_value(item, depth + 1) for item in list(value)[:REDACTION_ITEMS_MAX]]
        # Anything else is logged through its str(), which may itself contain secrets.
        return redact_text(str(value))
    except Exception:
        return REDACTED


def redact_mapping(mapping: Mapping[Any, Any], depth: int = 0) -> dict[str, Any]:
    redacted: dict[str, Any] = {}
    for index, (key, item) in enumerate(mapping.items()):
        if index >= REDACTION_ITEMS_MAX:
            redacted["[TRUNCATED]"] = f"{len(mapping) - index} more items"
            break
        name = str(key)
        redacted[name] = REDACTED if is_sensitive_key(name) else redact_value(item, depth)
    return redacted


def new_request_id() -> str:
    return uuid.uuid4().hex


@contextmanager
def request_id_scope(request_id: str | None = None) -> Iterator[str]:
    """Bind a request id (a new one when None) to log lines written inside the block."""
    bound = request_id or new_request_id()
    token = request_id_var.set(bound)
    try:
        yield bound
    finally:
        request_id_var.reset(token)


# Attributes every LogRecord carries; anything else on a record came from `extra={...}`.
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
_RESERVED_KEYS = frozenset(
    {"time", "level", "service", "logger", "message", "trace_id", "span_id", "request_id", "exception", "stack"}
)


class JsonFormatter(logging.Formatter):
    """Formats a record as one redacted JSON object."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        try:
            return json.dumps(self._payload(record), ensure_ascii=False, default=str)
        except Exception as exc:  # Last resort: a log call must never raise or leak.
            fallback = {"level": "ERROR", "service": self.service, "message": f"log formatting failed: {exc!r}"}
            return json.dumps(redact_value(fallback))

    def _payload(self, record: logging.LogRecord) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "time": _rfc3339_utc(record.created),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": redact_text(_message(record)),
        }
        payload.update(_trace_fields())
        request_id = request_id_var.get()
        if request_id is not None:
            payload["request_id"] = redact_text(request_id)
        if record.exc_info:
            payload["exception"] = redact_text(self.formatException(record.exc_info))
        elif record.exc_text:
            payload["exception"] = redact_text(record.exc_text)
        if record.stack_info:
            payload["stack"] = redact_text(self.formatStack(record.stack_info))
        for key, value in redact_mapping(_extra_fields(record)).items():
            # An extra that collides with a standard key is kept under a prefixed name.
            payload[f"extra_{key}" if key in _RESERVED_KEYS else key] = value
        return payload


def _rfc3339_utc(created_seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(created_seconds, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # Mismatched %-arguments: keep the template rather than lose the line.
        return f"{record.msg} (bad log arguments)"


def _trace_fields() -> dict[str, str]:
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return {}
    return {"trace_id": format(span_context.trace_id, "032x"), "span_id": format(span_context.span_id, "016x")}


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in record.__dict__.items() if key not in _RECORD_ATTRIBUTES}


class _JsonHandler(logging.StreamHandler[TextIO]):
    """Marks the handler this module installed, so a second configure call replaces it."""


def configure_logging(service: str, level: str = "INFO", stream: TextIO | None = None) -> logging.Handler:
    """Send every record through one JSON handler on the root logger (stderr by default).

    Other root handlers (pytest's capture, for one) are left alone; calling again replaces ours.
    """
    level_number = logging.getLevelName(level.strip().upper())
    if not isinstance(level_number, int):
        raise ValueError(f"log level: expected DEBUG, INFO, WARNING, ERROR or CRITICAL, got {level!r}")
    root = logging.getLogger()
    for existing in [handler for handler in root.handlers if isinstance(handler, _JsonHandler)]:
        root.removeHandler(existing)
    handler = _JsonHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root.addHandler(handler)
    root.setLevel(level_number)
    return handler
