"""Stripe's failures as they reach a service: each injected at the network seam (the fake Stripe API, or
a closed port), with the SDK exception it raises and the bridge's translation of it.

The boundary tests of the gateway, the reconciler and creditsctl walk this one table, so a failure added
here is required of all three.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

import stripe

from services.stripe_bridge import errors
from tests.fakes.stripe_api import RunningFakeStripe

FAULT_REQUESTS_MAX = 10  # more than any caller's retries: the fault outlasts them


@dataclass(frozen=True, slots=True)
class StripeFault:
    """One failure: the HTTP status the fake answers (None: nothing listens), the SDK's exception, ours."""

    status_code: int | None
    sdk_error: type[stripe.StripeError]
    ours: type[errors.StripeFailure]

    @property
    def passes_with_time(self) -> bool:
        """Whether our class says "retry later" (no Stripe-Should-Retry word is injected here)."""
        return issubclass(self.ours, errors.StripeUnavailable)


FAULTS: dict[str, StripeFault] = {
    "connection-refused": StripeFault(None, stripe.APIConnectionError, errors.StripeUnavailable),
    "bad-request-400": StripeFault(400, stripe.InvalidRequestError, errors.StripeRefused),
    "key-refused-401": StripeFault(401, stripe.AuthenticationError, errors.StripeKeyRefused),
    "card-declined-402": StripeFault(402, stripe.CardError, errors.StripeRefused),
    "permission-403": StripeFault(403, stripe.PermissionError, errors.StripeKeyRefused),
    "not-found-404": StripeFault(404, stripe.InvalidRequestError, errors.StripeNotFound),
    "lock-timeout-409": StripeFault(409, stripe.APIError, errors.StripeUnavailable),
    "rate-limited-429": StripeFault(429, stripe.RateLimitError, errors.StripeUnavailable),
    "server-error-500": StripeFault(500, stripe.APIError, errors.StripeUnavailable),
    "unavailable-503": StripeFault(503, stripe.APIError, errors.StripeUnavailable),
}


def closed_port_url() -> str:
    """An address on which nothing listens (the port was bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def inject(fake: RunningFakeStripe, fault: StripeFault, path_prefix: str) -> str:
    """Arm the fault for requests under `path_prefix`; the API base the caller must use."""
    if fault.status_code is None:
        return closed_port_url()
    fake.state.inject_fault(fault.status_code, count=FAULT_REQUESTS_MAX, path_prefix=path_prefix)
    return fake.base_url


def assert_raised_from(raised: BaseException, fault: StripeFault) -> None:
    """The chain from our exception reaches the SDK's own exception of the expected class."""
    chain = []
    link: BaseException | None = raised
    while link is not None:
        chain.append(link)
        link = link.__cause__
    assert any(isinstance(link, fault.sdk_error) for link in chain), [type(link).__name__ for link in chain]
    assert not isinstance(raised, stripe.StripeError), raised


def session_params(amount_minor: int) -> dict[str, object]:
    """A Checkout Session as the fake accepts it (one priced line)."""
    price_data = {"currency": "eur", "unit_amount": amount_minor, "product_data": {"name": "credits"}}
    return {
        "mode": "payment",
        "success_url": "https://example.test/ok",
        "line_items": [{"price_data": price_data, "quantity": 1}],
    }
