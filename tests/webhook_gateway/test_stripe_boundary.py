"""The gateway's Stripe seam: each of Stripe's failures, injected at the network (the fake Stripe API, or
a closed port), becomes the gateway's PaymentProviderError with its HTTP answer, raised from the bridge's
translation, itself raised from the SDK's exception. No stripe exception reaches a handler's caller."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import stripe

from services.stripe_bridge import errors as stripe_errors
from services.stripe_bridge.api import StripeApi
from services.webhook_gateway.checkout import create_session
from services.webhook_gateway.errors import PaymentProviderError
from tests.fakes.stripe_api import RunningFakeStripe, running_fake_stripe
from tests.stripe_bridge.stripe_faults import FAULTS, StripeFault, assert_raised_from, inject, session_params

ANSWER_BY_FAILURE = {
    stripe_errors.StripeUnavailable: (503, "UNAVAILABLE"),
    stripe_errors.StripeRefused: (502, "PAYMENT_PROVIDER_ERROR"),
    stripe_errors.StripeKeyRefused: (502, "PAYMENT_PROVIDER_ERROR"),
    stripe_errors.StripeNotFound: (502, "PAYMENT_PROVIDER_ERROR"),
}
SESSION_PARAMS = {"mode": "payment", "success_url": "https://example.test/ok", "cancel_url": "https://example.test/no"}


@pytest.fixture
async def fake() -> AsyncIterator[RunningFakeStripe]:
    async with running_fake_stripe() as running:
        yield running


@pytest.mark.parametrize("fault", FAULTS.values(), ids=FAULTS.keys())
async def test_each_stripe_failure_is_the_gateways_own_answer(fake, fault: StripeFault) -> None:
    api = StripeApi(fake.api_key, inject(fake, fault, "/v1/checkout/sessions"), network_retries_max=0)
    try:
        with pytest.raises(PaymentProviderError) as raised:
            await create_session(api, SESSION_PARAMS, "checkout-boundary-key")
    finally:
        await api.close()
    assert (raised.value.status, raised.value.code) == ANSWER_BY_FAILURE[fault.ours]
    assert type(raised.value.__cause__) is fault.ours
    assert_raised_from(raised.value, fault)


async def test_a_reused_idempotency_key_is_409_raised_from_stripes_idempotency_error(fake) -> None:
    api = StripeApi(fake.api_key, fake.base_url, network_retries_max=0)
    try:
        await create_session(api, session_params(500), "checkout-reused-key")
        with pytest.raises(PaymentProviderError) as raised:
            await create_session(api, session_params(600), "checkout-reused-key")
    finally:
        await api.close()
    assert (raised.value.status, raised.value.code) == (409, "IDEMPOTENCY_KEY_REUSED")
    assert type(raised.value.__cause__) is stripe_errors.StripeIdempotencyConflict
    assert isinstance(raised.value.__cause__.__cause__, stripe.IdempotencyError)


def test_an_unavailable_provider_says_when_to_retry() -> None:
    answer = PaymentProviderError.from_failure(stripe_errors.StripeUnavailable("x"))
    assert int(answer.headers["Retry-After"]) > 0
