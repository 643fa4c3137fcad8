"""`creditsctl replay-event EVENT_ID`: read one event from Stripe's API and apply it as the gateway applies a webhook.

The event comes from `GET /v1/events/{id}` (Stripe keeps events 30 days). It then takes the gateway's
own path: services.stripe_bridge.events.translate_event, then services.stripe_bridge.apply.apply_action
with the gateway's charge fetcher (StripeApi.retrieve_charge, for disputes the ledger cannot place).
The ledger records the event id in the same transaction as the effect, so replaying an event that was
delivered before answers `duplicate` and moves nothing, and one that never arrived is applied once.

If the event as the API returns it differs from what a webhook carried (an endpoint pinned to another
API version renders events differently), the ledger refuses the replay of an event it already applied
(`refused`, code `payload_mismatch`, an ALERT log line) and keeps the first version: never twice.

`--dry-run` only translates: it shows what the event would do and calls nothing but Stripe.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any, Final

from services.cli.errors import Refused, Unavailable, UsageError
from services.cli.render import Output, fields
from services.cli.settings import LedgerAccess, StripeAccess
from services.stripe_bridge.api import StripeApi
from services.stripe_bridge.apply import Applied, Outcome, apply_action
from services.stripe_bridge.errors import (
    StripeFailure,
    StripeKeyRefused,
    StripeNotFound,
    StripeSdkFailure,
    StripeUnavailable,
)
from services.stripe_bridge.events import (
    STRIPE_ID_CHARS_MAX,
    Action,
    Dispute,
    Fail,
    Ignore,
    MalformedEvent,
    Refund,
    Refuse,
    Settle,
    action_name,
    translate_event,
)

STRIPE_TIMEOUT_SECONDS: Final = 20.0
STRIPE_NETWORK_RETRIES_MAX: Final = 2
EVENT_ID_PREFIX: Final = "evt_"


def check_event_id(event_id: str) -> str:
    if not event_id.startswith(EVENT_ID_PREFIX) or len(event_id) > STRIPE_ID_CHARS_MAX or not event_id.isascii():
        raise UsageError(f"replay-event: expected a Stripe event id (evt_...), got {event_id[:60]!r}")
    return event_id


async def fetch_event(access: StripeAccess, event_id: str) -> dict[str, Any]:
    """The event exactly as Stripe's API returns it (plain JSON, not SDK objects)."""
    stripe_api = StripeApi(
        access.api_key,
        access.api_base,
        timeout_seconds=STRIPE_TIMEOUT_SECONDS,
        network_retries_max=STRIPE_NETWORK_RETRIES_MAX,
    )
    try:
        event = await stripe_api.retrieve_event(event_id)
    except StripeFailure as exc:
        raise _stripe_error(exc, event_id) from exc
    finally:
        await stripe_api.close()
    if event.get("id") != event_id:
        raise Refused(f"Stripe answered GET /v1/events/{event_id} with something other than that event")
    return event


def _stripe_error(exc: StripeFailure, event_id: str) -> Refused | Unavailable:
    """creditsctl's error for a translated Stripe failure (services.stripe_bridge.errors)."""
    if isinstance(exc, StripeUnavailable):
        return Unavailable(f"Stripe is unavailable ({exc}); try again later")
    if isinstance(exc, StripeNotFound):
        return Refused(f"Stripe has no event {event_id} (the Events API keeps events for 30 days)")
    if isinstance(exc, StripeKeyRefused):
        return Refused(f"Stripe refused STRIPE_API_KEY ({exc}: it needs read access to events)")
    if isinstance(exc, StripeSdkFailure):
        return Refused(f"the stripe SDK failed reading event {event_id} ({exc})")
    return Refused(f"Stripe refused GET /v1/events/{event_id} ({exc})")


def describe_action(action: Action) -> dict[str, Any]:
    """The action's facts, PII-free (no email, no customer id)."""
    described: dict[str, Any] = {"name": action_name(action)}
    if isinstance(action, Settle | Fail | Refund):
        details = action.details
        described.update(
            user_id=details.user_id,
            package_id=details.package_id,
            credits=details.credits,
            amount_minor=details.amount_minor,
            currency=details.currency,
            payment_intent_id=details.payment_intent_id or None,
        )
    if isinstance(action, Refund):
        described["amount_refunded_minor"] = action.amount_refunded_minor
        described["charge_id"] = action.details.charge_id or None
        described["refunds"] = [
            {"refund_id": fact.refund_id, "amount_minor": fact.amount_minor, "status": fact.status.value}
            for fact in action.refunds
        ]
    if isinstance(action, Dispute):
        described.update(
            dispute_id=action.dispute_id,
            dispute_status=action.status.value,
            payment_intent_id=action.payment_intent_id or None,
            charge_id=action.charge_id or None,
        )
    if isinstance(action, Ignore | Refuse):
        described.update(code=action.code, reason=action.reason)
    return described


async def replay_event(
    ledger_access: LedgerAccess | None, stripe_access: StripeAccess, event_id: str, *, dry_run: bool
) -> Output:
    event = await fetch_event(stripe_access, check_event_id(event_id))
    try:
        action = translate_event(event, stripe_access.catalog)
    except MalformedEvent as exc:
        raise Refused(f"Stripe's answer for {event_id} is not a usable event ({exc})") from exc
    applied = None if dry_run else await _apply(ledger_access, stripe_access, action)
    return _output(event, action, applied)


async def _apply(ledger_access: LedgerAccess | None, stripe_access: StripeAccess, action: Action) -> Applied:
    assert ledger_access is not None
    stripe_api = StripeApi(stripe_access.api_key, stripe_access.api_base)
    try:
        async with ledger_access.client() as ledger:
            return await apply_action(action, ledger, stripe_access.catalog, fetch_charge=stripe_api.retrieve_charge)
    except StripeUnavailable as exc:
        raise Unavailable(f"Stripe is unavailable ({exc}); nothing was applied, try again later") from exc
    except StripeFailure as exc:
        raise Refused(f"Stripe refused a lookup the event needs ({exc})") from exc
    finally:
        await stripe_api.close()


def _created(event: Mapping[str, Any]) -> str | None:
    created = event.get("created")
    if not isinstance(created, int) or isinstance(created, bool):
        return None
    moment = datetime.datetime.fromtimestamp(created, tz=datetime.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _output(event: Mapping[str, Any], action: Action, applied: Applied | None) -> Output:
    described = describe_action(action)
    document: dict[str, Any] = {
        "event_id": action.source.event_id,
        "event_type": action.source.event_type,
        "event_create_time": _created(event),
        "dry_run": applied is None,
        "action": described,
        "outcome": None if applied is None else applied.outcome.value,
        "code": (applied.code if applied is not None else described.get("code")) or None,
        "credits_delta": None if applied is None else applied.credits_delta,
    }
    shown = [f"{name}={value}" for name, value in described.items() if name != "name" and value is not None]
    lines = fields(
        [
            ("event", f"{document['event_id']} ({document['event_type']}, created {document['event_create_time']})"),
            ("action", f"{described['name']} " + " ".join(shown)),
            ("outcome", "dry run: nothing applied" if applied is None else applied.outcome.value),
            ("code", document["code"]),
            ("credits moved", document["credits_delta"]),
        ]
    )
    output = Output(document, lines)
    if applied is not None and applied.outcome is Outcome.REFUSED:
        output.exit_code = Refused.exit_code
        reason = f": {described['reason']}" if "reason" in described else ""
        output.complaint = f"replay-event: the event was refused ({applied.code}){reason}; nothing was credited"
    return output
