"""Builds, runs and stops the ledger's gRPC server: servicers, interceptors, health, reflection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from credits.ledger.v1 import ledger_service_pb2 as pb
from credits.ledger.v1 import ledger_service_pb2_grpc as pb_grpc
from services.common.tracing import grpc_server_interceptors
from services.ledger import errors
from services.ledger import metrics as ledger_metrics
from services.ledger.accounts.server import AccountsServicer
from services.ledger.accounts.store import AccountsStore
from services.ledger.config import LedgerSettings
from services.ledger.database import Database, PoolSettings
from services.ledger.group_commit import GroupCommits
from services.ledger.holds.server import HoldsServicer
from services.ledger.holds.store import HoldsStore
from services.ledger.payments.server import PaymentsServicer
from services.ledger.rpc.auth import Authenticator
from services.ledger.rpc.calls import CallInterceptor
from services.ledger.rpc.status import abort

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["LedgerService"].full_name
HEALTH_PROBE_INTERVAL_SECONDS = 1.0
# 4 MiB: gRPC's own default, and what a PostBatch of 1,000 postings with every field at its longest needs
# without metadata (docs/batch-posting.md: about 2.8 MB each way).
GRPC_MESSAGE_BYTES_MAX = 4 * 1024 * 1024
GRPC_CONCURRENT_RPCS_MAX = 2048
# The hold sweeper: every replica expires due holds in bounded batches, skipping accounts locked by calls
# (those expire their user's holds themselves). Correctness never waits for it (expiry is also lazy, on
# every path that reads or spends); it makes holds release by themselves and keeps accounts.held current.
HOLD_SWEEP_INTERVAL_SECONDS = 1.0
HOLD_SWEEP_BATCH_MAX = 500
# The grant sweeper (docs/grants.md): the same pattern for the expiry entries of grants past their expire_time,
# so each is written within a minute of it. Reads and spends never count expired credits, swept or not.
GRANT_SWEEP_INTERVAL_SECONDS = 10.0
GRANT_SWEEP_BATCH_MAX = 500
# A new database connection gives up after this long (or the command timeout, when shorter): a call waiting
# for a connection to a database that does not answer fails as UNAVAILABLE instead of hanging.
DATABASE_CONNECT_TIMEOUT_SECONDS_MAX = 5.0


class LedgerServicer(AccountsServicer, PaymentsServicer, HoldsServicer):
    """The whole LedgerService: one class composed of the per-area servicers."""

    def __init__(self, database: Database, batchers: GroupCommits | None) -> None:
        if batchers is None:  # LEDGER_GROUP_COMMIT=false: one transaction per request
            AccountsServicer.__init__(self, database)
            PaymentsServicer.__init__(self, database)
        else:
            AccountsServicer.__init__(self, database, batchers.post)
            PaymentsServicer.__init__(self, database, batchers.settle)
        HoldsServicer.__init__(self, database)


@dataclass
class LedgerServer:
    """A running ledger: the gRPC server, its database, its health probe and its hold sweeper."""

    server: grpc.aio.Server
    database: Database
    health: HealthServicer
    port: int
    settings: LedgerSettings
    batchers: GroupCommits | None = None
    _probe: asyncio.Task[None] | None = field(default=None, repr=False)
    _sweeper: asyncio.Task[None] | None = field(default=None, repr=False)
    _grant_sweeper: asyncio.Task[None] | None = field(default=None, repr=False)

    async def stop(self, grace_seconds: float | None = None) -> None:
        """Stops accepting calls, lets in-flight ones finish within the grace period, closes the pool."""
        grace = self.settings.shutdown_grace_seconds if grace_seconds is None else grace_seconds
        await self._set_serving(False)
        if self._probe is not None:
            self._probe.cancel()
        for sweeper in (self._sweeper, self._grant_sweeper):
            if sweeper is not None:
                sweeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sweeper  # no sweep left running on the pool about to close
        await self.server.stop(grace)
        if self.batchers is not None:
            await self.batchers.close()
        await self.database.close()

    async def probe_forever(self) -> None:
        """Keeps health SERVING exactly while the database answers, and reports the pool's gauges."""
        serving: bool | None = None
        while True:
            try:
                await self.database.ping()
                now_serving = True
            except errors.LedgerError:
                now_serving = False
            ledger_metrics.record_database_reachable(now_serving)
            ledger_metrics.record_pool(self.database.pool)
            if now_serving != serving:
                log.info("database %s", "reachable" if now_serving else "unreachable")
                await self._set_serving(now_serving)
                serving = now_serving
            await asyncio.sleep(HEALTH_PROBE_INTERVAL_SECONDS)

    async def sweep_holds_forever(self) -> None:
        """Expires due holds, one bounded batch per interval (at once again after a full batch)."""
        holds = HoldsStore(self.database)
        while True:
            expired = 0
            try:
                expired = await holds.expire_due(HOLD_SWEEP_BATCH_MAX)
            except errors.LedgerError:
                pass  # the database is away: the probe reports it; the next sweep retries
            except Exception:
                log.exception("hold sweep failed")
            if expired:
                log.info("holds expired", extra={"count": expired})
            await asyncio.sleep(0 if expired >= HOLD_SWEEP_BATCH_MAX else HOLD_SWEEP_INTERVAL_SECONDS)

    async def sweep_grants_forever(self) -> None:
        """Writes the expiry of due grants, one bounded batch per interval (at once again after a full batch)."""
        accounts = AccountsStore(self.database)
        while True:
            swept = None
            try:
                swept = await accounts.expire_grants(GRANT_SWEEP_BATCH_MAX)
            except errors.LedgerError:
                ledger_metrics.record_grant_sweep(None, None, failed=True)  # the database is away; retried
            except Exception:
                log.exception("grant sweep failed")
                ledger_metrics.record_grant_sweep(None, None, failed=True)
            else:
                ledger_metrics.record_grant_sweep(swept.expired_paid, swept.expired - swept.expired_paid)
                if swept.grants:
                    log.info("grants expired", extra={"count": swept.grants, "credits": swept.expired})
            full = swept is not None and swept.grants >= GRANT_SWEEP_BATCH_MAX
            await asyncio.sleep(0 if full else GRANT_SWEEP_INTERVAL_SECONDS)

    async def _set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)


async def start(
    settings: LedgerSettings,
    extra_interceptors: tuple[grpc.aio.ServerInterceptor, ...] = (),
    *,
    connection_setup: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
    reuse_port: bool = False,
) -> LedgerServer:
    """connection_setup runs on each pooled connection as it is acquired: a test seam (tests set the
    ledger clock of their own ledger with it); None in production, where it would cost a round trip.
    reuse_port: bind with SO_REUSEPORT, to share the port with the other workers (services/ledger/workers.py)."""
    pool_settings = PoolSettings(
        size_max=settings.pool_size_max,
        command_timeout_seconds=settings.command_timeout_seconds,
        connect_timeout_seconds=min(settings.command_timeout_seconds, DATABASE_CONNECT_TIMEOUT_SECONDS_MAX),
    )
    database = await Database.open(settings.database_url, pool_settings, setup=connection_setup)
    # Order matters: traces see every call, and the call interceptor (request id, metrics, auth, decoding)
    # must be last: it answers known methods from its own cache.
    interceptors = (
        *grpc_server_interceptors(),
        *extra_interceptors,
        CallInterceptor(Authenticator(settings.callers), abort),
    )
    server = grpc.aio.server(
        interceptors=interceptors,
        maximum_concurrent_rpcs=GRPC_CONCURRENT_RPCS_MAX,
        options=[
            ("grpc.max_receive_message_length", GRPC_MESSAGE_BYTES_MAX),
            ("grpc.max_send_message_length", GRPC_MESSAGE_BYTES_MAX),
            ("grpc.so_reuseport", 1 if reuse_port else 0),
        ],
    )
    batchers = (
        GroupCommits.open(database, size_max=settings.post_batch_size_max, in_flight_max=settings.batches_in_flight_max)
        if settings.group_commit_enabled
        else None
    )
    pb_grpc.add_LedgerServiceServicer_to_server(LedgerServicer(database, batchers), server)
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    port = _bind(server, settings)
    await server.start()
    ledger = LedgerServer(
        server=server, database=database, health=health_servicer, port=port, settings=settings, batchers=batchers
    )
    await ledger._set_serving(False)
    ledger._probe = asyncio.create_task(ledger.probe_forever())
    ledger._sweeper = asyncio.create_task(ledger.sweep_holds_forever())
    ledger._grant_sweeper = asyncio.create_task(ledger.sweep_grants_forever())
    log.info("ledger listening", extra={"listen": settings.listen_address, "port": port})
    return ledger


def _bind(server: grpc.aio.Server, settings: LedgerSettings) -> int:
    try:
        return _add_port(server, settings)
    except RuntimeError as exc:  # grpc reports a failed bind as RuntimeError
        raise OSError(f"LEDGER_LISTEN: cannot bind {settings.listen_address} (in use or not permitted)") from exc


def _add_port(server: grpc.aio.Server, settings: LedgerSettings) -> int:
    if settings.tls is None:
        port = server.add_insecure_port(settings.listen_address)
    else:
        credentials = grpc.ssl_server_credentials(
            [(settings.tls.private_key, settings.tls.certificate_chain)],
            root_certificates=settings.tls.client_ca,
            require_client_auth=settings.tls.client_ca is not None,
        )
        port = server.add_secure_port(settings.listen_address, credentials)
    if port == 0:
        raise OSError(f"LEDGER_LISTEN: cannot bind {settings.listen_address}")
    return port
