"""The ledger's exception tree, shared by the server (to answer) and the client (to raise).

    LedgerError                      any refusal; carries a gRPC code and a stable reason
    ├── InvalidArgument              INVALID_ARGUMENT: a field violates its rule
    ├── NotFound                     NOT_FOUND: the payment or hold does not exist
    ├── FailedPrecondition           FAILED_PRECONDITION: the state forbids it
    │   ├── InsufficientCredits      the available balance is smaller than the amount
    │   ├── AccountAnonymized        the account was erased: no new credit, debit, hold or payment
    │   │   └── PurchaseOnAnonymizedAccount  a purchase settled for it: paid, not credited (refund it)
    │   ├── HoldNotActive            the hold was captured, released or expired
    │   └── TooManyActiveHolds       the user has as many active holds as allowed
    ├── AlreadyExists                ALREADY_EXISTS: a key or id was used with other data
    │   ├── IdempotencyKeyReused     the same idempotency key with different parameters
    │   └── EventPayloadMismatch     the same Stripe event id with different data
    ├── BatchAborted                 ABORTED: an atomic batch's item not applied, another was refused
    ├── Unauthenticated              UNAUTHENTICATED: no or unknown caller token
    ├── PermissionDenied             PERMISSION_DENIED: the caller's roles do not allow it
    ├── Unavailable                  UNAVAILABLE: the database (or ledger) cannot be reached
    └── Internal                     INTERNAL: a bug; details are logged, never sent

The reason is the stable UPPER_SNAKE token sent in google.rpc.ErrorInfo; metadata holds
string facts for the caller (for example the balance and the requested amount).
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc

ERROR_DOMAIN = "credits.ledger.v1"


class LedgerError(Exception):
    """A refusal with a gRPC status code, a stable reason and string metadata."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    reason: str = "UNKNOWN"

    def __init__(self, message: str, metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.metadata: dict[str, str] = dict(metadata or {})


class InvalidArgument(LedgerError):
    """A request field violates its rule; `field` names it."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}", {"field": field})
        self.field = field
        self.description = description


class NotFound(LedgerError):
    """The payment or hold asked for does not exist."""

    code = grpc.StatusCode.NOT_FOUND
    reason = "NOT_FOUND"


class FailedPrecondition(LedgerError):
    """The current state forbids the request."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"


class InsufficientCredits(FailedPrecondition):
    """The available balance is smaller than the amount asked for."""

    reason = "INSUFFICIENT_CREDITS"


# What an anonymized account refuses, said to the caller (refunds and lost disputes still claw back).
ANONYMIZED_ACCOUNT_MESSAGE = (
    "the account was anonymized: it takes no new credits, debits, holds or payments "
    "(refunds and lost disputes of its earlier purchases still take credits back)"
)


class AccountAnonymized(FailedPrecondition):
    """The account was anonymized: it takes no new credit, debit, hold or payment (refunds and lost
    disputes of its earlier purchases still claw back: that money moved)."""

    reason = "ACCOUNT_ANONYMIZED"


class PurchaseOnAnonymizedAccount(AccountAnonymized):
    """A paid purchase for an anonymized account: recorded PAID, not credited, the event refused; refund it."""

    reason = "PURCHASE_ON_ANONYMIZED_ACCOUNT"


class HoldNotActive(FailedPrecondition):
    """The hold was already captured, released or has expired."""

    reason = "HOLD_NOT_ACTIVE"


class TooManyActiveHolds(FailedPrecondition):
    """The user already has as many active holds as allowed; capture or release some first."""

    reason = "TOO_MANY_ACTIVE_HOLDS"


class AlreadyExists(LedgerError):
    """A key or id was already used with other data."""

    code = grpc.StatusCode.ALREADY_EXISTS
    reason = "ALREADY_EXISTS"


class IdempotencyKeyReused(AlreadyExists):
    """The idempotency key was used before with different parameters."""

    reason = "IDEMPOTENCY_KEY_REUSED"


class EventPayloadMismatch(AlreadyExists):
    """The Stripe event id was processed before with different data."""

    reason = "EVENT_PAYLOAD_MISMATCH"


class BatchAborted(LedgerError):
    """An item of an atomic batch was not applied because another item (metadata `posting_index`) was refused."""

    code = grpc.StatusCode.ABORTED
    reason = "BATCH_ABORTED"


class Unauthenticated(LedgerError):
    """The call carries no caller token, or an unknown one."""

    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


class PermissionDenied(LedgerError):
    """The caller's roles do not allow this RPC."""

    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"


class Unavailable(LedgerError):
    """The database (or, for a client, the ledger) cannot be reached; retry with the same key."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "UNAVAILABLE"


class Internal(LedgerError):
    """An unexpected failure; the details are in the server's log."""

    code = grpc.StatusCode.INTERNAL
    reason = "INTERNAL"


def _all_subclasses(cls: type[LedgerError]) -> list[type[LedgerError]]:
    found: list[type[LedgerError]] = [cls]
    for sub in cls.__subclasses__():
        found.extend(_all_subclasses(sub))
    return found


ERROR_CLASS_BY_REASON: dict[str, type[LedgerError]] = {cls.reason: cls for cls in _all_subclasses(LedgerError)}
ERROR_CLASS_BY_CODE: dict[grpc.StatusCode, type[LedgerError]] = {
    cls.code: cls for cls in reversed(_all_subclasses(LedgerError)) if cls.reason == cls.code.name
}


def error_from_status(code: grpc.StatusCode, reason: str, message: str, metadata: Mapping[str, str]) -> LedgerError:
    """Rebuilds the most specific LedgerError for a status received by a client."""
    cls = ERROR_CLASS_BY_REASON.get(reason) or ERROR_CLASS_BY_CODE.get(code) or LedgerError
    if cls is InvalidArgument:
        field = metadata.get("field", "")
        error: LedgerError = InvalidArgument(field, message.removeprefix(f"{field}: "))
    else:
        error = cls.__new__(cls)
        LedgerError.__init__(error, message, metadata)
    if cls is LedgerError:
        error.code = code
        error.reason = reason or code.name
    return error
