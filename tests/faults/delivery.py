"""Stripe's webhook delivery, simulated: every event the fake Stripe emits is POSTed to the gateway, signed,
the way Stripe does it and the way it goes wrong.

- order: each event waits a random time before its first attempt, so events of one payment arrive in
  any order (Stripe does not guarantee order);
- retries: an attempt that gets no 2xx (an error status, a refused connection, a timeout) is retried
  with exponential backoff, at most ATTEMPTS_MAX times during the run; some attempts have a short
  timeout, so the gateway may apply an event whose answer nobody reads;
- duplicates: some events are sent twice at once, and some again after they were acknowledged;
- lost: a seeded fraction of events is never delivered (Stripe gave up, the endpoint was disabled):
  they stay `delivery_success=false` in the Events API, and only the reconciler can apply them.

`drain()` (after the run, faults healed) delivers every event not yet acknowledged, except the lost
ones, until each is: what a 2xx acknowledged must then be in the ledger.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp

from tests.fakes.stripe_events import JsonObject, signed_delivery
from tests.faults.history import Delivery, History
from tests.faults.stripe_world import ObservedFakeStripe

ATTEMPTS_MAX: Final = 8
BACKOFF_SECONDS_BASE: Final = 0.3
BACKOFF_SECONDS_MAX: Final = 6.0
FIRST_DELAY_SECONDS_MAX: Final = 3.0
TIMEOUT_SECONDS: Final = 15.0  # Stripe waits longer; the gateway answers within 8 s
SHORT_TIMEOUT_SECONDS_RANGE: Final = (0.05, 0.8)
DELIVERIES_CONCURRENT_MAX: Final = 24
DRAIN_ATTEMPTS_MAX: Final = 40
DRAIN_BACKOFF_SECONDS_MAX: Final = 2.0
EVENTS_MAX: Final = 200_000


@dataclass(frozen=True)
class DeliveryPlan:
    """Probabilities of the simulator's misbehaviours (seeded per event)."""

    lost: float = 0.04
    duplicate: float = 0.06
    redeliver_after_ack: float = 0.05
    short_timeout: float = 0.08


@dataclass
class EventState:
    event: JsonObject
    lost: bool
    acknowledged: bool = False
    attempts: int = 0
    statuses: list[int] = field(default_factory=list)


class DeliverySimulator:
    def __init__(
        self,
        url: str,
        secret: str,
        fake: ObservedFakeStripe,
        history: History,
        rng: random.Random,
        plan: DeliveryPlan,
    ) -> None:
        self.url = url
        self.secret = secret
        self.fake = fake
        self.history = history
        self.rng = rng
        self.plan = plan
        self.events: dict[str, EventState] = {}
        self._slots = asyncio.Semaphore(DELIVERIES_CONCURRENT_MAX)
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop = asyncio.get_running_loop()
        self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=DELIVERIES_CONCURRENT_MAX * 2))
        self.stopping = False

    def listen(self, event: JsonObject) -> None:
        """The fake's listener: may be called from any thread."""
        self._loop.call_soon_threadsafe(self._accept, event)

    def _accept(self, event: JsonObject) -> None:
        assert len(self.events) < EVENTS_MAX, "too many events"
        state = EventState(event, lost=self.rng.random() < self.plan.lost)
        self.events[event["id"]] = state
        if not state.lost:
            self._spawn(self._deliver(state))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, state: EventState) -> None:
        await asyncio.sleep(self.rng.uniform(0, FIRST_DELAY_SECONDS_MAX))
        for attempt in range(ATTEMPTS_MAX):
            if self.stopping:
                return
            if self.rng.random() < self.plan.duplicate:
                self._spawn(self._attempt(state, "duplicate"))
            if await self._attempt(state, "run"):
                if self.rng.random() < self.plan.redeliver_after_ack:
                    await asyncio.sleep(self.rng.uniform(0.5, 5.0))
                    await self._attempt(state, "redelivery")
                return
            backoff = min(BACKOFF_SECONDS_MAX, BACKOFF_SECONDS_BASE * 2**attempt)
            await asyncio.sleep(backoff * self.rng.uniform(0.5, 1.0))

    async def _attempt(self, state: EventState, phase: str) -> bool:
        event = state.event
        state.attempts += 1
        record = Delivery(event["id"], event["type"], state.attempts, self.history.now(), phase=phase)
        self.history.deliveries.append(record)
        short = phase != "drain" and self.rng.random() < self.plan.short_timeout
        timeout = self.rng.uniform(*SHORT_TIMEOUT_SECONDS_RANGE) if short else TIMEOUT_SECONDS
        delivery = signed_delivery(event, self.secret)
        async with self._slots:
            try:
                async with self._http.post(
                    self.url, data=delivery.body, headers=delivery.headers, timeout=aiohttp.ClientTimeout(total=timeout)
                ) as response:
                    record.status = response.status
                    body = await response.text()
            except TimeoutError:
                record.error = "timeout"
                return False
            except aiohttp.ClientError as exc:
                record.error = type(exc).__name__
                return False
        state.statuses.append(record.status)
        if record.status == 500:
            self.history.anomaly("webhook_500", f"{event['id']} {event['type']}: {body[:200]}")
        if 200 <= record.status < 300:
            if not state.acknowledged:
                state.acknowledged = True
                self.fake.mark_delivered(event["id"])
            return True
        return False

    async def stop(self) -> None:
        """Stops the run's deliveries (the ones in flight finish or are cancelled)."""
        self.stopping = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def drain(self) -> list[str]:
        """Delivers every event not acknowledged (lost ones excepted) until it is; returns those that never were."""
        self.stopping = False
        pending = [state for state in self.events.values() if not state.lost and not state.acknowledged]
        await asyncio.gather(*(self._drain_one(state) for state in pending))
        return [state.event["id"] for state in pending if not state.acknowledged]

    async def _drain_one(self, state: EventState) -> None:
        for attempt in range(DRAIN_ATTEMPTS_MAX):
            if await self._attempt(state, "drain"):
                return
            await asyncio.sleep(min(DRAIN_BACKOFF_SECONDS_MAX, BACKOFF_SECONDS_BASE * 2**attempt))

    async def close(self) -> None:
        await self.stop()
        await self._http.close()

    def figures(self) -> dict[str, int]:
        states = list(self.events.values())
        return {
            "events": len(states),
            "events_lost": sum(state.lost for state in states),
            "events_acknowledged": sum(state.acknowledged for state in states),
            "events_retried": sum(state.attempts > 1 for state in states),
        }
