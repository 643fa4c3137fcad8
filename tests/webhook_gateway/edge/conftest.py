"""Fixtures of the HTTP-edge tests (issue 5): a real gateway on a real port, the real in-process ledger,
the fake Stripe API, JWTs signed as the host app signs them, and a contract checker that validates every
answer against the OpenAPI document the gateway serves.

The gateway here verifies `aud` and `iss` (the parent conftest's does not), and its ledger caller holds
every role: the edge routes need `reader` and `admin` besides the webhook's `payments`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
import jwt
import pytest
from aiohttp import web
from jsonschema import FormatChecker
from multidict import CIMultiDict, CIMultiDictProxy
from openapi_schema_validator import OAS30Validator
from redis.asyncio import Redis

from credits.ledger.v1 import ledger_service_pb2 as pb
from services.ledger.client import LedgerClient
from services.stripe_bridge.api import StripeApi
from services.webhook_gateway.app import build_app
from services.webhook_gateway.config import GatewaySettings
from services.webhook_gateway.http_errors import GatewayRunner
from services.webhook_gateway.openapi import OPENAPI_DOCUMENT
from services.webhook_gateway.ratelimit import connect_redis
from tests.conftest import ALL_ROLES_TOKEN, new_key
from tests.fakes.stripe_api import RunningFakeStripe
from tests.webhook_gateway.conftest import JWT_SECRET, ORIGIN, gateway_environ

AUDIENCE: Final = "credits-gateway"
ISSUER: Final = "https://auth.example.test"
OTHER_JWT_SECRET: Final = "someone-elses-jwt-secret-0123456789abcdef"
REDIS_URL: Final = "redis://127.0.0.1:6379/0"
LEDGER_DEADLINE_SECONDS: Final = 3.0
LEDGER_ATTEMPTS_MAX: Final = 2
HTTP_TIMEOUT_SECONDS: Final = 30.0

__all__ = ["AUDIENCE", "ISSUER", "ORIGIN", "OTHER_JWT_SECRET"]


def edge_environ(ledger_target: str, fake: RunningFakeStripe, **overrides: str) -> dict[str, str]:
    """The parent's gateway environment, with audience/issuer checks and a ledger token of every role."""
    values = {"LEDGER_TOKEN": ALL_ROLES_TOKEN, "JWT_AUDIENCE": AUDIENCE, "JWT_ISSUER": ISSUER, **overrides}
    return gateway_environ(ledger_target, fake, **values)


@dataclass
class EdgeGateway:
    base_url: str
    app: web.Application
    settings: GatewaySettings

    def url(self, path: str) -> str:
        return self.base_url + path


@asynccontextmanager
async def running_edge_gateway(environ: Mapping[str, str], *, redis: Redis | None = None) -> AsyncIterator[EdgeGateway]:
    """`build_app` served on 127.0.0.1 (optionally with a Redis rate-limit store); clients closed after."""
    settings = GatewaySettings.from_env(environ)
    ledger = LedgerClient(
        settings.ledger_target,
        settings.ledger_token,
        deadline_seconds=LEDGER_DEADLINE_SECONDS,
        attempts_max=LEDGER_ATTEMPTS_MAX,
    )
    stripe_api = StripeApi(settings.stripe_api_key, settings.stripe_api_base)
    app = build_app(settings, ledger, stripe_api, redis=redis)
    runner = GatewayRunner(app, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield EdgeGateway(f"http://127.0.0.1:{port}", app, settings)
    finally:
        await runner.cleanup()
        await stripe_api.close()
        await ledger.close()


# --- tokens -------------------------------------------------------------------------------------


def token(
    subject: str,
    *,
    roles: list[str] | None = None,
    expires_in_seconds: int = 300,
    audience: str = AUDIENCE,
    issuer: str = ISSUER,
    secret: str = JWT_SECRET,
) -> str:
    """A host-app JWT (HS256) for `subject`; every part can be made wrong for the negative tests."""
    claims: dict[str, Any] = {"sub": subject, "exp": int(time.time()) + expires_in_seconds, "aud": audience}
    claims["iss"] = issuer
    if roles is not None:
        claims["roles"] = roles
    return jwt.encode(claims, secret, algorithm="HS256")


def admin_token(subject: str = "admin-ops-1") -> str:
    return token(subject, roles=["admin"])


def fresh_user_id() -> str:
    return f"user-{uuid.uuid4().hex}"


# --- the OpenAPI contract -----------------------------------------------------------------------


@dataclass(frozen=True)
class EdgeAnswer:
    status: int
    body: Any
    headers: CIMultiDictProxy[str]
    text: str

    @property
    def code(self) -> str:
        assert isinstance(self.body, dict), self.text[:200]
        return str(self.body["error"]["code"])


@dataclass
class Contract:
    """Checks answers against the OpenAPI document and remembers which (method, path, status) were seen."""

    document: Mapping[str, Any]
    seen: set[tuple[str, str, int]] = field(default_factory=set)

    def operation(self, method: str, path: str) -> Mapping[str, Any] | None:
        item = self.document["paths"].get(path)
        return None if item is None else item.get(method.lower())

    def validator(self, schema: Mapping[str, Any]) -> OAS30Validator:
        # `#/components/...` references resolve against this root, which carries the document's components.
        root = {"allOf": [schema], "components": self.document["components"]}
        return OAS30Validator(root, format_checker=FormatChecker())

    def check(self, method: str, path: str, answer: EdgeAnswer) -> None:
        operation = self.operation(method, path)
        assert operation is not None, f"{method} {path} is not in the OpenAPI document"
        response = operation["responses"].get(str(answer.status))
        assert response is not None, f"{method} {path} answered {answer.status}, which the document omits"
        media_type = answer.headers.get("Content-Type", "").split(";")[0].strip()
        assert media_type in response["content"], f"{method} {path} {answer.status}: {media_type} undocumented"
        if media_type == "application/json":
            errors = sorted(self.validator(response["content"][media_type]["schema"]).iter_errors(answer.body), key=str)
            assert not errors, f"{method} {path} {answer.status}: {errors[0].message} in {answer.text[:300]}"
        for name, header in response.get("headers", {}).items():
            self._check_header(name, header, answer)
        self.seen.add((method.upper(), path, answer.status))

    def _check_header(self, name: str, header: Mapping[str, Any], answer: EdgeAnswer) -> None:
        assert name in answer.headers, f"documented header {name} missing"
        ref = header["$ref"].rsplit("/", 1)[-1]
        schema = self.document["components"]["headers"][ref]["schema"]
        value: Any = answer.headers[name]
        if schema.get("type") == "integer":
            assert value.isdigit(), (name, value)
            value = int(value)
        errors = list(self.validator(schema).iter_errors(value))
        assert not errors, (name, value, errors[0].message)


@dataclass
class Edge:
    """An HTTP client of one gateway that checks each answer of a documented route against the document."""

    http: aiohttp.ClientSession
    gateway: EdgeGateway
    contract: Contract

    async def call(
        self,
        method: str,
        path: str,
        *,
        bearer: str | None = None,
        json_body: Any = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | list[tuple[str, str]] | None = None,
        check: bool = True,
    ) -> EdgeAnswer:
        sent = CIMultiDict(headers or {})
        if bearer is not None:
            sent["Authorization"] = f"Bearer {bearer}"
        if json_body is not None:
            assert data is None
            data = json.dumps(json_body).encode()
            sent.setdefault("Content-Type", "application/json")
        async with self.http.request(
            method, self.gateway.url(path), data=data, headers=sent, params=params
        ) as response:
            text = await response.text()
            body = json.loads(text) if response.content_type == "application/json" else text
            answer = EdgeAnswer(response.status, body, response.headers, text)
        if check and method.upper() != "OPTIONS":
            self.contract.check(method, path, answer)
        return answer


@pytest.fixture(scope="session")
def contract() -> Contract:
    return Contract(OPENAPI_DOCUMENT)


@pytest.fixture(scope="session")
async def edge_gateway(ledger_target: str, fake_stripe: RunningFakeStripe) -> AsyncIterator[EdgeGateway]:
    async with running_edge_gateway(edge_environ(ledger_target, fake_stripe)) as running:
        yield running


@pytest.fixture(scope="session")
async def edge_http() -> AsyncIterator[aiohttp.ClientSession]:
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_SECONDS)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=100)) as session:
        yield session


@pytest.fixture(scope="session")
def edge(edge_http: aiohttp.ClientSession, edge_gateway: EdgeGateway, contract: Contract) -> Edge:
    return Edge(edge_http, edge_gateway, contract)


@pytest.fixture(scope="session")
async def redis_client() -> AsyncIterator[Redis]:
    """The real Redis on 127.0.0.1:6379, or a skip that says why."""
    client = connect_redis(REDIS_URL)
    try:
        await client.ping()  # type: ignore[misc]  # redis-py types ping() for both clients at once.
    except Exception as exc:  # Any failure to answer means the same: no Redis to test against.
        await client.aclose()
        pytest.skip(f"no Redis answers on {REDIS_URL} ({type(exc).__name__}); the Redis-backed limit is untested")
    yield client
    await client.aclose()


# --- ledger state -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AccountState:
    """Everything an edge route could change about one user, to assert that a refusal changed nothing."""

    balance: int
    held: int
    status: int
    journal: tuple[tuple[int, int], ...]
    payments: tuple[tuple[int, int, bool], ...]


async def account_state(ledger: LedgerClient, user_id: str) -> AccountState:
    balance = await ledger.get_balance(user_id)
    journal = await ledger.list_transactions(user_id, page_size=100)
    payments = await ledger.call(ledger.stub.ListPayments, pb.ListPaymentsRequest(user_id=user_id, page_size=100))
    return AccountState(
        balance=balance.balance,
        held=balance.held,
        status=balance.status,
        journal=tuple((entry.id, entry.delta) for entry in journal.transactions),
        payments=tuple((payment.id, payment.status, payment.anonymized) for payment in payments.payments),
    )


async def seed_credits(ledger: LedgerClient, user_id: str, amount: int = 100) -> pb.Transaction:
    return (await ledger.credit(user_id, amount, new_key(), "seed for an edge test")).transaction
