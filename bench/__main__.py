"""`python -m bench`: every workload against real processes on this machine; see bench/README.md.

    python -m bench                          the full run (about 17 minutes), sweep and plots included
    python -m bench --quick                  every workload briefly (under 2 minutes): a smoke check
    python -m bench --workloads grpc_floor,credit_uniform --duration 10
    python -m bench --sweep-only             only the concurrency sweep and its plot

Prints one JSON object per workload, then a summary table, the ratios and the targets; writes
bench/results/latest.json (--quick: bench/results/quick.json; --output overrides).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import report, settings
from bench.batch import post_batch, sql_floor_batch
from bench.stack import BenchDatabase, work_directory
from bench.webhook_wrk import webhook_open
from bench.workloads import (
    Context,
    balance,
    credit_uniform,
    debit_hot,
    grpc_floor,
    pgbench_available,
    reconcile,
    sql_floor,
    sql_floor_one,
    webhook_e2e,
)

WorkloadFunction = Callable[[Context, int], dict[str, dict]]
WORKLOAD_FUNCTIONS: dict[str, WorkloadFunction] = {
    "grpc_floor": grpc_floor,
    "credit_uniform": lambda context, concurrency: {"credit_uniform": credit_uniform(context, concurrency)},
    "balance": balance,
    "debit_hot": lambda context, concurrency: {"debit_hot": debit_hot(context, concurrency)},
    "sql_floor": sql_floor,
    "post_batch": post_batch,
    "sql_floor_batch": sql_floor_batch,
    "webhook_e2e": webhook_e2e,
    "webhook_open": webhook_open,
    "reconcile": reconcile,
}
assert tuple(WORKLOAD_FUNCTIONS) == settings.WORKLOADS


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="every workload briefly (< 2 min), no sweep")
    parser.add_argument("--workloads", default=",".join(settings.WORKLOADS), help="comma-separated subset")
    parser.add_argument("--concurrency", type=int, default=settings.CONCURRENCY_DEFAULT, help="callers (64)")
    parser.add_argument("--load-processes", type=int, default=settings.LOAD_PROCESSES_DEFAULT)
    parser.add_argument("--warmup", type=float, help="warm-up seconds per workload")
    parser.add_argument("--duration", type=float, help="measured seconds per workload")
    parser.add_argument("--reconcile-charges", type=int, help="charges in the Stripe stand-in (100,000)")
    parser.add_argument("--rounds", type=int, help="rounds of the repeatable workloads (3; --quick 1)")
    parser.add_argument("--sweep", dest="sweep", action="store_true", default=None, help="run the concurrency sweep")
    parser.add_argument("--no-sweep", dest="sweep", action="store_false")
    parser.add_argument("--sweep-only", action="store_true", help="only the sweep (and its plot)")
    parser.add_argument("--sql-driver", choices=("pgbench", "asyncpg"), help="default: pgbench when installed")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the services (ledger, gateway), e.g. LEDGER_WORKERS=1; repeatable",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:ENV",
        help="side-by-side comparison: 'before:LEDGER_WORKERS=1,LEDGER_GROUP_COMMIT=false'; repeatable. "
        "Each round runs every variant (a fresh ledger each); the last variant fills the top-level figures",
    )
    parser.add_argument(
        "--webhook-sender", choices=settings.WEBHOOK_SENDERS, default="wrk", help="webhook_e2e's load generator"
    )
    parser.add_argument(
        "--webhook-rates",
        default=",".join(str(rate) for rate in settings.WEBHOOK_OPEN_RATES_DEFAULT),
        help="events/s of the open-loop webhook_open_<rate> workloads (1000)",
    )
    parser.add_argument("--output", type=Path, help="where the JSON goes")
    parser.add_argument("--plot", type=Path, default=settings.PLOT_PATH, help="where the sweep plot goes")
    parser.add_argument("--batch-plot", type=Path, default=settings.BATCH_PLOT_PATH, help="where the batch plot goes")
    parser.add_argument("--keep-database", action="store_true")
    args = parser.parse_args(argv)
    unknown = set(args.workloads.split(",")) - set(settings.WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads {sorted(unknown)}; known: {', '.join(settings.WORKLOADS)}")
    return args


def parse_variants(args: argparse.Namespace) -> dict[str, dict[str, str]]:
    base = dict(item.split("=", 1) for item in args.env)
    if not args.variant:
        return {"current": base}
    variants: dict[str, dict[str, str]] = {}
    for text in args.variant:
        name, _, assignments = text.partition(":")
        env = dict(base)
        env.update(item.split("=", 1) for item in assignments.split(",") if item)
        variants[name] = env
    return variants


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    plan = settings.plan_for(
        args.quick,
        warmup_seconds=args.warmup,
        duration_seconds=args.duration,
        reconcile_charges=args.reconcile_charges,
        sweep=args.sweep,
        rounds=args.rounds,
    )
    output = args.output or (settings.QUICK_PATH if args.quick else settings.LATEST_PATH)
    selected = [] if args.sweep_only else [name for name in settings.WORKLOADS if name in args.workloads.split(",")]
    sql_driver = args.sql_driver or ("pgbench" if pgbench_available() else "asyncpg")
    variants = parse_variants(args)
    started = time.monotonic()
    with work_directory() as work_dir:
        print(f"bench: logs and scratch files in {work_dir}", file=sys.stderr)
        databases: dict[str | None, BenchDatabase] = {}
        try:
            # One database per server: a variant's BENCH_DATABASE_ADMIN_URL (a Citus coordinator, say) gets its own.
            for env in variants.values():
                admin_url = env.get(settings.ADMIN_URL_ENV)
                if admin_url not in databases:
                    databases[admin_url] = BenchDatabase.create(work_dir, admin_url)
            variant_databases = {name: databases[env.get(settings.ADMIN_URL_ENV)] for name, env in variants.items()}
            outcome = _run(args, plan, output, selected, sql_driver, variants, variant_databases, work_dir)
        finally:
            if not args.keep_database:
                for database in databases.values():
                    database.drop()
    document = outcome.document
    if args.keep_database:
        document["database"] = ", ".join(database.name for database in databases.values())
    document["total_seconds"] = round(time.monotonic() - started, 1)
    report.write_json(output, document)
    if any(name.startswith("post_batch_") for name in document["workloads"]) and not args.quick:
        _plot_batches(document, args.batch_plot)
    _print_summary(document, output)
    return 1 if outcome.failures else 0


@dataclass
class _Outcome:
    document: dict[str, Any]
    failures: int  # workloads that failed


def _run(
    args: argparse.Namespace,
    plan: settings.Plan,
    output: Path,
    selected: list[str],
    sql_driver: str,
    variants: dict[str, dict[str, str]],
    databases: dict[str, BenchDatabase],
    work_dir: Path,
) -> _Outcome:
    last = list(variants)[-1]
    database = databases[last]
    context = Context(database, work_dir, plan, args.load_processes, sql_driver)
    context.webhook_sender = args.webhook_sender
    context.webhook_rates = tuple(int(rate) for rate in args.webhook_rates.split(",") if rate)
    document: dict[str, Any] = {
        "started_at": report.now_iso(),
        "plan": {**plan.__dict__, "concurrency": args.concurrency, "quick": args.quick},
        "service_env": variants[last],
        "machine": report.machine_info(database.server_version(), args.load_processes),
        "workloads": {},
        "ratios": {},
    }
    failures = 0
    try:
        failures += _run_variants(context, selected, args.concurrency, variants, databases, document)
        if plan.sweep or args.sweep_only:
            context.use_env(variants[last], database)
            document["sweep"] = _sweep(context, plan)
            report.write_json(output, document)
            from bench.plot import plot_sweep

            plot_sweep(document["sweep"], args.plot, _plot_title(document))
            print(f"bench: sweep plot written to {args.plot}", file=sys.stderr)
    finally:
        context.stop()
    return _Outcome(document, failures)


def _run_variants(
    context: Context,
    selected: list[str],
    concurrency: int,
    variants: dict[str, dict[str, str]],
    databases: dict[str, BenchDatabase],
    document: dict,
) -> int:
    """Rounds of every variant's repeatable workloads (interleaved), then each variant's run-once ones."""
    failures = 0
    repeated = [name for name in selected if name in settings.REPEATED_WORKLOADS]
    rounds: dict[str, list[dict[str, dict]]] = {name: [] for name in variants}
    for round_index in range(context.plan.rounds if repeated else 0):
        found: dict[str, dict[str, dict]] = {variant: {} for variant in variants}
        for name in repeated:  # each workload in every variant back to back: a pair seconds apart, not minutes
            for variant, env in variants.items():
                context.use_env(env, databases[variant])
                failures += _run_one(context, name, concurrency, found[variant], round_index, variant)
        for variant in variants:
            rounds[variant].append(found[variant])
    results: dict[str, dict[str, Any]] = {}
    for variant, env in variants.items():
        context.use_env(env, databases[variant])
        workloads = report.median_round(rounds[variant]) if rounds[variant] else {}
        for name in selected:
            if name not in settings.REPEATED_WORKLOADS:
                failures += _run_one(context, name, concurrency, workloads, 0, variant)
        ratios = report.median_ratios(rounds[variant]) if rounds[variant] else report.ratios(workloads)
        results[variant] = {
            "env": env,
            "database": databases[variant].describe(),
            "workloads": workloads,
            "ratios": ratios,
        }
    last = results[list(variants)[-1]]
    document["workloads"], document["ratios"] = last["workloads"], last["ratios"]
    document["targets"] = report.targets(last["workloads"], last["ratios"])
    if len(variants) > 1:
        document["variants"] = results
        document["variant_ratios"] = report.variant_ratios(
            {variant: rounds[variant] for variant in variants},
            {variant: found["workloads"] for variant, found in results.items()},
        )
    return failures


def _run_one(
    context: Context, name: str, concurrency: int, into: dict[str, dict], round_index: int, variant: str
) -> int:
    print(f"bench: {name} ({variant}, round {round_index + 1}) ...", file=sys.stderr, flush=True)
    failed = 0
    try:
        found = WORKLOAD_FUNCTIONS[name](context, concurrency)
    except Exception:
        failed = 1
        detail = traceback.format_exc()
        print(f"bench: {name} FAILED\n{detail}", file=sys.stderr)
        found = {name: {"workload": name, "failed": True, "errors": 1, "detail": detail[-2000:]}}
    for key, figures in found.items():
        figures["round"] = round_index + 1
        figures["variant"] = variant
        into[key] = figures
        print(json.dumps(figures, separators=(",", ":")), flush=True)
    return failed


def _sweep(context: Context, plan: settings.Plan) -> dict[str, list[dict[str, Any]]]:
    warmup, duration = plan.sweep_warmup_seconds, plan.sweep_duration_seconds
    sweep: dict[str, list[dict[str, Any]]] = {"credit_uniform": [], "debit_hot": [], "sql_floor_hot": []}
    for concurrency in plan.sweep_concurrency:
        print(f"bench: sweep at {concurrency} callers ...", file=sys.stderr, flush=True)
        for name, points in sweep.items():
            try:
                figures = _sweep_point(context, name, concurrency, warmup, duration)
            except Exception as exc:  # one failed point does not lose the others
                print(f"bench: sweep {name} at {concurrency} FAILED: {exc}", file=sys.stderr)
                figures = {"ops_per_second": None, "errors": 1, "failed": str(exc)[-500:]}
            fields = ("ops_per_second", "latency_ms_p50", "latency_ms_p99", "latency_ms_max", "errors", "failed")
            point = {"concurrency": concurrency, **{key: figures[key] for key in fields if key in figures}}
            point["connections"] = figures.get("connections", concurrency)
            point["other_cpu_seconds"] = figures.get("machine_window", {}).get("other_cpu_seconds")
            points.append(point)
            print(json.dumps({"sweep": name, **point}, separators=(",", ":")), flush=True)
    return sweep


def _sweep_point(context: Context, name: str, concurrency: int, warmup: float, duration: float) -> dict[str, Any]:
    if name == "credit_uniform":
        return credit_uniform(context, concurrency, warmup, duration)
    if name == "debit_hot":
        return debit_hot(context, concurrency, warmup, duration)
    return sql_floor_one(context, "hot", concurrency, warmup, duration)


def _plot_batches(document: dict[str, Any], path: Path) -> None:
    """Batch size on the x axis (docs/performance-batch.png); the JSON is written already, whatever happens."""
    try:
        from bench.plot import plot_batches

        if plot_batches(document["workloads"], path, _plot_title(document)):
            print(f"bench: batch plot written to {path}", file=sys.stderr)
    except ImportError as exc:  # matplotlib is the bench extra's
        print(f"bench: no batch plot ({exc}; pip install -e '.[bench]')", file=sys.stderr)


def _plot_title(document: dict[str, Any]) -> str:
    machine = document["machine"]
    env = " ".join(f"{key}={value}" for key, value in document.get("service_env", {}).items())
    return (
        f"credits ledger, {machine['cpu_count']} cores ({machine['cpu_model']}), PostgreSQL {machine['postgresql']}, "
        f"{document['started_at']} {env}".strip()
    )


def _print_summary(document: dict[str, Any], output: Path) -> None:
    print()
    for variant, found in document.get("variants", {}).items():
        env = ",".join(f"{key}={value}" for key, value in found["env"].items()) or "(no extra environment)"
        print(f"== {variant}: {env}")
        print(report.table(found["workloads"]))
        for name, ratio in found["ratios"].items():
            print(f"  {name} = {report.value_text(ratio['value'])}  rounds {ratio.get('rounds', [])}")
        print()
    if document.get("variant_ratios"):
        print(report.variant_table(document["variants"], document["variant_ratios"]))
        print()
    print(report.table(document["workloads"]))
    print()
    for line in document["targets"]:
        print(f"  {line}")
    print(f"\nbench: {output} written ({document['total_seconds']:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    sys.exit(main())
