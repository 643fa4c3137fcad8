"""The gateway's OpenAPI 3.0 document, built from the same constants the routes enforce; `GET /openapi.json`.

It describes every route `build_app` registers (tests compare it with `app.router`, validate it
with openapi-spec-validator, check each exercised response against its schema, and run schemathesis
against the served document), so a limit changed in code changes the document with it. Response
objects are closed (`additionalProperties: false`): a field added to a route without the document
fails a test.

Exact, not merely plausible: what the document admits the server accepts, and what it refuses the
server refuses. `package_id` is an enum of the running gateway's catalog (`build_document(catalog)`,
served per application); `cursor` is the pattern the edge itself applies; `Stripe-Signature` is a
required, non-empty header of Stripe's form. OpenAPI 3.0 (not 3.1) because its schemas take
`integer` as JSON Schema draft 4 does, as an integer literal: the server refuses `257.0` as an
amount, and under 3.1 (JSON Schema 2020-12) `257.0` is an integer the document would admit.

Every error is the JSON error body of http_errors.py; each response names the `code` values it
may carry. Rate limits (429) and CORS apply to the browser routes only, not to the webhook.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from aiohttp import web

from services.ledger.accounts import validation
from services.stripe_bridge.apply import Outcome
from services.stripe_bridge.catalog import CREDITS_MAX, Catalog
from services.webhook_gateway import edge_routes as edge
from services.webhook_gateway.checkout import CHECKOUT_PATHS, IDEMPOTENCY_KEY_PATTERN
from services.webhook_gateway.config import CHECKOUT_BODY_BYTES_MAX, WEBHOOK_BODY_BYTES_MAX, WEBHOOK_PATH
from services.webhook_gateway.errors import CODE_PATTERN, MESSAGE_CHARS_MAX

OPENAPI_PATH: Final = "/openapi.json"
OPENAPI_VERSION: Final = "3.0.3"
DOCUMENT_VERSION: Final = "1.0.0"
CACHE_SECONDS: Final = 300

JsonObject = dict[str, Any]

_USER_ID_PATTERN: Final = r"^[\x21-\x7e]+$"  # The ledger's identifier rule (services.ledger.accounts.validation).
_NO_CONTROL_CHARACTERS_PATTERN: Final = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"  # The ledger's text rule.
_JWT: Final[list[JsonObject]] = [{"bearerJwt": []}]
_OPEN: Final[list[JsonObject]] = []  # `security: []`: no authentication.
# Stripe's header: `t=<unix seconds>` and one or more `<scheme>=<hex>` signatures (v1 is HMAC-SHA256).
STRIPE_SIGNATURE_PATTERN: Final = r"^t=[0-9]{1,12}(,v[0-9]=[0-9a-f]{64}){1,8}$"


def _ref(name: str) -> JsonObject:
    return {"$ref": f"#/components/schemas/{name}"}


def _closed_object(properties: Mapping[str, Any], required: Iterable[str] | None = None) -> JsonObject:
    names = list(properties if required is None else required)
    schema: JsonObject = {"type": "object", "additionalProperties": False}
    if names:  # OpenAPI 3.0: `required` holds at least one name, or is absent.
        schema["required"] = names
    return {**schema, "properties": dict(properties)}


def _integer(minimum: int, maximum: int, description: str | None = None) -> JsonObject:
    schema: JsonObject = {"type": "integer", "minimum": minimum, "maximum": maximum}
    if description:
        schema["description"] = description
    return schema


def _identifier(description: str, chars_max: int) -> JsonObject:
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": chars_max,
        "pattern": _USER_ID_PATTERN,
        "description": description,
    }


def _timestamp(description: str) -> JsonObject:
    return {"type": "string", "nullable": True, "format": "date-time", "description": description}


_INT64_MAX: Final = 2**63 - 1
_AMOUNT_LIMIT: Final = edge.AMOUNT_CREDITS_MAX


def _next_expiry() -> JsonObject:
    return _closed_object(
        {
            "credits": _integer(1, _INT64_MAX, "How many credits expire then (reserved ones included)."),
            "expires_at": {"type": "string", "format": "date-time", "description": "RFC 3339, UTC."},
            "date": {"type": "string", "format": "date", "description": "The UTC date of expires_at."},
            "text": {
                "type": "string",
                "pattern": "^(1 credit expires|[0-9]+ credits expire) on [0-9]{4}-[0-9]{2}-[0-9]{2}$",
                "description": "For the page: `100 credits expire on 2027-01-31` (`1 credit expires on ...`).",
            },
        }
    )


def _schemas(catalog: Catalog) -> JsonObject:
    signed = {"minimum": -_INT64_MAX, "maximum": _INT64_MAX}
    transaction = {
        "id": {"type": "integer", "minimum": 1, "description": "The entry's id; increases with time."},
        "delta": {"type": "integer", **signed, "description": "Signed change in credits; never 0."},
        "balance_after": {"type": "integer", **signed, "description": "The balance right after this entry."},
        "kind": {"type": "string", "enum": list(edge.TRANSACTION_KINDS), "description": "Why the entry exists."},
        "reason": {"type": "string", "maxLength": validation.REASON_CHARS_MAX},
        "created_at": _timestamp("When the entry was written (RFC 3339, UTC)."),
    }
    adjusted_entry = {
        **transaction,
        "user_id": _identifier("The adjusted user.", validation.USER_ID_CHARS_MAX),
        "idempotency_key": _identifier("The request's key.", validation.IDEMPOTENCY_KEY_CHARS_MAX),
    }
    return {
        "Error": _closed_object(
            {
                "error": _closed_object(
                    {
                        "code": {"type": "string", "pattern": CODE_PATTERN.pattern, "description": "Stable token."},
                        "message": {"type": "string", "maxLength": MESSAGE_CHARS_MAX, "description": "For humans."},
                    }
                )
            }
        ),
        "Transaction": {**_closed_object(transaction), "description": "One journal entry."},
        "Payment": {
            **_closed_object(
                {
                    "id": {"type": "integer", "minimum": 1},
                    "package_id": {"type": "string", "description": "The catalog package bought."},
                    "credits": _integer(0, CREDITS_MAX, "Credits the package gives."),
                    "amount_minor": {"type": "integer", "minimum": 0, "description": "Price in minor units."},
                    "currency": {"type": "string", "pattern": "^[a-z]{3}$", "description": "ISO 4217, lower case."},
                    "status": {"type": "string", "enum": list(edge.PAYMENT_STATUSES)},
                    "created_at": _timestamp("When the checkout was opened (RFC 3339, UTC)."),
                }
            ),
            "description": "One Stripe Checkout purchase.",
        },
        "Grant": {
            **_closed_object(
                {
                    "id": {"type": "integer", "minimum": 1, "description": "The grant's id."},
                    "category": {
                        "type": "string",
                        "enum": list(edge.GRANT_CATEGORIES),
                        "description": "`paid` (bought through Stripe) or `promotional` (given).",
                    },
                    "priority": _integer(0, 100, "Burn priority: lower burns first."),
                    "amount": _integer(1, _INT64_MAX, "The credits granted."),
                    "remaining": _integer(1, _INT64_MAX, "What is left of them (reserved included)."),
                    "reserved": _integer(0, _INT64_MAX, "The part of remaining reserved by active holds."),
                    "expires_at": _timestamp("When the rest expires (RFC 3339, UTC); null: never."),
                    "created_at": _timestamp("When it was granted (RFC 3339, UTC)."),
                    "payment_id": {
                        "type": "integer",
                        "nullable": True,
                        "minimum": 1,
                        "description": "The payment it was bought with; null for a given grant.",
                    },
                }
            ),
            "description": (
                "Credits given by one journal entry and what is left of them. Debits burn grants lowest priority "
                "first, then soonest expiry (none last), then oldest."
            ),
        },
        "MyCredits": _closed_object(
            {
                "user_id": _identifier("The token's subject.", validation.USER_ID_CHARS_MAX),
                "balance": {"type": "integer", **signed, "description": "Negative when refunds left a debt."},
                "held": {"type": "integer", "minimum": 0, "description": "Reserved by active holds."},
                "available": {"type": "integer", **signed, "description": "What can be spent now."},
                "status": {"type": "string", "enum": list(edge.ACCOUNT_STATUSES)},
                "transactions": {
                    "type": "array",
                    "maxItems": edge.TRANSACTIONS_LIMIT_MAX,
                    "items": _ref("Transaction"),
                },
                "next_cursor": {
                    "type": "string",
                    "nullable": True,
                    "pattern": edge.CURSOR_PATTERN,
                    "description": "Pass as `cursor` for older transactions; null on the last page.",
                },
                "payments": {"type": "array", "maxItems": edge.PAYMENTS_SHOWN_MAX, "items": _ref("Payment")},
                "grants": {
                    "type": "array",
                    "maxItems": edge.GRANTS_SHOWN_MAX,
                    "items": _ref("Grant"),
                    "description": (
                        f"The grants with something left, in burn order (the first {edge.GRANTS_SHOWN_MAX}). "
                        "balance is their remaining minus debt."
                    ),
                },
                "debt": _integer(0, _INT64_MAX, "Credits clawed back beyond what was left; new credits repay it."),
                "next_expiry": {
                    **_next_expiry(),
                    "nullable": True,
                    "description": "The soonest expiry of the credits left; null when none expire.",
                },
            }
        ),
        "AdminAdjustRequest": _closed_object(
            {
                "user_id": _identifier("The user to adjust.", validation.USER_ID_CHARS_MAX),
                "amount": {
                    "type": "integer",
                    "description": (
                        "Signed credits; never takes the balance below zero. A JSON integer literal: "
                        "`5.0` and `1e3` are refused although JSON Schema counts them as integers."
                    ),
                    "minimum": -_AMOUNT_LIMIT,
                    "maximum": _AMOUNT_LIMIT,
                    "not": {"enum": [0]},
                },
                "reason": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": validation.REASON_CHARS_MAX,
                    "allOf": [{"pattern": r"\S"}, {"pattern": _NO_CONTROL_CHARACTERS_PATTERN}],
                    "description": "Mandatory; not blank, no control characters other than tab and newlines.",
                },
                "idempotency_key": _identifier(
                    "Unique per user; a retry with the same body replays the first result.",
                    validation.IDEMPOTENCY_KEY_CHARS_MAX,
                ),
            }
        ),
        "AdminAdjustResponse": _closed_object(
            {
                "transaction": {**_closed_object(adjusted_entry), "description": "The journal entry written."},
                "admin_action_id": {"type": "integer", "minimum": 1},
                "replayed": {"type": "boolean", "description": "True when the key was seen before."},
            }
        ),
        "GdprDeleteRequest": _closed_object(
            {"user_id": _identifier("Whose data to erase; omitted: the caller's own.", validation.USER_ID_CHARS_MAX)},
            required=(),
        ),
        "GdprDeleteResponse": _closed_object(
            {
                "user_id": _identifier("The erased user.", validation.USER_ID_CHARS_MAX),
                "already_anonymized": {"type": "boolean"},
                "payments_scrubbed_count": {"type": "integer", "minimum": 0},
                "metadata_erased_count": {"type": "integer", "minimum": 0},
            }
        ),
        "CheckoutRequest": _closed_object(
            {
                "package_id": {
                    "type": "string",
                    "enum": sorted(package.package_id for package in catalog),
                    "description": "A package of this gateway's catalog (CREDIT_PACKAGES).",
                }
            }
        ),
        "CheckoutResponse": _closed_object(
            {
                "checkout_session_id": {"type": "string", "pattern": "^cs_"},
                "url": {"type": "string", "format": "uri", "description": "Redirect the customer here."},
                "payment_id": {"type": "integer", "minimum": 1},
            }
        ),
        "StripeEvent": {
            "oneOf": [
                {
                    "type": "object",
                    "required": ["id", "object", "type", "livemode", "data"],
                    "properties": {
                        "id": {"type": "string", "pattern": "^evt_"},
                        "object": {"type": "string", "enum": ["event"]},
                        "type": {"type": "string"},
                        "livemode": {"type": "boolean"},
                        "account": {"type": "string", "pattern": "^acct_"},
                        "data": {
                            "type": "object",
                            "required": ["object"],
                            "properties": {"object": {"type": "object"}},
                        },
                    },
                    "description": "A snapshot event (`account` on a connected account's event).",
                },
                {
                    "type": "object",
                    "required": ["id", "object", "type", "livemode", "created"],
                    "properties": {
                        "id": {"type": "string", "pattern": "^evt_"},
                        "object": {"type": "string", "enum": ["v2.core.event"]},
                        "type": {"type": "string"},
                        "livemode": {"type": "boolean"},
                        "created": {"type": "string", "format": "date-time"},
                        "context": {"type": "string", "nullable": True},
                    },
                    "description": "A thin event (event destinations): recorded as ignored, never acted on.",
                },
            ],
            "description": "A Stripe event as Stripe sends it, signed in Stripe-Signature (docs/stripe-webhooks.md).",
        },
        "WebhookReceived": _closed_object(
            {
                "received": {"type": "boolean", "enum": [True]},
                "outcome": {"type": "string", "enum": [outcome.value for outcome in Outcome]},
            }
        ),
        "Health": _closed_object({"status": {"type": "string", "enum": ["ok"]}}),
        "Ready": _closed_object({"status": {"type": "string", "enum": ["ready"]}}),
    }


# --- responses ----------------------------------------------------------------------------------

_RETRY_AFTER: Final = {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}}
_WWW_AUTHENTICATE: Final = {"WWW-Authenticate": {"$ref": "#/components/headers/WWWAuthenticate"}}
_NO_STORE: Final = {"Cache-Control": {"$ref": "#/components/headers/CacheControl"}}


def _error(
    description: str, codes: Sequence[str] | None, headers: Mapping[str, JsonObject] | None = None
) -> JsonObject:
    """An error response whose `code` is one of `codes` (any stable token when None)."""
    schema: JsonObject = _ref("Error")
    if codes is not None:
        code_enum = {"properties": {"error": {"properties": {"code": {"type": "string", "enum": list(codes)}}}}}
        schema = {"allOf": [_ref("Error"), code_enum]}
    response: JsonObject = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        response["headers"] = dict(headers)
    return response


def _ok(description: str, schema_name: str, headers: Mapping[str, JsonObject] | None = None) -> JsonObject:
    response: JsonObject = {
        "description": description,
        "content": {"application/json": {"schema": _ref(schema_name)}},
    }
    if headers:
        response["headers"] = dict(headers)
    return response


def _json_body(schema_name: str, limit_bytes: int) -> JsonObject:
    return {
        "required": True,
        "description": f"`application/json`, at most {limit_bytes} bytes; no unknown fields, no duplicate keys.",
        "content": {"application/json": {"schema": _ref(schema_name)}},
    }


def _user_route_errors(*, admin: bool = False) -> JsonObject:
    """The answers every JWT route shares (authentication, rate limit, outage)."""
    errors: JsonObject = {
        "401": _error(
            "No token, or a token refused; the message names the check that failed (expired, audience, issuer, "
            "signature, algorithm, a missing claim, a subject that is no user id).",
            ["UNAUTHENTICATED"],
            _WWW_AUTHENTICATE,
        ),
        "429": _error("Too many requests from this user or address.", ["RATE_LIMITED"], _RETRY_AFTER),
        "500": _error("An internal error; details are logged, never returned.", ["INTERNAL"]),
        "503": _error("The ledger (or the token keys) unavailable; retry later.", ["UNAVAILABLE"], _RETRY_AFTER),
    }
    if admin:
        errors["403"] = _error("The token lacks the admin role.", ["PERMISSION_DENIED"], _WWW_AUTHENTICATE)
    return errors


def _body_errors(limit_bytes: int, codes_400: Sequence[str] = ("INVALID_ARGUMENT",)) -> JsonObject:
    return {
        "400": _error("Malformed JSON, not an object, an unknown or missing field, a wrong type or value.", codes_400),
        "413": _error(f"The body is larger than {limit_bytes} bytes.", ["PAYLOAD_TOO_LARGE"]),
        "415": _error("The body is not application/json.", ["UNSUPPORTED_MEDIA_TYPE"]),
    }


# --- operations ---------------------------------------------------------------------------------


def _me_credits() -> JsonObject:
    return {
        "get": {
            "operationId": "getMyCredits",
            "tags": ["credits"],
            "summary": "The caller's balance, grants left, next expiry, latest transactions and recent payments.",
            "description": (
                "Server-side-render friendly: one request gives the whole credits page. "
                "`next_expiry.text` is the sentence to show (`100 credits expire on 2027-01-31`, a UTC date). "
                f"Up to {edge.PAYMENTS_SHOWN_MAX} most recent payments are listed, whatever the cursor."
            ),
            "security": _JWT,
            "parameters": [
                {
                    "name": "limit",
                    "in": "query",
                    "required": False,
                    "schema": {
                        **_integer(1, edge.TRANSACTIONS_LIMIT_MAX),
                        "default": edge.TRANSACTIONS_LIMIT_DEFAULT,
                    },
                    "description": "Transactions per page.",
                },
                {
                    "name": "cursor",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "pattern": edge.CURSOR_PATTERN},
                    "description": "The `next_cursor` of the previous page, as it was given.",
                },
            ],
            "responses": {
                "200": _ok("The caller's credits.", "MyCredits", _NO_STORE),
                "400": _error("An unknown or repeated query parameter, a bad limit or cursor.", ["INVALID_ARGUMENT"]),
                **_user_route_errors(),
            },
        }
    }


def _admin_adjust() -> JsonObject:
    return {
        "post": {
            "operationId": "adminAdjust",
            "tags": ["admin"],
            "summary": "A signed manual adjustment of a user's credits; the actor is the admin's token subject.",
            "security": _JWT,
            "requestBody": _json_body("AdminAdjustRequest", edge.ADMIN_ADJUST_BODY_BYTES_MAX),
            "responses": {
                "200": _ok("The entry written (or, on a replay, the first one).", "AdminAdjustResponse", _NO_STORE),
                **_body_errors(edge.ADMIN_ADJUST_BODY_BYTES_MAX),
                "409": _error(
                    "The balance is too small for a negative adjustment, the account was anonymized, or the "
                    "idempotency key was used with other parameters.",
                    ["INSUFFICIENT_CREDITS", "ACCOUNT_ANONYMIZED", "IDEMPOTENCY_KEY_REUSED"],
                ),
                **_user_route_errors(admin=True),
            },
        }
    }


def _gdpr_delete() -> JsonObject:
    return {
        "post": {
            "operationId": "gdprDelete",
            "tags": ["gdpr"],
            "summary": "Erase a user's personal data (amounts are kept); idempotent.",
            "description": (
                'A user erases their own data with `{}` or `{"user_id": "<own id>"}`; an admin may name any '
                "user (an admin's `{}` means the admin's own account). Answers counts, never data."
            ),
            "security": _JWT,
            "requestBody": _json_body("GdprDeleteRequest", edge.GDPR_DELETE_BODY_BYTES_MAX),
            "responses": {
                "200": _ok("What was erased.", "GdprDeleteResponse", _NO_STORE),
                **_body_errors(edge.GDPR_DELETE_BODY_BYTES_MAX),
                **_user_route_errors(),
                "403": _error("A user named another user.", ["PERMISSION_DENIED"], _WWW_AUTHENTICATE),
            },
        }
    }


def _checkout(operation_id: str, *, alias: bool) -> JsonObject:
    operation: JsonObject = {
        "operationId": operation_id,
        "tags": ["checkout"],
        "summary": "Create a Stripe Checkout Session for a catalog package and open its payment.",
        "security": _JWT,
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN.pattern},
                "description": "Makes a retry return the same session; reusing it for another package is a 409.",
            }
        ],
        "requestBody": _json_body("CheckoutRequest", CHECKOUT_BODY_BYTES_MAX),
        "responses": {
            "200": _ok("The session to redirect the customer to.", "CheckoutResponse", _NO_STORE),
            **_body_errors(CHECKOUT_BODY_BYTES_MAX, ("INVALID_ARGUMENT", "UNKNOWN_PACKAGE")),
            "409": _error(
                "The Idempotency-Key was used for another package (IDEMPOTENCY_KEY_REUSED), or the ledger refused "
                "the account (its reason, e.g. ACCOUNT_ANONYMIZED).",
                None,
            ),
            "502": _error("Stripe refused the request.", ["PAYMENT_PROVIDER_ERROR"]),
            **_user_route_errors(),
            "503": _error(
                "The ledger or Stripe is unavailable (UNAVAILABLE, with Retry-After), or this gateway has no "
                "STRIPE_API_KEY (CHECKOUT_NOT_CONFIGURED, CHECKOUT_ENABLED=false).",
                ["UNAVAILABLE", edge.CHECKOUT_NOT_CONFIGURED],
            ),
        },
    }
    if alias:
        operation["description"] = "An alias of `POST /checkout`."
    return {"post": operation}


def _webhook() -> JsonObject:
    return {
        "post": {
            "operationId": "stripeWebhook",
            "tags": ["webhooks"],
            "summary": "Stripe events: verified, then applied once through the ledger.",
            "description": "Not rate limited and without CORS: Stripe paces and retries its own deliveries.",
            "security": _OPEN,
            "parameters": [
                {
                    "name": "Stripe-Signature",
                    "in": "header",
                    "required": True,
                    "schema": {"type": "string", "pattern": STRIPE_SIGNATURE_PATTERN},
                    "description": (
                        "`t=<timestamp>,v1=<HMAC-SHA256 of '<timestamp>.<body>' with the endpoint's signing "
                        "secret>`, by Stripe; refused when missing, stale or not matching the body."
                    ),
                }
            ],
            "requestBody": {
                "required": True,
                "description": f"The event exactly as Stripe signed it, at most {WEBHOOK_BODY_BYTES_MAX} bytes.",
                "content": {"application/json": {"schema": _ref("StripeEvent")}},
            },
            "responses": {
                "200": _ok(
                    "Applied, a duplicate, ignored (unknown type, thin event) or refused (flagged; another account "
                    "or mode).",
                    "WebhookReceived",
                ),
                "400": _error(
                    "A missing or invalid signature, a timestamp out of tolerance, a malformed body (or one naming "
                    "a key twice) or event.",
                    [
                        "SIGNATURE_MISSING",
                        "SIGNATURE_INVALID",
                        "TIMESTAMP_OUT_OF_TOLERANCE",
                        "MALFORMED_BODY",
                        "DUPLICATE_KEY",
                        "MALFORMED_EVENT",
                    ],
                ),
                "413": _error(f"The body is larger than {WEBHOOK_BODY_BYTES_MAX} bytes.", ["PAYLOAD_TOO_LARGE"]),
                "500": _error("Not applied (internal error); Stripe retries.", ["INTERNAL"]),
                "503": _error("The ledger or Stripe is unavailable; Stripe retries.", ["UNAVAILABLE"], _RETRY_AFTER),
            },
        }
    }


def _operations_routes() -> JsonObject:
    return {
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "tags": ["operations"],
                "summary": "Liveness: the process answers (dependencies are not checked).",
                "security": _OPEN,
                "responses": {"200": _ok("Alive.", "Health", _NO_STORE)},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "tags": ["operations"],
                "summary": "Readiness: the ledger answers its health check and the gateway is not draining.",
                "security": _OPEN,
                "responses": {
                    "200": _ok("Ready.", "Ready", _NO_STORE),
                    "503": _error("Not ready (ledger unreachable, or shutting down).", ["UNAVAILABLE"]),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "tags": ["operations"],
                "summary": "Prometheus metrics (text format, or OpenMetrics when the Accept header asks for it).",
                "security": _OPEN,
                "responses": {
                    "200": {
                        "description": "The metrics.",
                        "content": {
                            "text/plain": {"schema": {"type": "string"}},
                            "application/openmetrics-text": {"schema": {"type": "string"}},
                        },
                    }
                },
            }
        },
        OPENAPI_PATH: {
            "get": {
                "operationId": "openapi",
                "tags": ["operations"],
                "summary": "This document.",
                "security": _OPEN,
                "responses": {
                    "200": {
                        "description": "The OpenAPI 3.1 document.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    }


def build_document(catalog: Catalog) -> JsonObject:
    """The whole document for a gateway with this catalog, as a JSON-ready dict."""
    checkout_paths = {
        path: _checkout(
            "createCheckoutSession" if index == 0 else f"createCheckoutSessionAlias{index}", alias=index > 0
        )
        for index, path in enumerate(CHECKOUT_PATHS)
    }
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Credits webhook gateway",
            "version": DOCUMENT_VERSION,
            "description": (
                "The HTTP edge of the credits suite: Stripe webhooks, checkout, the BFF's credits page, "
                'admin adjustments and GDPR erasure. Every error is `{"error": {"code", "message"}}`. '
                "User and admin routes take `Authorization: Bearer <JWT>` from the host app (`sub` is the "
                "user id; admins carry `admin` in `roles`), are rate limited per user and per client address "
                "(429 with Retry-After) and answer CORS only for the configured origins."
            ),
        },
        "tags": [
            {"name": name, "description": description}
            for name, description in (
                ("credits", "The caller's own credits."),
                ("checkout", "Buying credit packs."),
                ("admin", "Operators' tools."),
                ("gdpr", "Erasure of personal data."),
                ("webhooks", "Called by Stripe."),
                ("operations", "Health, readiness, metrics, this document."),
            )
        ],
        "paths": {
            WEBHOOK_PATH: _webhook(),
            **checkout_paths,
            edge.ME_CREDITS_PATH: _me_credits(),
            edge.ADMIN_ADJUST_PATH: _admin_adjust(),
            edge.GDPR_DELETE_PATH: _gdpr_delete(),
            **_operations_routes(),
        },
        "components": {
            "schemas": _schemas(catalog),
            "headers": {
                "RetryAfter": {
                    "description": "Seconds to wait before retrying.",
                    "schema": {"type": "integer", "minimum": 1},
                },
                "WWWAuthenticate": {"description": "The Bearer challenge (RFC 6750).", "schema": {"type": "string"}},
                "CacheControl": {
                    "description": "Always `no-store`.",
                    "schema": {"type": "string", "enum": ["no-store"]},
                },
            },
            "securitySchemes": {
                "bearerJwt": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "Issued by the host app; `sub` = user id, `roles` may hold `admin`.",
                },
            },
        },
    }


OPENAPI_DOCUMENT: Final = build_document(Catalog.default())  # The default catalog's (SPEC §4).
OPENAPI_BYTES_KEY: Final = web.AppKey("webhook_gateway_openapi_bytes", bytes)


def document_bytes(catalog: Catalog) -> bytes:
    return json.dumps(build_document(catalog), indent=2, sort_keys=False).encode("utf-8")


def add_openapi_route(app: web.Application, catalog: Catalog) -> None:
    """Register GET /openapi.json, with the document of `catalog` built once (called by `build_app`)."""
    app[OPENAPI_BYTES_KEY] = document_bytes(catalog)
    app.router.add_get(OPENAPI_PATH, serve_openapi, allow_head=False)  # HEAD is no operation of the document.


async def serve_openapi(request: web.Request) -> web.Response:
    """GET /openapi.json: the document of this application's catalog (built once, in add_openapi_route)."""
    return web.Response(
        body=request.app[OPENAPI_BYTES_KEY],
        content_type="application/json",
        headers={"Cache-Control": f"public, max-age={CACHE_SECONDS}"},
    )
