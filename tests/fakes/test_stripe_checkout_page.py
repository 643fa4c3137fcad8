"""The Stripe stand-in: hosted Checkout, refunds and signed deliveries, driven as a browser and the SDK would.

The stand-in serves on a real port; a small aiohttp receiver on another port plays the gateway's webhook
endpoint and checks every delivery with the stripe SDK's own signature verification.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

import aiohttp
import pytest
import stripe
from aiohttp import web
from stripe.params import RefundCreateParams

from .stripe_checkout_page import StandInStripe, WebhookDelivery, create_app

API_KEY = "sk_test_stand_in_tests_000000"
WEBHOOK_SECRET = "whsec_stand_in_tests_0000000000000000"
TOLERANCE_SECONDS = 300
EVENTS_WAIT_SECONDS_MAX = 10.0  # A bound on waiting for deliveries, not a timing assertion.
CARD_PAYMENT_EVENT_TYPES = [
    "payment_intent.created",
    "charge.succeeded",
    "payment_intent.succeeded",
    "checkout.session.completed",
]


@dataclass
class Receiver:
    """The webhook endpoint: verified events in arrival order; answers 500 to the first `fail_first` posts."""

    url: str = ""
    events: list[stripe.Event] = field(default_factory=list)
    posts_count: int = 0
    fail_first: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.posts_count += 1
        if self.posts_count <= self.fail_first:
            return web.Response(status=500)
        body = await request.read()
        event = stripe.Webhook.construct_event(
            body.decode("utf-8"), request.headers["Stripe-Signature"], WEBHOOK_SECRET, TOLERANCE_SECONDS
        )
        self.events.append(event)
        self.arrived.set()
        return web.json_response({"received": True})

    async def wait_for(self, count: int) -> list[str]:
        async with asyncio.timeout(EVENTS_WAIT_SECONDS_MAX):
            while len(self.events) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return [event.type for event in self.events]


@dataclass
class StandIn:
    base_url: str
    state: StandInStripe
    delivery: WebhookDelivery
    receiver: Receiver
    http: aiohttp.ClientSession
    sdk: stripe.StripeClient

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {API_KEY}"}

    async def open_session(self, package_id: str = "small", amount_minor: int = 500) -> Any:
        metadata = {"user_id": "user_1", "package_id": package_id}
        return await self.sdk.v1.checkout.sessions.create_async(
            {
                "mode": "payment",
                "line_items": [
                    {
                        "quantity": 1,
                        "price_data": {
                            "currency": "eur",
                            "unit_amount": amount_minor,
                            "product_data": {"name": "100 credits"},
                        },
                    }
                ],
                "client_reference_id": "user_1",
                "metadata": metadata,
                "payment_intent_data": {"metadata": metadata},
                "success_url": "http://app.test/credits?checkout=success&session_id={CHECKOUT_SESSION_ID}",
                "cancel_url": "http://app.test/credits?checkout=cancelled",
            }
        )

    async def pay(self, url: str, email: str = "buyer@example.com") -> aiohttp.ClientResponse:
        return await self.http.post(url, data={"email": email}, allow_redirects=False)

    async def paid_session(self) -> Any:
        session = await self.open_session()
        async with await self.pay(session.url) as response:
            assert response.status == 303
        return await self.sdk.v1.checkout.sessions.retrieve_async(session.id)


async def _serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    await web.SockSite(runner, listener).start()
    return runner, listener.getsockname()[1]


@pytest.fixture
async def stand_in() -> AsyncIterator[StandIn]:
    receiver = Receiver()
    receiver_app = web.Application()
    receiver_app.router.add_post("/webhooks/stripe", receiver.handle)
    receiver_runner, receiver_port = await _serve(receiver_app)
    receiver.url = f"http://127.0.0.1:{receiver_port}/webhooks/stripe"
    state = StandInStripe(API_KEY, public_url="http://placeholder")
    delivery = WebhookDelivery(state, receiver.url, WEBHOOK_SECRET)
    runner, port = await _serve(create_app(state, delivery))
    state.public_url = f"http://127.0.0.1:{port}"
    deliveries = asyncio.create_task(delivery.run())
    http_client = stripe.AIOHTTPClient()
    sdk = stripe.StripeClient(
        API_KEY, base_addresses={"api": state.public_url}, http_client=http_client, max_network_retries=0
    )
    async with aiohttp.ClientSession() as http:
        try:
            yield StandIn(state.public_url, state, delivery, receiver, http, sdk)
        finally:
            deliveries.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await deliveries
            await http_client.close_async()
            await runner.cleanup()
            await receiver_runner.cleanup()


async def test_checkout_url_is_the_hosted_page_and_paying_sends_the_card_payment_events(stand_in: StandIn) -> None:
    session = await stand_in.open_session()
    assert session.url == f"{stand_in.base_url}/c/pay/{session.id}"
    async with stand_in.http.get(session.url) as page:  # A browser: no API key.
        assert page.status == 200
        assert "Pay EUR 5.00" in await page.text()

    async with await stand_in.pay(session.url) as response:
        assert response.status == 303
        assert response.headers["Location"] == f"http://app.test/credits?checkout=success&session_id={session.id}"

    assert await stand_in.receiver.wait_for(4) == CARD_PAYMENT_EVENT_TYPES
    created, charge_event, succeeded, completed_event = stand_in.receiver.events
    assert (created.data.object.status, created.data.object.latest_charge) == ("requires_payment_method", None)
    assert created.data.object.id == succeeded.data.object.id
    completed = completed_event.data.object
    assert completed.id == session.id
    assert completed.payment_status == "paid"
    assert completed.customer_details.email == "buyer@example.com"
    assert completed.metadata.to_dict() == {"user_id": "user_1", "package_id": "small"}
    charge = charge_event.data.object
    assert charge.payment_intent == completed.payment_intent
    assert charge.metadata.to_dict() == {"user_id": "user_1", "package_id": "small"}


async def test_a_session_is_paid_once_and_unknown_sessions_are_refused(stand_in: StandIn) -> None:
    session = await stand_in.open_session()
    async with await stand_in.pay(session.url) as first:
        assert first.status == 303
    async with await stand_in.pay(session.url) as second:
        assert second.status == 404
    async with stand_in.http.get(session.url) as page:
        assert page.status == 404
    async with await stand_in.pay(f"{stand_in.base_url}/c/pay/cs_test_unknown") as unknown:
        assert unknown.status == 404
    assert await stand_in.receiver.wait_for(4) == CARD_PAYMENT_EVENT_TYPES  # The first payment's, and no more.
    assert len(stand_in.state.events("checkout.session.completed")) == 1


@pytest.mark.parametrize("email", ["", "not-an-address", "a" * 250 + "@b.co"], ids=["empty", "no-at", "too-long"])
async def test_paying_without_a_valid_email_is_refused_and_the_session_stays_open(
    stand_in: StandIn, email: str
) -> None:
    session = await stand_in.open_session()
    async with await stand_in.pay(session.url, email=email) as response:
        assert response.status == 400
    assert stand_in.state.session(session.id)["status"] == "open"
    assert stand_in.state.events() == []


async def test_a_refund_through_the_sdk_sends_charge_refunded_and_refund_created(stand_in: StandIn) -> None:
    session = await stand_in.paid_session()
    await stand_in.receiver.wait_for(4)

    partial = await stand_in.sdk.v1.refunds.create_async({"payment_intent": session.payment_intent, "amount": 200})
    assert (partial.amount, partial.status, partial.payment_intent) == (200, "succeeded", session.payment_intent)
    rest = await stand_in.sdk.v1.refunds.create_async(
        {"payment_intent": session.payment_intent, "reason": "requested_by_customer"}
    )
    assert (rest.amount, rest.reason) == (300, "requested_by_customer")

    types = await stand_in.receiver.wait_for(8)
    assert types[4:] == ["charge.refunded", "refund.created", "charge.refunded", "refund.created"]
    last_charge = stand_in.receiver.events[6].data.object
    assert (last_charge.amount_refunded, last_charge.refunded) == (500, True)
    assert stand_in.receiver.events[7].data.object.id == rest.id


@pytest.mark.parametrize(
    ("params", "code"),
    [
        pytest.param({"amount": 501}, "amount_too_large", id="more-than-the-charge"),
        pytest.param({"amount": 0}, "amount_too_large", id="zero"),
        pytest.param({"reason": "because"}, None, id="unknown-reason"),
    ],
)
async def test_refunds_stripe_would_refuse_are_refused(
    stand_in: StandIn, params: dict[str, Any], code: str | None
) -> None:
    session = await stand_in.paid_session()
    with pytest.raises(stripe.InvalidRequestError) as refused:
        request = cast(RefundCreateParams, {"payment_intent": session.payment_intent, **params})
        await stand_in.sdk.v1.refunds.create_async(request)
    assert refused.value.code == code
    assert stand_in.state.events("charge.refunded") == []


async def test_a_charge_is_refunded_at_most_once_in_full(stand_in: StandIn) -> None:
    session = await stand_in.paid_session()
    await stand_in.sdk.v1.refunds.create_async({"payment_intent": session.payment_intent})
    with pytest.raises(stripe.InvalidRequestError) as refused:
        await stand_in.sdk.v1.refunds.create_async({"payment_intent": session.payment_intent})
    assert refused.value.code == "charge_already_refunded"
    assert len(stand_in.state.events("charge.refunded")) == 1


async def test_refund_requests_that_name_no_charge_or_no_key_are_refused(stand_in: StandIn) -> None:
    session = await stand_in.paid_session()
    charge_id = stand_in.state.payment_intent(session.payment_intent)["latest_charge"]
    both = {"payment_intent": session.payment_intent, "charge": charge_id}
    async with stand_in.http.post(f"{stand_in.base_url}/v1/refunds", data=both, headers=stand_in.auth()) as response:
        assert response.status == 400
    async with stand_in.http.post(f"{stand_in.base_url}/v1/refunds", data={}, headers=stand_in.auth()) as response:
        assert response.status == 400
    async with stand_in.http.post(
        f"{stand_in.base_url}/v1/refunds", data={"charge": "ch_missing"}, headers=stand_in.auth()
    ) as response:
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "resource_missing"
    async with stand_in.http.post(f"{stand_in.base_url}/v1/refunds", data={"charge": charge_id}) as response:
        assert response.status == 401
    unpaid = await stand_in.open_session()
    with pytest.raises(stripe.InvalidRequestError) as refused:
        await stand_in.sdk.v1.refunds.create_async({"payment_intent": unpaid.id.replace("cs_test_", "pi_")})
    assert refused.value.code == "resource_missing"
    assert stand_in.state.events("charge.refunded") == []


async def test_paused_deliveries_wait_and_go_out_in_order_when_resumed(stand_in: StandIn) -> None:
    control = f"{stand_in.base_url}/_stand_in/deliveries"
    async with stand_in.http.post(control, json={"paused": True}, headers=stand_in.auth()) as response:
        assert (await response.json())["paused"] is True
    await stand_in.paid_session()
    async with stand_in.http.post(control, json={"paused": True}, headers=stand_in.auth()) as response:
        assert (await response.json())["queued"] == 4
    assert stand_in.receiver.posts_count == 0  # Paused before the first event existed: nothing could go out.

    async with stand_in.http.post(control, json={"paused": False}, headers=stand_in.auth()) as response:
        assert (await response.json())["paused"] is False
    assert await stand_in.receiver.wait_for(4) == CARD_PAYMENT_EVENT_TYPES


@pytest.mark.parametrize(
    "body",
    [{"paused": "yes"}, {"paused": 1}, {}, {"paused": True, "extra": 1}, ["paused"]],
    ids=["string", "integer", "empty", "extra-field", "array"],
)
async def test_the_delivery_control_refuses_anything_but_a_boolean(stand_in: StandIn, body: Any) -> None:
    control = f"{stand_in.base_url}/_stand_in/deliveries"
    async with stand_in.http.post(control, json=body, headers=stand_in.auth()) as response:
        assert response.status == 400
    assert stand_in.delivery.paused is False


async def test_the_delivery_control_needs_the_api_key(stand_in: StandIn) -> None:
    async with stand_in.http.post(f"{stand_in.base_url}/_stand_in/deliveries", json={"paused": True}) as response:
        assert response.status == 401
    assert stand_in.delivery.paused is False


async def test_a_failed_delivery_is_retried_with_the_same_event(stand_in: StandIn) -> None:
    stand_in.receiver.fail_first = 2
    await stand_in.paid_session()
    assert await stand_in.receiver.wait_for(4) == CARD_PAYMENT_EVENT_TYPES
    assert stand_in.receiver.posts_count == 6
    assert stand_in.delivery.failed_count == 0
