"""The Stripe stand-in: the fake Stripe API plus hosted Checkout, refunds and signed webhook deliveries.

A local run (``scripts/suite.py --stripe-stand-in``) and the browser test (tests/examples/) use it in
place of Stripe, so that the whole purchase runs without a Stripe account:

    browser                    stand-in (this module)                    webhook gateway
    "Buy" -> app -> gateway -> POST /v1/checkout/sessions  (url = /c/pay/<id> here)
    GET  /c/pay/<id>          the hosted Checkout page: pack, amount, e-mail, Pay
    POST /c/pay/<id>          the card pays: session complete, charge and payment intent made,
                              303 to the session's success_url         <- signed events, posted in
                                                                          the background, as Stripe does
    POST /v1/refunds          Stripe's refund API (charge or payment_intent, optional amount)
                                                                       <- charge.refunded, refund.created

It serves everything ``tests.fakes.stripe_api`` serves (same state class, same routes) and adds the
routes above. Events come from the fake's state changes, in the fixtures' shapes (``stripe_events``):
a card payment through Checkout sends ``payment_intent.created``, ``charge.succeeded``,
``payment_intent.succeeded`` and ``checkout.session.completed`` (not the later ``charge.updated``
that attaches the balance transaction: the fake's charges carry it from the start); a refund sends
``charge.refunded`` (cumulative ``amount_refunded``) and, since API version 2024-10-28.acacia,
``refund.created`` for charge refunds too. Stripe does not promise any order; deliveries here go one
at a time in the order the events were made.

Each delivery is signed with the endpoint's secret exactly as Stripe signs (``stripe_events.sign``)
and retried on a non-2xx answer or a connection error, at most ``DELIVERY_ATTEMPTS_MAX`` times
(Stripe retries for days; a local run does not need that). ``POST /_stand_in/deliveries``
``{"paused": true|false}`` (with the API key) holds deliveries back and releases them: the browser
test uses it to see the "payment pending" state before the webhook lands.

    python -m tests.fakes.stripe_checkout_page --listen 127.0.0.1:12111 \\
        --webhook-url http://127.0.0.1:8080/webhooks/stripe
    (STRIPE_WEBHOOK_SECRET: whsec_..., STRIPE_API_KEY: sk_test_... from the environment)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import html
import json
import logging
import os
import signal
import sys
from collections import deque
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import parse_qsl

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from . import stripe_api, stripe_events
from .stripe_api import FakeStripe, FakeStripeError, invalid_request
from .stripe_events import JsonObject

log = logging.getLogger("stripe_stand_in")

CHECKOUT_PAGE_PATH: Final = "/c/pay/{session_id}"
REFUNDS_PATH: Final = "/v1/refunds"
DELIVERIES_CONTROL_PATH: Final = "/_stand_in/deliveries"
CHECKOUT_SESSION_ID_PLACEHOLDER: Final = "{CHECKOUT_SESSION_ID}"
DELIVERY_ATTEMPTS_MAX: Final = 5
DELIVERY_RETRY_DELAY_SECONDS: Final = 0.5
DELIVERY_RETRY_DELAY_SECONDS_MAX: Final = 4.0
DELIVERY_TIMEOUT_SECONDS: Final = 10.0  # Stripe's own webhook timeout is longer; a local gateway answers fast.
OUTBOX_EVENTS_MAX: Final = 10_000
EMAIL_CHARS_MAX: Final = 254
CONTROL_BODY_BYTES_MAX: Final = 1024
LISTEN_DEFAULT: Final = "127.0.0.1:12111"  # stripe-mock's port: the one people expect a local Stripe on.
REFUND_REASONS: Final = frozenset({"duplicate", "fraudulent", "requested_by_customer"})

_REFUND_CREATE_SCHEMA: Final[dict[str, Any]] = {
    "charge": stripe_api.STRING,
    "payment_intent": stripe_api.STRING,
    "amount": stripe_api.INTEGER,
    "reason": stripe_api.STRING,
    "metadata": stripe_api.METADATA,
}


class StandInStripe(FakeStripe):
    """The fake's state, with hosted-Checkout URLs on this server and every new event queued for delivery."""

    def __init__(self, api_key: str, *, public_url: str) -> None:
        super().__init__(api_key)
        self.public_url = public_url.rstrip("/")
        self.outbox: deque[JsonObject] = deque(maxlen=OUTBOX_EVENTS_MAX)
        self.outbox_changed = asyncio.Event()

    def create_session(self, **arguments: Any) -> JsonObject:
        session = super().create_session(**arguments)
        url = self.public_url + CHECKOUT_PAGE_PATH.format(session_id=session["id"])
        with self._lock:
            stored = self._sessions.get(session["id"])
            assert stored is not None
            stored["url"] = url
        session["url"] = url
        return session

    def complete_session(self, session_id: str, **arguments: Any) -> JsonObject:
        """The fake's payment, plus the ``payment_intent.created`` Stripe sends first: Checkout creates the
        payment intent when the customer confirms (API versions since 2022-08-01), with no charge yet."""
        with self._lock:
            first = len(self.outbox)
            session = super().complete_session(session_id, **arguments)
            intent = self.payment_intent(session["payment_intent"])
            intent.update(status="requires_payment_method", amount_received=0, latest_charge=None)
            created = stripe_events.event("payment_intent.created", intent, created_seconds=self.now_seconds())
            assert len(self.outbox) < OUTBOX_EVENTS_MAX, "the outbox is full: deliveries have been paused too long"
            self.outbox.insert(first, FakeStripe.add_event(self, created))  # Recorded, and delivered first.
            return session

    def add_event(self, event: Mapping[str, Any], *, delivery_success: bool = True) -> JsonObject:
        stored = super().add_event(event, delivery_success=delivery_success)
        self.outbox.append(stored)
        self.outbox_changed.set()
        return stored

    def create_refund(self, charge_id: str, *, amount_minor: int | None, reason: str | None) -> JsonObject:
        """Refund part or all of a charge (``charge.refunded`` then ``refund.created``, as the fake sends them);
        the refund object, as ``POST /v1/refunds`` answers it."""
        with self._lock:
            self.refund_charge(charge_id, amount_minor=amount_minor, reason=reason)
            return self.latest_refund_of(charge_id)

    def charge_of_payment_intent(self, payment_intent_id: str) -> str:
        with self._lock:
            intent = self.payment_intent(payment_intent_id)
        charge_id = intent.get("latest_charge")
        if not charge_id:
            raise invalid_request(
                f"PaymentIntent {payment_intent_id} has no successful charge to refund.",
                param="payment_intent",
                code="charge_not_refundable",
            )
        return str(charge_id)


STATE_KEY: Final = web.AppKey("stand_in_state", StandInStripe)


class WebhookDelivery:
    """Posts queued events, signed, to the gateway's webhook URL, one at a time, unless paused."""

    def __init__(self, state: StandInStripe, webhook_url: str, webhook_secret: str) -> None:
        self.state = state
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self.resumed = asyncio.Event()
        self.resumed.set()
        self.delivered_count = 0
        self.failed_count = 0

    @property
    def paused(self) -> bool:
        return not self.resumed.is_set()

    def set_paused(self, paused: bool) -> None:
        if paused:
            self.resumed.clear()
        else:
            self.resumed.set()

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=DELIVERY_TIMEOUT_SECONDS)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                await self.resumed.wait()
                if not self.state.outbox:
                    self.state.outbox_changed.clear()
                    await self.state.outbox_changed.wait()
                    continue
                await self._deliver(session, self.state.outbox.popleft())

    async def _deliver(self, session: aiohttp.ClientSession, event: JsonObject) -> None:
        delay_seconds = DELIVERY_RETRY_DELAY_SECONDS
        for attempt in range(1, DELIVERY_ATTEMPTS_MAX + 1):
            delivery = stripe_events.signed_delivery(event, self.webhook_secret)
            try:
                async with session.post(self.webhook_url, data=delivery.body, headers=delivery.headers) as response:
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                status, failure = None, type(exc).__name__
            else:
                failure = f"HTTP {status}"
            if status is not None and 200 <= status < 300:
                self.delivered_count += 1
                log.info("delivered %s %s (HTTP %s)", event["type"], event["id"], status)
                return
            log.warning("delivery of %s %s failed: %s (attempt %d)", event["type"], event["id"], failure, attempt)
            await asyncio.sleep(delay_seconds)
            delay_seconds = min(delay_seconds * 2, DELIVERY_RETRY_DELAY_SECONDS_MAX)
        self.failed_count += 1
        log.error("gave up delivering %s %s after %d attempts", event["type"], event["id"], DELIVERY_ATTEMPTS_MAX)


DELIVERY_KEY: Final = web.AppKey("stand_in_delivery", WebhookDelivery)


# --- the hosted Checkout page ------------------------------------------------------------------------


def format_amount(amount_minor: int, currency: str) -> str:
    """``500, "eur"`` -> ``EUR 5.00`` (two-decimal currencies, which is what the catalog may hold here)."""
    whole, cents = divmod(amount_minor, 100)
    return f"{currency.upper()} {whole:,}.{cents:02d}"


def _page(title: str, body: str, *, status: int = 200) -> web.Response:
    document = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem;color:#1a1f36}"
        ".badge{background:#ffde92;border-radius:4px;padding:2px 6px;font-size:.75rem}"
        "button{background:#635bff;color:#fff;border:0;border-radius:6px;padding:.8rem;width:100%;font-size:1rem}"
        "input{width:100%;padding:.5rem;margin:.25rem 0 1rem;box-sizing:border-box}"
        "</style></head><body>"
        f"{body}</body></html>"
    )
    return web.Response(text=document, status=status, content_type="text/html", headers={"Cache-Control": "no-store"})


def _session_or_none(state: StandInStripe, session_id: str) -> JsonObject | None:
    try:
        return state.session(session_id)
    except FakeStripeError:
        return None


async def checkout_page(request: web.Request) -> web.Response:
    """GET /c/pay/{session_id}: what the customer sees on Stripe's hosted Checkout."""
    state = request.app[STATE_KEY]
    session = _session_or_none(state, request.match_info["session_id"])
    if session is None or session["status"] != "open":
        return _page("Checkout", "<h1>This checkout session is no longer available</h1>", status=404)
    package_id = session["metadata"].get("package_id", "")
    amount = format_amount(session["amount_total"], session["currency"])
    cancel = f"<p><a href='{html.escape(session['cancel_url'])}'>Cancel</a></p>" if session["cancel_url"] else ""
    body = (
        "<p><span class='badge'>TEST MODE: the credits suite's Stripe stand-in</span></p>"
        f"<h1>Pay {html.escape(amount)}</h1><p>Credit pack <strong>{html.escape(package_id)}</strong></p>"
        "<form method='post'>"
        "<label>Email <input type='email' name='email' value='customer@example.com' required></label>"
        "<label>Card <input value='4242 4242 4242 4242' disabled></label>"
        f"<button type='submit'>Pay {html.escape(amount)}</button></form>{cancel}"
    )
    return _page("Checkout", body)


async def pay(request: web.Request) -> web.Response:
    """POST /c/pay/{session_id}: the card payment succeeds; the customer goes back to success_url."""
    state = request.app[STATE_KEY]
    session_id = request.match_info["session_id"]
    session = _session_or_none(state, session_id)
    if session is None or session["status"] != "open":
        return _page("Checkout", "<h1>This checkout session is no longer available</h1>", status=404)
    form = await request.post()
    email = str(form.get("email", "")).strip()
    if not email or len(email) > EMAIL_CHARS_MAX or "@" not in email:
        return _page("Checkout", "<h1>Enter a valid email address</h1>", status=400)
    state.complete_session(session_id, customer_email=email)
    success_url = str(session["success_url"]).replace(CHECKOUT_SESSION_ID_PLACEHOLDER, session_id)
    raise web.HTTPSeeOther(success_url)


# --- refunds and delivery control -----------------------------------------------------------------


async def create_refund(request: web.Request) -> web.Response:
    """POST /v1/refunds (Stripe's API, form-encoded): refund a charge or a payment intent's charge."""
    state = request.app[STATE_KEY]
    pairs = parse_qsl(await request.text(), keep_blank_values=True)
    params = stripe_api.check_params(stripe_api.parse_params(pairs), _REFUND_CREATE_SCHEMA, "")
    if ("charge" in params) == ("payment_intent" in params):
        raise invalid_request("Provide exactly one of charge and payment_intent.", param="charge")
    reason = params.get("reason")
    if reason is not None and reason not in REFUND_REASONS:
        raise invalid_request(f"Invalid reason: must be one of {', '.join(sorted(REFUND_REASONS))}", param="reason")
    charge_id = params.get("charge") or state.charge_of_payment_intent(params["payment_intent"])
    charge = state.charge(charge_id)  # 404 resource_missing for an unknown charge, as Stripe answers.
    if charge["status"] != "succeeded":
        raise invalid_request(f"Charge {charge_id} has not succeeded.", param="charge", code="charge_not_refundable")
    refundable_minor = charge["amount"] - charge["amount_refunded"]
    amount_minor = params.get("amount", refundable_minor)
    if refundable_minor == 0:
        raise invalid_request(f"Charge {charge_id} has already been refunded.", code="charge_already_refunded")
    if not 0 < amount_minor <= refundable_minor:
        message = f"Refund amount ({amount_minor}) is greater than unrefunded amount on charge ({refundable_minor})"
        raise invalid_request(message, param="amount", code="amount_too_large")
    refund = state.create_refund(charge_id, amount_minor=amount_minor, reason=reason)
    return web.json_response(refund)


async def control_deliveries(request: web.Request) -> web.Response:
    """POST /_stand_in/deliveries {"paused": bool}: hold or release webhook deliveries (not a Stripe API)."""
    delivery = request.app[DELIVERY_KEY]
    raw = await request.read()  # Already read (and bounded) by the fake's middleware, which logs each request.
    try:
        body = json.loads(raw) if len(raw) <= CONTROL_BODY_BYTES_MAX else None
    except ValueError:
        body = None
    if not isinstance(body, dict) or set(body) != {"paused"} or not isinstance(body["paused"], bool):
        raise invalid_request('The body must be {"paused": true} or {"paused": false}.', param="paused")
    delivery.set_paused(body["paused"])
    answer = {"paused": delivery.paused, "queued": len(delivery.state.outbox), "failed": delivery.failed_count}
    return web.json_response(answer)


def create_app(state: StandInStripe, delivery: WebhookDelivery) -> web.Application:
    """The fake's Stripe API plus the stand-in's routes."""
    app = stripe_api.create_app(state)
    app[STATE_KEY] = state
    app[DELIVERY_KEY] = delivery
    # The fake's middleware demands the API key on every request; the hosted page is opened by a browser
    # without one (on Stripe it is another host, checkout.stripe.com), so it goes around that middleware.
    assert len(app.middlewares) == 1, "tests.fakes.stripe_api installs one middleware"
    app.middlewares[0] = _except_hosted_pages(app.middlewares[0])
    refunds_served = any(
        route.method == "POST" and route.resource is not None and route.resource.canonical == REFUNDS_PATH
        for route in app.router.routes()
    )
    if not refunds_served:  # Another module may teach the fake refunds one day: its route wins.
        app.router.add_post(REFUNDS_PATH, create_refund)
    app.router.add_post(DELIVERIES_CONTROL_PATH, control_deliveries)
    app.router.add_get(CHECKOUT_PAGE_PATH, checkout_page)
    app.router.add_post(CHECKOUT_PAGE_PATH, pay)
    return app


def _except_hosted_pages(api_middleware: Middleware) -> Middleware:
    hosted_prefix = CHECKOUT_PAGE_PATH.split("{")[0]

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(hosted_prefix):
            return await handler(request)
        return await api_middleware(request, handler)

    return middleware


# --- running it ---------------------------------------------------------------------------------------


def _host_port(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SystemExit(f"--listen must be host:port, got {listen!r}")
    return host, int(port)


def _environment_secret(name: str, prefix: str) -> str:
    value = os.environ.get(name, "")
    if not value.startswith(prefix):
        raise SystemExit(f"{name} must be set and start with {prefix}")
    return value.split(",")[0]  # During a rotation Stripe signs with every live secret; the newest is enough.


async def serve(listen: str, webhook_url: str, api_key: str, webhook_secret: str) -> None:
    host, port = _host_port(listen)
    state = StandInStripe(api_key, public_url=f"http://{host}:{port}")
    delivery = WebhookDelivery(state, webhook_url, webhook_secret)
    runner = web.AppRunner(create_app(state, delivery), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    # A test key of a fake holding no money: printed so that a developer can call it (refunds) at once.
    print(f"stripe stand-in on http://{host}:{port} (API key {api_key}), delivering to {webhook_url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    deliveries = asyncio.create_task(delivery.run())
    try:
        await stop.wait()
    finally:
        deliveries.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await deliveries
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default=LISTEN_DEFAULT, help=f"host:port to serve on ({LISTEN_DEFAULT})")
    parser.add_argument("--webhook-url", required=True, help="where events are posted (the gateway's webhook URL)")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="stripe stand-in: %(message)s", stream=sys.stderr)
    api_key = _environment_secret("STRIPE_API_KEY", "sk_test_")
    webhook_secret = _environment_secret("STRIPE_WEBHOOK_SECRET", "whsec_")
    asyncio.run(serve(arguments.listen, arguments.webhook_url, api_key, webhook_secret))
    return 0


if __name__ == "__main__":
    sys.exit(main())
