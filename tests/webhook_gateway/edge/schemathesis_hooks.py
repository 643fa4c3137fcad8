"""schemathesis hooks (loaded through SCHEMATHESIS_HOOKS by test_schemathesis.py): this test stands in for Stripe.

Only Stripe can sign a webhook, so no generator can produce a `Stripe-Signature` the gateway accepts. For
a webhook case whose header is schema-valid (the documented pattern), the hook signs the exact body bytes
that will be sent, with the endpoint's secret, as Stripe would; a case whose header is missing or not of
Stripe's form (a negative case) is sent as generated, and must be refused.
"""

from __future__ import annotations

import json
import re
from typing import Any

import schemathesis

from services.webhook_gateway.config import WEBHOOK_PATH
from services.webhook_gateway.openapi import STRIPE_SIGNATURE_PATTERN
from tests.fakes import stripe_events as se
from tests.webhook_gateway.conftest import WEBHOOK_SECRET

HEADER = "Stripe-Signature"


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    if case.operation.path != WEBHOOK_PATH or not case.headers:
        return
    header = case.headers.get(HEADER)
    if not isinstance(header, str) or not re.fullmatch(STRIPE_SIGNATURE_PATTERN, header):
        return
    body = case.body
    raw = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
    case.body = raw  # Sent as these bytes: the signature covers exactly what goes on the wire.
    case.headers[HEADER] = se.sign(raw, WEBHOOK_SECRET)
