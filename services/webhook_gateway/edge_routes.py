"""The BFF and admin routes of the HTTP edge: thin, authenticated translations to ledger RPCs.

    route                  auth                        ledger RPCs
    GET /me/credits        user JWT                    GetBalance + ListTransactions + ListPayments
                           (the grants left, the debt and the next expiry come from GetBalance)
    POST /admin/adjust     admin JWT                   AdminAdjust (actor = the admin's `sub`)
    POST /gdpr/delete      the user's own JWT, or an   Anonymize
                           admin JWT for any user
    GET /openapi.json      none                        (the document of services.webhook_gateway.openapi)

`build_app` installs CORS, the JSON error body and the rate limits on `/me`, `/admin` and `/gdpr`;
the shapes below are the OpenAPI document's (`openapi.py`), which a test keeps true.

Every POST body is strict: `Content-Type: application/json` (else 415), at most the route's
`*_BODY_BYTES_MAX` (else 413), UTF-8 JSON (no NaN/Infinity, no duplicate keys) holding one object
with exactly the documented fields, each of the documented JSON type (a bool is not an integer,
`1.0` is not an integer) and within the ledger's field rules (docs/errors.md). Anything else is 400
`INVALID_ARGUMENT` naming the field, and nothing reaches the ledger. The order of checks is
authentication (401/403), media type (415), size (413), syntax and fields (400), permission on
the named user (403), then the ledger.

    ledger refusal           answer
    InvalidArgument          400 INVALID_ARGUMENT (the field and the ledger's rule; the cursor as `cursor`)
    InsufficientCredits      409 INSUFFICIENT_CREDITS (the same request may succeed once the account is
                             funded: a conflict with the account's state, like the two below, not a bad body)
    AccountAnonymized        409 ACCOUNT_ANONYMIZED
    IdempotencyKeyReused     409 IDEMPOTENCY_KEY_REUSED
    Unavailable              503 UNAVAILABLE with Retry-After (safe to retry with the same idempotency key)
    anything else            500 INTERNAL (logged; e.g. the gateway's ledger token lacks a role)

The gateway's ledger caller needs the roles `reader` (ListTransactions), `admin` (AdminAdjust,
Anonymize) and `payments` (GetBalance, ListPayments, and the webhook and checkout RPCs).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
from collections.abc import Callable, Mapping
from datetime import UTC
from typing import Any, Final, NoReturn, TypeVar

from aiohttp import web
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper
from google.protobuf.timestamp_pb2 import Timestamp
from multidict import MultiMapping

from credits.ledger.v1 import ledger_service_pb2 as pb
from services.ledger import errors
from services.ledger.accounts import validation
from services.webhook_gateway.auth import Principal, permission_denied, require_admin, require_user
from services.webhook_gateway.context import GATEWAY_KEY
from services.webhook_gateway.errors import MESSAGE_CHARS_MAX, HttpError
from services.webhook_gateway.http_errors import INTERNAL_MESSAGE
from services.webhook_gateway.webhooks import read_body_limited

log = logging.getLogger(__name__)

ME_CREDITS_PATH: Final = "/me/credits"
ADMIN_ADJUST_PATH: Final = "/admin/adjust"
GDPR_DELETE_PATH: Final = "/gdpr/delete"

TRANSACTIONS_LIMIT_DEFAULT: Final = 20
TRANSACTIONS_LIMIT_MAX: Final = validation.PAGE_SIZE_MAX  # The ledger's page bound: one RPC per request.
PAYMENTS_SHOWN_MAX: Final = 10
# Grants listed in burn order (those spent first); a page is no ledger of every grant. The balance, the debt and
# the next expiry always count them all.
GRANTS_SHOWN_MAX: Final = 100
CURSOR_CHARS_MAX: Final = 128
QUERY_VALUE_CHARS_MAX: Final = 256
ADMIN_ADJUST_BODY_BYTES_MAX: Final = 4 * 1024  # 500 characters of reason are at most 2,000 UTF-8 bytes.
GDPR_DELETE_BODY_BYTES_MAX: Final = 1024
LEDGER_RETRY_AFTER_SECONDS: Final = 2
AMOUNT_CREDITS_MAX: Final = validation.AMOUNT_CREDITS_MAX

ME_CREDITS_QUERY_FIELDS: Final = frozenset({"limit", "cursor"})
ADMIN_ADJUST_FIELDS: Final = ("user_id", "amount", "reason", "idempotency_key")
GDPR_DELETE_FIELDS: Final = ("user_id",)

NO_STORE: Final[Mapping[str, str]] = {"Cache-Control": "no-store"}
LEDGER_PAGE_TOKEN_PREFIX: Final = "t1:"  # services.ledger.accounts.server.encode_page_token: base64url("t1:<entry id>")
CURSOR_DIGITS_MAX: Final = 17  # Entry ids below 10**17: the cursor pattern stays exact and short.
_LIMIT_PATTERN: Final = re.compile(r"^[0-9]{1,3}$")
_UNKNOWN_NAME: Final = "unknown"

T = TypeVar("T")


def _cursor_pattern() -> str:
    """Exactly the URL-safe base64 of "t1:" + a decimal entry id without leading zeros (1 to 17 digits).

    The document publishes this pattern and `_cursor` applies it, so every cursor the pattern admits is
    one the ledger decodes and every other is refused here. Built from the encodings themselves: base64
    turns 3 bytes into 4 characters, and for ASCII digits the characters of each position depend on one
    digit only (the first two on the first digit, the third on the second, the fourth on the third).
    """

    def b64(text: str) -> str:
        return base64.urlsafe_b64encode(text.encode("ascii")).decode("ascii")

    def alternatives(strings: set[str]) -> str:
        return "(?:" + "|".join(sorted(strings)) + ")"

    def char_class(characters: set[str]) -> str:
        return "[" + "".join(sorted(characters)).replace("-", "\\-") + "]"

    digits, nonzero = "0123456789", "123456789"
    lead = {first: alternatives({b64(d + "00")[:2] for d in (nonzero if first else digits)}) for first in (1, 0)}
    third = char_class({b64("0" + d + "0")[2] for d in digits})
    fourth = char_class({b64("00" + d)[3] for d in digits})
    one_digit = {first: alternatives({b64(d)[:2] for d in (nonzero if first else digits)}) + "==" for first in (1, 0)}
    two_digits = {first: lead[first] + char_class({b64("0" + d)[2] for d in digits}) + "=" for first in (1, 0)}
    full_groups_more_max = (CURSOR_DIGITS_MAX - 2) // 3 - 1  # After the first group; then at most 2 digits.
    groups = f"{lead[1]}{third}{fourth}(?:{lead[0]}{third}{fourth}){{0,{full_groups_more_max}}}"
    tail = f"(?:{one_digit[0]}|{two_digits[0]})?"
    return f"^{b64(LEDGER_PAGE_TOKEN_PREFIX)}(?:{groups}{tail}|{one_digit[1]}|{two_digits[1]})$"


CURSOR_PATTERN: Final = _cursor_pattern()
_CURSOR_RE: Final = re.compile(CURSOR_PATTERN)


def add_edge_routes(app: web.Application) -> None:
    """Register the edge routes on `app` (called by `build_app` before the application is frozen).

    The OpenAPI document that describes them is registered by openapi.add_openapi_route: openapi.py
    imports this module (the route table), never the other way round.
    """
    # allow_head=False: HEAD is no operation of these routes, and the OpenAPI document lists every route.
    app.router.add_get(ME_CREDITS_PATH, get_my_credits, allow_head=False)
    app.router.add_post(ADMIN_ADJUST_PATH, admin_adjust)
    app.router.add_post(GDPR_DELETE_PATH, gdpr_delete)


# --- handlers -----------------------------------------------------------------------------------


async def get_my_credits(request: web.Request) -> web.Response:
    """GET /me/credits?limit=&cursor=: balance, grants left, next expiry, latest transactions and recent payments."""
    principal = await require_user(request)
    user_id = _subject_user_id(principal)
    limit, cursor = _me_credits_query(request.query)
    ledger = request.app[GATEWAY_KEY].ledger
    results = await asyncio.gather(
        ledger.get_balance(user_id),
        ledger.list_transactions(user_id, page_size=limit, page_token=cursor),
        ledger.call(ledger.stub.ListPayments, pb.ListPaymentsRequest(user_id=user_id, page_size=PAYMENTS_SHOWN_MAX)),
        return_exceptions=True,
    )
    for result in results:
        if isinstance(result, errors.LedgerError):
            _raise_for_ledger_error(result, "GetMyCredits", user_id)
        if isinstance(result, BaseException):
            raise result
    balance, page, payments = results
    assert isinstance(balance, pb.GetBalanceResponse)
    assert isinstance(page, pb.ListTransactionsResponse)
    assert isinstance(payments, pb.ListPaymentsResponse)
    body = {
        "user_id": user_id,
        "balance": balance.balance,
        "held": balance.held,
        "available": balance.available,
        "status": account_status_name(balance.status),
        "transactions": [transaction_json(entry) for entry in page.transactions],
        "next_cursor": page.next_page_token or None,
        "payments": [payment_json(payment) for payment in payments.payments],
        "grants": [grant_json(grant) for grant in balance.grants[:GRANTS_SHOWN_MAX]],
        "debt": balance.debt,
        "next_expiry": next_expiry_json(balance),
    }
    return web.json_response(body, headers=NO_STORE)


async def admin_adjust(request: web.Request) -> web.Response:
    """POST /admin/adjust {user_id, amount, reason, idempotency_key}: a signed manual adjustment."""
    principal = await require_admin(request)
    actor = _actor(principal)
    body = await _json_object(request, ADMIN_ADJUST_BODY_BYTES_MAX, ADMIN_ADJUST_FIELDS, required=ADMIN_ADJUST_FIELDS)
    user_id = _checked("user_id", validation.user_id, _string(body, "user_id"))
    amount = _checked("amount", validation.signed_amount, _integer(body, "amount"))
    reason = _checked("reason", validation.reason, _string(body, "reason"))
    key = _checked("idempotency_key", validation.idempotency_key, _string(body, "idempotency_key"))
    ledger = request.app[GATEWAY_KEY].ledger
    try:
        adjusted = await ledger.admin_adjust(user_id, amount, key, actor=actor, reason=reason)
    except errors.LedgerError as exc:
        _raise_for_ledger_error(exc, "AdminAdjust", user_id)
    log.info(
        "admin adjustment",
        extra={
            "actor": actor,
            "user_id": user_id,
            "amount": amount,
            "admin_action_id": adjusted.admin_action_id,
            "replayed": adjusted.replayed,
        },
    )
    entry = transaction_json(adjusted.transaction)
    entry.update(user_id=adjusted.transaction.user_id, idempotency_key=adjusted.transaction.idempotency_key)
    response = {"transaction": entry, "admin_action_id": adjusted.admin_action_id, "replayed": adjusted.replayed}
    return web.json_response(response, headers=NO_STORE)


async def gdpr_delete(request: web.Request) -> web.Response:
    """POST /gdpr/delete {} or {"user_id": ...}: erase one user's personal data (self, or anyone for an admin)."""
    principal = await require_user(request)
    body = await _json_object(request, GDPR_DELETE_BODY_BYTES_MAX, GDPR_DELETE_FIELDS, required=())
    if "user_id" in body:
        user_id = _checked("user_id", validation.user_id, _string(body, "user_id"))
    else:
        user_id = _subject_user_id(principal)
    if user_id != principal.user_id and not principal.is_admin:
        raise permission_denied("a user may only erase their own data")
    ledger = request.app[GATEWAY_KEY].ledger
    try:
        erased = await ledger.anonymize(user_id)
    except errors.LedgerError as exc:
        _raise_for_ledger_error(exc, "Anonymize", user_id)
    log.info(
        "gdpr erasure",
        extra={
            "user_id": user_id,
            "by_admin": user_id != principal.user_id,
            "already_anonymized": erased.already_anonymized,
            "payments_scrubbed_count": erased.payments_scrubbed_count,
            "metadata_erased_count": erased.metadata_erased_count,
        },
    )
    response = {
        "user_id": erased.user_id,
        "already_anonymized": erased.already_anonymized,
        "payments_scrubbed_count": erased.payments_scrubbed_count,
        "metadata_erased_count": erased.metadata_erased_count,
    }
    return web.json_response(response, headers=NO_STORE)


# --- identity -----------------------------------------------------------------------------------


def _subject_user_id(principal: Principal) -> str:
    """The token's `sub` as a ledger user id; a subject the ledger cannot store is refused up front."""
    try:
        return validation.user_id(principal.user_id)
    except errors.InvalidArgument:
        raise _invalid(f"the token's subject is not a valid user id ({_USER_ID_RULE})") from None


def _actor(principal: Principal) -> str:
    try:
        return validation.identifier("actor", principal.subject, validation.ACTOR_CHARS_MAX)
    except errors.InvalidArgument:
        raise _invalid(f"the token's subject cannot be recorded as the actor ({_USER_ID_RULE})") from None


_USER_ID_RULE: Final = f"1 to {validation.USER_ID_CHARS_MAX} printable ASCII characters without spaces"


# --- input --------------------------------------------------------------------------------------


def _invalid(message: str) -> HttpError:
    return HttpError(400, "INVALID_ARGUMENT", message)


CHECKOUT_NOT_CONFIGURED: Final = "CHECKOUT_NOT_CONFIGURED"


def checkout_not_configured() -> HttpError:
    """POST /checkout on a gateway without a Stripe key (CHECKOUT_ENABLED=false): nothing is sent anywhere."""
    return HttpError(
        503,
        CHECKOUT_NOT_CONFIGURED,
        "checkout is not configured: this gateway runs without STRIPE_API_KEY (set a Stripe test key, sk_test_...)",
    )


def _me_credits_query(query: MultiMapping[str]) -> tuple[int, str]:
    """`limit` (1..TRANSACTIONS_LIMIT_MAX, default TRANSACTIONS_LIMIT_DEFAULT) and `cursor` (opaque)."""
    unknown = sorted(set(query) - ME_CREDITS_QUERY_FIELDS)
    if unknown:
        raise _invalid(f"unknown query parameter {unknown[0][:40]!r}; accepted: cursor, limit")
    return _limit(_single(query, "limit")), _cursor(_single(query, "cursor"))


def _single(query: MultiMapping[str], name: str) -> str | None:
    values = query.getall(name, [])
    if len(values) > 1:
        raise _invalid(f"{name} must be given at most once")
    if values and len(values[0]) > QUERY_VALUE_CHARS_MAX:
        raise _invalid(f"{name} is too long")
    return values[0] if values else None


def _limit(text: str | None) -> int:
    if text is None:
        return TRANSACTIONS_LIMIT_DEFAULT
    if not _LIMIT_PATTERN.match(text) or not 1 <= int(text) <= TRANSACTIONS_LIMIT_MAX:
        raise _invalid(f"limit must be an integer from 1 to {TRANSACTIONS_LIMIT_MAX}")
    return int(text)


def _cursor(text: str | None) -> str:
    if text is None:
        return ""
    if len(text) > CURSOR_CHARS_MAX or not _CURSOR_RE.fullmatch(text):
        raise _invalid("cursor is not a next_cursor this service issued")
    return text


async def _json_object(
    request: web.Request, limit_bytes: int, fields: tuple[str, ...], *, required: tuple[str, ...]
) -> dict[str, Any]:
    """The body as a JSON object with only `fields` and every `required` one; 415/413/400 otherwise."""
    if request.content_type != "application/json":
        raise HttpError(415, "UNSUPPORTED_MEDIA_TYPE", "the body must be application/json")
    raw = await read_body_limited(request, limit_bytes)
    try:
        body = json.loads(raw.decode("utf-8"), object_pairs_hook=_object_without_duplicates, parse_constant=_refuse)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors.
        raise _invalid("the body is not valid UTF-8 JSON") from None
    if not isinstance(body, dict):
        raise _invalid(f"the body must be a JSON object with the fields {', '.join(fields) or '(none)'}")
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise _invalid(f"unknown field {unknown[0][:40]!r}; accepted: {', '.join(fields)}")
    missing = [name for name in required if name not in body]
    if missing:
        raise _invalid(f"{missing[0]} is required")
    return body


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # {"amount": 1, "amount": -1} means what the last parser in the chain decides: refuse it.
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key")
    return result


def _refuse(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _string(body: Mapping[str, Any], name: str) -> str:
    value = body[name]
    if not isinstance(value, str):
        raise _invalid(f"{name} must be a string")
    try:
        value.encode("utf-8")  # A lone surrogate ("\ud800") decodes from JSON but is no Unicode text.
    except UnicodeEncodeError:
        raise _invalid(f"{name} must be valid Unicode text") from None
    return value


def _integer(body: Mapping[str, Any], name: str) -> int:
    value = body[name]
    # A bool is an int in Python and 1.0 is an integral float: JSON-wise neither is an integer here.
    if type(value) is not int:
        raise _invalid(f"{name} must be an integer")
    return value


def _checked(field: str, rule: Callable[[T], T], value: T) -> T:
    """Apply the ledger's own field rule (services.ledger.accounts.validation), as a 400 naming the field."""
    try:
        return rule(value)
    except errors.InvalidArgument as exc:
        raise _invalid(f"{field}: {exc.description}") from None


# --- output -------------------------------------------------------------------------------------


def _enum_names(enum: EnumTypeWrapper, prefix: str) -> tuple[str, ...]:
    names = enum.keys()  # An EnumTypeWrapper is no dict: iterating it is not iterating its names.
    return tuple(name.removeprefix(prefix).lower() for name in names if not name.endswith("_UNSPECIFIED"))


TRANSACTION_KINDS: Final = (*_enum_names(pb.TransactionKind, "TRANSACTION_KIND_"), _UNKNOWN_NAME)
PAYMENT_STATUSES: Final = (*_enum_names(pb.PaymentStatus, "PAYMENT_STATUS_"), _UNKNOWN_NAME)
ACCOUNT_STATUSES: Final = (*_enum_names(pb.AccountStatus, "ACCOUNT_STATUS_"), _UNKNOWN_NAME)
GRANT_CATEGORIES: Final = (*_enum_names(pb.GrantCategory, "GRANT_CATEGORY_"), _UNKNOWN_NAME)


def _enum_name(enum: EnumTypeWrapper, prefix: str, value: int) -> str:
    """`TRANSACTION_KIND_ADMIN_ADJUSTMENT` -> `admin_adjustment`; a value newer than this build -> `unknown`."""
    try:
        name = enum.Name(value)
    except ValueError:
        return _UNKNOWN_NAME
    return _UNKNOWN_NAME if name.endswith("_UNSPECIFIED") else name.removeprefix(prefix).lower()


def account_status_name(value: int) -> str:
    return _enum_name(pb.AccountStatus, "ACCOUNT_STATUS_", value)


def rfc3339(timestamp: Timestamp) -> str:
    """UTC with microseconds and `Z`: `2026-01-31T12:00:00.000000Z`."""
    return timestamp.ToDatetime(tzinfo=UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _time_or_none(message: Any, field: str) -> str | None:
    return rfc3339(getattr(message, field)) if message.HasField(field) else None


def transaction_json(entry: pb.Transaction) -> dict[str, Any]:
    return {
        "id": entry.id,
        "delta": entry.delta,
        "balance_after": entry.balance_after,
        "kind": _enum_name(pb.TransactionKind, "TRANSACTION_KIND_", entry.kind),
        "reason": entry.reason,
        "created_at": _time_or_none(entry, "create_time"),
    }


def grant_json(grant: pb.Grant) -> dict[str, Any]:
    return {
        "id": grant.id,
        "category": _enum_name(pb.GrantCategory, "GRANT_CATEGORY_", grant.category),
        "priority": grant.priority,
        "amount": grant.amount,
        "remaining": grant.remaining,
        "reserved": grant.reserved,
        "expires_at": _time_or_none(grant, "expire_time"),
        "created_at": _time_or_none(grant, "create_time"),
        "payment_id": grant.payment_id or None,
    }


def expiry_sentence(credits: int, expire_time: Timestamp) -> str:
    """`100 credits expire on 2027-01-31` (the UTC date); one credit `expires`."""
    day = expire_time.ToDatetime(tzinfo=UTC).date().isoformat()
    return f"1 credit expires on {day}" if credits == 1 else f"{credits} credits expire on {day}"


def next_expiry_json(balance: pb.GetBalanceResponse) -> dict[str, Any] | None:
    """The soonest expiry of the credits left, as data and as the sentence a page shows; None: nothing expires."""
    if not balance.HasField("next_expire_time") or balance.next_expiring_amount <= 0:
        return None
    return {
        "credits": balance.next_expiring_amount,
        "expires_at": rfc3339(balance.next_expire_time),
        "date": balance.next_expire_time.ToDatetime(tzinfo=UTC).date().isoformat(),
        "text": expiry_sentence(balance.next_expiring_amount, balance.next_expire_time),
    }


def payment_json(payment: pb.Payment) -> dict[str, Any]:
    return {
        "id": payment.id,
        "package_id": payment.package_id,
        "credits": payment.credits,
        "amount_minor": payment.amount_minor,
        "currency": payment.currency_code,
        "status": _enum_name(pb.PaymentStatus, "PAYMENT_STATUS_", payment.status),
        "created_at": _time_or_none(payment, "create_time"),
    }


# --- ledger refusals ----------------------------------------------------------------------------

_CONFLICT_MESSAGES: Final[Mapping[type[errors.LedgerError], str]] = {
    errors.InsufficientCredits: "the account's available balance is smaller than this negative adjustment",
    errors.AccountAnonymized: "the account was anonymized: it takes no new credits, debits, holds or payments",
    errors.IdempotencyKeyReused: "this idempotency_key was used with other parameters; use a new key",
}


def _raise_for_ledger_error(exc: errors.LedgerError, rpc: str, user_id: str) -> NoReturn:
    """Translate a ledger refusal into the edge's answer (see the module docstring); never echo internals."""
    if isinstance(exc, errors.Unavailable):
        log.warning("ledger unavailable", extra={"rpc": rpc})
        raise HttpError(
            503,
            "UNAVAILABLE",
            "the ledger is unavailable; retry later",
            {"Retry-After": str(LEDGER_RETRY_AFTER_SECONDS)},
        ) from exc
    if isinstance(exc, errors.InvalidArgument):
        # The client's mistake (a forged or stale cursor, mostly): a 400 and an INFO line, never a WARNING,
        # which is for what an operator must act on (a fuzzer would otherwise flood the warnings).
        log.info("ledger refused an argument", extra={"rpc": rpc, "field": exc.field})
        field = "cursor" if exc.field == "page_token" else exc.field
        raise _invalid(f"{field}: {exc.description}"[:MESSAGE_CHARS_MAX]) from exc
    for error_class, message in _CONFLICT_MESSAGES.items():
        if isinstance(exc, error_class):
            raise HttpError(409, exc.reason, message) from exc
    # A role missing from the gateway's ledger token, an internal error: the operator's problem.
    log.error("ledger call failed", extra={"rpc": rpc, "reason": exc.reason, "user_id": user_id})
    raise HttpError(500, "INTERNAL", INTERNAL_MESSAGE) from exc
