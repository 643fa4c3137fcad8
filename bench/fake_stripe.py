"""The Stripe stand-in (tests/fakes/stripe_api.py) in a process of its own, optionally seeded with charges.

Its own process, so that serving pages of charges never competes for the orchestrator's GIL and its
CPU seconds are reported apart. `reconcile_charge_ids(tag, index)` names the seeded charges, so the
orchestrator can put the ledger's side of the same purchases into the database.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
import traceback
from dataclasses import dataclass
from typing import Any

from bench import settings

STOP_POLL_SECONDS = 0.2
# (package id, credits, amount_minor, currency): the default catalog (SPEC §4).
PACKAGES: tuple[tuple[str, int, int, str], ...] = (
    ("small", 100, 500, "eur"),
    ("medium", 550, 2500, "eur"),
    ("large", 1200, 5000, "eur"),
)
RECONCILE_USERS_COUNT = 10_000
RECONCILE_SPREAD_SECONDS = 2 * 86_400  # charges spread over the last two days (inside the 3-day window)


@dataclass(frozen=True)
class ChargeSeed:
    tag: str
    count: int
    created_end_seconds: int  # the newest charge is created just before this


@dataclass(frozen=True)
class ReconcileCharge:
    charge_id: str
    payment_intent_id: str
    user_id: str
    package: tuple[str, int, int, str]
    created_seconds: int


def reconcile_charge(seed: ChargeSeed, index: int) -> ReconcileCharge:
    step = max(1, RECONCILE_SPREAD_SECONDS // max(seed.count, 1))
    return ReconcileCharge(
        charge_id=f"ch_benchrc{seed.tag}{index:07d}",
        payment_intent_id=f"pi_benchrc{seed.tag}{index:07d}",
        user_id=f"bench-rc-{index % RECONCILE_USERS_COUNT}",
        package=PACKAGES[index % len(PACKAGES)],
        created_seconds=seed.created_end_seconds - (seed.count - index) * step // 1,
    )


def _seed(state: Any, seed: ChargeSeed) -> None:
    from tests.fakes.stripe_events import ChargeFields

    def fields() -> Any:
        for index in range(seed.count):
            charge = reconcile_charge(seed, index)
            package_id, _, amount_minor, currency = charge.package
            yield ChargeFields(
                charge_id=charge.charge_id,
                amount_minor=amount_minor,
                currency=currency,
                created_seconds=charge.created_seconds,
                metadata={"user_id": charge.user_id, "package_id": package_id},
                payment_intent_id=charge.payment_intent_id,
            )

    state.add_charges(fields())


def process_main(api_key: str, seed: ChargeSeed | None, ready_queue: Any, stop_event: Any) -> None:
    try:
        asyncio.run(_serve(api_key, seed, ready_queue, stop_event))
    except BaseException:
        ready_queue.put(("error", traceback.format_exc()))


async def _serve(api_key: str, seed: ChargeSeed | None, ready_queue: Any, stop_event: Any) -> None:
    from tests.fakes.stripe_api import FakeStripe, running_fake_stripe

    state = FakeStripe(api_key, emit_events=False)
    if seed is not None:
        _seed(state, seed)
    async with running_fake_stripe(api_key, state=state) as running:
        ready_queue.put(("ready", running.base_url))
        # stop_event is a multiprocessing Event (another process sets it): polled, not awaited.
        while not stop_event.is_set():  # noqa: ASYNC110
            await asyncio.sleep(STOP_POLL_SECONDS)


class FakeStripeProcess:
    """Start with `start()`; `base_url` and `pid` then; `stop()` at the end."""

    def __init__(self, api_key: str, seed: ChargeSeed | None = None) -> None:
        context = multiprocessing.get_context("spawn")
        self._ready = context.Queue()
        self._stop = context.Event()
        self.process = context.Process(
            target=process_main, args=(api_key, seed, self._ready, self._stop), name="fake-stripe", daemon=True
        )
        self.base_url = ""

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def start(self) -> None:
        started = time.monotonic()
        self.process.start()
        status, value = self._ready.get(timeout=settings.SERVICE_READY_SECONDS_MAX + 120)
        if status != "ready":
            raise RuntimeError(f"the Stripe stand-in did not start:\n{value}")
        self.base_url = value
        self.start_seconds = time.monotonic() - started

    def stop(self) -> None:
        self._stop.set()
        self.process.join(timeout=settings.SERVICE_STOP_SECONDS_MAX)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=settings.SERVICE_STOP_SECONDS_MAX)
