"""The Stripe fakes speak Stripe: the real stripe SDK drives the fake API, and verifies the signed events."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, cast

import aiohttp
import pytest
import stripe
from stripe.params import ChargeListParams, EventListParams
from stripe.params.checkout import SessionCreateParams

from . import stripe_events
from .stripe_api import (
    LIST_LIMIT_MAX,
    FakeStripe,
    FakeStripeError,
    ListQuery,
    RunningFakeStripe,
    global_stripe,
    parse_params,
    running_fake_stripe,
    running_fake_stripe_in_thread,
)
from .stripe_events import ChargeFields, new_id

WEBHOOK_SECRET = "whsec_test_current_0000000000000000"
WEBHOOK_SECRET_OLD = "whsec_test_previous_000000000000000"
TOLERANCE_SECONDS = 300
BASE_CREATED_SECONDS = 1_750_000_000


def session_params(user_id: str = "user_1", package_id: str = "small", amount_minor: int = 500) -> SessionCreateParams:
    """A session-create request as the gateway sends it (SPEC §4)."""
    metadata = stripe_events.purchase_metadata(user_id, package_id)
    return {
        "mode": "payment",
        "success_url": "https://app.example/credits?paid=1",
        "cancel_url": "https://app.example/credits",
        "client_reference_id": user_id,
        "customer_email": "buyer@example.com",
        "metadata": metadata,
        "payment_intent_data": {"metadata": metadata},
        "line_items": [
            {
                "quantity": 1,
                "price_data": {"currency": "eur", "unit_amount": amount_minor, "product_data": {"name": "100 credits"}},
            }
        ],
    }


def seed_charges(state: FakeStripe, count: int, charges_per_second: int = 3) -> None:
    """``count`` charges of 500, 501, ... minor units, ``charges_per_second`` of them in each second."""
    state.add_charges(
        ChargeFields(new_id("ch_"), 500 + index, "eur", BASE_CREATED_SECONDS + index // charges_per_second)
        for index in range(count)
    )


# --- checkout sessions ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_client_creates_and_retrieves_a_session() -> None:
    async with running_fake_stripe() as fake:
        client = fake.async_client()
        created = await client.v1.checkout.sessions.create_async(session_params())
        retrieved = await client.v1.checkout.sessions.retrieve_async(created.id)

    assert created.id.startswith("cs_test_")
    assert created.url is not None and created.url.endswith(created.id)
    assert (created.amount_total, created.currency) == (500, "eur")
    assert (created.status, created.payment_status) == ("open", "unpaid")
    assert created.client_reference_id == "user_1"
    assert created.metadata is not None and created.metadata.to_dict() == {"user_id": "user_1", "package_id": "small"}
    assert created.payment_intent is None  # Stripe makes the payment intent when the customer pays
    assert retrieved.to_dict() == created.to_dict()
    logged = fake.state.requests[0]
    assert (logged.method, logged.path) == ("POST", "/v1/checkout/sessions")
    assert logged.form["payment_intent_data[metadata][user_id]"] == "user_1"
    assert logged.idempotency_key  # the SDK sends one on every POST


@pytest.mark.asyncio
async def test_same_idempotency_key_returns_the_same_session() -> None:
    async with running_fake_stripe() as fake:
        client = fake.async_client()
        options: stripe.RequestOptions = {"idempotency_key": "checkout-user_1-order-7"}
        first = await client.v1.checkout.sessions.create_async(session_params(), options)
        second = await client.v1.checkout.sessions.create_async(session_params(), options)

    assert second.id == first.id
    assert len(fake.state.sessions()) == 1


@pytest.mark.asyncio
async def test_same_idempotency_key_with_other_parameters_is_refused() -> None:
    async with running_fake_stripe() as fake:
        client = fake.async_client()
        options: stripe.RequestOptions = {"idempotency_key": "checkout-user_1-order-8"}
        await client.v1.checkout.sessions.create_async(session_params(package_id="small"), options)
        with pytest.raises(stripe.IdempotencyError):
            await client.v1.checkout.sessions.create_async(session_params(package_id="large"), options)

    assert len(fake.state.sessions()) == 1


@pytest.mark.parametrize(
    ("change", "param"),
    [
        pytest.param(lambda params: params.pop("mode"), "mode", id="missing-mode"),
        pytest.param(lambda params: params.pop("line_items"), "line_items", id="missing-line-items"),
        pytest.param(lambda params: params.update(expand=["payment_intent"]), "expand", id="unimplemented-expand"),
        pytest.param(lambda params: params.update(colour="red"), "colour", id="unknown-param"),
        pytest.param(
            lambda params: params["line_items"][0]["price_data"].update(unit_amount="5.00"),
            "line_items[0][price_data][unit_amount]",
            id="non-integer-amount",
        ),
        pytest.param(
            lambda params: params["metadata"].update({"k" * 41: "v"}),
            "metadata[" + "k" * 41 + "]",
            id="metadata-key-too-long",
        ),
    ],
)
@pytest.mark.asyncio
async def test_session_create_refuses_bad_requests(change: Callable[[dict[str, Any]], object], param: str) -> None:
    params = cast(dict[str, Any], session_params())
    change(params)
    async with running_fake_stripe() as fake:
        with pytest.raises(stripe.InvalidRequestError) as raised:
            await fake.async_client().v1.checkout.sessions.create_async(cast(SessionCreateParams, params))

    assert raised.value.http_status == 400
    assert raised.value.param == param
    assert fake.state.sessions() == []


@pytest.mark.asyncio
async def test_completed_session_has_payment_intent_and_charge_carrying_the_metadata() -> None:
    async with running_fake_stripe() as fake:
        client = fake.async_client()
        created = await client.v1.checkout.sessions.create_async(session_params(user_id="user_9", package_id="large"))
        fake.state.complete_session(created.id)
        session = await client.v1.checkout.sessions.retrieve_async(created.id)
        assert isinstance(session.payment_intent, str)
        intent = await client.v1.payment_intents.retrieve_async(session.payment_intent)
        charges = await client.v1.charges.list_async({"payment_intent": session.payment_intent})
        events = await client.v1.events.list_async({"type": "checkout.session.*"})

    assert (session.status, session.payment_status) == ("complete", "paid")
    assert session.customer_details is not None and session.customer_details.email == "buyer@example.com"
    assert (intent.status, intent.amount_received) == ("succeeded", 500)
    assert intent.metadata.to_dict() == {"user_id": "user_9", "package_id": "large"}
    [charge] = charges.data
    assert charge.id == intent.latest_charge
    assert charge.metadata.to_dict() == {"user_id": "user_9", "package_id": "large"}
    assert (charge.amount, charge.currency, charge.status, charge.paid, charge.captured) == (
        500,
        "eur",
        "succeeded",
        1,
        1,
    )
    assert [event.type for event in events.data] == ["checkout.session.completed"]
    assert events.data[0].data.object.id == created.id


@pytest.mark.asyncio
async def test_delayed_payment_settles_through_async_payment_events() -> None:
    state = FakeStripe()
    session = state.create_session(amount_minor=2500, currency="eur", payment_intent_metadata={"user_id": "u"})
    state.complete_session(session["id"], payment_status="unpaid")
    pending_charge = state.charge(state.payment_intent(state.session(session["id"])["payment_intent"])["latest_charge"])
    state.finish_async_payment(session["id"], succeeded=True)

    assert (pending_charge["status"], pending_charge["paid"]) == ("pending", False)
    assert state.session(session["id"])["payment_status"] == "paid"
    assert state.charge(pending_charge["id"])["status"] == "succeeded"
    assert [event["type"] for event in state.events() if event["type"].startswith("checkout")] == [
        "checkout.session.completed",
        "checkout.session.async_payment_succeeded",
    ]


def test_failed_delayed_payment_leaves_the_session_unpaid_and_cannot_settle_again() -> None:
    state = FakeStripe()
    session = state.create_session(amount_minor=500, currency="eur")
    state.complete_session(session["id"], payment_status="unpaid")
    state.finish_async_payment(session["id"], succeeded=False)
    intent = state.payment_intent(state.session(session["id"])["payment_intent"])

    assert state.session(session["id"])["payment_status"] == "unpaid"
    assert (intent["status"], state.charge(intent["latest_charge"])["status"]) == ("requires_payment_method", "failed")
    assert state.events()[-1]["type"] == "checkout.session.async_payment_failed"
    with pytest.raises(ValueError, match="no delayed payment"):
        state.finish_async_payment(session["id"], succeeded=True)


def test_completing_a_session_twice_is_refused() -> None:
    state = FakeStripe()
    session = state.create_session(amount_minor=500, currency="eur")
    state.complete_session(session["id"])
    with pytest.raises(ValueError, match="not open"):
        state.complete_session(session["id"])


# --- lists ------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_auto_pagination_walks_2500_charges_newest_first_in_25_requests() -> None:
    state = FakeStripe()
    seed_charges(state, 2500)
    async with running_fake_stripe(state=state) as fake:
        first_page = await fake.async_client().v1.charges.list_async({"limit": 100})
        listed = [charge async for charge in first_page.auto_paging_iter()]

    assert len({charge.id for charge in listed}) == 2500
    created = [charge.created for charge in listed]
    assert created == sorted(created, reverse=True)
    assert listed[0].amount == 500 + 2499  # same second: the later charge lists first
    assert sum(request.path == "/v1/charges" for request in state.requests) == 25


@pytest.mark.asyncio
async def test_ending_before_pages_towards_newer_charges() -> None:
    state = FakeStripe()
    seed_charges(state, 30)
    async with running_fake_stripe(state=state) as fake:
        client = fake.async_client()
        everything = await client.v1.charges.list_async({"limit": 30})
        cursor = everything.data[20].id
        newer = await client.v1.charges.list_async({"limit": 5, "ending_before": cursor})
        newest = await client.v1.charges.list_async({"limit": 100, "ending_before": cursor})

    assert [charge.id for charge in newer.data] == [charge.id for charge in everything.data[15:20]]
    assert newer.has_more
    assert [charge.id for charge in newest.data] == [charge.id for charge in everything.data[:20]]
    assert not newest.has_more


@pytest.mark.parametrize(
    ("created", "expected_offsets"),
    [
        pytest.param({"gte": 10}, range(10, 20), id="gte"),
        pytest.param({"gt": 10}, range(11, 20), id="gt"),
        pytest.param({"lte": 10}, range(0, 11), id="lte"),
        pytest.param({"lt": 10}, range(0, 10), id="lt"),
        pytest.param({"gte": 5, "lt": 8}, range(5, 8), id="gte-lt"),
        pytest.param({"gt": 5, "lte": 8}, range(6, 9), id="gt-lte"),
        pytest.param({"gt": 8, "lt": 5}, range(0), id="empty-window"),
    ],
)
@pytest.mark.asyncio
async def test_created_filters_select_the_window(created: dict[str, int], expected_offsets: range) -> None:
    state = FakeStripe()
    seed_charges(state, 20, charges_per_second=1)
    window = {operator: BASE_CREATED_SECONDS + offset for operator, offset in created.items()}
    params = cast(ChargeListParams, {"limit": 100, "created": window})
    async with running_fake_stripe(state=state) as fake:
        page = await fake.async_client().v1.charges.list_async(params)

    assert [charge.created - BASE_CREATED_SECONDS for charge in page.data] == list(reversed(expected_offsets))
    assert fake.state.requests[0].query["created[" + next(iter(created)) + "]"]


@pytest.mark.asyncio
async def test_created_window_survives_auto_pagination() -> None:
    state = FakeStripe()
    seed_charges(state, 300, charges_per_second=1)
    window: stripe.params.ChargeListParamsCreated = {"gte": BASE_CREATED_SECONDS + 50, "lt": BASE_CREATED_SECONDS + 250}
    async with running_fake_stripe(state=state) as fake:
        page = await fake.async_client().v1.charges.list_async({"limit": 100, "created": window})
        listed = [charge async for charge in page.auto_paging_iter()]

    assert len(listed) == 200
    assert all(BASE_CREATED_SECONDS + 50 <= charge.created < BASE_CREATED_SECONDS + 250 for charge in listed)


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"limit": 0}, id="limit-zero"),
        pytest.param({"limit": LIST_LIMIT_MAX + 1}, id="limit-over-max"),
        pytest.param({"starting_after": "ch_missing"}, id="unknown-cursor"),
        pytest.param({"starting_after": "ch_a", "ending_before": "ch_b"}, id="two-cursors"),
        pytest.param({"created": {"after": 1}}, id="unknown-range-operator"),
    ],
)
@pytest.mark.asyncio
async def test_charge_list_refuses_bad_queries(params: dict[str, Any]) -> None:
    async with running_fake_stripe() as fake:
        with pytest.raises(stripe.InvalidRequestError):
            await fake.async_client().v1.charges.list_async(cast(ChargeListParams, params))


@pytest.mark.asyncio
async def test_default_page_is_ten() -> None:
    state = FakeStripe()
    seed_charges(state, 11)
    async with running_fake_stripe(state=state) as fake:
        page = await fake.async_client().v1.charges.list_async()

    assert (len(page.data), page.has_more, page.url) == (10, True, "/v1/charges")


def test_100000_charges_page_through_the_index() -> None:
    """Every charge exactly once, newest first, over 1,000 pages. No timing is asserted (the machine is shared);
    a scan per page would show as this test taking minutes instead of seconds, under the run's time limit."""
    state = FakeStripe()
    seed_charges(state, 100_000, charges_per_second=7)
    first = json.loads(state.charges_page_json(ListQuery(limit=100), None))
    seen = [charge["id"] for charge in first["data"]]
    created = [charge["created"] for charge in first["data"]]
    page = first
    while page["has_more"]:
        page = json.loads(state.charges_page_json(ListQuery(limit=100, starting_after=seen[-1]), None))
        seen += [charge["id"] for charge in page["data"]]
        created += [charge["created"] for charge in page["data"]]

    assert len(seen) == len(set(seen)) == 100_000
    assert created == sorted(created, reverse=True)
    assert page["data"][-1]["amount"] == 500


def test_charge_list_filtered_by_payment_intent() -> None:
    state = FakeStripe()
    seed_charges(state, 50)
    wanted = state.add_charge(amount_minor=1200, payment_intent_id="pi_wanted", created_seconds=BASE_CREATED_SECONDS)
    page = json.loads(state.charges_page_json(ListQuery(limit=10), "pi_wanted"))

    assert [charge["id"] for charge in page["data"]] == [wanted["id"]]


# --- events -----------------------------------------------------------------------------------------


def make_events(state: FakeStripe) -> dict[str, str]:
    now = state.now_seconds()
    built = {
        "completed": stripe_events.checkout_session_completed("u", "small", 500, "eur", created_seconds=now - 30),
        "refunded": stripe_events.charge_refunded(
            "u", "small", 500, "eur", amount_refunded_minor=500, created_seconds=now - 20
        ),
        "dispute": stripe_events.charge_dispute(
            "charge.dispute.created",
            status="needs_response",
            charge_id="ch_x",
            payment_intent_id="pi_x",
            amount_minor=500,
            currency="eur",
            created_seconds=now - 10,
        ),
    }
    state.add_event(built["completed"])
    state.add_event(built["refunded"], delivery_success=False)
    state.add_event(built["dispute"])
    return {name: event["id"] for name, event in built.items()}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        pytest.param({}, ["dispute", "refunded", "completed"], id="all"),
        pytest.param({"type": "charge.refunded"}, ["refunded"], id="type"),
        pytest.param({"type": "charge.*"}, ["dispute", "refunded"], id="type-wildcard"),
        pytest.param(
            {"types": ["charge.refunded", "checkout.session.completed"]}, ["refunded", "completed"], id="types"
        ),
        pytest.param({"delivery_success": False}, ["refunded"], id="undelivered"),
        pytest.param({"delivery_success": True}, ["dispute", "completed"], id="delivered"),
    ],
)
@pytest.mark.asyncio
async def test_event_list_filters(params: dict[str, Any], expected: list[str]) -> None:
    state = FakeStripe(emit_events=False)
    ids = make_events(state)
    async with running_fake_stripe(state=state) as fake:
        page = await fake.async_client().v1.events.list_async(cast(EventListParams, params))

    assert [event.id for event in page.data] == [ids[name] for name in expected]


@pytest.mark.asyncio
async def test_event_list_refuses_type_with_types() -> None:
    async with running_fake_stripe() as fake:
        with pytest.raises(stripe.InvalidRequestError):
            await fake.async_client().v1.events.list_async({"type": "a", "types": ["b"]})


@pytest.mark.asyncio
async def test_events_older_than_30_days_are_gone_from_the_api() -> None:
    now_seconds = [float(BASE_CREATED_SECONDS)]
    state = FakeStripe(clock=lambda: now_seconds[0], emit_events=False)
    old = state.add_event(stripe_events.event("charge.refunded", {"id": "ch_1"}, created_seconds=BASE_CREATED_SECONDS))
    now_seconds[0] += 31 * 24 * 3600
    async with running_fake_stripe(state=state) as fake:
        client = fake.async_client()
        page = await client.v1.events.list_async()
        with pytest.raises(stripe.InvalidRequestError) as raised:
            await client.v1.events.retrieve_async(old["id"])

    assert page.data == []
    assert raised.value.http_status == 404
    assert state.events()[0]["id"] == old["id"]  # still visible to the test itself


# --- refunds and disputes ---------------------------------------------------------------------------


def test_refunds_accumulate_and_emit_charge_refunded() -> None:
    state = FakeStripe()
    charge = state.add_charge(
        amount_minor=5000, metadata={"user_id": "u", "package_id": "large"}, payment_intent_id="pi"
    )
    partial = state.refund_charge(charge["id"], amount_minor=1000)
    full = state.refund_charge(charge["id"])

    assert (partial["amount_refunded"], partial["refunded"]) == (1000, False)
    assert (full["amount_refunded"], full["refunded"]) == (5000, True)
    assert "refunds" not in full  # not sent since API version 2022-11-15
    created = state.events("refund.created")
    assert [event["data"]["object"]["amount"] for event in created] == [1000, 4000]
    assert {event["data"]["object"]["charge"] for event in created} == {charge["id"]}
    refunded_events = state.events("charge.refunded")
    assert [event["data"]["object"]["amount_refunded"] for event in refunded_events] == [1000, 5000]
    assert refunded_events[1]["data"]["previous_attributes"] == {"amount_refunded": 1000, "refunded": False}
    with pytest.raises(ValueError, match="cannot refund"):
        state.refund_charge(charge["id"], amount_minor=1)


@pytest.mark.parametrize(
    ("opened_status", "closed_status", "expected_events"),
    [
        pytest.param(
            "needs_response",
            "won",
            ["created", "funds_withdrawn", "funds_reinstated", "closed"],
            id="chargeback-won",
        ),
        pytest.param("needs_response", "lost", ["created", "funds_withdrawn", "closed"], id="chargeback-lost"),
        pytest.param("warning_needs_response", "warning_closed", ["created", "closed"], id="inquiry"),
    ],
)
def test_dispute_lifecycle_emits_stripe_events(
    opened_status: str, closed_status: str, expected_events: list[str]
) -> None:
    state = FakeStripe()
    charge = state.add_charge(amount_minor=2500, payment_intent_id="pi_disputed")
    dispute = state.dispute_charge(charge["id"], status=opened_status)
    closed = state.set_dispute_status(dispute["id"], closed_status)

    assert state.charge(charge["id"])["disputed"] is True
    assert (dispute["charge"], dispute["payment_intent"], dispute["amount"]) == (charge["id"], "pi_disputed", 2500)
    assert closed["status"] == closed_status
    assert [event["type"].removeprefix("charge.dispute.") for event in state.events()] == expected_events


@pytest.mark.asyncio
async def test_disputes_are_listed_by_charge() -> None:
    state = FakeStripe()
    charge = state.add_charge(amount_minor=2500)
    state.add_charge(amount_minor=500)
    dispute = state.dispute_charge(charge["id"])
    async with running_fake_stripe(state=state) as fake:
        client = fake.async_client()
        page = await client.v1.disputes.list_async({"charge": charge["id"]})
        retrieved = await client.v1.disputes.retrieve_async(dispute["id"])

    assert [item.id for item in page.data] == [dispute["id"]]
    assert retrieved.status == "needs_response"


# --- faults, auth, wire format ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_injected_429_is_a_rate_limit_error_with_retry_after() -> None:
    async with running_fake_stripe() as fake:
        fake.state.inject_fault(429, path_prefix="/v1/charges", retry_after_seconds=2)
        client = fake.async_client()
        with pytest.raises(stripe.RateLimitError) as raised:
            await client.v1.charges.list_async()
        await client.v1.charges.list_async()  # the fault was used up

    assert raised.value.http_status == 429
    assert raised.value.code is None  # stripe 16.1.0 drops the code of a 429: it is on .error only
    assert raised.value.error is not None and raised.value.error.code == "rate_limit"
    assert raised.value.headers is not None and raised.value.headers["Retry-After"] == "2"
    assert [request.status_code for request in fake.state.requests] == [429, 200]


@pytest.mark.asyncio
async def test_injected_500_is_an_api_error_only_under_its_path() -> None:
    async with running_fake_stripe() as fake:
        fake.state.inject_fault(500, count=2, path_prefix="/v1/events")
        client = fake.async_client()
        await client.v1.charges.list_async()
        for _ in range(2):
            with pytest.raises(stripe.APIError) as raised:
                await client.v1.events.list_async()
        await client.v1.events.list_async()

    assert raised.value.http_status == 500
    assert raised.value.error is not None and raised.value.error.type == "api_error"


@pytest.mark.asyncio
async def test_sdk_retry_after_a_lost_response_reuses_the_key_and_gets_the_same_session() -> None:
    async with running_fake_stripe() as fake:
        fake.state.inject_fault(500, path_prefix="/v1/checkout/sessions", after_effect=True)
        client = fake.async_client(max_network_retries=1)
        session = await client.v1.checkout.sessions.create_async(session_params())

    posts = [request for request in fake.state.requests if request.method == "POST"]
    assert [request.status_code for request in posts] == [500, 200]
    assert posts[0].idempotency_key == posts[1].idempotency_key
    assert [stored["id"] for stored in fake.state.sessions()] == [session.id]


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-key"),
        pytest.param({"Authorization": "Bearer sk_test_someone_else"}, id="wrong-key"),
        pytest.param({"Authorization": "Basic c2tfdGVzdA=="}, id="wrong-scheme"),
    ],
)
@pytest.mark.asyncio
async def test_requests_without_the_key_get_a_stripe_401(headers: dict[str, str]) -> None:
    async with running_fake_stripe() as fake, aiohttp.ClientSession() as http:
        response = await http.get(f"{fake.base_url}/v1/charges", headers=headers)
        body = await response.json()

    assert response.status == 401
    assert body["error"]["type"] == "invalid_request_error"


@pytest.mark.asyncio
async def test_sdk_with_a_wrong_key_raises_authentication_error() -> None:
    async with running_fake_stripe() as fake:
        http_client = stripe.AIOHTTPClient()
        client = stripe.StripeClient(
            "sk_test_wrong", base_addresses={"api": fake.base_url}, http_client=http_client, max_network_retries=0
        )
        try:
            with pytest.raises(stripe.AuthenticationError):
                await client.v1.charges.list_async()
        finally:
            await http_client.close_async()


@pytest.mark.asyncio
async def test_unknown_routes_and_objects_answer_stripe_404s() -> None:
    async with running_fake_stripe() as fake, aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {fake.api_key}"}
        unknown_route = await http.get(f"{fake.base_url}/v1/customers", headers=headers)
        unknown_charge = await http.get(f"{fake.base_url}/v1/charges/ch_nope", headers=headers)
        charge_body = await unknown_charge.json()

    assert unknown_route.status == 404
    assert unknown_charge.status == 404
    assert charge_body["error"] == {
        "type": "invalid_request_error",
        "message": "No such charge: 'ch_nope'",
        "code": "resource_missing",
        "param": "id",
    }


def test_parse_params_nests_brackets_like_stripe() -> None:
    pairs = [("a[b][0][c]", "1"), ("types[]", "x"), ("types[]", "y"), ("plain", "v")]
    assert parse_params(pairs) == {"a": {"b": {"0": {"c": "1"}}}, "types": {"0": "x", "1": "y"}, "plain": "v"}


def test_parse_params_refuses_a_key_that_is_both_value_and_hash() -> None:
    with pytest.raises(FakeStripeError):
        parse_params([("metadata", "x"), ("metadata[a]", "y")])


# --- the SDK's other entry points -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_legacy_global_async_calls_reach_the_fake() -> None:
    api_base_before = stripe.api_base
    async with running_fake_stripe() as fake, global_stripe(fake):
        created = await stripe.checkout.Session.create_async(**session_params())
        fake.state.complete_session(created.id)
        retrieved = await stripe.checkout.Session.retrieve_async(created.id)
        charges = await stripe.Charge.list_async(limit=1)

    assert retrieved.payment_status == "paid"
    assert charges.data[0].payment_intent == retrieved.payment_intent
    assert stripe.api_base == api_base_before


def test_sync_calls_work_when_the_fake_runs_on_another_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    state = FakeStripe()
    seed_charges(state, 250)
    with running_fake_stripe_in_thread(state=state) as fake:
        client_charges = list(fake.sync_client().v1.charges.list({"limit": 100}).auto_paging_iter())
        monkeypatch.setattr(stripe, "api_key", fake.api_key)
        monkeypatch.setattr(stripe, "api_base", fake.base_url)
        monkeypatch.setattr(stripe, "default_http_client", stripe.RequestsClient())
        created = stripe.checkout.Session.create(**session_params())
        global_charges = list(stripe.Charge.list(limit=100).auto_paging_iter())

    assert len(client_charges) == len(global_charges) == 250
    assert created.id == state.sessions()[0]["id"]


def test_running_fake_reports_its_address() -> None:
    with running_fake_stripe_in_thread() as fake:
        assert isinstance(fake, RunningFakeStripe)
        assert fake.base_url.startswith("http://127.0.0.1:")


# --- webhook events and signatures ------------------------------------------------------------------


def test_signed_event_round_trips_through_construct_event() -> None:
    built = stripe_events.checkout_session_completed("user_3", "medium", 2500, "eur", customer_email="a@b.example")
    delivery = stripe_events.signed_delivery(built, WEBHOOK_SECRET)
    verified = stripe.Webhook.construct_event(
        delivery.body, delivery.headers["Stripe-Signature"], WEBHOOK_SECRET, TOLERANCE_SECONDS
    )

    assert verified.id == built["id"]
    assert verified.type == "checkout.session.completed"
    session = verified.data.object
    assert (session.client_reference_id, session.payment_status, session.amount_total) == ("user_3", "paid", 2500)
    assert session.metadata.to_dict() == {"user_id": "user_3", "package_id": "medium"}


def test_rotation_header_carries_one_signature_per_secret() -> None:
    payload = stripe_events.encode(stripe_events.payment_intent_succeeded("u", "small", 500, "eur"))
    header = stripe_events.sign(payload, [WEBHOOK_SECRET, WEBHOOK_SECRET_OLD])

    assert header.count("v1=") == 2
    for secret in (WEBHOOK_SECRET, WEBHOOK_SECRET_OLD):
        stripe.Webhook.construct_event(payload, header, secret, TOLERANCE_SECONDS)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, header, "whsec_unrelated", TOLERANCE_SECONDS)


def test_sign_matches_the_sdk_own_signer() -> None:
    if not hasattr(stripe.WebhookSignature, "generate_signature_header"):  # The SDK's signer came in stripe 16.
        pytest.skip(f"stripe {stripe.VERSION} has no WebhookSignature.generate_signature_header")
    payload = b'{"id": "evt_1", "object": "event"}'
    expected = stripe.WebhookSignature.generate_signature_header(payload.decode(), WEBHOOK_SECRET, 1_700_000_000)
    assert stripe_events.sign(payload, WEBHOOK_SECRET, 1_700_000_000) == expected


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda body, header: (body.replace(b"500", b"501"), header), id="body-changed"),
        pytest.param(lambda body, header: (body, header.replace("t=", "t=1")), id="timestamp-changed"),
        pytest.param(lambda body, header: (body, header.split(",")[0]), id="signature-removed"),
        pytest.param(lambda body, header: (body, ""), id="header-missing"),
    ],
)
def test_tampered_deliveries_are_refused(tamper: Callable[[bytes, str], tuple[bytes, str]]) -> None:
    delivery = stripe_events.signed_delivery(
        stripe_events.charge_refunded("u", "s", 500, "eur", amount_refunded_minor=500), WEBHOOK_SECRET
    )
    body, header = tamper(delivery.body, delivery.headers["Stripe-Signature"])
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(body, header, WEBHOOK_SECRET, TOLERANCE_SECONDS)


def test_stale_signature_is_refused_within_tolerance_only() -> None:
    payload = stripe_events.encode(stripe_events.payment_intent_succeeded("u", "small", 500, "eur"))
    stale = stripe_events.sign(payload, WEBHOOK_SECRET, int(time.time()) - TOLERANCE_SECONDS - 10)
    fresh = stripe_events.sign(payload, WEBHOOK_SECRET, int(time.time()) - TOLERANCE_SECONDS + 10)

    stripe.Webhook.construct_event(payload, fresh, WEBHOOK_SECRET, TOLERANCE_SECONDS)
    with pytest.raises(stripe.SignatureVerificationError, match="tolerance"):
        stripe.Webhook.construct_event(payload, stale, WEBHOOK_SECRET, TOLERANCE_SECONDS)


def test_payment_intent_and_refund_builders_follow_the_metadata_convention() -> None:
    succeeded = stripe_events.payment_intent_succeeded("u7", "small", 500, "eur", charge_id="ch_7")
    partially = stripe_events.charge_refunded(
        "u7", "small", 500, "eur", amount_refunded_minor=300, refund_amounts_minor=[100, 200], payment_intent_id="pi_7"
    )
    intent = succeeded["data"]["object"]
    charge = partially["data"]["object"]

    assert (intent["object"], intent["status"], intent["latest_charge"]) == ("payment_intent", "succeeded", "ch_7")
    assert intent["metadata"] == charge["metadata"] == {"user_id": "u7", "package_id": "small"}
    assert (charge["amount_refunded"], charge["refunded"], charge["payment_intent"]) == (300, False, "pi_7")
    assert "refunds" not in charge  # not sent since API version 2022-11-15
    legacy = stripe_events.charge_refunded(
        "u7", "small", 500, "eur", amount_refunded_minor=300, refund_amounts_minor=[100, 200], embed_refunds=True
    )
    assert legacy["api_version"] == stripe_events.LEGACY_REFUNDS_API_VERSION
    assert [refund["amount"] for refund in legacy["data"]["object"]["refunds"]["data"]] == [100, 200]


@pytest.mark.parametrize(
    ("status", "case_type", "refundable"),
    [
        pytest.param("needs_response", "chargeback", False, id="chargeback"),
        pytest.param("warning_needs_response", "inquiry", True, id="inquiry"),
        pytest.param("won", "chargeback", False, id="won"),
    ],
)
def test_dispute_builder_marks_inquiries(status: str, case_type: str, refundable: bool) -> None:
    built = stripe_events.charge_dispute(
        "charge.dispute.closed",
        status=status,
        charge_id="ch_1",
        payment_intent_id="pi_1",
        amount_minor=500,
        currency="EUR",
        dispute_id="dp_1",
    )
    dispute = built["data"]["object"]

    assert (built["type"], dispute["id"], dispute["status"], dispute["currency"]) == (
        "charge.dispute.closed",
        "dp_1",
        status,
        "eur",
    )
    assert dispute["payment_method_details"]["card"]["case_type"] == case_type
    assert dispute["is_charge_refundable"] is refundable


@pytest.mark.parametrize(
    ("fixture", "build"),
    [
        pytest.param("event.json", lambda: stripe_events.event("x.y", {"id": "obj"}), id="event"),
        pytest.param(
            "checkout_session.json",
            lambda: stripe_events.checkout_session_object(amount_minor=1, currency="eur", metadata={}),
            id="session",
        ),
        pytest.param(
            "payment_intent.json",
            lambda: stripe_events.payment_intent_object(amount_minor=1, currency="eur", metadata={}),
            id="payment-intent",
        ),
        pytest.param(
            "charge.json",
            lambda: stripe_events.charge_object(stripe_events.ChargeFields("ch_1", 1, "eur", 1), embed_refunds=True),
            id="charge",
        ),
        pytest.param(
            "refund.json",
            lambda: stripe_events.refund_object(charge_id="ch_1", amount_minor=1, currency="eur"),
            id="refund",
        ),
        pytest.param(
            "dispute.json",
            lambda: stripe_events.dispute_object(charge_id="ch_1", amount_minor=1, currency="eur", status="won"),
            id="dispute",
        ),
    ],
)
def test_builders_keep_the_published_shape(fixture: str, build: Callable[[], dict[str, Any]]) -> None:
    assert set(build()) == set(stripe_events.load_fixture(fixture))


def test_a_charge_of_the_current_api_version_leaves_out_only_its_refunds_list() -> None:
    charge = stripe_events.charge_object(stripe_events.ChargeFields("ch_1", 1, "eur", 1))
    assert set(stripe_events.load_fixture("charge.json")) - set(charge) == {"refunds"}


def test_a_failed_refund_carries_its_failure_fields_and_leaves_the_charge_amount() -> None:
    fields = stripe_events.ChargeFields("ch_1", 1000, "eur", 1)
    kept = stripe_events.refund_object(charge_id="ch_1", amount_minor=300, currency="eur")
    failed = stripe_events.refund_object(charge_id="ch_1", amount_minor=200, currency="eur", status="failed")
    fields.refunds.extend([kept, failed])

    assert set(failed) - set(stripe_events.load_fixture("refund.json")) == {
        "failure_reason",
        "failure_balance_transaction",
    }
    assert (failed["status"], failed["failure_reason"]) == ("failed", "expired_or_canceled_card")
    assert "failure_reason" not in kept
    assert fields.amount_refunded_minor == 300


def test_a_refund_that_fails_emits_its_events_and_is_listed_by_charge() -> None:
    state = FakeStripe()
    metadata = {"user_id": "u", "package_id": "medium"}
    charge = state.add_charge(amount_minor=2500, metadata=metadata, payment_intent_id="pi")
    state.refund_charge(charge["id"], amount_minor=1000)
    refund_id = state.events("refund.created")[0]["data"]["object"]["id"]
    state.set_refund_status(refund_id, "failed")

    assert state.charge(charge["id"])["amount_refunded"] == 0
    assert [event["data"]["object"]["status"] for event in state.events("refund.updated")] == ["failed"]
    assert state.events("refund.updated")[0]["data"]["previous_attributes"] == {"status": "succeeded"}
    assert [event["data"]["object"]["id"] for event in state.events("refund.failed")] == [refund_id]
    listed = json.loads(state.refunds_page_json(ListQuery(), {"charge": charge["id"]}))
    assert [(refund["id"], refund["status"]) for refund in listed["data"]] == [(refund_id, "failed")]
    assert json.loads(state.refunds_page_json(ListQuery(), {"charge": "ch_other"}))["data"] == []


def test_charge_objects_handed_out_are_private_copies() -> None:
    fields = stripe_events.ChargeFields("ch_1", 500, "eur", 1)
    first = stripe_events.charge_object(fields)
    first["payment_method_details"]["card"]["brand"] = "tampered"
    assert stripe_events.charge_object(fields)["payment_method_details"]["card"]["brand"] == "visa"
