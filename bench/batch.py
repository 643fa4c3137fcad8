"""Batch posting (issue 19): PostBatch through the ledger, and the same postings through its SQL alone.

post_batch        PostBatch of N credits of 1 over 10,000 users (`post_batch_<N>`), and N debits of 1 on
                  the one funded user (`post_batch_<N>_hot`), from BATCH_CONCURRENCY callers
sql_floor_batch   the same postings through `SELECT * FROM ledger_post_batch(...)` from asyncpg, arrays
                  built as services/ledger/accounts/store.py builds them, one connection per caller
                  (`sql_floor_batch_<N>`, `sql_floor_batch_<N>_hot`): what the database alone does

A unit of work is a posting: `ops_per_second` is postings per second, `cpu_ms_per_op` is CPU per posting;
latencies are per call (one call carries N postings); `calls_per_second` says how many calls that was.
A call counts as done only when every one of its postings was applied; anything else is an error by
status (gRPC) or SQLSTATE, or `REFUSED_<reason>` for a posting refused on its own.

After each workload, SQL checks that every posting a caller saw applied is in the journal exactly once
(`journal_rows` == `postings_applied`, no key twice), whether its call finished inside the window or not.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import psycopg

from bench import settings
from bench.load import LoadResult, LoadSpec, _Driver
from bench.runner import run_load, specs_for, summarize
from bench.stack import TOKENS

GRPC_KIND = "batch_grpc"
GRPC_HOT_KIND = "batch_grpc_hot"
SQL_KIND = "batch_sql"
SQL_HOT_KIND = "batch_sql_hot"
BATCH_KINDS = (GRPC_KIND, GRPC_HOT_KIND, SQL_KIND, SQL_HOT_KIND)

SQL_POST_BATCH = "SELECT * FROM ledger_post_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
SQL_FINGERPRINT = bytes(32)  # as bench/load.py's SQL floor: the database does not read it on a first post
CREDIT_REASON = "bench batch credit"
DEBIT_REASON = "bench batch debit"


def workload_name(floor: bool, size: int, hot: bool) -> str:
    return f"{'sql_floor_batch' if floor else 'post_batch'}_{size}{'_hot' if hot else ''}"


def workload_names() -> list[str]:
    """Every key the two batch workloads write, in the order they run."""
    return [
        workload_name(floor, size, hot)
        for floor in (False, True)
        for hot, sizes in ((False, settings.BATCH_SIZES), (True, settings.BATCH_HOT_SIZES))
        for size in sizes
    ]


# --- load side: one driver per kind, in the load processes ------------------------------------------


class _BatchDriver(_Driver):
    """Common to both: a batch of unique keys per call, and the count of postings seen applied."""

    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self.hot = spec.kind in (GRPC_HOT_KIND, SQL_HOT_KIND)
        self.sequence = 0
        self.applied = 0  # postings seen applied, in or out of the window
        self.calls_failed = 0

    def _keys(self) -> list[str]:
        self.sequence += 1
        prefix = f"{key_prefix(self.spec)}{self.sequence}-"
        return [f"{prefix}{index}" for index in range(self.spec.batch_size)]

    def _user_ids(self) -> list[str]:
        spec = self.spec
        if self.hot:
            return [spec.hot_user_id] * spec.batch_size
        return [f"{spec.user_prefix}{random.randrange(spec.users_count)}" for _ in range(spec.batch_size)]

    async def finish(self, result: LoadResult) -> None:
        result.extra = {"postings_applied": self.applied, "calls_failed": self.calls_failed}


def key_prefix(spec: LoadSpec) -> str:
    """Every idempotency key of one load process of one workload starts with this (the SQL check's handle)."""
    return f"{spec.run_tag}-{spec.kind}{spec.batch_size}-p{spec.process_index}-"


class GrpcBatchDriver(_BatchDriver):
    """PostBatch on the ledger: credits (payments role) or debits on the hot user (spender role)."""

    async def open(self) -> None:
        import asyncio

        import grpc

        from credits.ledger.v1 import ledger_service_pb2 as pb
        from credits.ledger.v1 import ledger_service_pb2_grpc as pb_grpc

        self.grpc, self.pb = grpc, pb
        options = [
            ("grpc.use_local_subchannel_pool", 1),
            ("grpc.enable_retries", 0),
            ("grpc.max_receive_message_length", settings.BATCH_MESSAGE_BYTES_MAX),
            ("grpc.max_send_message_length", settings.BATCH_MESSAGE_BYTES_MAX),
        ]
        self.channels = []
        self.methods: list[Callable[..., Any]] = []
        for _ in range(self.spec.channels):
            channel = grpc.aio.insecure_channel(self.spec.target, options=options)
            await asyncio.wait_for(channel.channel_ready(), settings.SERVICE_READY_SECONDS_MAX)
            self.channels.append(channel)
            self.methods.append(pb_grpc.LedgerServiceStub(channel).PostBatch)
        self.metadata = (("authorization", f"Bearer {self.spec.token}"),)
        self.turn = 0

    def _request(self) -> Any:
        pb = self.pb
        keys, users = self._keys(), self._user_ids()
        if self.hot:
            postings = [
                pb.BatchPosting(debit=pb.DebitRequest(user_id=user, amount=1, idempotency_key=key, reason=DEBIT_REASON))
                for user, key in zip(users, keys, strict=True)
            ]
        else:
            postings = [
                pb.BatchPosting(
                    credit=pb.CreditRequest(user_id=user, amount=1, idempotency_key=key, reason=CREDIT_REASON)
                )
                for user, key in zip(users, keys, strict=True)
            ]
        return pb.PostBatchRequest(postings=postings)

    async def call(self) -> str | None:
        self.turn = (self.turn + 1) % len(self.methods)
        try:
            answer = await self.methods[self.turn](
                self._request(), timeout=settings.RPC_DEADLINE_SECONDS, metadata=self.metadata
            )
        except self.grpc.aio.AioRpcError as exc:
            self.calls_failed += 1
            return str(exc.code().name)
        self.applied += answer.applied_count
        if answer.applied_count == self.spec.batch_size:
            return None
        self.calls_failed += 1
        refused = next((result.refusal.reason for result in answer.results if result.refusal.reason), "")
        return f"REFUSED_{refused or 'REPLAYED'}"

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close(grace=None)


class SqlBatchDriver(_BatchDriver):
    """ledger_post_batch from asyncpg (prepared, cached per connection), one connection per caller."""

    async def open(self) -> None:
        import asyncpg

        self.asyncpg = asyncpg
        self.pool = await asyncpg.create_pool(
            self.spec.target, min_size=self.spec.callers, max_size=self.spec.callers, command_timeout=30
        )

    def _arguments(self) -> tuple[list[Any], ...]:
        size = self.spec.batch_size
        keys, users = self._keys(), self._user_ids()
        delta, kind, reason = (-1, "spend", DEBIT_REASON) if self.hot else (1, "grant", CREDIT_REASON)
        return (
            users,
            [delta] * size,
            [kind] * size,
            keys,
            [SQL_FINGERPRINT] * size,
            [reason] * size,
            [None] * size,
            [None] * size,
            [None] * size,
            [False] * size,
        )

    async def call(self) -> str | None:
        try:
            rows = await self.pool.fetch(SQL_POST_BATCH, *self._arguments())
        except self.asyncpg.PostgresError as exc:
            self.calls_failed += 1
            return str(exc.sqlstate)
        applied = sum(1 for row in rows if row["outcome"] == "applied")
        self.applied += applied
        if applied == self.spec.batch_size:
            return None
        self.calls_failed += 1
        refused = next((row["outcome"] for row in rows if row["outcome"] != "applied"), "")
        return f"REFUSED_{refused.upper()}"

    async def close(self) -> None:
        await self.pool.close()


def driver_for(spec: LoadSpec) -> _Driver:
    if spec.kind in (GRPC_KIND, GRPC_HOT_KIND):
        return GrpcBatchDriver(spec)
    return SqlBatchDriver(spec)


# --- orchestrator side: the two workloads -----------------------------------------------------------


def post_batch(context: Any, concurrency: int) -> dict[str, dict]:
    """`concurrency` is the unary workloads' (64); batch callers are BATCH_CONCURRENCY (8), as the issue's p99 is."""
    from bench.workloads import fund_hot_user, seed_users

    seed_users(context)
    fund_hot_user(context)
    found: dict[str, dict] = {}
    for hot, sizes in ((False, settings.BATCH_SIZES), (True, settings.BATCH_HOT_SIZES)):
        for size in sizes:
            name = workload_name(False, size, hot)
            found[name] = _post_batch_one(context, name, size, hot)
    return found


def sql_floor_batch(context: Any, concurrency: int) -> dict[str, dict]:
    from bench.workloads import fund_hot_user, seed_users

    seed_users(context)
    fund_hot_user(context)
    found: dict[str, dict] = {}
    for hot, sizes in ((False, settings.BATCH_SIZES), (True, settings.BATCH_HOT_SIZES)):
        for size in sizes:
            name = workload_name(True, size, hot)
            found[name] = _sql_floor_batch_one(context, name, size, hot)
    return found


def _base_spec(context: Any, kind: str, target: str, token: str, size: int) -> LoadSpec:
    from bench.workloads import HOT_USER_ID, USER_PREFIX

    return LoadSpec(
        kind=kind,
        target=target,
        token=token,
        callers=0,
        channels=0,
        process_index=0,
        run_tag=context.tag(),
        warmup_seconds=context.plan.warmup_seconds,
        duration_seconds=context.plan.duration_seconds,
        user_prefix=USER_PREFIX,
        hot_user_id=HOT_USER_ID,
        batch_size=size,
    )


def _post_batch_one(context: Any, name: str, size: int, hot: bool) -> dict:
    ledger = context.ensure_ledger()
    token = TOKENS["spender"] if hot else TOKENS["payments"]
    base = _base_spec(context, GRPC_HOT_KIND if hot else GRPC_KIND, f"127.0.0.1:{ledger.port}", token, size)
    specs = specs_for(base, settings.BATCH_CONCURRENCY, context.load_processes)
    results, window = run_load(specs, context.cpu_roots())
    figures = summarize(name, specs, results, window, extra=lambda found: _journal_check(context, specs, found))
    return per_posting(figures, size)


def _sql_floor_batch_one(context: Any, name: str, size: int, hot: bool) -> dict:
    base = _base_spec(context, SQL_HOT_KIND if hot else SQL_KIND, context.database.url, "", size)
    specs = specs_for(base, settings.BATCH_CONCURRENCY, context.load_processes)
    results, window = run_load(specs, context.postgres_root())
    figures = summarize(name, specs, results, window, extra=lambda found: _journal_check(context, specs, found))
    figures["driver"] = "asyncpg (prepared), from the load processes"
    figures["connections"] = sum(spec.callers for spec in specs)  # one per caller
    return per_posting(figures, size)


def per_posting(figures: dict[str, Any], size: int) -> dict[str, Any]:
    """summarize() counts calls; a batch workload's unit is the posting (latencies stay per call)."""
    calls = figures["ops"]
    duration = figures["duration_seconds"]
    postings = calls * size
    figures.update(
        batch_size=size,
        calls=calls,
        calls_per_second=round(calls / duration, 1),
        ops=postings,
        ops_per_second=round(postings / duration, 1),
        unit="posting",
        cpu_ms_per_op={
            process: round(seconds * 1000.0 / postings, 4)
            for process, seconds in figures["cpu_seconds"].items()
            if postings and seconds
        },
    )
    return figures


def _journal_check(context: Any, specs: list[LoadSpec], results: list[LoadResult]) -> dict[str, Any]:
    """Every posting a caller saw applied is in the journal exactly once; none that it did not see."""
    prefixes = [key_prefix(spec).replace("_", "\\_") + "%" for spec in specs]  # "_" is LIKE's any-character
    with psycopg.connect(context.database.url) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT (user_id, idempotency_key)) FROM credit_transactions"
            " WHERE idempotency_key LIKE ANY(%s)",
            (prefixes,),
        ).fetchone()
    rows, distinct = (row[0], row[1]) if row else (-1, -1)
    applied = sum(result.extra.get("postings_applied", 0) for result in results)
    return {
        "postings_applied": applied,
        "journal_rows": rows,
        "journal_keys_twice": rows - distinct,
        "calls_failed": sum(result.extra.get("calls_failed", 0) for result in results),
        "exactly_once": rows == distinct == applied,
    }
