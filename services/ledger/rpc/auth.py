"""Caller authentication and per-RPC roles (SPEC §3), checked per call by services/ledger/rpc/calls.py.

Every call carries `authorization: Bearer <token>`. Tokens map to callers and callers to roles;
each RPC names the roles allowed, and anything not named is denied. The token is hashed and
compared with every caller's hash in constant time, so timing tells nothing about tokens.
The standard health and reflection services are open: probes and tools carry no token.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
from dataclasses import dataclass

from services.ledger import errors

ROLES = frozenset({"reader", "spender", "payments", "reconciler", "admin"})
SERVICE_PREFIX = "/credits.ledger.v1.LedgerService/"
OPEN_SERVICE_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
TOKEN_BYTES_MAX = 4096

_READ = frozenset({"reader", "admin", "reconciler"})
_PAYMENT_WRITE = frozenset({"payments", "reconciler"})
_PAYMENT_READ = frozenset({"payments", "reconciler", "admin", "reader"})
_HOLDS_READ = frozenset({"spender", "reader", "admin"})

# Default deny: an RPC missing from this table is refused for every caller.
ROLES_BY_METHOD: dict[str, frozenset[str]] = {
    "GetBalance": frozenset({"reader", "spender", "admin", "payments", "reconciler"}),
    "Credit": frozenset({"payments", "admin"}),
    "Debit": frozenset({"spender"}),
    "ListTransactions": _READ,
    "AdminAdjust": frozenset({"admin"}),
    "Anonymize": frozenset({"admin"}),
    "OpenPayment": frozenset({"payments"}),
    "SettlePayment": _PAYMENT_WRITE,
    "FailPayment": _PAYMENT_WRITE,
    "ApplyRefund": _PAYMENT_WRITE,
    "ApplyDispute": _PAYMENT_WRITE,
    "RecordEvent": _PAYMENT_WRITE,
    "GetPayment": _PAYMENT_READ,
    "ListPayments": _PAYMENT_READ,
    "ReserveCredits": frozenset({"spender"}),
    "CaptureHold": frozenset({"spender"}),
    "ReleaseHold": frozenset({"spender"}),
    "GetHold": _HOLDS_READ,
    "ListHolds": _HOLDS_READ,
    "ExpirePayment": _PAYMENT_WRITE,
    "SettlePaymentManually": frozenset({"admin"}),
    # Each posting also needs its own kind's role (POSTING_ROLES), checked by the handler.
    "PostBatch": frozenset({"spender", "payments", "admin"}),
    "SettlePaymentBatch": _PAYMENT_WRITE,
}

current_caller: contextvars.ContextVar[str] = contextvars.ContextVar("ledger_caller", default="-")
current_roles: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar("ledger_roles", default=frozenset())


@dataclass(frozen=True, slots=True)
class Caller:
    name: str
    token_sha256: bytes
    roles: frozenset[str]

    @classmethod
    def from_token(cls, name: str, token: str, roles: frozenset[str]) -> Caller:
        return cls(name=name, token_sha256=hashlib.sha256(token.encode()).digest(), roles=roles)


class Authenticator:
    def __init__(self, callers: tuple[Caller, ...]) -> None:
        self.callers = callers

    def caller_for(self, authorization: str | None) -> Caller:
        if not authorization:
            raise errors.Unauthenticated("missing authorization metadata (Bearer token)")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token or len(token) > TOKEN_BYTES_MAX:
            raise errors.Unauthenticated("authorization must be 'Bearer <token>'")
        digest = hashlib.sha256(token.strip().encode()).digest()
        found: Caller | None = None
        for caller in self.callers:  # every caller compared: no early exit on a match
            if hmac.compare_digest(digest, caller.token_sha256):
                found = caller
        if found is None:
            raise errors.Unauthenticated("unknown caller token")
        return found

    def authorize(self, method: str, authorization: str | None) -> Caller:
        caller = self.caller_for(authorization)
        allowed = ROLES_BY_METHOD.get(method.removeprefix(SERVICE_PREFIX), frozenset())
        if not method.startswith(SERVICE_PREFIX) or not caller.roles & allowed:
            raise errors.PermissionDenied(f"caller {caller.name!r} may not call {method.rsplit('/', 1)[-1]}")
        return caller
