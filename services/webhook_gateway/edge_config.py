"""Settings of the gateway's HTTP edge (JWT auth, CORS, rate limits), parsed and validated once.

| variable | meaning (default) |
|---|---|
| `JWT_SECRET` | HS256 shared secret, at least 32 bytes |
| `JWT_PUBLIC_KEY` | RS256 (RSA >= 2048) or ES256 (EC P-256) public key: PEM text, or a path to a PEM file |
| `JWT_JWKS_URL` | JWKS endpoint (https; plain http only on loopback, for tests) |
| `JWT_AUDIENCE`, `JWT_ISSUER` | when set, tokens must carry this `aud` / `iss` (unset: not checked) |
| `CORS_ALLOWED_ORIGINS` | comma-separated `http(s)://host[:port]` browser origins (none) |
| `REDIS_URL` | shared rate-limit store (unset: in-process limits, per replica) |
| `RATE_LIMIT_PER_USER_PER_MINUTE` | requests per user per minute (120) |
| `RATE_LIMIT_PER_IP_PER_MINUTE` | requests per client IP per minute (300) |
| `TRUSTED_PROXY_COUNT` | reverse proxies in front that append to `X-Forwarded-For` (0: use the peer address) |

Exactly one of `JWT_SECRET`, `JWT_PUBLIC_KEY`, `JWT_JWKS_URL` must be set. Empty values count as
unset. A bad value raises `ConfigError` with one line naming the variable; secret values are never
echoed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from services.common.config import ConfigError, integer, optional
from services.webhook_gateway.jwt_keys import check_hs256_secret, classify_public_key

__all__ = ["ConfigError", "EdgeSettings", "parse_origin"]

RATE_LIMIT_PER_USER_PER_MINUTE_DEFAULT: Final = 120
RATE_LIMIT_PER_IP_PER_MINUTE_DEFAULT: Final = 300
RATE_LIMIT_PER_MINUTE_MAX: Final = 100_000
TRUSTED_PROXY_COUNT_DEFAULT: Final = 0
TRUSTED_PROXY_COUNT_MAX: Final = 8
CORS_ORIGINS_MAX: Final = 64
CLAIM_VALUE_CHARS_MAX: Final = 1024
PUBLIC_KEY_FILE_BYTES_MAX: Final = 64 * 1024

_KEY_SOURCE_VARIABLES: Final = ("JWT_SECRET", "JWT_PUBLIC_KEY", "JWT_JWKS_URL")
_DEFAULT_PORTS: Final[Mapping[str, int]] = {"http": 80, "https": 443}
_LOOPBACK_HOSTS: Final = frozenset({"localhost"})
_REDIS_SCHEMES: Final = ("redis://", "rediss://", "unix://")


@dataclass(frozen=True)
class EdgeSettings:
    """The HTTP edge's settings; build with `EdgeSettings.from_env(os.environ)` at start-up."""

    jwt_secret: str | None = field(default=None, repr=False)
    jwt_public_key_pem: str | None = None
    jwt_jwks_url: str | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    cors_allowed_origins: tuple[str, ...] = ()
    redis_url: str | None = field(default=None, repr=False)  # May embed a password.
    rate_limit_per_user_per_minute: int = RATE_LIMIT_PER_USER_PER_MINUTE_DEFAULT
    rate_limit_per_ip_per_minute: int = RATE_LIMIT_PER_IP_PER_MINUTE_DEFAULT
    trusted_proxy_count: int = TRUSTED_PROXY_COUNT_DEFAULT

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> EdgeSettings:
        _require_one_key_source(environ)
        return cls(
            jwt_secret=_jwt_secret(environ),
            jwt_public_key_pem=_jwt_public_key(environ),
            jwt_jwks_url=_jwks_url(environ),
            jwt_audience=_claim_value(environ, "JWT_AUDIENCE"),
            jwt_issuer=_claim_value(environ, "JWT_ISSUER"),
            cors_allowed_origins=_cors_origins(environ),
            redis_url=_redis_url(environ),
            rate_limit_per_user_per_minute=_per_minute(
                environ, "RATE_LIMIT_PER_USER_PER_MINUTE", RATE_LIMIT_PER_USER_PER_MINUTE_DEFAULT
            ),
            rate_limit_per_ip_per_minute=_per_minute(
                environ, "RATE_LIMIT_PER_IP_PER_MINUTE", RATE_LIMIT_PER_IP_PER_MINUTE_DEFAULT
            ),
            trusted_proxy_count=integer(
                environ, "TRUSTED_PROXY_COUNT", TRUSTED_PROXY_COUNT_DEFAULT, 0, TRUSTED_PROXY_COUNT_MAX
            ),
        )


def _per_minute(environ: Mapping[str, str], name: str, default: int) -> int:
    return integer(environ, name, default, 1, RATE_LIMIT_PER_MINUTE_MAX)


def _require_one_key_source(environ: Mapping[str, str]) -> None:
    present = [name for name in _KEY_SOURCE_VARIABLES if optional(environ, name) is not None]
    if len(present) != 1:
        found = ", ".join(present) if present else "none"
        raise ConfigError(f"{'/'.join(_KEY_SOURCE_VARIABLES)}: exactly one must be set (found: {found})")


def _jwt_secret(environ: Mapping[str, str]) -> str | None:
    secret = optional(environ, "JWT_SECRET")
    if secret is None:
        return None
    try:
        check_hs256_secret(secret)
    except ValueError as exc:
        raise ConfigError(f"JWT_SECRET: {exc}") from None
    return secret


def _jwt_public_key(environ: Mapping[str, str]) -> str | None:
    value = optional(environ, "JWT_PUBLIC_KEY")
    if value is None:
        return None
    pem = _pem_text(value) if "-----BEGIN" in value else _read_pem_file(value)
    try:
        classify_public_key(pem)
    except ValueError as exc:
        raise ConfigError(f"JWT_PUBLIC_KEY: {exc}") from None
    return pem


def _pem_text(value: str) -> str:
    # Env files often carry a PEM on one line with literal "\n" sequences.
    return (value.replace("\\n", "\n") if "\n" not in value else value).strip()


def _read_pem_file(value: str) -> str:
    path = Path(value)
    try:
        if path.stat().st_size > PUBLIC_KEY_FILE_BYTES_MAX:
            raise ConfigError(f"JWT_PUBLIC_KEY: file {value!r} is larger than {PUBLIC_KEY_FILE_BYTES_MAX} bytes")
        return path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        problem = f"cannot read {value!r} ({type(exc).__name__})"
        raise ConfigError(f"JWT_PUBLIC_KEY: expected PEM text or a readable PEM file path; {problem}") from None


def _jwks_url(environ: Mapping[str, str]) -> str | None:
    url = optional(environ, "JWT_JWKS_URL")
    if url is None:
        return None
    parts = urlsplit(url)
    if not parts.hostname or parts.scheme not in ("http", "https"):
        raise ConfigError(f"JWT_JWKS_URL: expected an https:// URL, got {url!r}")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ConfigError(f"JWT_JWKS_URL: must use https:// (plain http only for loopback hosts), got {url!r}")
    return url


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _claim_value(environ: Mapping[str, str], name: str) -> str | None:
    value = optional(environ, name)
    if value is not None and len(value) > CLAIM_VALUE_CHARS_MAX:
        raise ConfigError(f"{name}: longer than {CLAIM_VALUE_CHARS_MAX} characters")
    return value


def _cors_origins(environ: Mapping[str, str]) -> tuple[str, ...]:
    raw = optional(environ, "CORS_ALLOWED_ORIGINS")
    if raw is None:
        return ()
    items = [item.strip() for item in raw.split(",") if item.strip()]
    if len(items) > CORS_ORIGINS_MAX:
        raise ConfigError(f"CORS_ALLOWED_ORIGINS: at most {CORS_ORIGINS_MAX} origins, got {len(items)}")
    origins: list[str] = []
    for item in items:
        try:
            origin = parse_origin(item)
        except ValueError as exc:
            raise ConfigError(f"CORS_ALLOWED_ORIGINS: {exc}") from None
        if origin not in origins:
            origins.append(origin)
    return tuple(origins)


def parse_origin(text: str) -> str:
    """Normalize `http(s)://host[:port]` to the form browsers send (lowercase, no default port).

    Raises ValueError for anything else: a path, query, credentials, a wildcard, another scheme.
    """
    expected = f"expected an http(s)://host[:port] origin without path, got {text!r}"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ValueError(expected) from None
    scheme = parts.scheme.lower()
    # A lone trailing "/" is tolerated: operators paste origins copied from the address bar.
    has_extras = parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc
    if scheme not in _DEFAULT_PORTS or not parts.hostname or has_extras or text.count("#") or "*" in text:
        raise ValueError(expected)
    host = parts.hostname.lower()
    host = f"[{host}]" if ":" in host else host
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def _redis_url(environ: Mapping[str, str]) -> str | None:
    url = optional(environ, "REDIS_URL")
    if url is not None and not url.lower().startswith(_REDIS_SCHEMES):
        # The value may embed a password: describe it, never echo it.
        raise ConfigError("REDIS_URL: expected a redis://, rediss:// or unix:// URL")
    return url
