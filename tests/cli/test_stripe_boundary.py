"""creditsctl's Stripe seam: each of Stripe's failures, injected at the network (the fake Stripe API, or a
closed port), is creditsctl's own error with its exit code (Unavailable 3: retry; Refused 1), raised from
the bridge's translation of the SDK's exception; never a stripe exception or a traceback."""

from __future__ import annotations

import pytest

from services.cli.errors import EXIT_REFUSED, EXIT_UNAVAILABLE, CliError
from services.cli.replay import fetch_event
from services.cli.settings import StripeAccess
from services.stripe_bridge.catalog import Catalog
from tests.stripe_bridge.stripe_faults import FAULTS, StripeFault, assert_raised_from, inject


@pytest.mark.parametrize("fault", FAULTS.values(), ids=FAULTS.keys())
async def test_each_stripe_failure_is_creditsctls_own(fake_stripe, fault: StripeFault) -> None:
    access = StripeAccess(
        api_key=fake_stripe.api_key, api_base=inject(fake_stripe, fault, "/v1/events"), catalog=Catalog.default()
    )
    with pytest.raises(CliError) as raised:
        await fetch_event(access, "evt_boundary")
    expected = EXIT_UNAVAILABLE if fault.passes_with_time else EXIT_REFUSED
    assert raised.value.exit_code == expected
    assert type(raised.value.__cause__) is fault.ours
    assert_raised_from(raised.value, fault)
    assert fake_stripe.api_key not in str(raised.value)
