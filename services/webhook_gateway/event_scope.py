"""Which signed Stripe events belong to this deployment: its account and its mode (docs/stripe-webhooks.md).

A webhook endpoint can receive more than its own account's events: `stripe listen` forwards Connect events to
the same URL by default, a platform's endpoint receives its connected accounts' events, and one signing secret
pasted into the wrong environment brings live events to a test deployment (or the reverse). Such an event is
signed and well formed, yet its money is not this deployment's: it is *foreign*. The gateway records it
(RecordEvent, REFUSED, with the code below), answers 200 so that Stripe stops delivering it, counts it in
`webhook_foreign_events_total{reason}`, and never applies it.

    the event's                                   setting                          verdict
    livemode differs from the API key's mode      STRIPE_API_KEY (sk_live_/rk_live_  foreign: livemode_mismatch
                                                  live; sk_test_/rk_test_ or no key
                                                  test)
    account (Connect) / context names an account  STRIPE_ACCOUNT_ID                 its own
      equal to the account served
    account / context names any other account     STRIPE_CONNECT_EVENTS=false       foreign: connected_account
                                                  STRIPE_CONNECT_EVENTS=true        its own
    no account and no context                     -                                its own (the endpoint's account)

Stripe puts `account` on a snapshot event from a connected account, and `context` on thin events (and on some
snapshot events) for the same purpose: an account id, or a path of them (`acct_parent/acct_child`) whose last
one is the event's account; both, when present, must agree. `livemode` is on every event Stripe
sends: an event without a boolean `livemode` is not Stripe's shape and is refused as malformed (400).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from services.webhook_gateway.config import GatewaySettings

FOREIGN_LIVEMODE: Final = "livemode_mismatch"
FOREIGN_ACCOUNT: Final = "connected_account"
FOREIGN_CODES: Final = (FOREIGN_LIVEMODE, FOREIGN_ACCOUNT)
# An account id (`acct_...`) or a Stripe context path of them (`acct_.../acct_...`); printable, bounded.
ACCOUNT_REFERENCE_CHARS_MAX: Final = 255
_ACCOUNT_REFERENCE: Final = re.compile(r"[A-Za-z0-9_/]+")


class MalformedScope(ValueError):
    """`livemode`, `account` or `context` is missing or of a shape Stripe never sends."""


@dataclass(frozen=True, slots=True)
class EventScope:
    """The events this deployment applies: one mode, its own account, and connected accounts when allowed."""

    livemode: bool
    account_id: str | None
    connect_events: bool

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> EventScope:
        return cls(settings.stripe_livemode, settings.stripe_account_id, settings.stripe_connect_events_enabled)


@dataclass(frozen=True, slots=True)
class Foreign:
    """Why an event is not this deployment's: a code of FOREIGN_CODES and a sentence without PII."""

    code: str
    reason: str


def foreign(event: Mapping[str, Any], scope: EventScope) -> Foreign | None:
    """None when the event is this deployment's to apply; MalformedScope when its scope fields are not Stripe's."""
    livemode = event.get("livemode")
    if not isinstance(livemode, bool):
        raise MalformedScope("livemode missing or not a boolean")
    if livemode != scope.livemode:
        mode, expected = _mode(livemode), _mode(scope.livemode)
        return Foreign(FOREIGN_LIVEMODE, f"a {mode} event reached a {expected} deployment (STRIPE_API_KEY's mode)")
    account = _originating_account(event)
    if account is None or account == scope.account_id or scope.connect_events:
        return None
    return Foreign(FOREIGN_ACCOUNT, f"an event of account {account} (STRIPE_ACCOUNT_ID and STRIPE_CONNECT_EVENTS)")


def _originating_account(event: Mapping[str, Any]) -> str | None:
    """The account the event comes from: `account`, else the last account of the `context` path."""
    account = _account_reference(event, "account")
    context = _account_reference(event, "context")
    context_account = None if context is None else context.rsplit("/", 1)[-1]
    if account is not None and context_account is not None and account != context_account:
        raise MalformedScope("account and context name different accounts")
    return account if account is not None else context_account


def _account_reference(event: Mapping[str, Any], key: str) -> str | None:
    value = event.get(key)
    if value is None:
        return None
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= ACCOUNT_REFERENCE_CHARS_MAX
        or not _ACCOUNT_REFERENCE.fullmatch(value)
    ):
        raise MalformedScope(f"{key} is not an account reference")
    return value


def _mode(livemode: bool) -> str:
    return "live-mode" if livemode else "test-mode"
