"""The ledger's settings, read from the environment once at start-up (SPEC §6)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from services.common import config, event_loop
from services.common.config import ConfigError
from services.ledger.rpc.auth import ROLES, Caller

LISTEN_DEFAULT = "[::]:50051"
CALLERS_EXPECTED = 'a JSON object {"name": {"token": "...", "roles": ["reader", ...]}}'
TOKEN_CHARS_MIN = config.LEDGER_TOKEN_CHARS_MIN
POST_BATCH_SIZE_MAX_DEFAULT = 64
POST_BATCH_SIZE_MAX_LIMIT = 1000
BATCHES_IN_FLIGHT_MAX_DEFAULT = 4
BATCHES_IN_FLIGHT_MAX_LIMIT = 64
WORKER_COUNT_MAX = 64
POOL_SIZE_MAX_DEFAULT = 20
POOL_SIZE_MAX_LIMIT = 500
COMMAND_TIMEOUT_SECONDS_DEFAULT = 5.0
COMMAND_TIMEOUT_SECONDS_MIN = 0.1
COMMAND_TIMEOUT_SECONDS_MAX = 300.0
SHUTDOWN_GRACE_SECONDS_DEFAULT = 10.0
SHUTDOWN_GRACE_SECONDS_MIN = 0.0
SHUTDOWN_GRACE_SECONDS_MAX = 300.0
PORT_MAX = 65535
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True, slots=True)
class TlsSettings:
    certificate_chain: bytes
    private_key: bytes
    client_ca: bytes | None


@dataclass(frozen=True, slots=True)
class LedgerSettings:
    database_url: str
    listen_address: str
    callers: tuple[Caller, ...]
    pool_size_max: int
    command_timeout_seconds: float
    shutdown_grace_seconds: float
    metrics_port: int | None
    tls: TlsSettings | None
    log_level: str
    # Raw secrets (caller tokens) that the log redactor must scrub wherever they appear.
    secret_values: tuple[str, ...] = ()
    # Group commit (services/ledger/group_commit.py): concurrent Credit / Debit / AdminAdjust share a transaction,
    # as do concurrent SettlePayment calls.
    group_commit_enabled: bool = True
    post_batch_size_max: int = POST_BATCH_SIZE_MAX_DEFAULT
    # Batches of one kind in the database at once, per worker: more lowers latency at low load, fewer makes
    # batches larger (less work per request) when the machine is saturated.
    batches_in_flight_max: int = BATCHES_IN_FLIGHT_MAX_DEFAULT
    # `python -m services.ledger` runs this many server processes on one port (SO_REUSEPORT).
    worker_count: int = 1
    event_loop: str = "auto"  # uvloop when installed (auto), uvloop, or asyncio
    # Where the supervisor makes its folder of multiprocess metric files (None: the system's temporary folder).
    metrics_directory: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> LedgerSettings:
        metrics_port = config.integer(environ, "METRICS_PORT", 0, 0, PORT_MAX)
        callers_json = config.json_value(environ, "LEDGER_CALLERS", CALLERS_EXPECTED)
        return cls(
            database_url=config.database_url(environ),
            listen_address=config.listen_address(environ, "LEDGER_LISTEN", LISTEN_DEFAULT),
            callers=parse_callers(callers_json),
            pool_size_max=config.integer(
                environ, "LEDGER_DB_POOL_SIZE_MAX", POOL_SIZE_MAX_DEFAULT, 1, POOL_SIZE_MAX_LIMIT
            ),
            command_timeout_seconds=config.number(
                environ,
                "LEDGER_DB_COMMAND_TIMEOUT_SECONDS",
                COMMAND_TIMEOUT_SECONDS_DEFAULT,
                COMMAND_TIMEOUT_SECONDS_MIN,
                COMMAND_TIMEOUT_SECONDS_MAX,
            ),
            shutdown_grace_seconds=config.number(
                environ,
                "LEDGER_SHUTDOWN_GRACE_SECONDS",
                SHUTDOWN_GRACE_SECONDS_DEFAULT,
                SHUTDOWN_GRACE_SECONDS_MIN,
                SHUTDOWN_GRACE_SECONDS_MAX,
            ),
            metrics_port=metrics_port or None,
            tls=parse_tls(environ),
            log_level=config.log_level(environ),
            secret_values=tuple(entry["token"] for entry in callers_json.values()),
            group_commit_enabled=boolean(environ, "LEDGER_GROUP_COMMIT", True),
            post_batch_size_max=config.integer(
                environ, "LEDGER_POST_BATCH_SIZE_MAX", POST_BATCH_SIZE_MAX_DEFAULT, 1, POST_BATCH_SIZE_MAX_LIMIT
            ),
            batches_in_flight_max=config.integer(
                environ, "LEDGER_BATCHES_IN_FLIGHT_MAX", BATCHES_IN_FLIGHT_MAX_DEFAULT, 1, BATCHES_IN_FLIGHT_MAX_LIMIT
            ),
            worker_count=config.integer(environ, "LEDGER_WORKERS", os.cpu_count() or 1, 1, WORKER_COUNT_MAX),
            event_loop=event_loop.setting(environ, "LEDGER_EVENT_LOOP"),
            metrics_directory=config.optional(environ, "LEDGER_METRICS_DIR"),
        )


def boolean(environ: Mapping[str, str], name: str, default: bool) -> bool:
    value = config.optional(environ, name)
    if value is None:
        return default
    if value.lower() in TRUE_WORDS:
        return True
    if value.lower() in FALSE_WORDS:
        return False
    raise ConfigError(f"{name}: expected true or false, got {value[:20]!r}")


def parse_callers(value: object) -> tuple[Caller, ...]:
    if not isinstance(value, dict) or not value:
        raise ConfigError(f"LEDGER_CALLERS: expected {CALLERS_EXPECTED}")
    callers = []
    for name, entry in value.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("token"), str):
            raise ConfigError(f"LEDGER_CALLERS: caller {name!r} needs a string token")
        token = entry["token"]
        if len(token) < TOKEN_CHARS_MIN:
            raise ConfigError(f"LEDGER_CALLERS: caller {name!r} token must be at least {TOKEN_CHARS_MIN} characters")
        roles = entry.get("roles")
        if not isinstance(roles, list) or not roles or not all(isinstance(r, str) for r in roles):
            raise ConfigError(f"LEDGER_CALLERS: caller {name!r} needs a non-empty list of roles")
        unknown = sorted(set(roles) - ROLES)
        if unknown:
            raise ConfigError(f"LEDGER_CALLERS: caller {name!r} has unknown roles {unknown}; known: {sorted(ROLES)}")
        callers.append(Caller.from_token(name, token, frozenset(roles)))
    if len({c.token_sha256 for c in callers}) != len(callers):
        raise ConfigError("LEDGER_CALLERS: two callers share one token")
    return tuple(callers)


def parse_tls(environ: Mapping[str, str]) -> TlsSettings | None:
    cert_path = config.optional(environ, "LEDGER_TLS_CERT_FILE")
    key_path = config.optional(environ, "LEDGER_TLS_KEY_FILE")
    ca_path = config.optional(environ, "LEDGER_TLS_CLIENT_CA_FILE")
    if not cert_path and not key_path:
        if ca_path:
            raise ConfigError("LEDGER_TLS_CLIENT_CA_FILE: needs LEDGER_TLS_CERT_FILE and LEDGER_TLS_KEY_FILE")
        return None
    if not cert_path or not key_path:
        raise ConfigError("LEDGER_TLS_CERT_FILE / LEDGER_TLS_KEY_FILE: set both or neither")
    return TlsSettings(
        certificate_chain=_read(cert_path, "LEDGER_TLS_CERT_FILE"),
        private_key=_read(key_path, "LEDGER_TLS_KEY_FILE"),
        client_ca=_read(ca_path, "LEDGER_TLS_CLIENT_CA_FILE") if ca_path else None,
    )


def _read(path: str, name: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {path!r} ({exc.strerror})") from None
