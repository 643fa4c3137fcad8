"""Stripe's failures, translated once for every service that calls Stripe (gateway, reconciler, creditsctl).

`translate(exc, operation)` is the only place a `stripe.StripeError` becomes one of ours; `sdk_failure`
names the SDK's own defects (anything else it raises). Every message is safe to log or print: the
operation, Stripe's error class and HTTP status, never the key, the request body or customer data.

    StripeFailure                   any failed call to Stripe, or an answer outside Stripe's own protocol
    ├── StripeUnavailable           network error, timeout, 429, 409 lock timeout, 5xx: retry later
    │   └── StripeNotConfigured     no STRIPE_API_KEY (the gateway's CHECKOUT_ENABLED=false): nothing was sent
    ├── StripeIdempotencyConflict   an idempotency key reused with other parameters
    ├── StripeRefused               Stripe refused the request (invalid parameter, other 4xx)
    │   ├── StripeKeyRefused        401 / 403: the key is wrong or lacks the permission
    │   └── StripeNotFound          404: Stripe does not know the object
    └── StripeSdkFailure            the stripe SDK itself failed (TypeError, AttributeError, ...): an SDK
                                    without what this code calls, or an answer it cannot read
    MalformedThinEvent              a `v2.core.event` body the SDK's EventNotification cannot read

Each service maps these onto its own tree where it meets them: the gateway to HTTP statuses
(services.webhook_gateway.http_errors), the reconciler to a stopped run (services.reconciler.errors),
creditsctl to exit codes (services.cli.errors).
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from typing import Final

import stripe

HTTP_NOT_FOUND: Final = 404
HTTP_CONFLICT: Final = 409
HTTP_TOO_MANY_REQUESTS: Final = 429
HTTP_SERVER_ERROR_MIN: Final = 500


class StripeFailure(Exception):
    """A call to Stripe failed; the message is safe to log (no key, no customer data).

    `http_status` is Stripe's status (None without an answer); `should_retry` is Stripe's own word
    (the `Stripe-Should-Retry` header, or the SDK's for a connection error), None when it said nothing;
    `retry_after_seconds` is Stripe's `Retry-After`, None when absent or unreadable.
    """

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        should_retry: bool | None = None,
        retry_after_seconds: float | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.should_retry = should_retry
        self.retry_after_seconds = retry_after_seconds

    @property
    def retryable(self) -> bool:
        """Stripe's word when it gave one, else whether this kind of failure passes with time."""
        if self.should_retry is not None:
            return self.should_retry
        return isinstance(self, StripeUnavailable)


class StripeUnavailable(StripeFailure):
    """Stripe could not be reached or answered 409/429/5xx (after any retries): try again later."""


class StripeNotConfigured(StripeUnavailable):
    """The caller runs without a Stripe key: no call leaves the process."""


class StripeIdempotencyConflict(StripeFailure):
    """The idempotency key was used before with different parameters."""


class StripeRefused(StripeFailure):
    """Stripe refused the request (invalid parameter, other 4xx)."""


class StripeKeyRefused(StripeRefused):
    """Stripe refused the key itself (401) or its permissions (403)."""


class StripeNotFound(StripeRefused):
    """Stripe does not know the object asked for (404)."""


class StripeSdkFailure(StripeFailure):
    """The stripe SDK raised something other than a StripeError: a defect of this deployment, not of the call."""


class MalformedThinEvent(ValueError):
    """A `v2.core.event` body that the SDK's EventNotification cannot read (not something Stripe sends)."""


def translate(exc: stripe.StripeError, operation: str) -> StripeFailure:
    """Our exception for one of Stripe's; the caller raises it `from exc`."""
    status = exc.http_status
    summary = f"{operation}: {type(exc).__name__}" + (f" (HTTP {status})" if status else "")
    kind = _kind(exc)
    return kind(summary, http_status=status, should_retry=_should_retry(exc), retry_after_seconds=_retry_after(exc))


def _kind(exc: stripe.StripeError) -> type[StripeFailure]:
    if isinstance(exc, stripe.IdempotencyError):
        return StripeIdempotencyConflict
    if _unavailable(exc):
        return StripeUnavailable
    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        return StripeKeyRefused
    if exc.http_status == HTTP_NOT_FOUND:
        return StripeNotFound
    return StripeRefused


def sdk_failure(exc: Exception, operation: str) -> StripeSdkFailure:
    """The SDK's own exception (not a StripeError) named for the log; the caller raises it `from exc`."""
    return StripeSdkFailure(f"{operation}: the stripe SDK raised {type(exc).__name__}")


def _unavailable(exc: stripe.StripeError) -> bool:
    status = exc.http_status
    if isinstance(exc, stripe.APIConnectionError | stripe.RateLimitError | stripe.APIError):
        return True
    return status is not None and (
        status >= HTTP_SERVER_ERROR_MIN or status in (HTTP_CONFLICT, HTTP_TOO_MANY_REQUESTS)
    )


def _should_retry(exc: stripe.StripeError) -> bool | None:
    word = (_header(exc.headers or {}, "Stripe-Should-Retry") or "").strip().lower()
    if word in ("true", "false"):
        return word == "true"
    if isinstance(exc, stripe.APIConnectionError):
        return bool(getattr(exc, "should_retry", True))
    return None


def _retry_after(exc: stripe.StripeError) -> float | None:
    """Retry-After as delta-seconds or an HTTP date; None when absent or unreadable."""
    value = _header(exc.headers or {}, "Retry-After")
    if value is None or not value.strip():
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, item in headers.items():
        if key.lower() == lowered:
            return item
    return None
