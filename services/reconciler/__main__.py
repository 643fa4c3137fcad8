"""`python -m services.reconciler`: compare Stripe with the ledger and repair what drifted (SPEC §5).

    python -m services.reconciler                   loop: a run now, then one every RECONCILER_INTERVAL_SECONDS
    python -m services.reconciler --once            one run, then exit (cron, Kubernetes CronJob)
    python -m services.reconciler --once --dry-run  report only; the ledger is not changed
      --since 2026-01-31T00:00Z | --window 36h      what to compare (default: 3 days + 1 hour of overlap)
      --interval 6h   --no-events   --output drift.jsonl

The drift report (JSON lines) goes to stdout or `--output` (appended); logs and progress lines go to
stderr as JSON. Metrics: served on METRICS_PORT in loop mode; written to RECONCILER_METRICS_TEXTFILE
(node-exporter textfile format) at the end of `--once`.

Exit codes of `--once`: 0 the ledger agrees with Stripe (everything found was repaired); 1 drift
remains that needs an operator (or, with --dry-run, any drift); 2 configuration error (one line on
stderr naming the variable or flag); 3 the run could not finish (Stripe or the ledger kept failing,
or SIGTERM) — every repair it made is a whole idempotent ledger call, so running again is safe.
Loop mode exits 0 on SIGTERM or SIGINT (the current page is finished or abandoned, never half-applied),
and 2 on a configuration error; a failed run in loop mode is logged and counted, and the loop goes on.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Final, TextIO

from services.common import event_loop
from services.common.config import ConfigError
from services.common.logs import configure_logging, register_secret
from services.common.metrics import start_metrics_server
from services.common.tracing import configure_tracing, grpc_client_interceptors
from services.ledger.client import LedgerClient
from services.reconciler import metrics
from services.reconciler.config import ReconcilerSettings
from services.reconciler.report import EXIT_CONFIG_ERROR, EXIT_RUN_FAILED, ReportWriter
from services.reconciler.run import LEDGER_ATTEMPTS_MAX, LEDGER_DEADLINE_SECONDS, reconcile

log = logging.getLogger("services.reconciler")

SERVICE_NAME: Final = "reconciler"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m services.reconciler",
        description="Compare Stripe's charges and events with the credits ledger; repair what drifted.",
    )
    parser.add_argument("--once", action="store_true", help="one run, then exit with 0 / 1 / 3")
    parser.add_argument("--dry-run", action="store_true", help="report drift, change nothing")
    parser.add_argument("--since", metavar="ISO", help="compare charges created since then (UTC if no zone)")
    parser.add_argument("--window", metavar="DURATION", help="compare this far back, e.g. 3d or 36h (+ overlap)")
    parser.add_argument("--interval", metavar="DURATION", help="loop mode: time between run starts, e.g. 24h")
    parser.add_argument("--no-events", action="store_true", help="skip the Events API pass")
    parser.add_argument("--output", metavar="PATH", default="-", help="append the JSON-lines report here (- = stdout)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = ReconcilerSettings.from_env(os.environ).with_options(
            dry_run=args.dry_run,
            since=args.since,
            window=args.window,
            interval=args.interval,
            events_enabled=False if args.no_events else None,
        )
        configure_logging(SERVICE_NAME, settings.log_level)
        register_secret(settings.stripe_api_key)
        register_secret(settings.ledger_token)
        tracer_provider = configure_tracing(SERVICE_NAME)
    except ConfigError as exc:
        print(f"{SERVICE_NAME}: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    try:
        stream = _open_report(args.output)
    except OSError as exc:
        print(f"{SERVICE_NAME}: --output: cannot open {args.output!r}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    try:
        writer = ReportWriter(stream)
        if args.once:
            return asyncio.run(run_once(settings, writer))
        return asyncio.run(run_loop(settings, writer))
    finally:
        if stream is not sys.stdout:
            stream.close()
        if tracer_provider is not None:
            tracer_provider.shutdown()


def _open_report(path: str) -> TextIO:
    """stdout for `-`, else the file, appended (a loop's runs follow each other in it)."""
    if path == "-":
        return sys.stdout
    return open(path, "a", encoding="utf-8")  # closed by main()


def _ledger_client(settings: ReconcilerSettings) -> LedgerClient:
    return LedgerClient(
        settings.ledger_target,
        settings.ledger_token,
        deadline_seconds=LEDGER_DEADLINE_SECONDS,
        attempts_max=LEDGER_ATTEMPTS_MAX,
        interceptors=grpc_client_interceptors(),
    )


async def run_once(settings: ReconcilerSettings, writer: ReportWriter) -> int:
    stop = event_loop.stop_signal_event()
    try:
        async with _ledger_client(settings) as ledger:
            summary = await reconcile(settings, ledger=ledger, output=writer, stop=stop)
    except Exception:  # A bug, not an operating error: say so and exit like any run that could not finish.
        log.exception("reconciliation run crashed")
        metrics.run_crashed()
        print(f"{SERVICE_NAME}: the run crashed (see the log); running again is safe", file=sys.stderr)
        return EXIT_RUN_FAILED
    finally:
        _write_textfile(settings)
    if not summary.completed:
        print(
            f"{SERVICE_NAME}: the run could not finish: {summary.failure}. Every repair it made is a whole, "
            "idempotent ledger call: running again is safe.",
            file=sys.stderr,
        )
    elif summary.drift_unrepaired:
        print(
            f"{SERVICE_NAME}: {summary.drift_unrepaired} drift item(s) remain unrepaired (see the report)",
            file=sys.stderr,
        )
    return summary.exit_code


async def run_loop(settings: ReconcilerSettings, writer: ReportWriter) -> int:
    stop = event_loop.stop_signal_event()
    try:
        metrics_server = start_metrics_server(settings.metrics_port)
    except OSError as exc:
        print(
            f"{SERVICE_NAME}: METRICS_PORT: cannot listen on {settings.metrics_port}: {exc.strerror}", file=sys.stderr
        )
        return EXIT_CONFIG_ERROR
    log.info("reconciler looping", extra={"interval_seconds": settings.interval_seconds})
    try:
        async with _ledger_client(settings) as ledger:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    await reconcile(settings, ledger=ledger, output=writer, stop=stop)
                except Exception:  # A bug in one run must not stop the schedule; it is logged and counted.
                    log.exception("reconciliation run crashed")
                    metrics.run_crashed()
                remaining_seconds = settings.interval_seconds - (time.monotonic() - started)
                if remaining_seconds > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), remaining_seconds)
    finally:
        if metrics_server is not None:
            metrics_server.stop()
    log.info("reconciler stopped")
    return 0


def _write_textfile(settings: ReconcilerSettings) -> None:
    if settings.metrics_textfile_path is None:
        return
    try:
        metrics.write_textfile(settings.metrics_textfile_path)
    except OSError as exc:
        log.error("cannot write the metrics textfile: %s", exc.strerror, extra={"path": settings.metrics_textfile_path})


if __name__ == "__main__":
    sys.exit(main())
