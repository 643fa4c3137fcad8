"""Strict CORS for the browser-facing routes: an allow-list of exact origins, nothing else.

- Only a listed origin gets `Access-Control-Allow-Origin` (its own value echoed, never `*`) and
  `Access-Control-Allow-Credentials: true`; every browser-facing response says `Vary: Origin`.
- A preflight (`OPTIONS` + `Origin` + `Access-Control-Request-Method`) from a listed origin asking
  for an allowed method and headers is answered 204 with the allowed methods/headers and a max-age;
  any other preflight gets 403 with the JSON error body.
- A request from an unlisted origin still reaches its handler (CORS is enforced by browsers; the
  routes authenticate with bearer tokens, not cookies), it just gets no CORS headers.
- Paths outside the configured prefixes (`/webhooks/stripe`, health, metrics) are left untouched.

Install it outermost (before `error_middleware`) so error responses carry the CORS headers too:
a browser script can only read a 401 or 429 body if it does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from services.webhook_gateway.http_errors import error_response

PREFLIGHT_MAX_AGE_SECONDS: Final = 600
ALLOWED_METHODS_DEFAULT: Final = ("GET", "POST")
ALLOWED_HEADERS_DEFAULT: Final = ("Authorization", "Content-Type", "Idempotency-Key")
EXPOSED_HEADERS_DEFAULT: Final = ("Retry-After",)
REQUESTED_HEADERS_MAX: Final = 32


@dataclass(frozen=True)
class CorsPolicy:
    """Which origins, on which path prefixes, may use which methods and headers."""

    allowed_origins: frozenset[str]
    path_prefixes: tuple[str, ...]
    allowed_methods: tuple[str, ...] = ALLOWED_METHODS_DEFAULT
    allowed_headers: tuple[str, ...] = ALLOWED_HEADERS_DEFAULT
    exposed_headers: tuple[str, ...] = EXPOSED_HEADERS_DEFAULT
    max_age_seconds: int = PREFLIGHT_MAX_AGE_SECONDS
    _allowed_headers_lower: frozenset[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        assert "*" not in self.allowed_origins, "a wildcard origin defeats the allow-list"
        assert all(prefix.startswith("/") for prefix in self.path_prefixes), self.path_prefixes
        assert "/" not in self.path_prefixes, "'/' would cover /webhooks/stripe; list the browser routes"
        object.__setattr__(self, "_allowed_headers_lower", frozenset(h.lower() for h in self.allowed_headers))

    @classmethod
    def build(cls, origins: Iterable[str], path_prefixes: Iterable[str]) -> CorsPolicy:
        return cls(allowed_origins=frozenset(origins), path_prefixes=tuple(path_prefixes))

    def applies_to(self, path: str) -> bool:
        # Segment boundary: "/me" covers "/me" and "/me/credits", not "/meow".
        return any(path == prefix or path.startswith(prefix.rstrip("/") + "/") for prefix in self.path_prefixes)

    def allows_headers(self, requested: str) -> bool:
        names = [name.strip().lower() for name in requested.split(",") if name.strip()]
        return len(names) <= REQUESTED_HEADERS_MAX and all(name in self._allowed_headers_lower for name in names)


def _add_vary_origin(response: web.StreamResponse) -> None:
    vary = response.headers.get("Vary", "")
    if "origin" not in vary.lower():
        response.headers["Vary"] = f"{vary}, Origin" if vary else "Origin"


def _add_allow_origin(response: web.StreamResponse, origin: str, policy: CorsPolicy) -> None:
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Access-Control-Allow-Credentials"] = "true"
    if policy.exposed_headers:
        response.headers["Access-Control-Expose-Headers"] = ", ".join(policy.exposed_headers)


def _preflight(request: web.Request, origin: str, policy: CorsPolicy) -> web.Response:
    method = request.headers.get("Access-Control-Request-Method", "")
    requested_headers = request.headers.get("Access-Control-Request-Headers", "")
    if origin not in policy.allowed_origins:
        response = error_response(403, "CORS_ORIGIN_NOT_ALLOWED", "this origin may not call this API")
    elif method not in policy.allowed_methods or not policy.allows_headers(requested_headers):
        response = error_response(403, "CORS_REQUEST_NOT_ALLOWED", "this method or header is not allowed")
    else:
        response = web.Response(status=204)
        _add_allow_origin(response, origin, policy)
        response.headers["Access-Control-Allow-Methods"] = ", ".join(policy.allowed_methods)
        response.headers["Access-Control-Allow-Headers"] = ", ".join(policy.allowed_headers)
        response.headers["Access-Control-Max-Age"] = str(policy.max_age_seconds)
    _add_vary_origin(response)
    return response


def _decorate(response: web.StreamResponse, origin: str | None, policy: CorsPolicy) -> None:
    if response.prepared:
        return  # Headers already sent (a streamed response); nothing can be added now.
    _add_vary_origin(response)
    if origin is not None and origin in policy.allowed_origins:
        _add_allow_origin(response, origin, policy)


def cors_middleware(policy: CorsPolicy) -> Middleware:
    """The aiohttp middleware enforcing `policy` on its path prefixes."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not policy.applies_to(request.path):
            return await handler(request)
        origin = request.headers.get("Origin")
        if request.method == "OPTIONS" and origin and "Access-Control-Request-Method" in request.headers:
            return _preflight(request, origin, policy)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            # Only if installed inside error_middleware by mistake: still let the browser read it.
            _decorate(exc, origin, policy)
            raise
        _decorate(response, origin, policy)
        return response

    return middleware
