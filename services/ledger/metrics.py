"""The ledger's business and database metrics, served with the default registry (METRICS_PORT).

    metric                        type     labels                  meaning
    ledger_credits_total          counter  direction, kind         credits moved by applied journal entries
    ledger_database_up            gauge    -                       1 while the health probe reaches PostgreSQL
    ledger_db_pool_connections    gauge    state (in_use | idle)   open connections of the asyncpg pool
    ledger_db_pool_size_max       gauge    -                       the pool's max_size
    ledger_db_pool_waiting        gauge    -                       calls waiting for a free connection

RPC counts and latencies (`ledger_rpc_*`) live in services.common.metrics, next to their interceptor.

`ledger_credits_total` counts each journal entry once, when it is applied: a replayed idempotent call
or a redelivered Stripe event writes nothing and counts nothing. `direction` says where the credits
went, `kind` why (the journal's kind; anything unknown is `other`, so the label set stays bounded):

    direction     kinds
    issued        purchase, grant, admin_adjustment (positive)
    spent         spend, hold_capture
    clawed_back   refund, chargeback, admin_adjustment (negative)
    reinstated    chargeback_reversal (a won dispute gives back what its chargeback took),
                  refund_reversal (a failed or canceled refund gives back what its refund took)

The pool gauges are read from the pool at scrape time (`DatabasePoolCollector`): nothing is counted
on the hot path. Waiting callers come from the pool's internal queue (asyncpg 0.29-0.32 `Pool._queue`,
an asyncio.Queue whose `_getters` are the blocked `acquire()` calls); when a future asyncpg drops
that attribute the sample is omitted rather than reported as zero, and
tests/observability/test_ledger_metrics.py fails, which is the signal to revisit it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.ledger.domain import Kind

log = logging.getLogger(__name__)

OTHER_KIND: Final = "other"
KNOWN_KINDS: Final = frozenset(kind.value for kind in Kind)
DIRECTIONS: Final = ("issued", "spent", "clawed_back", "reinstated")
CLAWBACK_KINDS: Final = frozenset({Kind.REFUND.value, Kind.CHARGEBACK.value, Kind.ADMIN_ADJUSTMENT.value})
REINSTATEMENT_KINDS: Final = frozenset({Kind.CHARGEBACK_REVERSAL.value, Kind.REFUND_REVERSAL.value})
# The (direction, kind) pairs the ledger writes; created at zero so that rate() works from the first entry.
EXPECTED_SERIES: Final = (
    ("issued", Kind.PURCHASE.value),
    ("issued", Kind.GRANT.value),
    ("issued", Kind.ADMIN_ADJUSTMENT.value),
    ("spent", Kind.SPEND.value),
    ("spent", Kind.HOLD_CAPTURE.value),
    ("clawed_back", Kind.REFUND.value),
    ("clawed_back", Kind.CHARGEBACK.value),
    ("clawed_back", Kind.ADMIN_ADJUSTMENT.value),
    ("reinstated", Kind.CHARGEBACK_REVERSAL.value),
    ("reinstated", Kind.REFUND_REVERSAL.value),
)
POOL_STATES: Final = ("in_use", "idle")

CREDITS = Counter(
    "ledger_credits_total",
    "Credits moved by applied (not replayed) journal entries, by direction and journal kind.",
    ["direction", "kind"],
)
DATABASE_UP = Gauge(
    "ledger_database_up",
    "1 while the ledger's health probe reaches PostgreSQL (gRPC health SERVING), else 0.",
)
_CREDITS_SERIES: dict[tuple[str, str], Any] = {
    (_direction, _kind): CREDITS.labels(direction=_direction, kind=_kind) for _direction, _kind in EXPECTED_SERIES
}


def credit_direction(kind: str, delta: int) -> str:
    """Where a non-zero `delta` of journal kind `kind` moved credits (see the module docstring)."""
    assert delta != 0, "a journal entry moves credits"
    if delta > 0:
        return "reinstated" if kind in REINSTATEMENT_KINDS else "issued"
    return "clawed_back" if kind in CLAWBACK_KINDS else "spent"


def record_entry(kind: str, delta: int, replayed: bool) -> None:
    """Count one journal entry the ledger answered with; replays and zero moves count nothing."""
    if replayed or delta == 0:
        return
    label = kind if kind in KNOWN_KINDS else OTHER_KIND
    series = (credit_direction(label, delta), label)
    counter = _CREDITS_SERIES.get(series)
    if counter is None:  # a bounded set: four directions by the known kinds and OTHER_KIND
        counter = _CREDITS_SERIES[series] = CREDITS.labels(direction=series[0], kind=series[1])
    counter.inc(abs(delta))


def record_database_reachable(reachable: bool) -> None:
    """The health probe's verdict (called on every probe, about once a second)."""
    DATABASE_UP.set(1 if reachable else 0)


@dataclass(frozen=True, slots=True)
class PoolStats:
    """One reading of an asyncpg pool; `waiting` is None when the pool does not expose its queue."""

    in_use: int
    idle: int
    size_max: int
    waiting: int | None


def read_pool(pool: Any) -> PoolStats:
    """The pool's connections and waiters, from its public size getters and its internal queue."""
    idle = pool.get_idle_size()
    return PoolStats(
        in_use=pool.get_size() - idle,
        idle=idle,
        size_max=pool.get_max_size(),
        waiting=_waiting_acquirers(pool),
    )


def _waiting_acquirers(pool: Any) -> int | None:
    if not hasattr(pool, "_queue"):
        return None
    queue = pool._queue
    if queue is None:  # Not initialized yet (or closed): nobody can be waiting on it.
        return 0
    getters = getattr(queue, "_getters", None)
    return None if getters is None else len(getters)


class DatabasePoolCollector(Collector):
    """Reports the watched asyncpg pool at scrape time; without a pool, the families carry no samples.

    A scrape may run on the metrics server's thread (METRICS_PORT) while the pool lives on the event
    loop: the reading only looks at sizes and lengths, and a failed reading drops the samples of that
    scrape instead of failing it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: Any = None

    def watch(self, pool: Any) -> None:
        """Report `pool` from now on (the ledger has one pool per process)."""
        with self._lock:
            self._pool = pool

    def unwatch(self, pool: Any) -> None:
        """Stop reporting `pool`; a pool watched since then stays watched."""
        with self._lock:
            if self._pool is pool:
                self._pool = None

    def describe(self) -> Iterable[Metric]:
        return list(_families(None))

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            pool = self._pool
        stats: PoolStats | None = None
        if pool is not None:
            try:
                stats = read_pool(pool)
            except Exception:  # A scrape must never fail because of a pool in an odd state.
                log.debug("cannot read the database pool's statistics", exc_info=True)
        return list(_families(stats))


def _families(stats: PoolStats | None) -> Iterator[Metric]:
    connections = GaugeMetricFamily(
        "ledger_db_pool_connections", "Open connections of the ledger's database pool, by state.", labels=["state"]
    )
    size_max = GaugeMetricFamily("ledger_db_pool_size_max", "The largest number of connections the pool opens.")
    waiting = GaugeMetricFamily(
        "ledger_db_pool_waiting", "Calls waiting for a free connection of the ledger's database pool."
    )
    if stats is not None:
        connections.add_metric(["in_use"], stats.in_use)
        connections.add_metric(["idle"], stats.idle)
        size_max.add_metric([], stats.size_max)
        if stats.waiting is not None:
            waiting.add_metric([], stats.waiting)
    yield connections
    yield size_max
    yield waiting


DB_POOL = DatabasePoolCollector()
REGISTRY.register(DB_POOL)
