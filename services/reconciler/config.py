"""The reconciler's settings: the environment once at start-up, then the command line on top (SPEC §6).

| variable | meaning (default) |
|---|---|
| `LEDGER_TARGET`, `LEDGER_TOKEN` | the ledger's gRPC address, and this caller's token (role `reconciler`); required |
| `STRIPE_API_KEY` | Stripe secret or restricted key (`sk_...` / `rk_...`; read access is enough); required |
| `STRIPE_API_BASE` | Stripe API base URL override, for tests and emulators (Stripe's own) |
| `CREDIT_PACKAGES` | JSON catalog (the seed's three packs; see services.stripe_bridge.catalog) |
| `RECONCILER_WINDOW_SECONDS` | charges created this far back are compared (259200 = 3 days) |
| `RECONCILER_OVERLAP_SECONDS` | added to the window, so consecutive runs overlap (3600) |
| `RECONCILER_PAGE_SIZE` | charges / events per Stripe page, 1 to 100 (100) |
| `RECONCILER_INTERVAL_SECONDS` | loop mode: time between the starts of two runs (86400) |
| `RECONCILER_EVENTS_ENABLED` | also apply undelivered events of the last 30 days from the Events API (true) |
| `RECONCILER_METRICS_TEXTFILE` | `--once`: write the metrics here at the end (a `.prom` path; off) |
| `RECONCILER_PROGRESS_SECONDS` | a progress line on stderr at most this often during a run (10) |
| `RECONCILER_STRIPE_ATTEMPTS_MAX` | attempts per Stripe call before the run gives up (6) |
| `RECONCILER_STRIPE_BACKOFF_MAX_SECONDS` | longest backoff between attempts; Retry-After is honoured up to 60 s (30) |
| `METRICS_PORT` | loop mode: serve `/metrics` on this port (off) |
| `LOG_LEVEL` | DEBUG, INFO, WARNING or ERROR (INFO) |

A bad value stops start-up with one line naming the variable (or the flag); secrets are never echoed.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from services.common import config
from services.common.config import ConfigError
from services.reconciler.stripe_source import (
    ATTEMPTS_MAX_DEFAULT,
    BACKOFF_SECONDS_MAX_DEFAULT,
    LIST_PAGE_SIZE_MAX,
    RetryPolicy,
)
from services.stripe_bridge import config as stripe_config
from services.stripe_bridge.catalog import Catalog

__all__ = ["ConfigError", "ReconcilerSettings", "parse_duration_seconds", "parse_since"]

DAY_SECONDS: Final = 86_400
WINDOW_SECONDS_DEFAULT: Final = 3 * DAY_SECONDS
WINDOW_SECONDS_MIN: Final = 60
WINDOW_SECONDS_MAX: Final = 400 * DAY_SECONDS
OVERLAP_SECONDS_DEFAULT: Final = 3600
OVERLAP_SECONDS_MAX: Final = 7 * DAY_SECONDS
RECONCILE_PAGE_SIZE_MAX: Final = LIST_PAGE_SIZE_MAX
INTERVAL_SECONDS_DEFAULT: Final = DAY_SECONDS
INTERVAL_SECONDS_MIN: Final = 60
INTERVAL_SECONDS_MAX: Final = 30 * DAY_SECONDS
PROGRESS_SECONDS_DEFAULT: Final = 10
PROGRESS_SECONDS_MAX: Final = 3600
STRIPE_ATTEMPTS_MAX_LIMIT: Final = 20
STRIPE_BACKOFF_MAX_SECONDS_LIMIT: Final = 300.0
TEXTFILE_SUFFIX: Final = ".prom"
_DURATION: Final = re.compile(r"^(\d{1,9})\s*([smhd]?)$")
_UNIT_SECONDS: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": DAY_SECONDS}
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True)
class ReconcilerSettings:
    """Everything a run needs; build with `from_env(os.environ)`, then `with_options(...)` for the flags."""

    ledger_target: str
    ledger_token: str = field(repr=False)
    stripe_api_key: str = field(repr=False)
    stripe_api_base: str | None
    catalog: Catalog
    window_seconds: int = WINDOW_SECONDS_DEFAULT
    overlap_seconds: int = OVERLAP_SECONDS_DEFAULT
    page_size_max: int = RECONCILE_PAGE_SIZE_MAX
    interval_seconds: int = INTERVAL_SECONDS_DEFAULT
    events_enabled: bool = True
    metrics_port: int | None = None
    metrics_textfile_path: str | None = None
    progress_interval_seconds: int = PROGRESS_SECONDS_DEFAULT
    stripe_retry: RetryPolicy = field(default_factory=RetryPolicy)
    log_level: str = "INFO"
    since: datetime.datetime | None = None  # --since: an exact start instead of window + overlap
    dry_run: bool = False

    def __post_init__(self) -> None:
        assert 1 <= self.page_size_max <= RECONCILE_PAGE_SIZE_MAX, self.page_size_max
        assert WINDOW_SECONDS_MIN <= self.window_seconds <= WINDOW_SECONDS_MAX, self.window_seconds
        assert self.since is None or self.since.tzinfo is not None, self.since

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ReconcilerSettings:
        metrics_port = config.integer(environ, "METRICS_PORT", 0, 0, 65535)
        return cls(
            ledger_target=config.require(environ, "LEDGER_TARGET", "the ledger's host:port (for example ledger:50051)"),
            ledger_token=config.ledger_token(environ, "this caller's ledger token (role reconciler)"),
            stripe_api_key=stripe_config.stripe_api_key(environ),
            stripe_api_base=stripe_config.stripe_api_base(environ),
            catalog=Catalog.from_env(environ),
            window_seconds=config.integer(
                environ, "RECONCILER_WINDOW_SECONDS", WINDOW_SECONDS_DEFAULT, WINDOW_SECONDS_MIN, WINDOW_SECONDS_MAX
            ),
            overlap_seconds=config.integer(
                environ, "RECONCILER_OVERLAP_SECONDS", OVERLAP_SECONDS_DEFAULT, 0, OVERLAP_SECONDS_MAX
            ),
            page_size_max=config.integer(
                environ, "RECONCILER_PAGE_SIZE", RECONCILE_PAGE_SIZE_MAX, 1, RECONCILE_PAGE_SIZE_MAX
            ),
            interval_seconds=config.integer(
                environ,
                "RECONCILER_INTERVAL_SECONDS",
                INTERVAL_SECONDS_DEFAULT,
                INTERVAL_SECONDS_MIN,
                INTERVAL_SECONDS_MAX,
            ),
            events_enabled=_boolean(environ, "RECONCILER_EVENTS_ENABLED", True),
            metrics_port=metrics_port or None,
            metrics_textfile_path=_textfile(environ),
            progress_interval_seconds=config.integer(
                environ, "RECONCILER_PROGRESS_SECONDS", PROGRESS_SECONDS_DEFAULT, 1, PROGRESS_SECONDS_MAX
            ),
            stripe_retry=RetryPolicy(
                attempts_max=config.integer(
                    environ, "RECONCILER_STRIPE_ATTEMPTS_MAX", ATTEMPTS_MAX_DEFAULT, 1, STRIPE_ATTEMPTS_MAX_LIMIT
                ),
                backoff_seconds_max=config.number(
                    environ,
                    "RECONCILER_STRIPE_BACKOFF_MAX_SECONDS",
                    BACKOFF_SECONDS_MAX_DEFAULT,
                    0.0,
                    STRIPE_BACKOFF_MAX_SECONDS_LIMIT,
                ),
            ),
            log_level=config.log_level(environ),
        )

    def with_options(
        self,
        *,
        dry_run: bool = False,
        since: str | None = None,
        window: str | None = None,
        interval: str | None = None,
        events_enabled: bool | None = None,
        now: datetime.datetime | None = None,
    ) -> ReconcilerSettings:
        """The command line's flags on top of the environment; ConfigError names the flag."""
        if since is not None and window is not None:
            raise ConfigError("--since and --window: give one or the other")
        changes: dict[str, object] = {"dry_run": dry_run or self.dry_run}
        if since is not None:
            changes["since"] = parse_since(since, now or datetime.datetime.now(datetime.UTC))
        if window is not None:
            changes["window_seconds"] = parse_duration_seconds(
                "--window", window, WINDOW_SECONDS_MIN, WINDOW_SECONDS_MAX
            )
        if interval is not None:
            changes["interval_seconds"] = parse_duration_seconds(
                "--interval", interval, INTERVAL_SECONDS_MIN, INTERVAL_SECONDS_MAX
            )
        if events_enabled is not None:
            changes["events_enabled"] = events_enabled
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def window_start_seconds(self, now_seconds: float) -> int:
        """`created[gte]` of the charges listed: --since exactly, else now - window - overlap."""
        if self.since is not None:
            return int(self.since.timestamp())
        return int(now_seconds) - self.window_seconds - self.overlap_seconds


def parse_duration_seconds(name: str, text: str, minimum: int, maximum: int) -> int:
    """`90`, `90s`, `15m`, `36h`, `3d` -> seconds, within [minimum, maximum]."""
    match = _DURATION.match(text.strip().lower())
    if match is None:
        raise ConfigError(f"{name}: expected a duration such as 3600, 90m, 36h or 3d, got {text[:40]!r}")
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not minimum <= seconds <= maximum:
        raise ConfigError(f"{name}: expected {minimum} to {maximum} seconds, got {seconds}")
    return seconds


def parse_since(text: str, now: datetime.datetime) -> datetime.datetime:
    """An ISO-8601 date or date-time in the past (no zone: UTC) -> an aware datetime."""
    try:
        moment = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"--since: expected an ISO date or date-time such as 2026-01-31T12:00Z, got {text[:40]!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    if moment >= now:
        raise ConfigError("--since: must be in the past")
    if (now - moment).total_seconds() > WINDOW_SECONDS_MAX:
        raise ConfigError(f"--since: at most {WINDOW_SECONDS_MAX // DAY_SECONDS} days back")
    return moment


def _boolean(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(f"{name}: expected true or false, got {raw[:40]!r}")


def _textfile(environ: Mapping[str, str]) -> str | None:
    value = config.optional(environ, "RECONCILER_METRICS_TEXTFILE")
    if value is None:
        return None
    if not value.endswith(TEXTFILE_SUFFIX):
        raise ConfigError(f"RECONCILER_METRICS_TEXTFILE: expected a path ending in {TEXTFILE_SUFFIX} (node-exporter)")
    directory = os.path.dirname(os.path.abspath(value))
    if not os.path.isdir(directory):
        raise ConfigError(f"RECONCILER_METRICS_TEXTFILE: directory {directory[:200]!r} does not exist")
    return value
