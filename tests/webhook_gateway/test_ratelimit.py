"""Rate limiting: the in-process store, the Redis store on 127.0.0.1:6379, and the middleware over HTTP."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from services.webhook_gateway.auth import JWT_VERIFIER_KEY, JwtVerifier, authenticated_user_id
from services.webhook_gateway.edge_config import EdgeSettings
from services.webhook_gateway.http_errors import error_middleware
from services.webhook_gateway.ratelimit import (
    STORE_ERROR_RETRY_AFTER_SECONDS,
    InMemoryRateLimiter,
    RateLimit,
    RateLimiter,
    RedisRateLimiter,
    StoreErrorPolicy,
    client_ip,
    connect_redis,
    edge_rate_limit_middleware,
    rate_limit_middleware,
)

REDIS_URL = "redis://127.0.0.1:6379/0"
SECRET = "ratelimit-test-secret-0123456789abcdef"
LIMITED_PREFIXES = ("/me", "/checkout")

Client = TestClient[web.Request, web.Application]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- in-process store ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_in_memory_allows_the_limit_then_refuses() -> None:
    clock = FakeClock()
    limiter = InMemoryRateLimiter(RateLimit(requests_max=3, window_seconds=60), clock=clock)
    decisions = [await limiter.check("k") for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, True]
    assert [d.remaining for d in decisions] == [2, 1, 0]
    assert all(d.retry_after_seconds == 0 for d in decisions)
    clock.now += 20.5
    refused = await limiter.check("k")
    assert not refused.allowed
    assert refused.remaining == 0
    assert refused.retry_after_seconds == 40  # ceil(60 - 20.5)


@pytest.mark.asyncio
async def test_in_memory_window_reopens_and_is_not_extended_by_refusals() -> None:
    clock = FakeClock()
    limiter = InMemoryRateLimiter(RateLimit(requests_max=1, window_seconds=10), clock=clock)
    assert (await limiter.check("k")).allowed
    for _ in range(5):
        clock.now += 1
        assert not (await limiter.check("k")).allowed
    clock.now += 5  # 10 s after the first request, whatever happened in between.
    assert (await limiter.check("k")).allowed


@pytest.mark.asyncio
async def test_in_memory_keys_are_independent() -> None:
    limiter = InMemoryRateLimiter(RateLimit(requests_max=1, window_seconds=60), clock=FakeClock())
    assert (await limiter.check("alice")).allowed
    assert not (await limiter.check("alice")).allowed
    assert (await limiter.check("bob")).allowed


@pytest.mark.asyncio
async def test_in_memory_tracks_a_bounded_number_of_keys_evicting_the_oldest() -> None:
    clock = FakeClock()
    limiter = InMemoryRateLimiter(RateLimit(requests_max=1, window_seconds=60), keys_max=3, clock=clock)
    for key in ("a", "b", "c"):
        clock.now += 1
        await limiter.check(key)
    assert not (await limiter.check("a")).allowed
    await limiter.check("d")  # Evicts "a", the oldest window.
    assert len(limiter) == 3
    assert (await limiter.check("a")).allowed  # Forgotten, so counted afresh (and "b" is evicted).
    assert not (await limiter.check("c")).allowed  # Still tracked.
    assert len(limiter) == 3


@pytest.mark.asyncio
async def test_in_memory_drops_expired_windows() -> None:
    clock = FakeClock()
    limiter = InMemoryRateLimiter(RateLimit(requests_max=5, window_seconds=10), clock=clock)
    for index in range(20):
        await limiter.check(f"k{index}")
    clock.now += 11
    await limiter.check("fresh")
    assert len(limiter) == 1


@pytest.mark.parametrize(
    ("requests_max", "window_seconds"),
    [
        pytest.param(0, 60, id="zero-requests"),
        pytest.param(10, 0, id="zero-window"),
        pytest.param(10, 10**9, id="window-over-a-day"),
    ],
)
def test_rate_limit_refuses_nonsense(requests_max: int, window_seconds: int) -> None:
    with pytest.raises(AssertionError):
        RateLimit(requests_max=requests_max, window_seconds=window_seconds)


# --- Redis store ---------------------------------------------------------------------------------


@asynccontextmanager
async def shared_redis() -> AsyncIterator[tuple[Redis, str]]:
    """The real Redis and a key prefix no other test uses (its keys are deleted afterwards).

    A context manager rather than an async fixture, so it runs on the test's own event loop
    whatever loop scope the pytest configuration picks.
    """
    client = connect_redis(REDIS_URL)
    try:
        await client.execute_command("PING")
    except Exception as exc:  # Any failure means "no Redis here".
        await client.aclose()
        pytest.skip(f"no Redis on 127.0.0.1:6379: {type(exc).__name__}: {exc}")
    prefix = f"test:ratelimit:{uuid.uuid4().hex}:"
    try:
        yield client, prefix
    finally:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.mark.asyncio
async def test_redis_allows_the_limit_then_refuses_with_retry_after() -> None:
    async with shared_redis() as (redis_client, key_prefix):
        limiter = RedisRateLimiter(redis_client, RateLimit(requests_max=3, window_seconds=60), key_prefix=key_prefix)
        decisions = [await limiter.check("user-1") for _ in range(4)]
        assert [d.allowed for d in decisions] == [True, True, True, False]
        assert [d.remaining for d in decisions] == [2, 1, 0, 0]
        assert 0 < decisions[-1].retry_after_seconds <= 60
        ttl_ms = await redis_client.pttl(f"{key_prefix}user-1")
        assert 0 < ttl_ms <= 60_000


@pytest.mark.asyncio
async def test_two_limiters_sharing_one_redis_share_the_limit() -> None:
    async with shared_redis() as (redis_client, key_prefix):
        other_client = connect_redis(REDIS_URL)  # A second replica: its own connection pool.
        try:
            limit = RateLimit(requests_max=4, window_seconds=60)
            replica_a = RedisRateLimiter(redis_client, limit, key_prefix=key_prefix)
            replica_b = RedisRateLimiter(other_client, limit, key_prefix=key_prefix)
            allowed = [(await replica.check("user-1")).allowed for replica in (replica_a, replica_b) * 3]
        finally:
            await other_client.aclose()
        assert allowed == [True, True, True, True, False, False]


@pytest.mark.asyncio
async def test_different_prefixes_do_not_share() -> None:
    async with shared_redis() as (redis_client, key_prefix):
        limit = RateLimit(requests_max=1, window_seconds=60)
        first = RedisRateLimiter(redis_client, limit, key_prefix=f"{key_prefix}a:")
        second = RedisRateLimiter(redis_client, limit, key_prefix=f"{key_prefix}b:")
        assert (await first.check("k")).allowed
        assert (await second.check("k")).allowed
        assert not (await first.check("k")).allowed


@pytest.mark.asyncio
async def test_redis_counting_is_atomic_under_concurrency() -> None:
    async with shared_redis() as (redis_client, key_prefix):
        limiter = RedisRateLimiter(redis_client, RateLimit(requests_max=10, window_seconds=60), key_prefix=key_prefix)
        decisions = await asyncio.gather(*(limiter.check("hot") for _ in range(50)))
        assert sum(decision.allowed for decision in decisions) == 10


@pytest.mark.asyncio
async def test_redis_window_expires() -> None:
    async with shared_redis() as (redis_client, key_prefix):
        limiter = RedisRateLimiter(redis_client, RateLimit(requests_max=1, window_seconds=1), key_prefix=key_prefix)
        assert (await limiter.check("k")).allowed
        refused = await limiter.check("k")
        assert not refused.allowed
        assert refused.retry_after_seconds == 1
        await asyncio.sleep(1.1)
        assert (await limiter.check("k")).allowed


def _closed_port_redis() -> Redis:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return connect_redis(f"redis://127.0.0.1:{port}/0")


@pytest.mark.asyncio
async def test_redis_down_fails_open_to_local_limits(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="services.webhook_gateway.ratelimit")
    name = f"down-{uuid.uuid4().hex}"
    down = _closed_port_redis()
    try:
        limiter = RedisRateLimiter(down, RateLimit(requests_max=2, window_seconds=60), name=name)
        decisions = [await limiter.check("k") for _ in range(3)]
    finally:
        await down.aclose()
    # Not refused because Redis is down, but not unlimited either: this replica's limits apply.
    assert [d.allowed for d in decisions] == [True, True, False]
    # One failed attempt, then Redis is skipped for a while (no time asserted: the count says it).
    assert REGISTRY.get_sample_value("gateway_rate_limit_store_errors_total", {"limiter": name}) == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "rate-limit store" in r.message]
    assert len(warnings) == 1


@pytest.mark.asyncio
async def test_redis_down_can_fail_closed() -> None:
    down = _closed_port_redis()
    try:
        limiter = RedisRateLimiter(
            down, RateLimit(requests_max=100, window_seconds=60), on_store_error=StoreErrorPolicy.FAIL_CLOSED
        )
        decision = await limiter.check("k")
    finally:
        await down.aclose()
    assert not decision.allowed
    assert decision.retry_after_seconds == STORE_ERROR_RETRY_AFTER_SECONDS


# --- the middleware over HTTP --------------------------------------------------------------------


def token(user_id: str, secret: str = SECRET) -> dict[str, str]:
    payload = {"sub": user_id, "exp": int(time.time()) + 300}
    return {"Authorization": f"Bearer {jwt.encode(payload, secret, algorithm='HS256')}"}


async def _ok(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def _whoami(request: web.Request) -> web.Response:
    return web.json_response({"ip": client_ip(request, int(request.query["proxies"]))})


def make_app(middleware: Any) -> web.Application:
    app = web.Application(middlewares=[error_middleware, middleware])
    app[JWT_VERIFIER_KEY] = JwtVerifier.hs256(SECRET)
    app.router.add_get("/me/credits", _ok)
    app.router.add_post("/checkout", _ok)
    app.router.add_post("/webhooks/stripe", _ok)
    return app


def in_memory_middleware(ip_max: int, user_max: int, trusted_proxy_count: int = 0) -> Any:
    return rate_limit_middleware(
        per_ip=InMemoryRateLimiter(RateLimit.per_minute(ip_max)),
        per_user=InMemoryRateLimiter(RateLimit.per_minute(user_max)),
        user_id_of=authenticated_user_id,
        path_prefixes=LIMITED_PREFIXES,
        trusted_proxy_count=trusted_proxy_count,
    )


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[Client]:
    async with TestClient(TestServer(app)) as client:
        yield client


async def statuses(client: Client, count: int, method: str, path: str, **kwargs: Any) -> list[int]:
    return [(await client.request(method, path, **kwargs)).status for _ in range(count)]


async def assert_rate_limited(response_factory: Callable[[], Awaitable[Any]]) -> None:
    response = await response_factory()
    assert response.status == 429
    assert int(response.headers["Retry-After"]) >= 1
    body = await response.json()
    assert body == {"error": {"code": "RATE_LIMITED", "message": body["error"]["message"]}}


@pytest.mark.asyncio
async def test_per_ip_limit_answers_429_with_retry_after() -> None:
    async with serve(make_app(in_memory_middleware(ip_max=3, user_max=100))) as client:
        assert await statuses(client, 3, "GET", "/me/credits") == [200, 200, 200]
        await assert_rate_limited(lambda: client.get("/me/credits"))
        await assert_rate_limited(lambda: client.post("/checkout", headers=token("alice")))


@pytest.mark.asyncio
async def test_per_user_limit_is_per_verified_user() -> None:
    async with serve(make_app(in_memory_middleware(ip_max=100, user_max=2))) as client:
        assert await statuses(client, 2, "GET", "/me/credits", headers=token("alice")) == [200, 200]
        await assert_rate_limited(lambda: client.get("/me/credits", headers=token("alice")))
        assert await statuses(client, 2, "GET", "/me/credits", headers=token("bob")) == [200, 200]


@pytest.mark.asyncio
async def test_forged_tokens_cannot_spend_another_users_quota() -> None:
    forged = token("alice", secret="attacker-secret-0123456789abcdef-xyz")
    async with serve(make_app(in_memory_middleware(ip_max=100, user_max=2))) as client:
        assert await statuses(client, 5, "GET", "/me/credits", headers=forged) == [200] * 5  # Route is a stub.
        assert await statuses(client, 2, "GET", "/me/credits", headers=token("alice")) == [200, 200]


@pytest.mark.asyncio
async def test_stripe_webhook_is_never_rate_limited() -> None:
    async with serve(make_app(in_memory_middleware(ip_max=1, user_max=1))) as client:
        assert await statuses(client, 10, "POST", "/webhooks/stripe") == [200] * 10


@pytest.mark.asyncio
async def test_spoofed_forwarded_for_does_not_escape_the_ip_limit_without_trusted_proxies() -> None:
    async with serve(make_app(in_memory_middleware(ip_max=2, user_max=100))) as client:
        for index in range(2):
            response = await client.get("/me/credits", headers={"X-Forwarded-For": f"10.0.0.{index}"})
            assert response.status == 200
        await assert_rate_limited(lambda: client.get("/me/credits", headers={"X-Forwarded-For": "10.0.0.99"}))


@pytest.mark.asyncio
async def test_trusted_proxy_forwarded_for_separates_clients() -> None:
    async with serve(make_app(in_memory_middleware(ip_max=1, user_max=100, trusted_proxy_count=1))) as client:
        first = await client.get("/me/credits", headers={"X-Forwarded-For": "203.0.113.1"})
        second = await client.get("/me/credits", headers={"X-Forwarded-For": "203.0.113.2"})
        assert (first.status, second.status) == (200, 200)
        await assert_rate_limited(lambda: client.get("/me/credits", headers={"X-Forwarded-For": "203.0.113.1"}))


@pytest.mark.parametrize(
    ("proxies", "forwarded_for", "expected"),
    [
        pytest.param(0, "203.0.113.7", "127.0.0.1", id="no-trusted-proxy-ignores-header"),
        pytest.param(1, None, "127.0.0.1", id="header-absent-uses-peer"),
        pytest.param(1, "203.0.113.7", "203.0.113.7", id="one-proxy"),
        pytest.param(1, "198.51.100.9, 203.0.113.7", "203.0.113.7", id="one-proxy-client-spoofed-left"),
        pytest.param(2, "198.51.100.9, 203.0.113.7, 10.0.0.2", "203.0.113.7", id="two-proxies"),
        pytest.param(2, "203.0.113.7", "127.0.0.1", id="fewer-hops-than-proxies-uses-peer"),
        pytest.param(1, "not-an-ip", "127.0.0.1", id="garbage-uses-peer"),
        pytest.param(1, "2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64", id="ipv6-grouped-by-64"),
        pytest.param(1, "::ffff:203.0.113.7", "203.0.113.7", id="ipv4-mapped-ipv6"),
    ],
)
@pytest.mark.asyncio
async def test_client_ip(proxies: int, forwarded_for: str | None, expected: str) -> None:
    app = web.Application()
    app.router.add_get("/whoami", _whoami)
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for is not None else {}
    async with serve(app) as client:
        response = await client.get("/whoami", params={"proxies": str(proxies)}, headers=headers)
        assert (await response.json())["ip"] == expected


@pytest.mark.asyncio
async def test_two_replicas_sharing_redis_share_the_limit_over_http() -> None:
    async with shared_redis() as (redis_client, key_prefix):
        settings = EdgeSettings(jwt_secret=SECRET, rate_limit_per_user_per_minute=3, rate_limit_per_ip_per_minute=1000)
        other_client = connect_redis(REDIS_URL)

        def replica(redis: Redis) -> web.Application:
            middleware = edge_rate_limit_middleware(
                settings,
                redis=redis,
                user_id_of=authenticated_user_id,
                path_prefixes=LIMITED_PREFIXES,
                key_prefix=key_prefix,
            )
            return make_app(middleware)

        try:
            async with serve(replica(redis_client)) as replica_a, serve(replica(other_client)) as replica_b:
                alice = token("alice")
                assert (await replica_a.get("/me/credits", headers=alice)).status == 200
                assert (await replica_b.get("/me/credits", headers=alice)).status == 200
                assert (await replica_a.get("/me/credits", headers=alice)).status == 200
                await assert_rate_limited(lambda: replica_b.get("/me/credits", headers=alice))
                await assert_rate_limited(lambda: replica_a.get("/me/credits", headers=alice))
                assert (await replica_b.get("/me/credits", headers=token("bob"))).status == 200
        finally:
            await other_client.aclose()
        assert await redis_client.exists(f"{key_prefix}user:alice") == 1


@pytest.mark.asyncio
async def test_settings_without_redis_use_in_process_limits() -> None:
    settings = EdgeSettings(jwt_secret=SECRET, rate_limit_per_user_per_minute=100, rate_limit_per_ip_per_minute=2)
    middleware = edge_rate_limit_middleware(
        settings, redis=None, user_id_of=authenticated_user_id, path_prefixes=LIMITED_PREFIXES
    )
    async with serve(make_app(middleware)) as client:
        assert await statuses(client, 2, "GET", "/me/credits") == [200, 200]
        await assert_rate_limited(lambda: client.get("/me/credits"))


def test_in_memory_limiter_satisfies_the_interface() -> None:
    limiter: RateLimiter = InMemoryRateLimiter(RateLimit.per_minute(1))
    assert limiter is not None
