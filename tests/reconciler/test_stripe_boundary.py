"""The reconciler's Stripe seam: each of Stripe's failures, injected at the network (the fake Stripe API, or
a closed port), stops the call with the reconciler's own StripeUnavailable (what passes with time) or
StripeRefused (what does not), raised from the SDK's exception; never a stripe exception."""

from __future__ import annotations

import pytest

from services.reconciler.errors import ReconcilerError, StripeRefused, StripeUnavailable
from services.reconciler.stripe_source import RetryPolicy, StripeSource
from tests.stripe_bridge.stripe_faults import FAULTS, StripeFault, assert_raised_from, inject

ONE_ATTEMPT = RetryPolicy(attempts_max=1)


@pytest.mark.parametrize("fault", FAULTS.values(), ids=FAULTS.keys())
async def test_each_stripe_failure_is_the_reconcilers_own(fake, fault: StripeFault) -> None:
    source = StripeSource(fake.api_key, inject(fake, fault, "/v1/refunds"), retry=ONE_ATTEMPT)
    try:
        with pytest.raises(ReconcilerError) as raised:
            await source.refunds_of_charge("ch_boundary")
    finally:
        await source.close()
    expected = StripeUnavailable if fault.passes_with_time else StripeRefused
    assert type(raised.value) is expected
    assert isinstance(raised.value.__cause__, fault.sdk_error)
    assert_raised_from(raised.value, fault)
    assert fake.api_key not in str(raised.value)
