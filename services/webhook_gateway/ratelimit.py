"""Rate limiting at the HTTP edge: one interface, two stores, one middleware.

`RateLimiter.check(key) -> Decision` counts a request against `limit.requests_max` per
`limit.window_seconds`. The window is fixed and starts at a key's first request (so no clock is
shared between replicas, and a client hammering a closed window does not extend it); a client can
at most send twice the limit across a window boundary, which is fine for abuse protection.

- `InMemoryRateLimiter`: per process; tracks at most `keys_max` keys and evicts the oldest window.
- `RedisRateLimiter`: shared by every replica; one Lua script (INCR + PEXPIRE + PTTL) per check, so
  the count and its expiry are atomic. Keys are `key_prefix + key`.

Redis down (`StoreErrorPolicy`): the gateway uses FAIL_OPEN, which here means "fall back to this
replica's in-process limits", logged (at most once per `STORE_ERROR_LOG_INTERVAL_SECONDS`) and
counted in `gateway_rate_limit_store_errors_total`. Why not fail closed: the limiter protects
capacity, not money. Reads (`GET /me/credits`, the page a user loads to see their balance) must not
go down with a cache; writes are idempotent ledger RPCs whose invariants the ledger enforces
itself. Falling back to local limits rather than to "no limit" keeps abuse bounded (at worst
replicas x limit) during the outage. After an error, Redis is skipped for
`STORE_ERROR_BACKOFF_SECONDS` so an outage does not add a connect timeout to every request.
FAIL_CLOSED (429 while Redis is down) exists for a route where that trade-off goes the other way.

`rate_limit_middleware` applies a per-client-IP limit and, for requests with a verified token, a
per-user limit, on the browser/BFF route prefixes only (never on `/webhooks/stripe`: Stripe paces
and retries its own deliveries). It answers 429 `RATE_LIMITED` with `Retry-After`.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import Counter
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from services.webhook_gateway.http_errors import error_response

if TYPE_CHECKING:
    from services.webhook_gateway.edge_config import EdgeSettings

logger = logging.getLogger(__name__)

KEYS_TRACKED_MAX: Final = 100_000
EXPIRED_EVICTIONS_PER_CHECK_MAX: Final = 64
KEY_CHARS_MAX: Final = 512
MINUTE_SECONDS: Final = 60
WINDOW_SECONDS_MAX: Final = 24 * 60 * 60
REDIS_KEY_PREFIX_DEFAULT: Final = "credits:ratelimit:"
REDIS_SOCKET_TIMEOUT_SECONDS: Final = 0.25
REDIS_CONNECT_TIMEOUT_SECONDS: Final = 0.25
REDIS_CONNECTIONS_MAX: Final = 32
REDIS_POOL_WAIT_SECONDS: Final = 0.25  # A burst waits briefly for a pooled connection instead of failing.
REDIS_RETRIES_MAX: Final = 1  # One retry covers a connection the server closed; more only adds latency.
STORE_ERROR_BACKOFF_SECONDS: Final = 5.0
STORE_ERROR_LOG_INTERVAL_SECONDS: Final = 30.0
STORE_ERROR_RETRY_AFTER_SECONDS: Final = 1
IPV6_PREFIX_BITS: Final = 64  # One subscriber usually holds a whole /64.

STORE_ERRORS = Counter(
    "gateway_rate_limit_store_errors_total", "Rate-limit store (Redis) errors, by limiter.", ["limiter"]
)
REJECTIONS = Counter("gateway_rate_limit_rejections_total", "Requests refused with 429, by limit.", ["limit"])

# Atomic: count, and start the window on the first hit; returns {count, milliseconds left}.
_FIXED_WINDOW_LUA: Final = """
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
"""


@dataclass(frozen=True)
class RateLimit:
    """`requests_max` requests per `window_seconds`."""

    requests_max: int
    window_seconds: int

    def __post_init__(self) -> None:
        assert self.requests_max >= 1, self.requests_max
        assert 1 <= self.window_seconds <= WINDOW_SECONDS_MAX, self.window_seconds

    @classmethod
    def per_minute(cls, requests_max: int) -> RateLimit:
        return cls(requests_max=requests_max, window_seconds=MINUTE_SECONDS)


@dataclass(frozen=True)
class Decision:
    """Whether this request may proceed, when to retry if not, and how many requests are left."""

    allowed: bool
    retry_after_seconds: int
    remaining: int


def _decide(limit: RateLimit, count: int, seconds_left: float) -> Decision:
    allowed = count <= limit.requests_max
    retry_after_seconds = 0 if allowed else max(1, math.ceil(seconds_left))
    return Decision(allowed, retry_after_seconds, max(0, limit.requests_max - count))


class RateLimiter(Protocol):
    """Counts one request for `key` and says whether it is within the limit."""

    async def check(self, key: str) -> Decision: ...


@dataclass
class _Window:
    started_at: float
    count: int


class InMemoryRateLimiter:
    """Per-process fixed windows in an insertion-ordered dict: oldest window first, bounded size."""

    def __init__(
        self, limit: RateLimit, *, keys_max: int = KEYS_TRACKED_MAX, clock: Callable[[], float] = time.monotonic
    ) -> None:
        assert keys_max >= 1, keys_max
        self.limit = limit
        self._keys_max = keys_max
        self._clock = clock
        self._windows: OrderedDict[str, _Window] = OrderedDict()

    def __len__(self) -> int:
        return len(self._windows)

    async def check(self, key: str) -> Decision:
        return self.check_now(key)

    def check_now(self, key: str) -> Decision:
        """Synchronous core: no await inside, so concurrent requests cannot interleave."""
        assert len(key) <= KEY_CHARS_MAX, len(key)
        now = self._clock()
        self._evict_expired(now)
        window = self._windows.get(key)
        if window is None or self._expired(window, now):
            window = self._open_window(key, now)
        window.count += 1
        return _decide(self.limit, window.count, window.started_at + self.limit.window_seconds - now)

    def _expired(self, window: _Window, now: float) -> bool:
        return now - window.started_at >= self.limit.window_seconds

    def _open_window(self, key: str, now: float) -> _Window:
        # Re-inserting moves the key to the end: the dict stays ordered by window start.
        self._windows.pop(key, None)
        if len(self._windows) >= self._keys_max:
            # Full of live windows: forgetting the oldest resets its count (bounded memory wins).
            self._windows.popitem(last=False)
        window = _Window(started_at=now, count=0)
        self._windows[key] = window
        return window

    def _evict_expired(self, now: float) -> None:
        for _ in range(EXPIRED_EVICTIONS_PER_CHECK_MAX):
            oldest = next(iter(self._windows.values()), None)
            if oldest is None or not self._expired(oldest, now):
                return
            self._windows.popitem(last=False)


class StoreErrorPolicy(enum.Enum):
    """What a shared-store limiter does when its store fails (see the module docstring)."""

    FAIL_OPEN = "fail_open"  # Use this replica's in-process limits; never refuse because Redis is down.
    FAIL_CLOSED = "fail_closed"  # Refuse with 429 until the store answers again.


class RedisRateLimiter:
    """Fixed windows in Redis, shared by every replica using the same `key_prefix`."""

    def __init__(
        self,
        redis: Redis,
        limit: RateLimit,
        *,
        key_prefix: str = REDIS_KEY_PREFIX_DEFAULT,
        on_store_error: StoreErrorPolicy = StoreErrorPolicy.FAIL_OPEN,
        name: str = "default",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.name = name
        self._redis = redis
        self._script = redis.register_script(_FIXED_WINDOW_LUA)
        self._key_prefix = key_prefix
        self._on_store_error = on_store_error
        self._fallback = InMemoryRateLimiter(limit, clock=clock)
        self._clock = clock
        self._skip_store_until = -math.inf
        self._last_error_logged_at = -math.inf

    async def check(self, key: str) -> Decision:
        assert len(key) <= KEY_CHARS_MAX, len(key)
        if self._clock() < self._skip_store_until:
            return self._store_unavailable(key)
        window_ms = self.limit.window_seconds * 1000
        try:
            count, ttl_ms = await self._script(keys=[self._key_prefix + key], args=[window_ms])
        except (RedisError, OSError) as exc:
            self._record_store_error(exc)
            return self._store_unavailable(key)
        return _decide(self.limit, int(count), int(ttl_ms) / 1000)

    def _store_unavailable(self, key: str) -> Decision:
        if self._on_store_error is StoreErrorPolicy.FAIL_OPEN:
            return self._fallback.check_now(key)
        return Decision(allowed=False, retry_after_seconds=STORE_ERROR_RETRY_AFTER_SECONDS, remaining=0)

    def _record_store_error(self, exc: BaseException) -> None:
        now = self._clock()
        self._skip_store_until = now + STORE_ERROR_BACKOFF_SECONDS
        STORE_ERRORS.labels(limiter=self.name).inc()
        if now - self._last_error_logged_at >= STORE_ERROR_LOG_INTERVAL_SECONDS:
            self._last_error_logged_at = now
            logger.warning(
                "rate-limit store unavailable (%s); %s for %.0f s",
                type(exc).__name__,
                "using in-process limits" if self._on_store_error is StoreErrorPolicy.FAIL_OPEN else "refusing",
                STORE_ERROR_BACKOFF_SECONDS,
            )


def connect_redis(url: str) -> Redis:
    """A Redis client tuned for the request path: short timeouts, one retry, a bounded pool to wait on."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=REDIS_CONNECTIONS_MAX,
        timeout=REDIS_POOL_WAIT_SECONDS,
        socket_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_CONNECT_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), REDIS_RETRIES_MAX),
    )
    return Redis.from_pool(pool)


def make_rate_limiter(limit: RateLimit, *, redis: Redis | None, key_prefix: str, name: str) -> RateLimiter:
    """Redis-backed when a client is given (shared across replicas), in-process otherwise."""
    if redis is None:
        return InMemoryRateLimiter(limit)
    return RedisRateLimiter(redis, limit, key_prefix=key_prefix, name=name)


# --- client identity ----------------------------------------------------------------------------


def client_ip(request: web.Request, trusted_proxy_count: int) -> str:
    """The client's address: the peer's, or the one the outermost trusted proxy saw.

    With N trusted proxies, each appends the address it received from to `X-Forwarded-For`, so the
    client is the N-th entry from the right; entries further left are whatever the client sent.
    """
    peer = request.remote or "unknown"
    if trusted_proxy_count == 0:
        return _ip_key(peer)
    forwarded = ",".join(request.headers.getall("X-Forwarded-For", []))
    hops = forwarded.rsplit(",", trusted_proxy_count) if forwarded else []
    if len(hops) < trusted_proxy_count:
        return _ip_key(peer)  # Did not come through every trusted proxy: only the peer is known.
    return _ip_key(hops[-trusted_proxy_count].strip(), fallback=peer)


def _ip_key(text: str, *, fallback: str | None = None) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return fallback if fallback is not None else text[:KEY_CHARS_MAX]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/{IPV6_PREFIX_BITS}", strict=False))
    return str(address)


# --- middleware ---------------------------------------------------------------------------------

UserIdOf = Callable[[web.Request], Awaitable[str | None]]


def _applies_to(path: str, path_prefixes: tuple[str, ...]) -> bool:
    return any(path == prefix or path.startswith(prefix.rstrip("/") + "/") for prefix in path_prefixes)


def _too_many_requests(decision: Decision, limit_name: str) -> web.Response:
    REJECTIONS.labels(limit=limit_name).inc()
    seconds = decision.retry_after_seconds
    message = f"too many requests; retry after {seconds} s"
    return error_response(429, "RATE_LIMITED", message, {"Retry-After": str(seconds)})


def rate_limit_middleware(
    *,
    per_ip: RateLimiter,
    per_user: RateLimiter,
    user_id_of: UserIdOf,
    path_prefixes: tuple[str, ...],
    trusted_proxy_count: int = 0,
) -> Middleware:
    """Per-IP, then per-user (verified tokens only, so nobody can spend another user's quota)."""
    assert path_prefixes, "name the browser/BFF route prefixes to limit"
    assert "/" not in path_prefixes, "'/' would cover /webhooks/stripe"

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not _applies_to(request.path, path_prefixes):
            return await handler(request)
        ip_decision = await per_ip.check(client_ip(request, trusted_proxy_count))
        if not ip_decision.allowed:
            return _too_many_requests(ip_decision, "ip")
        user_id = await user_id_of(request)
        if user_id is not None:
            user_decision = await per_user.check(user_id)
            if not user_decision.allowed:
                return _too_many_requests(user_decision, "user")
        return await handler(request)

    return middleware


def edge_rate_limit_middleware(
    settings: EdgeSettings,
    *,
    redis: Redis | None,
    user_id_of: UserIdOf,
    path_prefixes: tuple[str, ...],
    key_prefix: str = REDIS_KEY_PREFIX_DEFAULT,
) -> Middleware:
    """The gateway's middleware from its settings: per-minute limits, Redis when given."""
    per_ip = make_rate_limiter(
        RateLimit.per_minute(settings.rate_limit_per_ip_per_minute),
        redis=redis,
        key_prefix=key_prefix + "ip:",
        name="ip",
    )
    per_user = make_rate_limiter(
        RateLimit.per_minute(settings.rate_limit_per_user_per_minute),
        redis=redis,
        key_prefix=key_prefix + "user:",
        name="user",
    )
    return rate_limit_middleware(
        per_ip=per_ip,
        per_user=per_user,
        user_id_of=user_id_of,
        path_prefixes=path_prefixes,
        trusted_proxy_count=settings.trusted_proxy_count,
    )
