"""Rate limits on the edge routes of the real app: per user and per client address, in-process and on the
real Redis (shared by replicas), 429 with Retry-After, never on the Stripe webhook.

Each in-process test builds its own gateway, so its counters start at zero. The Redis tests cannot reset
the shared store: they use fresh user ids and fresh client addresses (through one trusted proxy's
X-Forwarded-For) and delete the keys they made.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import aiohttp
from redis.asyncio import Redis

from services.webhook_gateway.ratelimit import MINUTE_SECONDS, REDIS_KEY_PREFIX_DEFAULT
from tests.conftest import new_key
from tests.fakes.stripe_api import RunningFakeStripe
from tests.webhook_gateway.edge.conftest import (
    ORIGIN,
    Contract,
    Edge,
    EdgeAnswer,
    account_state,
    admin_token,
    edge_environ,
    fresh_user_id,
    running_edge_gateway,
    seed_credits,
    token,
)

LIMIT = 3
LOOSE = "100000"


@asynccontextmanager
async def limited_edge(
    http: aiohttp.ClientSession,
    contract: Contract,
    ledger_target: str,
    fake: RunningFakeStripe,
    overrides: Mapping[str, str],
    *,
    redis: Redis | None = None,
) -> AsyncIterator[Edge]:
    environ = edge_environ(ledger_target, fake, **overrides)
    async with running_edge_gateway(environ, redis=redis) as gateway:
        yield Edge(http, gateway, contract)


def _assert_limited(answer: EdgeAnswer) -> None:
    assert (answer.status, answer.code) == (429, "RATE_LIMITED"), answer.text
    assert 0 < int(answer.headers["Retry-After"]) <= MINUTE_SECONDS


def _fresh_ip() -> str:
    return f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"


# --- in-process ---------------------------------------------------------------------------------


async def test_per_user_limit_spans_the_edge_routes(edge_http, contract, ledger_target, fake_stripe) -> None:
    environ = {"RATE_LIMIT_PER_USER_PER_MINUTE": str(LIMIT), "RATE_LIMIT_PER_IP_PER_MINUTE": LOOSE}
    async with limited_edge(edge_http, contract, ledger_target, fake_stripe, environ) as edge:
        user_id = fresh_user_id()
        bearer = token(user_id)
        assert (await edge.call("GET", "/me/credits", bearer=bearer)).status == 200
        assert (await edge.call("POST", "/checkout", bearer=bearer, json_body={"package_id": "small"})).status == 200
        assert (await edge.call("GET", "/me/credits", bearer=bearer)).status == 200
        _assert_limited(await edge.call("GET", "/me/credits", bearer=bearer))
        _assert_limited(await edge.call("POST", "/gdpr/delete", bearer=bearer, json_body={}))
        # Another user from the same address is not affected.
        assert (await edge.call("GET", "/me/credits", bearer=token(fresh_user_id()))).status == 200


async def test_a_limited_admin_adjustment_changes_nothing(edge_http, contract, ledger_target, fake_stripe, ledger):
    environ = {"RATE_LIMIT_PER_USER_PER_MINUTE": "1", "RATE_LIMIT_PER_IP_PER_MINUTE": LOOSE}
    async with limited_edge(edge_http, contract, ledger_target, fake_stripe, environ) as edge:
        target = fresh_user_id()
        await seed_credits(ledger, target, 10)
        bearer = admin_token(f"admin-{new_key()}")
        assert (await edge.call("GET", "/me/credits", bearer=bearer)).status == 200
        before = await account_state(ledger, target)
        body = {"user_id": target, "amount": 5, "reason": "over the limit", "idempotency_key": new_key()}
        _assert_limited(await edge.call("POST", "/admin/adjust", bearer=bearer, json_body=body))
        assert await account_state(ledger, target) == before


async def test_per_ip_limit_counts_every_user_and_anonymous_requests(edge_http, contract, ledger_target, fake_stripe):
    environ = {"RATE_LIMIT_PER_USER_PER_MINUTE": LOOSE, "RATE_LIMIT_PER_IP_PER_MINUTE": str(LIMIT)}
    async with limited_edge(edge_http, contract, ledger_target, fake_stripe, environ) as edge:
        assert (await edge.call("GET", "/me/credits", bearer=token(fresh_user_id()))).status == 200
        assert (await edge.call("GET", "/me/credits")).status == 401
        assert (await edge.call("GET", "/me/credits", bearer=token(fresh_user_id()))).status == 200
        _assert_limited(await edge.call("GET", "/me/credits", bearer=token(fresh_user_id())))
        _assert_limited(await edge.call("GET", "/me/credits"))  # The IP limit comes before authentication.


async def test_the_webhook_and_operations_routes_are_not_limited(edge_http, contract, ledger_target, fake_stripe):
    environ = {"RATE_LIMIT_PER_USER_PER_MINUTE": "1", "RATE_LIMIT_PER_IP_PER_MINUTE": "1"}
    async with limited_edge(edge_http, contract, ledger_target, fake_stripe, environ) as edge:
        _ = await edge.call("GET", "/me/credits", bearer=token(fresh_user_id()))
        _assert_limited(await edge.call("GET", "/me/credits", bearer=token(fresh_user_id())))
        for _ in range(LIMIT * 3):
            webhook = await edge.call(
                "POST", "/webhooks/stripe", data=b"{}", headers={"Content-Type": "application/json"}
            )
            assert (webhook.status, webhook.code) == (400, "SIGNATURE_MISSING")
            for path in ("/healthz", "/metrics", "/openapi.json"):
                assert (await edge.call("GET", path)).status == 200


async def test_a_429_carries_cors_headers_for_the_allowed_origin(edge_http, contract, ledger_target, fake_stripe):
    environ = {"RATE_LIMIT_PER_USER_PER_MINUTE": "1", "RATE_LIMIT_PER_IP_PER_MINUTE": LOOSE}
    async with limited_edge(edge_http, contract, ledger_target, fake_stripe, environ) as edge:
        bearer = token(fresh_user_id())
        await edge.call("GET", "/me/credits", bearer=bearer)
        answer = await edge.call("GET", "/me/credits", bearer=bearer, headers={"Origin": ORIGIN})
        _assert_limited(answer)
        assert answer.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert "Retry-After" in answer.headers["Access-Control-Expose-Headers"]


async def test_in_process_replicas_do_not_share_counts(edge_http, contract, ledger_target, fake_stripe) -> None:
    # The control for the Redis test below: without a shared store, each replica counts alone.
    environ = {"RATE_LIMIT_PER_USER_PER_MINUTE": "2", "RATE_LIMIT_PER_IP_PER_MINUTE": LOOSE}
    async with (
        limited_edge(edge_http, contract, ledger_target, fake_stripe, environ) as first,
        limited_edge(edge_http, contract, ledger_target, fake_stripe, environ) as second,
    ):
        bearer = token(fresh_user_id())
        statuses = [(await replica.call("GET", "/me/credits", bearer=bearer)).status for replica in (first, second) * 2]
        assert statuses == [200, 200, 200, 200]


# --- Redis --------------------------------------------------------------------------------------


async def test_redis_shares_the_per_user_limit_across_replicas(
    edge_http, contract, ledger_target, fake_stripe, redis_client: Redis
) -> None:
    environ = {"RATE_LIMIT_PER_USER_PER_MINUTE": str(LIMIT), "RATE_LIMIT_PER_IP_PER_MINUTE": LOOSE}
    user_id = fresh_user_id()
    key = f"{REDIS_KEY_PREFIX_DEFAULT}user:{user_id}"
    try:
        async with (
            limited_edge(edge_http, contract, ledger_target, fake_stripe, environ, redis=redis_client) as first,
            limited_edge(edge_http, contract, ledger_target, fake_stripe, environ, redis=redis_client) as second,
        ):
            bearer = token(user_id)
            replicas = [first, second, first]
            assert [(await r.call("GET", "/me/credits", bearer=bearer)).status for r in replicas] == [200] * LIMIT
            _assert_limited(await second.call("GET", "/me/credits", bearer=bearer))
            _assert_limited(await first.call("GET", "/me/credits", bearer=bearer))
            assert (await second.call("GET", "/me/credits", bearer=token(fresh_user_id()))).status == 200
            assert int(await redis_client.get(key)) == LIMIT + 2
            assert 0 < await redis_client.pttl(key) <= MINUTE_SECONDS * 1000
    finally:
        await redis_client.delete(key)


async def test_redis_shares_the_per_ip_limit_across_replicas(
    edge_http, contract, ledger_target, fake_stripe, redis_client: Redis
) -> None:
    environ = {
        "RATE_LIMIT_PER_USER_PER_MINUTE": LOOSE,
        "RATE_LIMIT_PER_IP_PER_MINUTE": str(LIMIT),
        "TRUSTED_PROXY_COUNT": "1",
    }
    client_ip, other_ip = _fresh_ip(), _fresh_ip()
    keys = [f"{REDIS_KEY_PREFIX_DEFAULT}ip:{ip}" for ip in (client_ip, other_ip)]
    try:
        async with (
            limited_edge(edge_http, contract, ledger_target, fake_stripe, environ, redis=redis_client) as first,
            limited_edge(edge_http, contract, ledger_target, fake_stripe, environ, redis=redis_client) as second,
        ):
            # A client-supplied hop further left is ignored: only the trusted proxy's entry counts.
            forwarded = {"X-Forwarded-For": f"{uuid.uuid4().int % 250}.1.1.1, {client_ip}"}
            for replica in (first, second, first):
                answer = await replica.call("GET", "/me/credits", bearer=token(fresh_user_id()), headers=forwarded)
                assert answer.status == 200
            _assert_limited(await second.call("GET", "/me/credits", bearer=token(fresh_user_id()), headers=forwarded))
            other = {"X-Forwarded-For": other_ip}
            assert (await first.call("GET", "/me/credits", bearer=token(fresh_user_id()), headers=other)).status == 200
    finally:
        await redis_client.delete(*keys)


async def test_redis_limit_is_not_applied_to_the_webhook(
    edge_http, contract, ledger_target, fake_stripe, redis_client: Redis
) -> None:
    environ = {"RATE_LIMIT_PER_USER_PER_MINUTE": "1", "RATE_LIMIT_PER_IP_PER_MINUTE": "1", "TRUSTED_PROXY_COUNT": "1"}
    client_ip = _fresh_ip()
    try:
        async with limited_edge(edge_http, contract, ledger_target, fake_stripe, environ, redis=redis_client) as edge:
            headers = {"X-Forwarded-For": client_ip, "Content-Type": "application/json"}
            for _ in range(LIMIT):
                assert (await edge.call("POST", "/webhooks/stripe", data=b"{}", headers=headers)).status == 400
            assert await redis_client.exists(f"{REDIS_KEY_PREFIX_DEFAULT}ip:{client_ip}") == 0
    finally:
        await redis_client.delete(f"{REDIS_KEY_PREFIX_DEFAULT}ip:{client_ip}")
