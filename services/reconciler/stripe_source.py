"""The reconciler's only door to Stripe's API: streamed list pages, a few retrieves, bounded retries.

Lists go through `StripeClient.raw_request_async` and are read as plain JSON objects: building SDK
objects costs about 0.9 ms per charge, ten times the rest of a run. Pagination is Stripe's own
(`limit`, `starting_after` = the last id of the page, until `has_more` is false), newest first, one
page in memory at a time.

Retries are ours (the SDK's are off, `max_network_retries=0`), so that every wait is bounded and
visible in the log:

    answer                                   what happens
    connection error, timeout                retry with exponential backoff and jitter
    429 rate limit                           retry, waiting at least Retry-After (capped)
    409 lock timeout, 5xx                    retry with backoff
    Stripe-Should-Retry: false / true        Stripe's word wins over the status
    still failing after attempts_max         StripeUnavailable (the run stops, exit code 3)
    401, 403, 400, other 4xx                 StripeRefused at once (404 on a retrieve: None)
    the SDK raising anything else            StripeFailure at once, logged with its traceback

Stripe's exceptions are translated once, by services.stripe_bridge.errors; this module turns the
translation into the reconciler's own (services.reconciler.errors), `raise ... from` Stripe's exception.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

import stripe

from services.reconciler.errors import RunInterrupted, StripeFailure, StripeRefused, StripeUnavailable
from services.stripe_bridge import client as stripe_client
from services.stripe_bridge import errors as stripe_errors

log = logging.getLogger(__name__)

LIST_PAGE_SIZE_MAX: Final = 100  # Stripe's own limit for list endpoints.
LIST_PAGES_MAX: Final = 100_000  # 10 million objects: a listing that never ends is a bug, not a window.
DISPUTES_PER_CHARGE_MAX: Final = 10
REFUNDS_PER_CHARGE_MAX: Final = 100  # one page; also the ledger's limit of refunds per ApplyRefund
CHARGES_PER_INTENT_MAX: Final = 10  # a declined card retried on one intent leaves a few charges
STRIPE_REQUEST_TIMEOUT_SECONDS: Final = 30.0
STRIPE_NETWORK_RETRIES_MAX: Final = 0  # the retries are ours (RetryPolicy), each one logged
ATTEMPTS_MAX_DEFAULT: Final = 6
BACKOFF_SECONDS_BASE: Final = 0.5
BACKOFF_SECONDS_MAX_DEFAULT: Final = 30.0
RETRY_AFTER_SECONDS_MAX: Final = 60.0

JsonObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to retry a failing Stripe call."""

    attempts_max: int = ATTEMPTS_MAX_DEFAULT
    backoff_seconds_max: float = BACKOFF_SECONDS_MAX_DEFAULT
    retry_after_seconds_max: float = RETRY_AFTER_SECONDS_MAX

    def __post_init__(self) -> None:
        assert self.attempts_max >= 1, self.attempts_max
        assert self.backoff_seconds_max >= 0, self.backoff_seconds_max
        assert self.retry_after_seconds_max >= 0, self.retry_after_seconds_max

    def delay_seconds(self, attempt: int, retry_after_seconds: float | None) -> float:
        """Exponential backoff with jitter after failed attempt `attempt` (1-based); never below Retry-After."""
        backoff = min(self.backoff_seconds_max, BACKOFF_SECONDS_BASE * 2 ** (attempt - 1))
        delay = backoff * random.uniform(0.5, 1.0)
        if retry_after_seconds is not None:
            delay = max(delay, min(retry_after_seconds, self.retry_after_seconds_max))
        return delay


@dataclass(frozen=True, slots=True)
class ChargeFacts:
    """What the reconciler reads of a charge; `raw` is the charge itself, for the shared translation."""

    charge_id: str
    payment_intent_id: str
    user_id: str
    package_id: str
    succeeded: bool
    amount_minor: int
    currency: str
    amount_refunded_minor: int
    disputed: bool
    created_seconds: int
    raw: Mapping[str, Any]

    @property
    def belongs_to_suite(self) -> bool:
        """The suite's checkout puts both ids in the metadata; other charges of the account are not ours."""
        return bool(self.user_id) and bool(self.package_id)


def charge_facts(charge: Mapping[str, Any]) -> ChargeFacts:
    """The facts of a charge object; missing or mistyped fields read as empty / zero (never an exception)."""
    metadata = charge.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    return ChargeFacts(
        charge_id=_text(charge.get("id")),
        payment_intent_id=_object_id(charge.get("payment_intent")),
        user_id=_text(metadata.get("user_id")),
        package_id=_text(metadata.get("package_id")),
        succeeded=charge.get("status") == "succeeded" and charge.get("paid") is True,
        amount_minor=_integer(charge.get("amount")),
        currency=_text(charge.get("currency")).lower(),
        amount_refunded_minor=_integer(charge.get("amount_refunded")),
        disputed=charge.get("disputed") is True,
        created_seconds=_integer(charge.get("created")),
        raw=charge,
    )


class StripeSource:
    """One `stripe.StripeClient` with its own aiohttp session; close it with `await close()`.

    `stop`, when given, cuts a retry wait short: the call raises RunInterrupted instead of waiting on.
    """

    def __init__(
        self,
        api_key: str,
        api_base: str | None = None,
        *,
        retry: RetryPolicy | None = None,
        timeout_seconds: float = STRIPE_REQUEST_TIMEOUT_SECONDS,
        stop: asyncio.Event | None = None,
    ) -> None:
        self._connection = stripe_client.connect(
            api_key, api_base, timeout_seconds=timeout_seconds, network_retries_max=STRIPE_NETWORK_RETRIES_MAX
        )
        self._client = self._connection.client
        self.retry = retry or RetryPolicy()
        self.stop = stop
        self.requests_count = 0
        self.retries_count = 0

    async def close(self) -> None:
        await self._connection.close()

    # --- lists ---

    def charge_pages(self, created_gte_seconds: int, page_size: int) -> AsyncGenerator[list[JsonObject], None]:
        """Charges created at or after `created_gte_seconds`, newest first, one page at a time."""
        return self._pages("/v1/charges", {"created": {"gte": created_gte_seconds}}, page_size)

    def undelivered_event_pages(
        self, created_gte_seconds: int, event_types: Sequence[str], page_size: int
    ) -> AsyncGenerator[list[JsonObject], None]:
        """Events of `event_types` that some webhook endpoint has not acknowledged (`delivery_success=false`)."""
        params = {"created": {"gte": created_gte_seconds}, "delivery_success": False, "types": list(event_types)}
        return self._pages("/v1/events", params, page_size)

    async def _pages(
        self, path: str, params: Mapping[str, Any], page_size: int
    ) -> AsyncGenerator[list[JsonObject], None]:
        assert 1 <= page_size <= LIST_PAGE_SIZE_MAX, page_size
        starting_after: str | None = None
        for _ in range(LIST_PAGES_MAX):
            page_params = {**params, "limit": page_size}
            if starting_after is not None:
                page_params["starting_after"] = starting_after
            body = await self._get(path, page_params)
            assert body is not None  # lists never answer 404
            data, has_more = body.get("data"), body.get("has_more")
            if not isinstance(data, list) or not isinstance(has_more, bool):
                raise StripeFailure(f"GET {path}: the answer is not a Stripe list")
            objects = [item for item in data if isinstance(item, dict)]
            if objects:
                yield objects
            if not has_more:
                return
            last_id = objects[-1].get("id") if objects else None
            if not isinstance(last_id, str) or not last_id:
                raise StripeFailure(f"GET {path}: has_more is true but the page gives no cursor")
            starting_after = last_id
        raise StripeFailure(f"GET {path}: more than {LIST_PAGES_MAX} pages; the listing does not end")

    # --- single objects ---

    async def disputes_of_charge(self, charge_id: str) -> list[JsonObject]:
        """The charge's disputes, newest first (a charge has at most one in practice)."""
        body = await self._get("/v1/disputes", {"charge": charge_id, "limit": DISPUTES_PER_CHARGE_MAX})
        data = body.get("data") if body is not None else None
        if not isinstance(data, list):
            raise StripeFailure("GET /v1/disputes: the answer is not a Stripe list")
        return [item for item in data if isinstance(item, dict)]

    async def refunds_of_charge(self, charge_id: str) -> list[JsonObject]:
        """The charge's refunds, newest first, every status (one page: REFUNDS_PER_CHARGE_MAX; the charge's
        cumulative amount_refunded covers any beyond it)."""
        body = await self._get("/v1/refunds", {"charge": charge_id, "limit": REFUNDS_PER_CHARGE_MAX})
        data = body.get("data") if body is not None else None
        if not isinstance(data, list):
            raise StripeFailure("GET /v1/refunds: the answer is not a Stripe list")
        if body is not None and body.get("has_more") is True:
            log.warning("charge has more refunds than one page; the rest are counted by its amount_refunded")
        return [item for item in data if isinstance(item, dict)]

    async def retrieve_charge(self, charge_id: str) -> JsonObject | None:
        """The charge, or None when Stripe does not know it (also the gateway's ChargeFetcher shape)."""
        return await self._get(_object_path("/v1/charges", charge_id), {}, missing_ok=True)

    async def has_successful_payment(self, charge_id: str, payment_intent_id: str, checkout_session_id: str) -> bool:
        """True when Stripe holds a succeeded charge (or a paid or free session) for a payment known by these ids."""
        if charge_id:
            charge = await self._get(_object_path("/v1/charges", charge_id), {}, missing_ok=True)
            if charge is not None and charge_facts(charge).succeeded:
                return True
        if payment_intent_id:
            params = {"payment_intent": payment_intent_id, "limit": CHARGES_PER_INTENT_MAX}
            body = await self._get("/v1/charges", params)
            data = body.get("data") if body is not None else None
            if isinstance(data, list) and any(isinstance(item, dict) and charge_facts(item).succeeded for item in data):
                return True
        if checkout_session_id:
            path = _object_path("/v1/checkout/sessions", checkout_session_id)
            session = await self._get(path, {}, missing_ok=True)
            # no_payment_required: a promotion code took the whole price off; the session is settled, unpaid.
            if session is not None and session.get("payment_status") in ("paid", "no_payment_required"):
                return True
        return False

    # --- one request, with retries ---

    async def _get(self, path: str, params: Mapping[str, Any], *, missing_ok: bool = False) -> JsonObject | None:
        for attempt in range(1, self.retry.attempts_max + 1):
            self.requests_count += 1
            try:
                response = await self._client.raw_request_async("get", path, **params)
            except stripe.StripeError as exc:
                failure = stripe_errors.translate(exc, f"GET {path}")
                if missing_ok and isinstance(failure, stripe_errors.StripeNotFound):
                    return None
                if not failure.retryable:
                    _log_failure(path, exc, attempt, None)
                    raise StripeRefused(str(failure)) from exc
                if attempt == self.retry.attempts_max:
                    _log_failure(path, exc, attempt, None)
                    raise StripeUnavailable(f"{failure}, still failing after {attempt} attempts") from exc
                delay_seconds = self.retry.delay_seconds(attempt, failure.retry_after_seconds)
                _log_failure(path, exc, attempt, delay_seconds)
                self.retries_count += 1
                await self._wait(delay_seconds)
                continue
            except Exception as exc:  # The SDK's own defect (not a StripeError): not retried, never escapes raw.
                log.error("stripe SDK failed: %s on GET %s", type(exc).__name__, path, exc_info=exc)
                raise StripeFailure(str(stripe_errors.sdk_failure(exc, f"GET {path}"))) from exc
            data = response.data
            if not isinstance(data, dict):
                raise StripeFailure(f"GET {path}: the answer is not a JSON object")
            return data
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _wait(self, delay_seconds: float) -> None:
        if self.stop is None:
            await asyncio.sleep(delay_seconds)
            return
        try:
            await asyncio.wait_for(self.stop.wait(), delay_seconds)
        except TimeoutError:
            return
        raise RunInterrupted("stop requested while waiting to retry a Stripe call")


def _object_path(collection: str, object_id: str) -> str:
    """`/v1/charges/ch_...`; the id is quoted, so an id from outside cannot name another path."""
    return f"{collection}/{quote(object_id, safe='')}"


def _log_failure(path: str, exc: stripe.StripeError, attempt: int, delay_seconds: float | None) -> None:
    log.warning(
        "stripe call failed; retrying" if delay_seconds is not None else "stripe call failed",
        extra={
            "path": path,
            "error_type": type(exc).__name__,
            "http_status": exc.http_status,
            "stripe_code": exc.code,
            "stripe_request_id": exc.request_id,
            "attempt": attempt,
            "retry_in_seconds": None if delay_seconds is None else round(delay_seconds, 3),
        },
    )


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _object_id(value: object) -> str:
    """An id field, which Stripe sends as a string or (expanded) as an object with an id."""
    if isinstance(value, dict):
        value = value.get("id")
    return _text(value)


def _integer(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
