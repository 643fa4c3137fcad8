"""Every bound and every duration of a benchmark run, declared once.

Two plans: the default run (long enough for figures that repeat within a few per cent on a quiet
machine) and `--quick` (every workload briefly, the whole run under 2 minutes: a smoke check, not
figures). Individual durations can be overridden on the command line.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parent.parent
RESULTS_DIR: Final = ROOT / "bench" / "results"
LATEST_PATH: Final = RESULTS_DIR / "latest.json"
QUICK_PATH: Final = RESULTS_DIR / "quick.json"
PLOT_PATH: Final = ROOT / "docs" / "performance-concurrency.png"
BATCH_PLOT_PATH: Final = ROOT / "docs" / "performance-batch.png"

ADMIN_URL_DEFAULT: Final = "postgresql://postgres@127.0.0.1:5432/postgres"
ADMIN_URL_ENV: Final = "BENCH_DATABASE_ADMIN_URL"

# Workloads, in the order a full run executes them (the ratios' pairs run close together in time).
# Repeatable workloads run `Plan.rounds` times; webhook_e2e and reconcile (long, and checked) run once.
REPEATED_WORKLOADS: Final = (
    "grpc_floor",
    "credit_uniform",
    "balance",
    "debit_hot",
    "sql_floor",
    "post_batch",
    "sql_floor_batch",
)
WORKLOADS: Final = (
    "grpc_floor",
    "credit_uniform",
    "balance",
    "debit_hot",
    "sql_floor",
    "post_batch",
    "sql_floor_batch",
    "webhook_e2e",
    "webhook_open",  # one result per rate: webhook_open_<rate> (bench/webhook_wrk.py)
    "reconcile",
)

USERS_COUNT: Final = 10_000
CONCURRENCY_DEFAULT: Final = 64
LOAD_PROCESSES_DEFAULT: Final = 2  # one per core of the 2-core reference machine
CHANNELS_PER_PROCESS_MAX: Final = 8  # each on its own TCP connection (local subchannel pool)
SWEEP_CONCURRENCY: Final = (1, 4, 16, 64, 128)
SWEEP_WORKLOADS: Final = ("credit_uniform", "debit_hot")

# Batch posting (bench/batch.py): postings per call, and the callers (the p99 is at 8).
BATCH_SIZES: Final = (1, 64, 256, 1000)
BATCH_HOT_SIZES: Final = (256,)  # the same on the one funded account
BATCH_CONCURRENCY: Final = 8
BATCH_MESSAGE_BYTES_MAX: Final = 1024 * 1024  # the ledger's own limit: 1,000 postings fit in about 100 KB

RPC_DEADLINE_SECONDS: Final = 10.0
SQL_CONNECTIONS_MARGIN: Final = 8  # pgbench leaves this many of the server's free connections unused
LATENCY_SAMPLES_MAX: Final = 2_000_000  # per load process; beyond it latencies are not recorded
HOT_USER_FUNDS: Final = 10**15  # never runs out in any run: every debit is 1 credit
SERVICE_READY_SECONDS_MAX: Final = 60.0
SERVICE_STOP_SECONDS_MAX: Final = 20.0
LOAD_READY_SECONDS_MAX: Final = 120.0
LOAD_START_DELAY_SECONDS: Final = 0.5

WEBHOOK_DUPLICATE_FRACTION: Final = 0.30
WEBHOOK_RECENT_EVENTS_MAX: Final = 256  # duplicates are drawn from the most recent deliveries (some in flight)
WEBHOOK_DRAIN_ATTEMPTS_MAX: Final = 20
WEBHOOK_DRAIN_BACKOFF_SECONDS: Final = 0.2
WEBHOOK_PREBUILT_EVENTS_MAX: Final = 200_000  # per load process
WEBHOOK_SENDERS: Final = ("wrk", "python")  # webhook_e2e's load generator; wrk's CPU per event is the lower
WEBHOOK_OPEN_RATES_DEFAULT: Final = (1000,)  # events/s of the webhook_open_<rate> workloads

RECONCILE_DRIFT_FRACTION: Final = 0.01  # charges the ledger has not credited, which the run must repair
RECONCILE_SECONDS_MAX: Final = 600.0  # the run is killed past this


@dataclass(frozen=True)
class Plan:
    """Durations and sizes of one run."""

    warmup_seconds: float
    duration_seconds: float
    sweep_warmup_seconds: float
    sweep_duration_seconds: float
    sweep_concurrency: tuple[int, ...]
    reconcile_charges: int
    sweep: bool
    rounds: int  # repeatable workloads run this many times, interleaved; the median round is reported


DEFAULT_PLAN: Final = Plan(
    warmup_seconds=3.0,
    duration_seconds=10.0,
    sweep_warmup_seconds=2.0,
    sweep_duration_seconds=8.0,
    sweep_concurrency=SWEEP_CONCURRENCY,
    reconcile_charges=100_000,
    sweep=True,
    rounds=3,
)
QUICK_PLAN: Final = Plan(
    warmup_seconds=1.0,
    duration_seconds=3.0,
    sweep_warmup_seconds=0.5,
    sweep_duration_seconds=1.5,
    sweep_concurrency=(1, 64),
    reconcile_charges=5_000,
    sweep=False,
    rounds=1,
)


def plan_for(quick: bool, **overrides: object) -> Plan:
    base = QUICK_PLAN if quick else DEFAULT_PLAN
    given = {name: value for name, value in overrides.items() if value is not None}
    return dataclasses.replace(base, **given)  # type: ignore[arg-type]
