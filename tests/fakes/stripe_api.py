"""A fake of Stripe's HTTP API for tests: an aiohttp app the real stripe SDK talks to over a real port.

It speaks Stripe's wire format: form-encoded requests as stripe-python sends them
(``line_items[0][price_data][currency]=eur``), Stripe-shaped JSON objects built from the published
fixtures (``stripe_events``), list objects, and Stripe's error JSON ``{"error": {"type", "message",
"code", "param"}}`` with Stripe's HTTP statuses. Parameters it does not implement are refused with
``parameter_unknown`` (as Stripe refuses unknown ones), so code cannot silently rely on them.

Endpoints: ``POST /v1/checkout/sessions`` (honours ``Idempotency-Key``), ``GET /v1/checkout/sessions/{id}``,
``GET /v1/charges`` + ``/{id}``, ``GET /v1/events`` + ``/{id}``, ``GET /v1/disputes`` + ``/{id}``,
``GET /v1/payment_intents/{id}``. Lists are newest first with ``limit`` (1..100), ``starting_after``,
``ending_before`` and ``created[gt|gte|lt|lte]``; events also filter by ``type`` (``*`` wildcard),
``types[]`` and ``delivery_success`` and only go back 30 days, as Stripe's do.

Pointing stripe-python 16.1.0 at it (``async with running_fake_stripe() as fake:``):

- ``StripeClient`` (preferred; the base address is per client)::

      http_client = stripe.AIOHTTPClient()
      client = stripe.StripeClient(fake.api_key, base_addresses={"api": fake.base_url},
                                   http_client=http_client, max_network_retries=0)
      await client.v1.checkout.sessions.create_async({...})
      page = await client.v1.charges.list_async({"limit": 100})
      async for charge in page.auto_paging_iter(): ...
      await http_client.close_async()        # the SDK never closes its aiohttp session itself

  ``fake.async_client()`` builds exactly that and closes it when the fake stops. Without ``http_client``
  the SDK pairs a ``requests`` client (sync calls) with an ``AIOHTTPClient`` (``*_async`` calls): httpx is
  not installed; with httpx and anyio installed it would pick ``HTTPXClient`` instead.
  ``StripeClient`` does not retry unless given ``max_network_retries``.
- Module globals: ``stripe.api_key = fake.api_key; stripe.api_base = fake.base_url``, then
  ``stripe.checkout.Session.create(...)`` / ``create_async(...)``; the SDK reads ``stripe.api_base`` at
  each request. ``stripe.max_network_retries`` is 2 by default, so the globals retry an injected 500
  (with back-off sleeps). The global async client keeps one aiohttp session bound to the first event loop
  that used it: a second ``asyncio.run`` fails with ``APIConnectionError``. ``global_stripe(fake)`` sets
  the globals with a fresh client and restores them afterwards.
- Blocking SDK calls need the fake on another thread: ``running_fake_stripe_in_thread()`` (also right for
  services run as subprocesses). A blocking call on the loop that serves the fake hangs for the SDK's
  80 s read timeout.

State is a ``FakeStripe`` that tests drive directly (``add_charge``/``add_charges``, ``complete_session``,
``refund_charge``, ``set_refund_status``, ``dispute_charge``, ``add_event``, ``inject_fault``, ``requests``).
State changes emit the events Stripe would (``charge.succeeded``, ``payment_intent.succeeded``,
``checkout.session.completed``, ``charge.refunded``, ``refund.*``, ``charge.dispute.*``), listed by
``GET /v1/events``; refunds are listed by ``GET /v1/refunds?charge=`` and read by ``GET /v1/refunds/{id}``
(``FakeStripe(emit_events=False)`` turns that off). Lists page through an index sorted by
``(created, insertion order, id)``: a page costs O(log n + limit), not a scan, so 100,000 charges are cheap.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import json
import re
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Generic, Literal, TypeVar
from urllib.parse import parse_qsl

import stripe
from aiohttp import web
from aiohttp.typedefs import Handler

from . import stripe_events
from .stripe_events import ChargeFields, JsonObject, new_id

API_KEY_DEFAULT: Final = "sk_test_fake_credits_suite"
LIST_LIMIT_DEFAULT: Final = 10
LIST_LIMIT_MAX: Final = 100
EVENT_TYPES_FILTER_MAX: Final = 20
EVENTS_RETENTION_SECONDS: Final = 30 * 24 * 3600
REQUEST_LOG_ENTRIES_MAX: Final = 10_000
REQUEST_BODY_BYTES_MAX: Final = 1024 * 1024
IDEMPOTENCY_KEYS_MAX: Final = 100_000
IDEMPOTENCY_KEY_LENGTH_MAX: Final = 255
FAULTS_PENDING_MAX: Final = 100
LINE_ITEMS_MAX: Final = 100
METADATA_KEYS_MAX: Final = 50
METADATA_KEY_LENGTH_MAX: Final = 40
METADATA_VALUE_LENGTH_MAX: Final = 500
CLIENT_REFERENCE_ID_LENGTH_MAX: Final = 200
AMOUNT_MINOR_MAX: Final = 99_999_999  # Stripe's limit for two-decimal currencies (8 digits)
SERVER_START_TIMEOUT_SECONDS: Final = 10.0
SERVER_STOP_TIMEOUT_SECONDS: Final = 10.0

T = TypeVar("T")


# --- errors ----------------------------------------------------------------------------------------


class FakeStripeError(Exception):
    """A Stripe API error: rendered as Stripe's error JSON with Stripe's HTTP status."""

    def __init__(
        self,
        status_code: int,
        error_type: str,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_type = error_type
        self.message = message
        self.code = code
        self.param = param
        self.headers = dict(headers or {})

    def body(self) -> JsonObject:
        error: JsonObject = {"type": self.error_type, "message": self.message}
        if self.code is not None:
            error["code"] = self.code
        if self.param is not None:
            error["param"] = self.param
        return {"error": error}


def invalid_request(message: str, *, param: str | None = None, code: str | None = None) -> FakeStripeError:
    return FakeStripeError(400, "invalid_request_error", message, code=code, param=param)


def no_such(resource: str, object_id: str, *, param: str = "id", status_code: int = 404) -> FakeStripeError:
    message = f"No such {resource}: '{object_id}'"
    return FakeStripeError(status_code, "invalid_request_error", message, code="resource_missing", param=param)


# --- parameters: Stripe's bracket encoding, checked against a small schema ------------------------

STRING: Final = "string"
INTEGER: Final = "integer"
BOOLEAN: Final = "boolean"
METADATA: Final = "metadata"
RANGE: Final = "range"  # created=<int> or created[gt|gte|lt|lte]=<int>
_RANGE_OPERATORS: Final = frozenset({"gt", "gte", "lt", "lte"})
_KEY_PATTERN: Final = re.compile(r"([^\[\]]+)((?:\[[^\[\]]*\])*)")
_SEGMENT_PATTERN: Final = re.compile(r"\[([^\[\]]*)\]")

Schema = str | dict[str, Any] | list[Any]


def parse_params(pairs: Iterable[tuple[str, str]]) -> JsonObject:
    """Nest Stripe's flat bracket keys: ``a[b][0]=x`` → ``{"a": {"b": {"0": "x"}}}`` (``a[]`` appends)."""
    root: JsonObject = {}
    for key, value in pairs:
        match = _KEY_PATTERN.fullmatch(key)
        if match is None:
            raise invalid_request(f"Invalid parameter name: {key}", param=key)
        path = [match.group(1), *_SEGMENT_PATTERN.findall(match.group(2))]
        _assign(root, path, value, key)
    return root


def _assign(root: JsonObject, path: list[str], value: str, key: str) -> None:
    node = root
    for segment in path[:-1]:
        child = node.setdefault(segment or str(len(node)), {})
        if not isinstance(child, dict):
            raise invalid_request(f"Invalid parameter: {key} mixes a value and a hash", param=key)
        node = child
    last = path[-1] or str(len(node))
    if isinstance(node.get(last), dict):
        raise invalid_request(f"Invalid parameter: {key} mixes a value and a hash", param=key)
    node[last] = value


def check_params(value: Any, schema: Schema, param: str) -> Any:
    """Coerce ``value`` to ``schema`` (ints, bools, lists), refusing what the schema does not name."""
    if isinstance(schema, dict):
        return _check_hash(value, schema, param)
    if isinstance(schema, list):
        return _check_array(value, schema[0], param)
    if schema == METADATA:
        return _check_metadata(value, param)
    if schema == RANGE:
        return _check_range(value, param)
    if not isinstance(value, str):
        raise invalid_request(f"Invalid {schema}: {param} must be a {schema}, not a hash", param=param)
    if schema == INTEGER:
        return _to_integer(value, param)
    if schema == BOOLEAN:
        if value not in ("true", "false"):
            raise invalid_request(f"Invalid boolean: {value}", param=param, code="parameter_invalid_boolean")
        return value == "true"
    return value


def _check_hash(value: Any, schema: dict[str, Any], param: str) -> JsonObject:
    if not isinstance(value, dict):
        raise invalid_request(f"Invalid hash: {param}", param=param)
    checked: JsonObject = {}
    for key, member in value.items():
        name = f"{param}[{key}]" if param else key
        if key not in schema:
            hint = " (the fake implements only the parameters the credits suite uses)"
            raise invalid_request(f"Received unknown parameter: {name}{hint}", param=name, code="parameter_unknown")
        checked[key] = check_params(member, schema[key], name)
    return checked


def _check_array(value: Any, item_schema: Schema, param: str) -> list[Any]:
    if not isinstance(value, dict) or not all(index.isdigit() for index in value):
        raise invalid_request(f"Invalid array: {param}", param=param)
    ordered = sorted(value.items(), key=lambda item: int(item[0]))
    return [check_params(member, item_schema, f"{param}[{index}]") for index, member in ordered]


def _check_metadata(value: Any, param: str) -> dict[str, str]:
    if value == "":
        return {}
    if not isinstance(value, dict) or not all(isinstance(member, str) for member in value.values()):
        raise invalid_request(f"Invalid hash: {param} maps keys to strings", param=param)
    if len(value) > METADATA_KEYS_MAX:
        raise invalid_request(f"{param} can have at most {METADATA_KEYS_MAX} keys", param=param)
    for key, member in value.items():
        if len(key) > METADATA_KEY_LENGTH_MAX or len(member) > METADATA_VALUE_LENGTH_MAX:
            raise invalid_request(f"{param}[{key}] is too long", param=f"{param}[{key}]")
    return dict(value)


def _check_range(value: Any, param: str) -> dict[str, int]:
    if isinstance(value, str):
        return {"gte": _to_integer(value, param), "lte": _to_integer(value, param)}
    if not isinstance(value, dict):
        raise invalid_request(f"Invalid range: {param}", param=param)
    unknown = set(value) - _RANGE_OPERATORS
    if unknown:
        name = f"{param}[{sorted(unknown)[0]}]"
        raise invalid_request(f"Received unknown parameter: {name}", param=name, code="parameter_unknown")
    return {operator: _to_integer(member, f"{param}[{operator}]") for operator, member in value.items()}


def _to_integer(value: Any, param: str) -> int:
    if not isinstance(value, str) or not re.fullmatch(r"-?\d{1,18}", value):
        raise invalid_request(f"Invalid integer: {value}", param=param, code="parameter_invalid_integer")
    return int(value)


# --- lists: an index sorted by (created, id), served newest first ---------------------------------


@dataclass(frozen=True)
class ListQuery:
    """One list request: page size, cursor and the created window [created_min, created_end)."""

    limit: int = LIST_LIMIT_DEFAULT
    starting_after: str | None = None
    ending_before: str | None = None
    created_min_seconds: int | None = None
    created_end_seconds: int | None = None  # exclusive


def list_query(params: Mapping[str, Any]) -> ListQuery:
    limit = params.get("limit", LIST_LIMIT_DEFAULT)
    if not 1 <= limit <= LIST_LIMIT_MAX:
        raise invalid_request(f"limit must be between 1 and {LIST_LIMIT_MAX}", param="limit")
    if "starting_after" in params and "ending_before" in params:
        raise invalid_request("You may only specify one of these parameters: starting_after, ending_before.")
    created = params.get("created", {})
    lower = [created[name] + (name == "gt") for name in ("gt", "gte") if name in created]
    upper = [created[name] + (name == "lte") for name in ("lt", "lte") if name in created]
    return ListQuery(
        limit=limit,
        starting_after=params.get("starting_after"),
        ending_before=params.get("ending_before"),
        created_min_seconds=max(lower) if lower else None,
        created_end_seconds=min(upper) if upper else None,
    )


# An index key: (created_seconds, insertion sequence, id). Within one second the later object counts as
# newer, as on Stripe, where objects made by one action (charge, payment intent, session, their events)
# share a second yet list in the order they were made.
IndexKey = tuple[int, int, str]


class SortedCollection(Generic[T]):
    """Objects by id plus their ``IndexKey`` in ascending order; pages walk the sorted keys, never scan."""

    def __init__(self, resource: str) -> None:
        self.resource = resource  # Stripe's name for the objects, for error messages
        self._objects: dict[str, T] = {}
        self._key_by_id: dict[str, IndexKey] = {}
        self._keys: list[IndexKey] = []
        self._sequence = 0

    def __len__(self) -> int:
        return len(self._objects)

    def __contains__(self, object_id: object) -> bool:
        return object_id in self._objects

    def get(self, object_id: str) -> T | None:
        return self._objects.get(object_id)

    def add(self, created_seconds: int, object_id: str, value: T) -> None:
        assert object_id not in self._objects, f"duplicate id {object_id}"
        self._sequence += 1
        key = (created_seconds, self._sequence, object_id)
        self._objects[object_id] = value
        self._key_by_id[object_id] = key
        if not self._keys or self._keys[-1] < key:
            self._keys.append(key)  # the common case: objects arrive in time order
        else:
            bisect.insort(self._keys, key)

    def values_oldest_first(self) -> list[T]:
        return [self._objects[key[2]] for key in self._keys]

    def page(self, query: ListQuery, matches: Callable[[T], bool] | None = None) -> tuple[list[T], bool]:
        """The page ``query`` asks for, newest first, and whether more lie beyond it in that direction."""
        lower, upper = self._bounds(query)
        if query.ending_before is not None:
            lower = max(lower, bisect.bisect_right(self._keys, self._cursor_key(query.ending_before, "ending_before")))
            picked = self._walk(range(lower, upper), query.limit + 1, matches)
            return list(reversed(picked[: query.limit])), len(picked) > query.limit
        if query.starting_after is not None:
            upper = min(upper, bisect.bisect_left(self._keys, self._cursor_key(query.starting_after, "starting_after")))
        picked = self._walk(range(upper - 1, lower - 1, -1), query.limit + 1, matches)
        return picked[: query.limit], len(picked) > query.limit

    def _bounds(self, query: ListQuery) -> tuple[int, int]:
        lower = 0
        upper = len(self._keys)
        if query.created_min_seconds is not None:
            lower = bisect.bisect_left(self._keys, (query.created_min_seconds, 0, ""))
        if query.created_end_seconds is not None:
            upper = bisect.bisect_left(self._keys, (query.created_end_seconds, 0, ""))
        return lower, max(lower, upper)

    def _cursor_key(self, object_id: str, param: str) -> IndexKey:
        key = self._key_by_id.get(object_id)
        if key is None:
            raise no_such(self.resource, object_id, param=param, status_code=400)
        return key

    def _walk(self, positions: range, count_max: int, matches: Callable[[T], bool] | None) -> list[T]:
        picked: list[T] = []
        for position in positions:
            value = self._objects[self._keys[position][2]]
            if matches is None or matches(value):
                picked.append(value)
                if len(picked) == count_max:
                    break
        return picked


# --- faults and the request log -------------------------------------------------------------------


@dataclass
class Fault:
    """Make the next ``remaining`` matching requests fail with ``status_code``.

    ``after_effect=True`` runs the request first (a created session stays created, its idempotent
    result is stored) and then answers with the error: a response lost on the way back.
    """

    status_code: int
    remaining: int = 1
    path_prefix: str = "/"
    method: str | None = None
    retry_after_seconds: int | None = None
    should_retry: bool | None = None
    after_effect: bool = False

    def matches(self, method: str, path: str) -> bool:
        method_matches = self.method is None or self.method.upper() == method.upper()
        return method_matches and path.startswith(self.path_prefix)

    def error(self) -> FakeStripeError:
        headers: dict[str, str] = {}
        if self.retry_after_seconds is not None:
            headers["Retry-After"] = str(self.retry_after_seconds)
        if self.should_retry is not None:
            headers["Stripe-Should-Retry"] = "true" if self.should_retry else "false"
        if self.status_code == 429:
            message = "Too many requests hit the API too quickly. We recommend an exponential backoff of your requests."
            return FakeStripeError(429, "invalid_request_error", message, code="rate_limit", headers=headers)
        if self.status_code >= 500:
            message = "Sorry, something went wrong. We've already been notified of the problem (injected fault)."
            return FakeStripeError(self.status_code, "api_error", message, headers=headers)
        return FakeStripeError(self.status_code, "invalid_request_error", "Injected fault.", headers=headers)


@dataclass(frozen=True)
class LoggedRequest:
    """One request the fake received; ``query`` and ``form`` keep Stripe's flat bracket keys."""

    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    idempotency_key: str | None
    stripe_version: str | None
    status_code: int


# What makes two requests "the same" for an idempotency key: method, path and the sorted form pairs.
Fingerprint = tuple[str, str, tuple[tuple[str, str], ...]]


@dataclass(frozen=True)
class _StoredResponse:
    fingerprint: Fingerprint
    body_text: str


@dataclass
class _PendingPayment:
    """What a session will turn into when the customer pays: its payment intent id and metadata."""

    payment_intent_id: str
    payment_intent_metadata: dict[str, str]


# --- the state --------------------------------------------------------------------------------------


class FakeStripe:
    """Everything the fake Stripe account holds. Thread-safe: a test may drive it while a server runs."""

    def __init__(
        self,
        api_key: str = API_KEY_DEFAULT,
        *,
        clock: Callable[[], float] = time.time,
        emit_events: bool = True,
    ) -> None:
        assert api_key.startswith("sk_test_"), "the fake only accepts test-mode secret keys"
        self.api_key = api_key
        self.clock = clock
        self.emit_events = emit_events
        self._lock = threading.RLock()
        self._sessions: SortedCollection[JsonObject] = SortedCollection("checkout session")
        self._pending_payments: dict[str, _PendingPayment] = {}
        self._payment_intents: SortedCollection[JsonObject] = SortedCollection("payment_intent")
        self._charges: SortedCollection[ChargeFields] = SortedCollection("charge")
        self._disputes: SortedCollection[JsonObject] = SortedCollection("dispute")
        self._refunds: SortedCollection[JsonObject] = SortedCollection("refund")  # shared with their ChargeFields
        self._events: SortedCollection[JsonObject] = SortedCollection("event")
        self._event_delivery_success: dict[str, bool] = {}
        self._idempotent_responses: dict[str, _StoredResponse] = {}
        self._faults: deque[Fault] = deque()
        self._requests: deque[LoggedRequest] = deque(maxlen=REQUEST_LOG_ENTRIES_MAX)

    def now_seconds(self) -> int:
        return int(self.clock())

    # --- checkout sessions ---

    def create_session(
        self,
        *,
        amount_minor: int,
        currency: str,
        metadata: Mapping[str, str] | None = None,
        payment_intent_metadata: Mapping[str, str] | None = None,
        client_reference_id: str | None = None,
        customer_email: str | None = None,
        success_url: str | None = None,
        cancel_url: str | None = None,
        allow_promotion_codes: bool | None = None,
        automatic_tax: bool = False,
    ) -> JsonObject:
        """Open a Checkout Session (what ``POST /v1/checkout/sessions`` does after validation)."""
        session = stripe_events.checkout_session_object(
            amount_minor=amount_minor,
            currency=currency,
            metadata=metadata or {},
            client_reference_id=client_reference_id,
            created_seconds=self.now_seconds(),
            customer_email=customer_email,
            success_url=success_url,
            cancel_url=cancel_url,
        )
        session["allow_promotion_codes"] = allow_promotion_codes
        session["automatic_tax"] = {**session["automatic_tax"], "enabled": automatic_tax}
        pending = _PendingPayment(new_id("pi_"), dict(payment_intent_metadata or {}))
        with self._lock:
            self._sessions.add(session["created"], session["id"], session)
            self._pending_payments[session["id"]] = pending
            return _copy(session)

    def session(self, session_id: str) -> JsonObject:
        with self._lock:
            return _copy(self._session(session_id))

    def sessions(self) -> list[JsonObject]:
        """Every session, oldest first."""
        with self._lock:
            return [_copy(session) for session in self._sessions.values_oldest_first()]

    def complete_session(
        self,
        session_id: str,
        *,
        payment_status: Literal["paid", "unpaid"] = "paid",
        customer_email: str | None = None,
    ) -> JsonObject:
        """The customer pays: payment intent + charge (metadata copied from ``payment_intent_data``), events.

        ``payment_status="unpaid"`` is a delayed payment method: the charge stays ``pending`` until
        ``finish_async_payment``.
        """
        with self._lock:
            session = self._session(session_id)
            if session["status"] != "open":
                raise ValueError(f"session {session_id} is {session['status']}, not open")
            paid = payment_status == "paid"
            charge = self._charge_for_session(session, "succeeded" if paid else "pending", customer_email)
            intent = self._intent_for_charge(charge, "succeeded" if paid else "processing")
            email = customer_email or session["customer_email"]
            session.update(
                status="complete",
                payment_status=payment_status,
                payment_intent=intent["id"],
                url=None,
                customer_details=stripe_events.session_customer_details(email),
            )
            self._emit("charge.succeeded" if paid else "charge.pending", self._charge_json(charge))
            self._emit("payment_intent.succeeded" if paid else "payment_intent.processing", intent)
            self._emit("checkout.session.completed", session)
            return _copy(session)

    def finish_async_payment(self, session_id: str, *, succeeded: bool) -> JsonObject:
        """A delayed payment settles: ``async_payment_succeeded`` (charge paid) or ``_failed``."""
        with self._lock:
            session = self._session(session_id)
            intent = self._payment_intent(session["payment_intent"]) if session["payment_intent"] else None
            charge = self._charge(intent["latest_charge"]) if intent else None
            if intent is None or charge is None or charge.status != "pending":
                raise ValueError(f"session {session_id} has no delayed payment outstanding")
            charge.status = "succeeded" if succeeded else "failed"
            intent.update(
                status="succeeded" if succeeded else "requires_payment_method",
                amount_received=intent["amount"] if succeeded else 0,
                processing=None,
            )
            if succeeded:
                session["payment_status"] = "paid"
                self._emit("charge.succeeded", self._charge_json(charge))
                self._emit("payment_intent.succeeded", intent)
                self._emit("checkout.session.async_payment_succeeded", session)
            else:
                intent["last_payment_error"] = stripe_events.card_declined_error()
                self._emit("charge.failed", self._charge_json(charge))
                self._emit("payment_intent.payment_failed", intent)
                self._emit("checkout.session.async_payment_failed", session)
            return _copy(session)

    def expire_session(self, session_id: str) -> JsonObject:
        with self._lock:
            session = self._session(session_id)
            if session["status"] != "open":
                raise ValueError(f"session {session_id} is {session['status']}, not open")
            session.update(status="expired", url=None)
            self._emit("checkout.session.expired", session)
            return _copy(session)

    def _charge_for_session(self, session: JsonObject, status: str, customer_email: str | None) -> ChargeFields:
        pending = self._pending_payments[session["id"]]
        charge = ChargeFields(
            charge_id=new_id("ch_"),
            amount_minor=session["amount_total"],
            currency=session["currency"],
            created_seconds=self.now_seconds(),
            # Stripe copies the payment intent's metadata onto the charge it confirms.
            metadata=dict(pending.payment_intent_metadata),
            payment_intent_id=pending.payment_intent_id,
            status="succeeded" if status == "succeeded" else "pending",
            billing_email=customer_email or session["customer_email"],
        )
        self._charges.add(charge.created_seconds, charge.charge_id, charge)
        return charge

    def _intent_for_charge(self, charge: ChargeFields, status: str) -> JsonObject:
        intent = stripe_events.payment_intent_object(
            amount_minor=charge.amount_minor,
            currency=charge.currency,
            metadata=charge.metadata,
            payment_intent_id=charge.payment_intent_id,
            created_seconds=charge.created_seconds,
            status="succeeded" if status == "succeeded" else "processing",
            latest_charge_id=charge.charge_id,
        )
        self._payment_intents.add(intent["created"], intent["id"], intent)
        return intent

    # --- charges, refunds, disputes ---

    def add_charge(
        self,
        *,
        amount_minor: int,
        currency: str = "eur",
        created_seconds: int | None = None,
        metadata: Mapping[str, str] | None = None,
        payment_intent_id: str | None = None,
        charge_id: str | None = None,
        amount_refunded_minor: int = 0,
        disputed: bool = False,
        status: stripe_events.ChargeStatus = "succeeded",
        billing_email: str | None = None,
    ) -> JsonObject:
        """Seed a charge (no events). ``amount_refunded_minor`` > 0 records one refund of that amount."""
        assert amount_minor > 0
        assert 0 <= amount_refunded_minor <= amount_minor
        fields = ChargeFields(
            charge_id=charge_id or new_id("ch_"),
            amount_minor=amount_minor,
            currency=currency.lower(),
            created_seconds=self.now_seconds() if created_seconds is None else created_seconds,
            metadata=dict(metadata or {}),
            payment_intent_id=payment_intent_id,
            status=status,
            disputed=disputed,
            billing_email=billing_email,
        )
        with self._lock:
            self._charges.add(fields.created_seconds, fields.charge_id, fields)
            if amount_refunded_minor:
                self._add_refund(fields, amount_refunded_minor, fields.created_seconds, "succeeded")
            return stripe_events.charge_object(fields)

    def add_charges(self, charges: Iterable[ChargeFields]) -> int:
        """Seed many charges at once (no events, nothing rendered): the way to load 100,000 of them."""
        count = 0
        with self._lock:
            for fields in charges:
                assert fields.amount_minor > 0
                self._charges.add(fields.created_seconds, fields.charge_id, fields)
                count += 1
        return count

    def charge(self, charge_id: str) -> JsonObject:
        with self._lock:
            return stripe_events.charge_object(self._charge(charge_id))

    def charge_count(self) -> int:
        with self._lock:
            return len(self._charges)

    def refund_charge(
        self,
        charge_id: str,
        *,
        amount_minor: int | None = None,
        status: stripe_events.RefundStatus = "succeeded",
        reason: str | None = None,
    ) -> JsonObject:
        """Refund ``amount_minor`` (default: all that is left); emits ``charge.refunded`` with the cumulative total,
        then ``refund.created`` (API versions since 2024-10-28.acacia send both). Returns the charge."""
        with self._lock:
            fields = self._charge(charge_id)
            previous_minor = fields.amount_refunded_minor
            refund_minor = fields.amount_minor - previous_minor if amount_minor is None else amount_minor
            if not 0 < refund_minor <= fields.amount_minor - previous_minor:
                raise ValueError(f"cannot refund {refund_minor} of charge {charge_id}")
            refund = self._add_refund(fields, refund_minor, self.now_seconds(), status, reason)
            charge = stripe_events.charge_object(fields)
            previous = {"amount_refunded": previous_minor, "refunded": False}
            self._emit("charge.refunded", charge, previous_attributes=previous)
            self._emit("refund.created", refund)
            return charge

    def set_refund_status(
        self,
        refund_id: str,
        status: stripe_events.RefundStatus,
        *,
        failure_reason: str = "expired_or_canceled_card",
    ) -> JsonObject:
        """Move a refund on (a card refund that fails after it was created: ``failed``, with its failure fields);
        emits ``refund.updated``, and ``refund.failed`` when it failed. The charge's amount_refunded drops by a
        failed or canceled refund. Returns the refund."""
        with self._lock:
            refund = _found(self._refunds.get(refund_id), "refund", refund_id)
            previous = {"status": refund["status"]}
            stripe_events.set_refund_status(refund, status, failure_reason)
            self._emit("refund.updated", refund, previous_attributes=previous)
            if status == "failed":
                self._emit("refund.failed", refund)
            return _copy(refund)

    def refund(self, refund_id: str) -> JsonObject:
        with self._lock:
            return _copy(_found(self._refunds.get(refund_id), "refund", refund_id))

    def latest_refund_of(self, charge_id: str) -> JsonObject:
        """The charge's newest refund (the one `refund_charge` just made)."""
        with self._lock:
            refunds = self._charge(charge_id).refunds
            assert refunds, f"charge {charge_id} has no refund"
            return _copy(refunds[-1])

    def _add_refund(
        self,
        fields: ChargeFields,
        amount_minor: int,
        created_seconds: int,
        status: stripe_events.RefundStatus,
        reason: str | None = None,
    ) -> JsonObject:
        refund = stripe_events.refund_object(
            charge_id=fields.charge_id,
            amount_minor=amount_minor,
            currency=fields.currency,
            payment_intent_id=fields.payment_intent_id,
            created_seconds=created_seconds,
            status=status,
            reason=reason,
        )
        fields.refunds.append(refund)
        self._refunds.add(created_seconds, refund["id"], refund)
        return refund

    def dispute_charge(
        self,
        charge_id: str,
        *,
        status: str = "needs_response",
        reason: str = "fraudulent",
        amount_minor: int | None = None,
        dispute_id: str | None = None,
    ) -> JsonObject:
        """Open a dispute: ``charge.dispute.created``, then ``funds_withdrawn`` unless it is an inquiry."""
        with self._lock:
            fields = self._charge(charge_id)
            dispute = stripe_events.dispute_object(
                charge_id=charge_id,
                amount_minor=fields.amount_minor if amount_minor is None else amount_minor,
                currency=fields.currency,
                status=status,
                payment_intent_id=fields.payment_intent_id,
                dispute_id=dispute_id,
                reason=reason,
                created_seconds=self.now_seconds(),
            )
            fields.disputed = True
            self._disputes.add(dispute["created"], dispute["id"], dispute)
            self._emit("charge.dispute.created", dispute)
            if not stripe_events.is_inquiry(status):
                self._emit("charge.dispute.funds_withdrawn", dispute)
            return _copy(dispute)

    def set_dispute_status(self, dispute_id: str, status: str) -> JsonObject:
        """Move a dispute on: ``won``/``lost``/``warning_closed``/``prevented`` close it (a won chargeback emits
        ``funds_reinstated`` first); any other status emits ``charge.dispute.updated``."""
        with self._lock:
            dispute = self._dispute(dispute_id)
            was_inquiry = stripe_events.is_inquiry(dispute["status"])
            dispute.update(status=status, is_charge_refundable=stripe_events.is_inquiry(status))
            if status not in ("won", "lost", "warning_closed", "prevented"):
                self._emit("charge.dispute.updated", dispute)
                return _copy(dispute)
            if status == "won" and not was_inquiry:
                self._emit("charge.dispute.funds_reinstated", dispute)
            self._emit("charge.dispute.closed", dispute)
            return _copy(dispute)

    def dispute(self, dispute_id: str) -> JsonObject:
        with self._lock:
            return _copy(self._dispute(dispute_id))

    def payment_intent(self, payment_intent_id: str) -> JsonObject:
        with self._lock:
            return _copy(self._payment_intent(payment_intent_id))

    # --- events ---

    def add_event(self, event: Mapping[str, Any], *, delivery_success: bool = True) -> JsonObject:
        """Record an event (e.g. from ``stripe_events``); ``delivery_success=False`` marks it undelivered."""
        stored = _copy(dict(event))
        stored["pending_webhooks"] = 0 if delivery_success else 1
        with self._lock:
            self._events.add(stored["created"], stored["id"], stored)
            self._event_delivery_success[stored["id"]] = delivery_success
            return _copy(stored)

    def events(self, event_type: str | None = None) -> list[JsonObject]:
        """Every recorded event, oldest first (optionally one type), whatever its age."""
        with self._lock:
            found = self._events.values_oldest_first()
            return [_copy(event) for event in found if event_type is None or event["type"] == event_type]

    def _emit(self, event_type: str, data_object: JsonObject, previous_attributes: JsonObject | None = None) -> None:
        if self.emit_events:
            built = stripe_events.event(
                event_type, data_object, created_seconds=self.now_seconds(), previous_attributes=previous_attributes
            )
            self.add_event(built)

    # --- faults, idempotency and the request log ---

    def inject_fault(
        self,
        status_code: int,
        *,
        count: int = 1,
        path_prefix: str = "/",
        method: str | None = None,
        retry_after_seconds: int | None = None,
        should_retry: bool | None = None,
        after_effect: bool = False,
    ) -> Fault:
        """Fail the next ``count`` requests under ``path_prefix`` (429 → ``rate_limit``, 5xx → ``api_error``)."""
        assert count > 0
        assert status_code >= 400
        fault = Fault(status_code, count, path_prefix, method, retry_after_seconds, should_retry, after_effect)
        with self._lock:
            assert len(self._faults) < FAULTS_PENDING_MAX, "too many pending faults"
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    return fault
            return None

    @property
    def requests(self) -> list[LoggedRequest]:
        """The requests received, oldest first (the last ``REQUEST_LOG_ENTRIES_MAX``)."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def log_request(self, entry: LoggedRequest) -> None:
        with self._lock:
            self._requests.append(entry)

    def replay(self, idempotency_key: str, fingerprint: Fingerprint) -> str | None:
        """The stored body for a key used before with the same request; an error if the request differed."""
        with self._lock:
            stored = self._idempotent_responses.get(idempotency_key)
            if stored is None:
                return None
            if stored.fingerprint != fingerprint:
                message = (
                    "Keys for idempotent requests can only be used with the same parameters they were first used "
                    f"with. Try using a key other than '{idempotency_key}' if you meant to execute a different request."
                )
                raise FakeStripeError(400, "idempotency_error", message)
            return stored.body_text

    def remember(self, idempotency_key: str, fingerprint: Fingerprint, body_text: str) -> None:
        with self._lock:
            assert len(self._idempotent_responses) < IDEMPOTENCY_KEYS_MAX, "idempotency key store full"
            self._idempotent_responses[idempotency_key] = _StoredResponse(fingerprint, body_text)

    # --- HTTP-side reads: serialized under the lock, so a test thread may keep changing the state ---

    def charges_page_json(self, query: ListQuery, payment_intent_id: str | None) -> str:
        def matches(fields: ChargeFields) -> bool:
            return fields.payment_intent_id == payment_intent_id

        with self._lock:
            found, has_more = self._charges.page(query, matches if payment_intent_id else None)
            return _list_json("/v1/charges", [self._charge_json(fields) for fields in found], has_more)

    def refunds_page_json(self, query: ListQuery, filters: Mapping[str, str]) -> str:
        def matches(refund: JsonObject) -> bool:
            return all(refund.get(name) == value for name, value in filters.items())

        with self._lock:
            found, has_more = self._refunds.page(query, matches if filters else None)
            return _list_json("/v1/refunds", [_copy(refund) for refund in found], has_more)

    def disputes_page_json(self, query: ListQuery, filters: Mapping[str, str]) -> str:
        def matches(dispute: JsonObject) -> bool:
            return all(dispute.get(name) == value for name, value in filters.items())

        with self._lock:
            found, has_more = self._disputes.page(query, matches if filters else None)
            return _list_json("/v1/disputes", found, has_more)

    def events_page_json(self, query: ListQuery, types: list[str], delivery_success: bool | None) -> str:
        patterns = [re.compile(".*".join(map(re.escape, pattern.split("*")))) for pattern in types]

        def matches(event: JsonObject) -> bool:
            if delivery_success is not None and self._event_delivery_success[event["id"]] != delivery_success:
                return False
            return not patterns or any(pattern.fullmatch(event["type"]) for pattern in patterns)

        # Stripe's Events API only reaches back EVENTS_RETENTION_SECONDS.
        retained_min_seconds = self.now_seconds() - EVENTS_RETENTION_SECONDS
        if query.created_min_seconds is None or query.created_min_seconds < retained_min_seconds:
            query = dataclasses.replace(query, created_min_seconds=retained_min_seconds)
        with self._lock:
            found, has_more = self._events.page(query, matches if patterns or delivery_success is not None else None)
            return _list_json("/v1/events", found, has_more)

    def object_json(self, resource: str, object_id: str) -> str:
        """One object by id for a retrieve endpoint; ``resource`` is Stripe's object name."""
        with self._lock:
            if resource == "charge":
                return json.dumps(self._charge_json(self._charge(object_id)))
            found = {
                "checkout.session": self._sessions,
                "payment_intent": self._payment_intents,
                "dispute": self._disputes,
                "refund": self._refunds,
                "event": self._events,
            }[resource].get(object_id)
            if found is None or (resource == "event" and self._expired(found)):
                raise no_such(resource.replace("checkout.session", "checkout session"), object_id)
            return json.dumps(found)

    def _expired(self, event: JsonObject) -> bool:
        return int(event["created"]) < self.now_seconds() - EVENTS_RETENTION_SECONDS

    # --- lookups that raise Stripe's 404 ---

    def _session(self, session_id: str) -> JsonObject:
        return _found(self._sessions.get(session_id), "checkout session", session_id)

    def _charge(self, charge_id: str) -> ChargeFields:
        return _found(self._charges.get(charge_id), "charge", charge_id)

    def _payment_intent(self, payment_intent_id: str) -> JsonObject:
        return _found(self._payment_intents.get(payment_intent_id), "payment_intent", payment_intent_id)

    def _dispute(self, dispute_id: str) -> JsonObject:
        return _found(self._disputes.get(dispute_id), "dispute", dispute_id)

    @staticmethod
    def _charge_json(fields: ChargeFields) -> JsonObject:
        return stripe_events.charge_object(fields, private_copy=False)


def _found(value: T | None, resource: str, object_id: str) -> T:
    if value is None:
        raise no_such(resource, object_id)
    return value


def _list_json(url: str, data: list[JsonObject], has_more: bool) -> str:
    return json.dumps({"object": "list", "data": data, "has_more": has_more, "url": url})


def _copy(value: JsonObject) -> JsonObject:
    copied = json.loads(json.dumps(value))
    assert isinstance(copied, dict)
    return copied


# --- HTTP ------------------------------------------------------------------------------------------

STATE_KEY: Final = web.AppKey("fake_stripe_state", FakeStripe)

_LIST_SCHEMA: Final[dict[str, Any]] = {
    "limit": INTEGER,
    "starting_after": STRING,
    "ending_before": STRING,
    "created": RANGE,
}
_CHARGE_LIST_SCHEMA: Final = {**_LIST_SCHEMA, "payment_intent": STRING}
_DISPUTE_LIST_SCHEMA: Final = {**_LIST_SCHEMA, "charge": STRING, "payment_intent": STRING}
_REFUND_LIST_SCHEMA: Final = {**_LIST_SCHEMA, "charge": STRING, "payment_intent": STRING}
_EVENT_LIST_SCHEMA: Final = {**_LIST_SCHEMA, "type": STRING, "types": [STRING], "delivery_success": BOOLEAN}
_SESSION_CREATE_SCHEMA: Final[dict[str, Any]] = {
    "mode": STRING,
    "success_url": STRING,
    "cancel_url": STRING,
    "client_reference_id": STRING,
    "customer_email": STRING,
    "metadata": METADATA,
    "payment_intent_data": {"metadata": METADATA, "description": STRING},
    "allow_promotion_codes": BOOLEAN,
    "automatic_tax": {"enabled": BOOLEAN},
    "line_items": [
        {
            "quantity": INTEGER,
            "price_data": {
                "currency": STRING,
                "unit_amount": INTEGER,
                "tax_behavior": STRING,
                "product_data": {"name": STRING, "description": STRING},
            },
        }
    ],
}


def create_app(state: FakeStripe) -> web.Application:
    """The aiohttp application serving ``state`` as Stripe's API."""
    app = web.Application(middlewares=[_stripe_middleware], client_max_size=REQUEST_BODY_BYTES_MAX)
    app[STATE_KEY] = state
    app.router.add_post("/v1/checkout/sessions", _create_session)
    for resource, path in (
        ("checkout.session", "/v1/checkout/sessions/{id}"),
        ("charge", "/v1/charges/{id}"),
        ("payment_intent", "/v1/payment_intents/{id}"),
        ("dispute", "/v1/disputes/{id}"),
        ("refund", "/v1/refunds/{id}"),
        ("event", "/v1/events/{id}"),
    ):
        app.router.add_get(path, _retrieve_handler(resource))
    app.router.add_get("/v1/charges", _list_charges)
    app.router.add_get("/v1/refunds", _list_refunds)
    app.router.add_get("/v1/disputes", _list_disputes)
    app.router.add_get("/v1/events", _list_events)
    return app


@web.middleware
async def _stripe_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    form_text = await request.text() if request.method == "POST" else ""
    response = await _answer(state, request, handler)
    response.headers["Request-Id"] = new_id("req_", 14)
    state.log_request(
        LoggedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            form=dict(parse_qsl(form_text, keep_blank_values=True)),
            idempotency_key=request.headers.get("Idempotency-Key"),
            stripe_version=request.headers.get("Stripe-Version"),
            status_code=response.status,
        )
    )
    return response


async def _answer(state: FakeStripe, request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        _authenticate(state, request)
        fault = state.take_fault(request.method, request.path)
        if fault is not None and not fault.after_effect:
            raise fault.error()
        response = await handler(request)
        if fault is not None:
            raise fault.error()
        return response
    except FakeStripeError as error:
        return _json_response(error.body(), status=error.status_code, headers=error.headers)
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
        message = f"Unrecognized request URL ({request.method}: {request.path}). (The fake implements a subset.)"
        return _json_response({"error": {"type": "invalid_request_error", "message": message}}, status=404)


def _authenticate(state: FakeStripe, request: web.Request) -> None:
    authorization = request.headers.get("Authorization", "")
    if not authorization:
        message = "You did not provide an API key. You need to provide your API key in the Authorization header."
        raise FakeStripeError(401, "invalid_request_error", message)
    scheme, _, api_key = authorization.partition(" ")
    if scheme != "Bearer" or api_key != state.api_key:
        message = f"Invalid API Key provided: {api_key[:8]}{'*' * max(0, len(api_key) - 12)}{api_key[-4:]}"
        raise FakeStripeError(401, "invalid_request_error", message, code="api_key_invalid")


def _json_response(body: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return _text_response(json.dumps(body), status=status, headers=headers)


def _text_response(text: str, *, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(text=text, status=status, content_type="application/json", headers=headers)


def _query_params(request: web.Request, schema: dict[str, Any]) -> JsonObject:
    checked = check_params(parse_params(request.query.items()), schema, "")
    assert isinstance(checked, dict)
    return checked


def _retrieve_handler(resource: str) -> Callable[[web.Request], Any]:
    async def retrieve(request: web.Request) -> web.Response:
        _query_params(request, {})
        return _text_response(request.app[STATE_KEY].object_json(resource, request.match_info["id"]))

    return retrieve


async def _list_charges(request: web.Request) -> web.Response:
    params = _query_params(request, _CHARGE_LIST_SCHEMA)
    return _text_response(request.app[STATE_KEY].charges_page_json(list_query(params), params.get("payment_intent")))


async def _list_disputes(request: web.Request) -> web.Response:
    params = _query_params(request, _DISPUTE_LIST_SCHEMA)
    filters = {name: params[name] for name in ("charge", "payment_intent") if name in params}
    return _text_response(request.app[STATE_KEY].disputes_page_json(list_query(params), filters))


async def _list_refunds(request: web.Request) -> web.Response:
    params = _query_params(request, _REFUND_LIST_SCHEMA)
    filters = {name: params[name] for name in ("charge", "payment_intent") if name in params}
    return _text_response(request.app[STATE_KEY].refunds_page_json(list_query(params), filters))


async def _list_events(request: web.Request) -> web.Response:
    params = _query_params(request, _EVENT_LIST_SCHEMA)
    if "type" in params and "types" in params:
        raise invalid_request("You may pass either type or types, but not both.", param="types")
    types = [params["type"]] if "type" in params else params.get("types", [])
    if len(types) > EVENT_TYPES_FILTER_MAX:
        raise invalid_request(f"types can hold at most {EVENT_TYPES_FILTER_MAX} event types", param="types")
    delivery_success = params.get("delivery_success")
    return _text_response(request.app[STATE_KEY].events_page_json(list_query(params), types, delivery_success))


async def _create_session(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    form_text = await request.text()
    pairs = parse_qsl(form_text, keep_blank_values=True)
    params = check_params(parse_params(pairs), _SESSION_CREATE_SCHEMA, "")
    idempotency_key = request.headers.get("Idempotency-Key")
    fingerprint: Fingerprint = (request.method, request.path, tuple(sorted(pairs)))
    if idempotency_key is not None:
        if len(idempotency_key) > IDEMPOTENCY_KEY_LENGTH_MAX:
            raise invalid_request(f"Idempotency-Key must be at most {IDEMPOTENCY_KEY_LENGTH_MAX} characters")
        replayed = state.replay(idempotency_key, fingerprint)
        if replayed is not None:
            return _text_response(replayed, headers={"Idempotent-Replayed": "true"})
    body_text = json.dumps(state.create_session(**_session_arguments(params)))
    if idempotency_key is not None:
        state.remember(idempotency_key, fingerprint, body_text)
    return _text_response(body_text)


def _session_arguments(params: Mapping[str, Any]) -> dict[str, Any]:
    """Check a session-create request as Stripe would and map it to ``FakeStripe.create_session``."""
    if "mode" not in params:
        raise invalid_request("Missing required param: mode.", param="mode", code="parameter_missing")
    if params["mode"] != "payment":
        raise invalid_request("The fake implements only mode=payment.", param="mode")
    if "success_url" not in params:
        raise invalid_request("Missing required param: success_url.", param="success_url", code="parameter_missing")
    if len(params.get("client_reference_id", "")) > CLIENT_REFERENCE_ID_LENGTH_MAX:
        raise invalid_request("client_reference_id is too long", param="client_reference_id")
    amount_minor, currency = _line_items_total(params.get("line_items", []))
    return {
        "amount_minor": amount_minor,
        "currency": currency,
        "metadata": params.get("metadata"),
        "payment_intent_metadata": params.get("payment_intent_data", {}).get("metadata"),
        "client_reference_id": params.get("client_reference_id"),
        "customer_email": params.get("customer_email"),
        "success_url": params["success_url"],
        "cancel_url": params.get("cancel_url"),
        "allow_promotion_codes": params.get("allow_promotion_codes"),
        "automatic_tax": params.get("automatic_tax", {}).get("enabled", False),
    }


def _line_items_total(line_items: list[JsonObject]) -> tuple[int, str]:
    if not line_items:
        raise invalid_request("Missing required param: line_items.", param="line_items", code="parameter_missing")
    if len(line_items) > LINE_ITEMS_MAX:
        raise invalid_request(f"line_items can hold at most {LINE_ITEMS_MAX} items", param="line_items")
    amount_minor = 0
    currencies: set[str] = set()
    for index, item in enumerate(line_items):
        param = f"line_items[{index}]"
        price_data = item.get("price_data", {})
        for name in ("currency", "unit_amount", "product_data"):
            if name not in price_data:
                raise _missing(f"{param}[price_data][{name}]")
        if "name" not in price_data["product_data"]:
            raise _missing(f"{param}[price_data][product_data][name]")
        if "quantity" not in item:
            raise _missing(f"{param}[quantity]")
        if price_data["unit_amount"] < 0 or item["quantity"] < 1:
            raise invalid_request("unit_amount must be >= 0 and quantity >= 1", param=param)
        if price_data.get("tax_behavior", "unspecified") not in ("exclusive", "inclusive", "unspecified"):
            raise invalid_request("Invalid tax_behavior", param=f"{param}[price_data][tax_behavior]")
        amount_minor += price_data["unit_amount"] * item["quantity"]
        currencies.add(price_data["currency"].lower())
    if len(currencies) != 1:
        raise invalid_request("All line items must use the same currency.", param="line_items")
    if amount_minor > AMOUNT_MINOR_MAX:
        raise invalid_request("Amount must be no more than 99,999,999.", param="line_items", code="amount_too_large")
    return amount_minor, currencies.pop()


def _missing(param: str) -> FakeStripeError:
    return invalid_request(f"Missing required param: {param}.", param=param, code="parameter_missing")


# --- running it -------------------------------------------------------------------------------------


@dataclass
class RunningFakeStripe:
    """A fake serving on a real port: point the SDK at ``base_url`` with ``api_key``."""

    base_url: str
    state: FakeStripe
    _http_clients: list[stripe.AIOHTTPClient] = field(default_factory=list)

    @property
    def api_key(self) -> str:
        return self.state.api_key

    def async_client(self, *, max_network_retries: int = 0) -> stripe.StripeClient:
        """A ``StripeClient`` for ``*_async`` calls (aiohttp), closed when the fake stops."""
        http_client = stripe.AIOHTTPClient()
        self._http_clients.append(http_client)
        return stripe.StripeClient(
            self.api_key,
            base_addresses={"api": self.base_url},
            http_client=http_client,
            max_network_retries=max_network_retries,
        )

    def sync_client(self, *, max_network_retries: int = 0) -> stripe.StripeClient:
        """A ``StripeClient`` for blocking calls; only usable when the fake runs on another thread."""
        return stripe.StripeClient(
            self.api_key,
            base_addresses={"api": self.base_url},
            http_client=stripe.RequestsClient(),
            max_network_retries=max_network_retries,
        )

    async def close_clients(self) -> None:
        for http_client in self._http_clients:
            await http_client.close_async()
        self._http_clients.clear()


async def _start_server(state: FakeStripe, host: str) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(create_app(state), access_log=None)
    await runner.setup()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((host, 0))
    site = web.SockSite(runner, listener)
    await site.start()
    port = listener.getsockname()[1]
    return runner, f"http://{host}:{port}"


@contextlib.asynccontextmanager
async def running_fake_stripe(
    api_key: str = API_KEY_DEFAULT, *, state: FakeStripe | None = None, host: str = "127.0.0.1"
) -> AsyncIterator[RunningFakeStripe]:
    """Serve a fake on the running event loop (for ``*_async`` SDK calls and services under test)."""
    state = state or FakeStripe(api_key)
    runner, base_url = await _start_server(state, host)
    running = RunningFakeStripe(base_url=base_url, state=state)
    try:
        yield running
    finally:
        await running.close_clients()
        await runner.cleanup()


@contextlib.contextmanager
def running_fake_stripe_in_thread(
    api_key: str = API_KEY_DEFAULT, *, state: FakeStripe | None = None, host: str = "127.0.0.1"
) -> Iterator[RunningFakeStripe]:
    """Serve a fake from a background thread's own loop (for blocking SDK calls and subprocesses)."""
    state = state or FakeStripe(api_key)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fake-stripe", daemon=True)
    thread.start()
    try:
        started = asyncio.run_coroutine_threadsafe(_start_server(state, host), loop)
        runner, base_url = started.result(timeout=SERVER_START_TIMEOUT_SECONDS)
        running = RunningFakeStripe(base_url=base_url, state=state)
        try:
            yield running
        finally:
            stopped = asyncio.run_coroutine_threadsafe(_stop(running, runner), loop)
            stopped.result(timeout=SERVER_STOP_TIMEOUT_SECONDS)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=SERVER_STOP_TIMEOUT_SECONDS)
        loop.close()


async def _stop(running: RunningFakeStripe, runner: web.AppRunner) -> None:
    await running.close_clients()
    await runner.cleanup()


@contextlib.asynccontextmanager
async def global_stripe(running: RunningFakeStripe, *, max_network_retries: int = 0) -> AsyncIterator[None]:
    """Aim the SDK's module globals (``stripe.api_key``, ``stripe.api_base``, ...) at the fake, with a fresh
    global HTTP client, and restore them afterwards (the global aiohttp session is bound to one loop)."""
    saved = (stripe.api_key, stripe.api_base, stripe.max_network_retries, stripe.default_http_client)
    async_client = stripe.AIOHTTPClient()
    stripe.api_key = running.api_key
    stripe.api_base = running.base_url
    stripe.max_network_retries = max_network_retries
    stripe.default_http_client = stripe.RequestsClient(async_fallback_client=async_client)
    try:
        yield
    finally:
        await async_client.close_async()
        stripe.api_key, stripe.api_base, stripe.max_network_retries, stripe.default_http_client = saved
