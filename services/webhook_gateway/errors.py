"""The gateway's one exception tree: what it answers, and where each foreign error becomes ours.

    HttpError                   answered with the JSON error body {"error": {"code", "message"}}: an HTTP
    │                           status and a stable UPPER_SNAKE code (rendered by http_errors.error_middleware)
    └── PaymentProviderError    Stripe failed under a request: 503 (retry later), 409 (idempotency key
                                reused), 502 (Stripe refused), by the class of the bridge's StripeFailure

Foreign exceptions, and the one place each becomes ours (`raise ... from exc`):

    stripe.StripeError          services.stripe_bridge.errors.translate, inside StripeApi -> StripeFailure;
                                then PaymentProviderError.from_failure (checkout), 503 / 500 (webhooks.py)
    stripe SDK defects          StripeSdkFailure (the bridge), answered 500 INTERNAL by error_middleware
    services.ledger.errors.*    the handler that made the call -> HttpError (checkout, edge_routes, webhooks)
    aiohttp's HTTPException     error_middleware -> the JSON error body with the status's canonical code
    anything else               error_middleware -> 500 INTERNAL: the trace logged, nothing echoed
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from services.stripe_bridge.errors import (
    StripeFailure,
    StripeIdempotencyConflict,
    StripeRefused,
    StripeSdkFailure,
    StripeUnavailable,
)

CODE_PATTERN: Final = re.compile(r"^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$")
MESSAGE_CHARS_MAX: Final = 512
PAYMENT_PROVIDER_RETRY_AFTER_SECONDS: Final = 2


class HttpError(Exception):
    """An error a handler (or middleware) answers with the JSON error body."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        assert 400 <= status <= 599, status
        assert CODE_PATTERN.match(code), code
        assert len(message) <= MESSAGE_CHARS_MAX, len(message)
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers: dict[str, str] = dict(headers or {})



class PaymentProviderError(HttpError):
    """Stripe failed under a request; the status says whether a retry can help."""

    @classmethod
    def from_failure(cls, failure: StripeFailure) -> PaymentProviderError:
        """Ours for the bridge's failure; a StripeSdkFailure is not one of these (a defect: 500 INTERNAL)."""
        assert not isinstance(failure, StripeSdkFailure), failure
        if isinstance(failure, StripeUnavailable):
            return cls(
                503,
                "UNAVAILABLE",
                "the payment provider is unavailable; retry later",
                {"Retry-After": str(PAYMENT_PROVIDER_RETRY_AFTER_SECONDS)},
            )
        if isinstance(failure, StripeIdempotencyConflict):
            return cls(409, "IDEMPOTENCY_KEY_REUSED", "this Idempotency-Key was used with other parameters")
        assert isinstance(failure, StripeRefused), failure
        return cls(502, "PAYMENT_PROVIDER_ERROR", "the payment provider refused the request")
