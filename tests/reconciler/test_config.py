"""Settings: the environment and the flags, each bad value refused with a line that names it."""

from __future__ import annotations

import datetime

import pytest

from services.common.config import ConfigError
from services.reconciler.config import ReconcilerSettings, parse_duration_seconds, parse_since

NOW = datetime.datetime(2026, 11, 27, 12, 0, tzinfo=datetime.UTC)
VALID = {
    "LEDGER_TARGET": "ledger:50051",
    "LEDGER_TOKEN": "reconciler-token-0123456789",
    "STRIPE_API_KEY": "rk_live_restricted_0123456789",
}


def test_defaults() -> None:
    settings = ReconcilerSettings.from_env(VALID)

    assert (settings.window_seconds, settings.overlap_seconds) == (3 * 86_400, 3600)
    assert (settings.page_size_max, settings.interval_seconds) == (100, 86_400)
    assert settings.events_enabled is True
    assert (settings.metrics_port, settings.metrics_textfile_path, settings.stripe_api_base) == (None, None, None)
    assert settings.stripe_retry.attempts_max == 6
    assert settings.dry_run is False
    assert settings.window_start_seconds(1_000_000) == 1_000_000 - 3 * 86_400 - 3600
    assert "reconciler-token" not in repr(settings)
    assert "rk_live" not in repr(settings)


def test_every_variable_is_read(tmp_path) -> None:
    environ = VALID | {
        "STRIPE_API_BASE": "http://127.0.0.1:12111/",
        "RECONCILER_WINDOW_SECONDS": "86400",
        "RECONCILER_OVERLAP_SECONDS": "0",
        "RECONCILER_PAGE_SIZE": "25",
        "RECONCILER_INTERVAL_SECONDS": "3600",
        "RECONCILER_EVENTS_ENABLED": "false",
        "RECONCILER_METRICS_TEXTFILE": str(tmp_path / "reconciler.prom"),
        "RECONCILER_PROGRESS_SECONDS": "5",
        "RECONCILER_STRIPE_ATTEMPTS_MAX": "2",
        "RECONCILER_STRIPE_BACKOFF_MAX_SECONDS": "1.5",
        "METRICS_PORT": "9464",
        "LOG_LEVEL": "debug",
    }

    settings = ReconcilerSettings.from_env(environ)

    assert settings.stripe_api_base == "http://127.0.0.1:12111"
    assert (settings.window_seconds, settings.overlap_seconds, settings.page_size_max) == (86_400, 0, 25)
    assert (settings.interval_seconds, settings.events_enabled, settings.progress_interval_seconds) == (3600, False, 5)
    assert settings.metrics_textfile_path == str(tmp_path / "reconciler.prom")
    assert (settings.stripe_retry.attempts_max, settings.stripe_retry.backoff_seconds_max) == (2, 1.5)
    assert (settings.metrics_port, settings.log_level) == (9464, "DEBUG")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        pytest.param("LEDGER_TARGET", "", id="ledger-target-missing"),
        pytest.param("LEDGER_TOKEN", "short", id="ledger-token-short"),
        pytest.param("STRIPE_API_KEY", "pk_live_publishable_0123456789", id="publishable-key"),
        pytest.param("STRIPE_API_BASE", "ftp://stripe.example", id="api-base-not-http"),
        pytest.param("CREDIT_PACKAGES", "{not json", id="catalog-not-json"),
        pytest.param("RECONCILER_WINDOW_SECONDS", "30", id="window-under-a-minute"),
        pytest.param("RECONCILER_WINDOW_SECONDS", "3d", id="window-env-is-seconds"),
        pytest.param("RECONCILER_OVERLAP_SECONDS", "-1", id="overlap-negative"),
        pytest.param("RECONCILER_PAGE_SIZE", "0", id="page-size-zero"),
        pytest.param("RECONCILER_PAGE_SIZE", "101", id="page-size-over-stripe-limit"),
        pytest.param("RECONCILER_INTERVAL_SECONDS", "5", id="interval-too-short"),
        pytest.param("RECONCILER_EVENTS_ENABLED", "maybe", id="events-not-boolean"),
        pytest.param("RECONCILER_METRICS_TEXTFILE", "/tmp/reconciler.txt", id="textfile-not-prom"),
        pytest.param("RECONCILER_METRICS_TEXTFILE", "/no/such/dir/reconciler.prom", id="textfile-no-directory"),
        pytest.param("RECONCILER_PROGRESS_SECONDS", "0", id="progress-zero"),
        pytest.param("RECONCILER_STRIPE_ATTEMPTS_MAX", "0", id="attempts-zero"),
        pytest.param("RECONCILER_STRIPE_BACKOFF_MAX_SECONDS", "soon", id="backoff-not-a-number"),
        pytest.param("METRICS_PORT", "70000", id="metrics-port-too-big"),
        pytest.param("LOG_LEVEL", "chatty", id="log-level-unknown"),
    ],
)
def test_bad_value_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        ReconcilerSettings.from_env(VALID | {name: value})

    message = str(raised.value)
    assert message.startswith(name)
    assert "\n" not in message
    assert VALID["LEDGER_TOKEN"] not in message
    assert VALID["STRIPE_API_KEY"] not in message


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("3600", 3600), ("3600s", 3600), ("90m", 5400), ("36h", 129_600), ("3d", 259_200), (" 2D ", 172_800)],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration_seconds("--window", text, 60, 400 * 86_400) == seconds


@pytest.mark.parametrize("text", ["", "3w", "-1h", "1.5h", "h", "3 days", "1000d"])
def test_bad_durations_name_the_flag(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^--window: "):
        parse_duration_seconds("--window", text, 60, 400 * 86_400)


def test_since_is_exact_and_utc_without_a_zone() -> None:
    settings = ReconcilerSettings.from_env(VALID).with_options(since="2026-11-20T06:30", now=NOW)

    assert settings.since == datetime.datetime(2026, 11, 20, 6, 30, tzinfo=datetime.UTC)
    assert settings.window_start_seconds(NOW.timestamp()) == int(settings.since.timestamp())  # no overlap added
    assert parse_since("2026-11-20T07:30+01:00", NOW) == settings.since
    assert parse_since("2026-11-20", NOW) == datetime.datetime(2026, 11, 20, tzinfo=datetime.UTC)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"since": "yesterday"}, "--since: expected an ISO date", id="since-not-iso"),
        pytest.param({"since": "2026-11-28"}, "--since: must be in the past", id="since-in-the-future"),
        pytest.param({"since": "2024-01-01"}, "--since: at most 400 days back", id="since-too-old"),
        pytest.param({"since": "2026-11-20", "window": "3d"}, "--since and --window", id="since-and-window"),
        pytest.param({"interval": "10s"}, "--interval: expected 60 to", id="interval-too-short"),
    ],
)
def test_bad_flags_name_the_flag(options: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ReconcilerSettings.from_env(VALID).with_options(now=NOW, **options)


def test_flags_override_the_environment() -> None:
    settings = ReconcilerSettings.from_env(VALID | {"RECONCILER_WINDOW_SECONDS": "86400"}).with_options(
        dry_run=True, window="36h", interval="6h", events_enabled=False
    )

    assert (settings.window_seconds, settings.interval_seconds) == (129_600, 21_600)
    assert (settings.dry_run, settings.events_enabled) == (True, False)
