"""The ledger's business and database metrics (METRICS_PORT).

    metric                        type     labels                  meaning
    ledger_credits_total          counter  direction, kind         credits moved by applied journal entries
    ledger_database_up            gauge    -                       1 while the health probe reaches PostgreSQL
    ledger_db_pool_connections    gauge    state (in_use | idle)   open connections of the asyncpg pool
    ledger_db_pool_size_max       gauge    -                       the pool's max_size
    ledger_db_pool_waiting        gauge    -                       calls waiting for a free connection
    ledger_grant_credits_total    counter  category, movement      credits granted / spent / expired, paid apart
                                                                   from promotional (docs/grants.md)
    ledger_grant_sweeps_total     counter  outcome (ok | failed)   runs of the grant expiry sweeper
    ledger_grant_sweep_last_success_timestamp_seconds
                                  gauge    -                       when a sweep last succeeded (max of workers)

RPC counts and latencies (`ledger_rpc_*`) live in services.common.metrics, next to their interceptor.

With several workers (services/ledger/workers.py) every metric is written to prometheus-client's
multiprocess files and the supervisor serves their sum on one port. A gauge then needs a rule for
combining the workers' values, declared with each (`multiprocess_mode`; ignored in one process):

- `ledger_database_up`: `livemin`, the worst verdict of the running workers: 0 as soon as one of them
  cannot reach PostgreSQL, so the alert fires on a partial outage too;
- the pool gauges: `livesum`: each worker has a pool of its own (its share of LEDGER_DB_POOL_SIZE_MAX),
  and the ledger's connections, waiters and size are the sums of theirs.

`live` modes drop a worker's values when it exits (its files are removed), so a gauge never reports a
dead worker's last reading.

`ledger_credits_total` counts each journal entry once, when it is applied: a replayed idempotent call
or a redelivered Stripe event writes nothing and counts nothing. `direction` says where the credits
went, `kind` why (the journal's kind; anything unknown is `other`, so the label set stays bounded):

    direction     kinds
    issued        purchase, grant, admin_adjustment (positive)
    spent         spend, hold_capture
    clawed_back   refund, chargeback, admin_adjustment (negative)
    reinstated    chargeback_reversal (a won dispute gives back what its chargeback took),
                  refund_reversal (a failed or canceled refund gives back what its refund took)
    expired       expiry (the unspent rest of a grant past its expire_time)

`ledger_grant_credits_total` follows the same entries by what they did to grants: `granted` (Credit,
PostBatch credits and positive AdminAdjust by the category asked, purchases as paid), `spent` (Debit,
PostBatch debits, negative AdminAdjust, captures: how many of the burnt credits were paid, how many
promotional) and `expired` (the sweeper's expiry entries). Clawbacks (refunds, chargebacks) and reversals
are not split by category here (`ledger_credits_total` counts them); the paid credits outstanding are read
from credit_grants (docs/grants.md).

The pool gauges are set by the health probe (about once a second, `record_pool`), not on the hot path:
a scrape in the supervisor cannot read the workers' pools, so they report their own. Waiting callers come
from the pool's internal queue (asyncpg 0.29-0.32 `Pool._queue`, an asyncio.Queue whose `_getters` are
the blocked `acquire()` calls); when a future asyncpg drops that attribute the gauge reads NaN (unknown)
rather than zero, and tests/observability/test_ledger_metrics.py fails, which is the signal to revisit it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Final

from prometheus_client import Counter, Gauge

from services.ledger.kinds import Kind

log = logging.getLogger(__name__)

OTHER_KIND: Final = "other"
KNOWN_KINDS: Final = frozenset(kind.value for kind in Kind)
DIRECTIONS: Final = ("issued", "spent", "clawed_back", "reinstated", "expired")
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
    ("expired", Kind.EXPIRY.value),
)
GRANT_CATEGORIES: Final = ("paid", "promotional")
GRANT_MOVEMENTS: Final = ("granted", "spent", "expired")

CREDITS = Counter(
    "ledger_credits_total",
    "Credits moved by applied (not replayed) journal entries, by direction and journal kind.",
    ["direction", "kind"],
)
DATABASE_UP = Gauge(
    "ledger_database_up",
    "1 while the ledger's health probe reaches PostgreSQL (gRPC health SERVING), else 0.",
    multiprocess_mode="livemin",
)
POOL_CONNECTIONS = Gauge(
    "ledger_db_pool_connections",
    "Open connections of the ledger's database pool, by state.",
    ["state"],
    multiprocess_mode="livesum",
)
POOL_SIZE_MAX = Gauge(
    "ledger_db_pool_size_max",
    "The largest number of connections the pool opens.",
    multiprocess_mode="livesum",
)
POOL_WAITING = Gauge(
    "ledger_db_pool_waiting",
    "Calls waiting for a free connection of the ledger's database pool (NaN: the pool does not tell).",
    multiprocess_mode="livesum",
)
GRANT_CREDITS = Counter(
    "ledger_grant_credits_total",
    "Credits granted, spent and expired, by grant category (paid or promotional).",
    ["category", "movement"],
)
GRANT_SWEEPS = Counter("ledger_grant_sweeps_total", "Runs of the grant expiry sweeper, by outcome.", ["outcome"])
GRANT_SWEEP_LAST_SUCCESS = Gauge(
    "ledger_grant_sweep_last_success_timestamp_seconds",
    "Unix time of the grant expiry sweeper's last successful run (the newest of the workers).",
    multiprocess_mode="livemax",
)
_GRANT_SERIES: dict[tuple[str, str], Any] = {
    (_category, _movement): GRANT_CREDITS.labels(category=_category, movement=_movement)
    for _category in GRANT_CATEGORIES
    for _movement in GRANT_MOVEMENTS
}
_SWEEPS_OK = GRANT_SWEEPS.labels(outcome="ok")
_SWEEPS_FAILED = GRANT_SWEEPS.labels(outcome="failed")
_POOL_IN_USE = POOL_CONNECTIONS.labels(state="in_use")
_POOL_IDLE = POOL_CONNECTIONS.labels(state="idle")
_CREDITS_SERIES: dict[tuple[str, str], Any] = {
    (_direction, _kind): CREDITS.labels(direction=_direction, kind=_kind) for _direction, _kind in EXPECTED_SERIES
}


def credit_direction(kind: str, delta: int) -> str:
    """Where a non-zero `delta` of journal kind `kind` moved credits (see the module docstring)."""
    assert delta != 0, "a journal entry moves credits"
    if delta > 0:
        return "reinstated" if kind in REINSTATEMENT_KINDS else "issued"
    if kind == Kind.EXPIRY.value:
        return "expired"
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
    if label == Kind.PURCHASE.value and delta > 0:  # every purchase is a paid grant (migration 0011)
        _GRANT_SERIES[("paid", "granted")].inc(delta)


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


def record_pool(pool: Any) -> None:
    """Report one reading of `pool` (the health probe calls this about once a second).

    A pool in an odd state (closing, say) keeps the previous reading rather than failing the probe.
    """
    try:
        stats = read_pool(pool)
    except Exception:
        log.debug("cannot read the database pool's statistics", exc_info=True)
        return
    _POOL_IN_USE.set(stats.in_use)
    _POOL_IDLE.set(stats.idle)
    POOL_SIZE_MAX.set(stats.size_max)
    POOL_WAITING.set(math.nan if stats.waiting is None else stats.waiting)


def record_grant_given(category: str, credits: int) -> None:
    _GRANT_SERIES[(category, "granted")].inc(credits)


def record_grant_spent(paid: int, promotional: int) -> None:
    """A debit's burnt credits by category (what debt covered counts in neither)."""
    if paid:
        _GRANT_SERIES[("paid", "spent")].inc(paid)
    if promotional > 0:
        _GRANT_SERIES[("promotional", "spent")].inc(promotional)


def record_grant_sweep(expired_paid: int | None, expired_promotional: int | None, *, failed: bool = False) -> None:
    """One sweep: its outcome and, when it ran, the credits it expired."""
    if failed:
        _SWEEPS_FAILED.inc()
        return
    _SWEEPS_OK.inc()
    GRANT_SWEEP_LAST_SUCCESS.set_to_current_time()
    if expired_paid:
        _GRANT_SERIES[("paid", "expired")].inc(expired_paid)
    if expired_promotional:
        _GRANT_SERIES[("promotional", "expired")].inc(expired_promotional)
