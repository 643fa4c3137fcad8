"""`POST /checkout` (alias `POST /v1/checkout-sessions`): a Stripe Checkout Session for one catalog package.

Request: a user JWT (`Authorization: Bearer ...`), `Content-Type: application/json`, body
`{"package_id": "small"}` and nothing else; optionally an `Idempotency-Key` header.
Response 200: `{"checkout_session_id": "cs_...", "url": "https://checkout.stripe.com/...", "payment_id": 12}`.

The session is priced from the server-side catalog only, with `client_reference_id` = the user id and
`metadata` = `payment_intent_data.metadata` = `{"user_id", "package_id"}` (SPEC §4), then the INIT
payment is opened in the ledger (OpenPayment, keyed by the session id). When the settings turn them on
(services.webhook_gateway.checkout_config), the session also accepts promotion codes
(`allow_promotion_codes`) and collects tax with Stripe Tax (`automatic_tax[enabled]`); the pack is still
matched on the session's `amount_subtotal` when it is paid, and the ledger records what was paid.
If the customer never pays, `checkout.session.expired` ends the INIT payment as EXPIRED.

Idempotency: with an `Idempotency-Key` header the Stripe idempotency key is derived from
(user id, that key), so a retried request gets the same session back from Stripe and the same
payment from the ledger; the same key with another package is refused (409
IDEMPOTENCY_KEY_REUSED), as Stripe refuses it. Without the header every request creates a new
session, still under a fresh Stripe idempotency key so the SDK's own network retries never create
two. Keys are per user: two users choosing the same key never collide.

    failure                                             answer
    no / bad token                                      401 UNAUTHENTICATED (auth.py)
    not JSON, unknown field, wrong type                 400 INVALID_ARGUMENT   (415 for another content type)
    package not in the catalog                          400 UNKNOWN_PACKAGE
    body above CHECKOUT_BODY_BYTES_MAX                  413 PAYLOAD_TOO_LARGE
    Idempotency-Key reused with another package         409 IDEMPOTENCY_KEY_REUSED
    the ledger refuses the account (anonymized)         409 with the ledger's reason
    Stripe or the ledger unavailable                    503 UNAVAILABLE (retry with the same Idempotency-Key)
    Stripe refuses the request (bad key, ...)           502 PAYMENT_PROVIDER_ERROR
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
from typing import Any, Final

from aiohttp import web

from credits.ledger.v1 import ledger_service_pb2 as pb
from services.ledger import errors
from services.ledger.client import LedgerClient
from services.stripe_bridge.api import CheckoutSession, StripeApi
from services.stripe_bridge.apply import details_proto
from services.stripe_bridge.catalog import Catalog, Package
from services.stripe_bridge.errors import StripeIdempotencyConflict, StripeRefused, StripeUnavailable
from services.stripe_bridge.events import USER_ID_CHARS_MAX, PaymentDetails, is_valid_user_id
from services.webhook_gateway.auth import require_user
from services.webhook_gateway.checkout_config import CheckoutOptions
from services.webhook_gateway.config import CHECKOUT_BODY_BYTES_MAX, GatewaySettings
from services.webhook_gateway.context import GATEWAY_KEY
from services.webhook_gateway.edge_routes import checkout_not_configured
from services.webhook_gateway.errors import HttpError, PaymentProviderError
from services.webhook_gateway.metrics import CHECKOUT_SESSIONS_CREATED
from services.webhook_gateway.webhooks import read_body_limited

log = logging.getLogger(__name__)

CHECKOUT_PATHS: Final = ("/checkout", "/v1/checkout-sessions")
BODY_FIELDS: Final = frozenset({"package_id"})
IDEMPOTENCY_KEY_PATTERN: Final = re.compile(r"^[\x21-\x7e]{1,128}$")  # Visible ASCII, as Stripe's keys.
STRIPE_IDEMPOTENCY_KEY_PREFIX: Final = "credits-checkout-"
RETRY_AFTER_SECONDS: Final = 2


def _invalid(message: str) -> HttpError:
    return HttpError(400, "INVALID_ARGUMENT", message)


async def create_checkout(request: web.Request) -> web.Response:
    """POST /checkout; see the module docstring."""
    gateway = request.app[GATEWAY_KEY]
    principal = await require_user(request)
    if not gateway.stripe.configured:  # CHECKOUT_ENABLED=false: say so at once, never call Stripe with a placeholder.
        raise checkout_not_configured()
    if not is_valid_user_id(principal.user_id):
        raise _invalid(
            f"the token's subject must be 1 to {USER_ID_CHARS_MAX} printable ASCII characters without spaces"
        )
    package = _requested_package(await _json_body(request), gateway.catalog)
    idempotency_key = stripe_idempotency_key(principal.user_id, request.headers.get("Idempotency-Key"))
    params = checkout_session_params(package, principal.user_id, gateway.settings)
    session = await create_session(gateway.stripe, params, idempotency_key)
    details = PaymentDetails(
        user_id=principal.user_id,
        package_id=package.package_id,
        credits=package.credits,
        amount_minor=package.amount_minor,
        currency=package.currency,
        checkout_session_id=session.session_id,
        payment_intent_id=session.payment_intent_id,
        grant_valid_days=package.valid_days,
    )
    opened = await _open_payment(gateway.ledger, details)
    if not opened.replayed:
        CHECKOUT_SESSIONS_CREATED.labels(package_id=package.package_id).inc()
    log.info(
        "checkout session created",
        extra={"user_id": principal.user_id, "package_id": package.package_id, "payment_id": opened.payment.id},
    )
    body = {"checkout_session_id": session.session_id, "url": session.url, "payment_id": opened.payment.id}
    return web.json_response(body, headers={"Cache-Control": "no-store"})


async def _json_body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise HttpError(415, "UNSUPPORTED_MEDIA_TYPE", "the body must be application/json")
    raw = await read_body_limited(request, CHECKOUT_BODY_BYTES_MAX)
    try:
        body = json.loads(raw, object_pairs_hook=_without_duplicate_keys, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors.
        raise _invalid("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise _invalid('the body must be a JSON object {"package_id": "..."}')
    return body


def _without_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # {"package_id": "small", "package_id": "large"} means whatever the last parser decides: refuse it.
    body = dict(pairs)
    if len(body) != len(pairs):
        raise ValueError("duplicate key")
    return body


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _requested_package(body: dict[str, Any], catalog: Catalog) -> Package:
    if set(body) - BODY_FIELDS:
        raise _invalid("only package_id is accepted in the body")
    package_id = body.get("package_id")
    if not isinstance(package_id, str) or not package_id:
        raise _invalid("package_id must be a non-empty string")
    package = catalog.get(package_id)
    if package is None:
        raise HttpError(400, "UNKNOWN_PACKAGE", "package_id is not in the catalog")
    return package


def stripe_idempotency_key(user_id: str, client_key: str | None) -> str:
    """Derived from (user, client key) when the client gave one, fresh otherwise."""
    if client_key is None:
        return STRIPE_IDEMPOTENCY_KEY_PREFIX + uuid.uuid4().hex
    if not IDEMPOTENCY_KEY_PATTERN.match(client_key):
        raise _invalid("Idempotency-Key must be 1 to 128 visible ASCII characters")
    digest = hashlib.sha256(f"{user_id}\x00{client_key}".encode()).hexdigest()
    return STRIPE_IDEMPOTENCY_KEY_PREFIX + digest


def checkout_session_params(package: Package, user_id: str, settings: GatewaySettings) -> dict[str, Any]:
    """Stripe's Checkout Session parameters (SPEC §4): catalog price, user and package in metadata; promotion
    codes and automatic tax when the settings turn them on."""
    metadata = {"user_id": user_id, "package_id": package.package_id}
    price_data: dict[str, Any] = {
        "currency": package.currency,
        "unit_amount": package.amount_minor,
        "product_data": {"name": package.name},
    }
    params: dict[str, Any] = {
        "mode": "payment",
        "line_items": [{"quantity": 1, "price_data": price_data}],
        "client_reference_id": user_id,
        "metadata": metadata,
        "payment_intent_data": {"metadata": dict(metadata)},
        "success_url": settings.checkout_success_url,
        "cancel_url": settings.checkout_cancel_url,
    }
    _add_checkout_options(params, price_data, settings.checkout_options)
    return params


def _add_checkout_options(params: dict[str, Any], price_data: dict[str, Any], options: CheckoutOptions) -> None:
    """Only what is turned on is sent: with everything off the request is exactly the plain one."""
    if options.allow_promotion_codes:
        params["allow_promotion_codes"] = True
    if options.automatic_tax:
        params["automatic_tax"] = {"enabled": True}
        if options.tax_behavior is not None:
            price_data["tax_behavior"] = options.tax_behavior


async def create_session(stripe_api: StripeApi, params: dict[str, Any], idempotency_key: str) -> CheckoutSession:
    """The session, or PaymentProviderError raised from Stripe's failure (StripeSdkFailure, a defect, passes)."""
    try:
        return await stripe_api.create_checkout_session(params, idempotency_key)
    except (StripeUnavailable, StripeIdempotencyConflict, StripeRefused) as exc:
        raise PaymentProviderError.from_failure(exc) from exc


async def _open_payment(ledger: LedgerClient, details: PaymentDetails) -> pb.OpenPaymentResponse:
    try:
        return await ledger.call(ledger.stub.OpenPayment, pb.OpenPaymentRequest(details=details_proto(details)))
    except errors.Unavailable:
        raise _unavailable("the ledger is unavailable; retry later") from None
    except (errors.FailedPrecondition, errors.AlreadyExists) as exc:
        raise HttpError(409, exc.reason, "the ledger refused this purchase for this account") from None
    except errors.InvalidArgument as exc:
        log.error("ledger refused OpenPayment", extra={"field": exc.field})
        raise _invalid("the ledger refused this purchase") from None


def _unavailable(message: str) -> HttpError:
    return HttpError(503, "UNAVAILABLE", message, {"Retry-After": str(RETRY_AFTER_SECONDS)})
