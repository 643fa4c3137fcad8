"""The bridge's StripeApi refuses, at construction (the services' start-up), a stripe SDK older than the
calls it makes (`check_sdk`, STRIPE_SDK_VERSION_MIN = pyproject's floor)."""

from __future__ import annotations

import pytest
import stripe

from services.stripe_bridge import api as stripe_api


def test_start_up_refuses_an_sdk_older_than_the_pin(monkeypatch) -> None:
    monkeypatch.setattr(stripe, "VERSION", "14.4.1")
    with pytest.raises(RuntimeError, match=r"^stripe 14\.4\.1 is installed; this code needs stripe>=15\.0 "):
        stripe_api.StripeApi("sk_test_0123456789abcdef")


def test_start_up_accepts_the_pinned_lower_bound(monkeypatch) -> None:
    monkeypatch.setattr(stripe, "VERSION", "15.0.0")
    stripe_api.check_sdk()
