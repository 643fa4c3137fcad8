"""Logs of the real processes through a purchase, a refund and a GDPR erasure.

`python -m services.ledger` and `python -m services.webhook_gateway` run as subprocesses with their real
configuration (every secret fresh for this test), the gateway talking to the fake Stripe API on a real port.
Every line either process writes, on stdout or stderr, must be one JSON object with time, level, service and
message; lines written while a request is handled carry its trace; and no raw email, Stripe key, webhook
secret, JWT, JWT key, caller token or database password appears anywhere (a masked email, `j***@example.com`,
is allowed).

The flow goes through the error paths too (a forged webhook, a bad JWT, a refused event), since that is
where exceptions, and the secrets inside them, tend to end up in logs.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import re
import secrets
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import jwt
import psycopg
import pytest

from services.ledger import errors
from services.ledger.client import LedgerClient
from tests.conftest import ROOT
from tests.fakes import stripe_events as se
from tests.fakes.stripe_api import RunningFakeStripe, running_fake_stripe
from tests.observability.conftest import free_port, wait_until

START_SECONDS_MAX = 30.0
EXIT_SECONDS_MAX = 30.0
SERVICES = ("ledger", "webhook_gateway")
REQUIRED_FIELDS = ("time", "level", "service", "message")
LEVELS = frozenset({"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"})
# Only what a process needs from the test's own environment: nothing from the shell leaks into its config.
INHERITED_VARIABLES = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
JWT_SHAPE = re.compile(r"eyJ[0-9A-Za-z_-]*\.[0-9A-Za-z_-]+\.")  # A base64url JSON header, a dot, a payload, a dot.


@dataclass(frozen=True)
class Secrets:
    """Everything that must never be written, fresh for the run."""

    gateway_token: str
    reconciler_token: str
    wrong_token: str
    stripe_api_key: str
    webhook_secret: str
    jwt_secret: str
    email: str
    database_password: str | None

    @classmethod
    def new(cls, database_password: str | None) -> Secrets:
        return cls(
            gateway_token=f"gw-{secrets.token_urlsafe(24)}",
            reconciler_token=f"rc-{secrets.token_urlsafe(24)}",
            wrong_token=f"wrong-{secrets.token_urlsafe(24)}",
            stripe_api_key=f"sk_test_{secrets.token_hex(24)}",
            webhook_secret=f"whsec_{secrets.token_hex(24)}",
            jwt_secret=secrets.token_urlsafe(32),
            email=f"jenny.rosen.{uuid.uuid4().hex[:8]}@example.com",
            database_password=database_password,
        )

    def never_written(self) -> dict[str, str]:
        values = {
            "gateway caller token": self.gateway_token,
            "reconciler caller token": self.reconciler_token,
            "caller token the ledger refused": self.wrong_token,
            "Stripe API key": self.stripe_api_key,
            "webhook secret": self.webhook_secret,
            "JWT secret": self.jwt_secret,
            "customer email": self.email,
            "customer email, local part": self.email.split("@")[0],
        }
        if self.database_password:
            values["database password"] = self.database_password
        return values


def _with_password(database_url: str) -> tuple[str, str | None]:
    """The URL with a password the server accepts (a trusting server takes any): a secret to watch for."""
    parts = urlsplit(database_url)
    if parts.password:
        return database_url, parts.password
    password = f"pw-{secrets.token_hex(12)}"
    netloc = f"{parts.username or 'postgres'}:{password}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    candidate = urlunsplit(parts._replace(netloc=netloc))
    try:
        with psycopg.connect(candidate, connect_timeout=5):
            return candidate, password
    except psycopg.OperationalError:
        return database_url, None


def _environ(**settings: str) -> dict[str, str]:
    inherited = {name: os.environ[name] for name in INHERITED_VARIABLES if name in os.environ}
    return inherited | settings


@dataclass
class Service:
    name: str
    process: asyncio.subprocess.Process
    output: Path  # stdout and stderr, interleaved as written


@asynccontextmanager
async def running_service(module: str, environ: Mapping[str, str], output: Path) -> AsyncIterator[Service]:
    with output.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", module, cwd=ROOT, env=dict(environ), stdout=sink, stderr=sink
        )
    service = Service(module, process, output)
    try:
        yield service
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def stop(service: Service) -> None:
    service.process.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(service.process.wait(), EXIT_SECONDS_MAX)
    assert code == 0, f"{service.name} exited {code}:\n{service.output.read_text(errors='replace')}"


def _token(jwt_secret: str, subject: str, **claims: Any) -> str:
    payload = {"sub": subject, "exp": int(time.time()) + 600, **claims}
    return jwt.encode(payload, jwt_secret, algorithm="HS256")


class Flow:
    """The HTTP side of the flow: what a browser, an admin and Stripe send to the gateway."""

    def __init__(self, http, base_url: str, fake: RunningFakeStripe, secrets_: Secrets) -> None:
        self.http = http
        self.base_url = base_url
        self.fake = fake
        self.secrets = secrets_

    async def call(self, method: str, path: str, token: str | None = None, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.request(method, self.base_url + path, headers=headers, json=body) as answer:
            return answer.status, await answer.json(content_type=None)

    async def deliver(self, event: Mapping[str, Any], secret: str | None = None) -> int:
        delivery = se.signed_delivery(event, secret or self.secrets.webhook_secret)
        url = self.base_url + "/webhooks/stripe"
        async with self.http.post(url, data=delivery.body, headers=delivery.headers) as answer:
            return answer.status

    async def deliver_new_events(self, since: int) -> list[dict[str, Any]]:
        emitted = self.fake.state.events()[since:]
        for event in emitted:
            assert await self.deliver(event) == 200, event["type"]
        return emitted


async def _run_flow(flow: Flow, user_id: str, user_token: str, admin_token: str) -> None:
    """Purchase -> (errors on the way) -> refund -> admin adjustment -> GDPR erasure."""
    status, body = await flow.call("POST", "/checkout", user_token, {"package_id": "small"})
    assert status == 200, body
    session_id = body["checkout_session_id"]
    before = len(flow.fake.state.events())
    flow.fake.state.complete_session(session_id, customer_email=flow.secrets.email)
    await flow.deliver_new_events(before)
    status, body = await flow.call("GET", "/me/credits", user_token)
    assert (status, body["balance"]) == (200, 100), body

    # Error paths: a forged webhook, a token signed with another key, a refused (mispriced) purchase.
    forged = se.checkout_session_completed(user_id, "small", 500, "eur", customer_email=flow.secrets.email)
    assert await flow.deliver(forged, secret=f"whsec_{secrets.token_hex(24)}") == 400
    foreign = jwt.encode({"sub": user_id, "exp": int(time.time()) + 600}, "another-key-" + "x" * 32, algorithm="HS256")
    assert (await flow.call("GET", "/me/credits", foreign))[0] == 401
    mispriced = se.checkout_session_completed(user_id, "small", 499, "eur", customer_email=flow.secrets.email)
    assert await flow.deliver(mispriced) == 200

    intent = flow.fake.state.payment_intent(flow.fake.state.session(session_id)["payment_intent"])
    before = len(flow.fake.state.events())
    flow.fake.state.refund_charge(intent["latest_charge"])
    await flow.deliver_new_events(before)
    await _dispute_of_an_unknown_payment(flow)
    adjust = {"user_id": user_id, "amount": 7, "reason": "goodwill", "idempotency_key": uuid.uuid4().hex}
    status, body = await flow.call("POST", "/admin/adjust", admin_token, adjust)
    assert status == 200, body
    status, body = await flow.call("POST", "/gdpr/delete", user_token, {})
    assert status == 200, body
    status, body = await flow.call("GET", "/me/credits", user_token)
    assert (status, body["balance"]) == (200, 7), body


async def _dispute_of_an_unknown_payment(flow: Flow) -> None:
    """A dispute the ledger cannot place: the gateway fetches the charge (with its billing email) from Stripe."""
    suffix = uuid.uuid4().hex[:16]
    charge = flow.fake.state.add_charge(
        amount_minor=500,
        metadata=se.purchase_metadata(f"user-{suffix}", "small"),
        payment_intent_id=f"pi_{suffix}",
        charge_id=f"ch_{suffix}",
        billing_email=flow.secrets.email,
    )
    before = len(flow.fake.state.events())
    flow.fake.state.dispute_charge(charge["id"])
    await flow.deliver_new_events(before)


async def _refused_ledger_callers(ledger_target: str, own: Secrets) -> None:
    """The ledger refuses an unknown token and a caller without the role; neither token may be logged."""
    async with LedgerClient(ledger_target, own.wrong_token) as stranger:
        with pytest.raises(errors.Unauthenticated):
            await stranger.get_balance("user-nobody")
    async with LedgerClient(ledger_target, own.reconciler_token) as reconciler:
        with pytest.raises(errors.PermissionDenied):
            await reconciler.anonymize("user-nobody")


def _parse_lines(service: str, text: str) -> list[dict[str, Any]]:
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        assert line.strip(), f"{service} line {number} is empty"
        try:
            record = json.loads(line)
        except ValueError:
            raise AssertionError(f"{service} line {number} is not JSON: {line!r}") from None
        assert isinstance(record, dict), f"{service} line {number} is not an object: {line!r}"
        for field in REQUIRED_FIELDS:
            assert isinstance(record.get(field), str) and record[field], f"{service} line {number}: no {field}"
        assert record["service"] == service, line
        assert record["level"] in LEVELS, line
        datetime.datetime.fromisoformat(record["time"].replace("Z", "+00:00"))
        records.append(record)
    return records


LOG_LEVELS = [
    pytest.param("INFO", id="INFO-production-default"),
    pytest.param("DEBUG", id="DEBUG-third-party-libraries-too"),
]


@pytest.mark.parametrize("log_level", LOG_LEVELS)
async def test_purchase_refund_and_erasure_log_json_lines_without_secrets(
    http, database_url, tmp_path, log_level: str
) -> None:
    url, password = _with_password(database_url)
    own = Secrets.new(password)
    user_id = f"user-{uuid.uuid4().hex[:16]}"
    user_token = _token(own.jwt_secret, user_id)
    admin_token = _token(own.jwt_secret, f"admin-{uuid.uuid4().hex[:8]}", roles=["admin"])
    ledger_target = f"127.0.0.1:{free_port()}"
    callers = {
        "gateway": {"token": own.gateway_token, "roles": ["payments", "reader", "admin"]},
        "reconciler": {"token": own.reconciler_token, "roles": ["reconciler"]},
    }
    ledger_environ = _environ(
        DATABASE_URL=url, LEDGER_LISTEN=ledger_target, LEDGER_CALLERS=json.dumps(callers), LOG_LEVEL=log_level
    )
    gateway_port = free_port()
    outputs = {name: tmp_path / f"{name}.log" for name in SERVICES}

    async with running_fake_stripe(own.stripe_api_key) as fake:
        gateway_environ = _environ(
            GATEWAY_LISTEN=f"127.0.0.1:{gateway_port}",
            LEDGER_TARGET=ledger_target,
            LEDGER_TOKEN=own.gateway_token,
            STRIPE_WEBHOOK_SECRET=own.webhook_secret,
            STRIPE_API_KEY=own.stripe_api_key,
            STRIPE_API_BASE=fake.base_url,
            JWT_SECRET=own.jwt_secret,
            CORS_ALLOWED_ORIGINS="https://app.example.test",
            LOG_LEVEL=log_level,
        )
        async with running_service("services.ledger", ledger_environ, outputs["ledger"]) as ledger:
            async with LedgerClient(ledger_target, own.gateway_token) as probe:
                await wait_until(probe.serving, START_SECONDS_MAX, "the ledger serving")
            async with running_service(
                "services.webhook_gateway", gateway_environ, outputs["webhook_gateway"]
            ) as gateway:
                base_url = f"http://127.0.0.1:{gateway_port}"

                async def gateway_ready() -> bool:
                    try:
                        async with http.get(base_url + "/readyz") as answer:
                            return answer.status == 200
                    except OSError:
                        return False

                await wait_until(gateway_ready, START_SECONDS_MAX, "the gateway ready")
                await _run_flow(Flow(http, base_url, fake, own), user_id, user_token, admin_token)
                await _refused_ledger_callers(ledger_target, own)
                await stop(gateway)
            await stop(ledger)

    texts = {name: path.read_text(encoding="utf-8") for name, path in outputs.items()}
    _check_logs(texts, own, (user_token, admin_token), log_level)


def _check_logs(texts: dict[str, str], own: Secrets, jwts: tuple[str, ...], log_level: str) -> None:
    records = {name: _parse_lines(name, text) for name, text in texts.items()}
    everything = "\n".join(texts.values())
    leaked = sorted(what for what, value in own.never_written().items() if value in everything)
    leaked += [f"JWT #{number}" for number, token in enumerate(jwts) if token.split(".")[2] in everything]
    assert leaked == [], f"written to the logs: {leaked}"
    assert JWT_SHAPE.search(everything) is None  # No JWT of any kind, not only the test's own.

    # The lines logged while a webhook was handled carry its trace (tracing is on, no exporter configured)
    # and its request id.
    webhook_lines = [record for record in records["webhook_gateway"] if record.get("event_id")]
    assert webhook_lines, texts["webhook_gateway"]
    assert all(len(record.get("trace_id", "")) == 32 for record in webhook_lines), webhook_lines
    assert all(record.get("request_id") for record in webhook_lines), webhook_lines
    assert any(record["message"].startswith("webhook URL: ") for record in records["webhook_gateway"])
    assert records["ledger"], "the ledger logged nothing"
    if log_level == "DEBUG":
        # The Stripe SDK logs response bodies at DEBUG, the charge's billing email among them: masked.
        masked = own.email[0] + "***@example.com"
        assert masked in texts["webhook_gateway"]
