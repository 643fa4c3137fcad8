"""Stripe's exceptions are translated once, in services.stripe_bridge.errors: each failure injected at the
network seam (the fake Stripe API, or a closed port) reaches the caller of StripeApi as the bridge's class,
raised from the SDK's own exception; the facts a retry needs (Stripe-Should-Retry, Retry-After) are kept."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import stripe

from services.stripe_bridge import errors
from services.stripe_bridge.api import StripeApi
from tests.fakes.stripe_api import RunningFakeStripe, running_fake_stripe
from tests.stripe_bridge.stripe_faults import FAULTS, StripeFault, inject, session_params


@pytest.fixture
async def fake() -> AsyncIterator[RunningFakeStripe]:
    async with running_fake_stripe() as running:
        yield running


@pytest.mark.parametrize("fault", FAULTS.values(), ids=FAULTS.keys())
async def test_each_failure_at_the_seam_is_ours_raised_from_stripes(fake, fault: StripeFault) -> None:
    api = StripeApi(fake.api_key, inject(fake, fault, "/v1/events"), network_retries_max=0)
    try:
        with pytest.raises(errors.StripeFailure) as raised:
            await api.retrieve_event("evt_boundary")
    finally:
        await api.close()
    assert type(raised.value) is fault.ours
    assert isinstance(raised.value.__cause__, fault.sdk_error)
    assert fake.api_key not in str(raised.value)


async def test_a_key_reused_with_other_parameters_is_an_idempotency_conflict(fake) -> None:
    api = StripeApi(fake.api_key, fake.base_url, network_retries_max=0)
    try:
        await api.create_checkout_session(session_params(500), "key-boundary")
        with pytest.raises(errors.StripeFailure) as raised:
            await api.create_checkout_session(session_params(600), "key-boundary")
    finally:
        await api.close()
    assert type(raised.value) is errors.StripeIdempotencyConflict
    assert isinstance(raised.value.__cause__, stripe.IdempotencyError)
    assert not raised.value.retryable


def _api_error(status: int, headers: dict[str, str]) -> stripe.StripeError:
    return stripe.APIError("injected", http_status=status, headers=headers)


@pytest.mark.parametrize(
    ("headers", "retryable"),
    [({}, True), ({"Stripe-Should-Retry": "false"}, False), ({"stripe-should-retry": "true"}, True)],
    ids=["no-word", "should-retry-false", "should-retry-true-any-case"],
)
def test_stripes_own_word_on_retrying_wins(headers: dict[str, str], retryable: bool) -> None:
    translated = errors.translate(_api_error(500, headers), "list charges")
    assert type(translated) is errors.StripeUnavailable
    assert translated.retryable is retryable


def test_a_refusal_is_not_retried_unless_stripe_says_so() -> None:
    refused = errors.translate(stripe.InvalidRequestError("bad", param="x", http_status=400), "list charges")
    assert type(refused) is errors.StripeRefused
    assert not refused.retryable


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("7", 7.0), ("-3", 0.0), ("soon", None), ("", None)],
    ids=["delta-seconds", "negative-is-now", "unreadable", "empty"],
)
def test_retry_after_is_read_as_seconds(value: str, seconds: float | None) -> None:
    translated = errors.translate(_api_error(429, {"Retry-After": value}), "list charges")
    assert translated.retry_after_seconds == seconds


def test_the_message_names_the_operation_and_status_only() -> None:
    refusal = stripe.AuthenticationError("Invalid API Key provided: sk_test_****9999", http_status=401)
    failure = errors.translate(refusal, "op")
    assert str(failure) == "op: AuthenticationError (HTTP 401)"
