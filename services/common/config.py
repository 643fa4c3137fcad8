"""Environment parsing shared by the services.

Each service builds one frozen settings object at start-up from these helpers; a missing or
malformed value raises ConfigError with one line naming the variable and what was expected.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

FLAG_TRUE: Final = ("1", "true", "yes", "on")
FLAG_FALSE: Final = ("0", "false", "no", "off")
URL_CHARS_MAX: Final = 2048
LEDGER_TOKEN_CHARS_MIN: Final = 16  # a ledger caller token (LEDGER_CALLERS), and what each caller sends


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def require(environ: Mapping[str, str], name: str, expected: str) -> str:
    value = environ.get(name, "").strip()
    if not value:
        raise ConfigError(f"{name}: not set; expected {expected}")
    return value


def optional(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name, "").strip()
    return value or None


def integer(environ: Mapping[str, str], name: str, default: int, minimum: int, maximum: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected an integer from {minimum} to {maximum}, got {raw!r}") from None
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name}: expected an integer from {minimum} to {maximum}, got {value}")
    return value


def number(environ: Mapping[str, str], name: str, default: float, minimum: float, maximum: float) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected a number from {minimum} to {maximum}, got {raw!r}") from None
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name}: expected a number from {minimum} to {maximum}, got {value}")
    return value


def flag(environ: Mapping[str, str], name: str, default: bool) -> bool:
    """A boolean: true/false, yes/no, on/off or 1/0 (any case); unset or empty is `default`."""
    raw = environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in FLAG_TRUE:
        return True
    if raw in FLAG_FALSE:
        return False
    raise ConfigError(f"{name}: expected true or false, got {raw[:40]!r}")


def json_value(environ: Mapping[str, str], name: str, expected: str) -> Any:
    raw = require(environ, name, expected)
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{name}: not valid JSON ({exc.msg} at position {exc.pos}); expected {expected}") from None


def database_url(environ: Mapping[str, str]) -> str:
    value = require(environ, "DATABASE_URL", "postgresql://user@host:port/db")
    if not value.startswith(("postgresql://", "postgres://")):
        raise ConfigError("DATABASE_URL: expected a postgresql://user@host:port/db URL")
    return value


def listen_address(environ: Mapping[str, str], name: str, default: str) -> str:
    value = environ.get(name, "").strip() or default
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{name}: expected host:port (for example {default}), got {value!r}")
    return value


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def log_level(environ: Mapping[str, str]) -> str:
    value = environ.get("LOG_LEVEL", "").strip().upper() or "INFO"
    if value not in LOG_LEVELS:
        raise ConfigError(f"LOG_LEVEL: expected one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return value


def http_url(environ: Mapping[str, str], name: str) -> str | None:
    """An optional http(s):// URL with a host, at most URL_CHARS_MAX characters."""
    value = optional(environ, name)
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(value) > URL_CHARS_MAX:
        raise ConfigError(f"{name}: expected an http(s):// URL, got {value[:200]!r}")
    return value


def ledger_token(environ: Mapping[str, str], expected: str) -> str:
    """LEDGER_TOKEN: this caller's ledger token, at least LEDGER_TOKEN_CHARS_MIN characters."""
    token = require(environ, "LEDGER_TOKEN", expected)
    if len(token) < LEDGER_TOKEN_CHARS_MIN:
        raise ConfigError(f"LEDGER_TOKEN: expected at least {LEDGER_TOKEN_CHARS_MIN} characters")
    return token
