"""Group commit: concurrent Credit / Debit / AdminAdjust requests applied in one transaction per batch.

    Credit ─┐                    ┌─► batch of ≤ POST_BATCH_SIZE_MAX ─► ledger_post_batch: one round trip,
    Debit  ─┼─► PostBatcher ─────┤                                    one commit, one lock per account
    Debit  ─┘   (queue)          └─► at most POST_BATCHES_IN_FLIGHT_MAX batches at once (pooled connections)

Natural batching, no timer: requests that arrive in one turn of the event loop leave together, at once
when a batch slot is free (so at low load a request goes alone, with no added wait); while every slot is
busy, requests queue and leave together (up to POST_BATCH_SIZE_MAX each) as slots free. Batches thus grow
exactly as fast as the database falls behind, and a request never waits for a clock.

Per request, the answer is what ledger_post alone would answer (migrations/versions/0004_post_batch.py):
applied, replayed, or its own refusal; a refusal is a row of the batch's result, never an exception, so
it never fails its batch-mates. When the batch statement fails as a whole:
- the database is unreachable, or rolled the transaction back as retryable (deadlock, serialization:
  errors.Unavailable): every request of the batch gets Unavailable, as each would alone (the caller
  retries with the same key; a batch that committed before the connection broke answers those retries
  as replays);
- anything else (errors.Internal: a constraint that validation should have caught): each request is
  applied alone with ledger_post, so only the offending one fails.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from services.ledger import errors
from services.ledger.domain import Posted, Posting
from services.ledger.store import Store

log = logging.getLogger(__name__)

POST_BATCH_SIZE_MAX: Final = 64
POST_BATCHES_IN_FLIGHT_MAX: Final = 4


class Poster(Protocol):
    """What the servicer posts through: the Store itself (one by one) or a PostBatcher."""

    async def post(self, posting: Posting, *, allow_negative: bool = False) -> Posted: ...


@dataclass(slots=True)
class _Pending:
    posting: Posting
    allow_negative: bool
    future: asyncio.Future[Posted]


class PostBatcher:
    """Batches posts into ledger_post_batch calls; `close()` waits for the batches in flight."""

    def __init__(
        self,
        store: Store,
        *,
        size_max: int = POST_BATCH_SIZE_MAX,
        in_flight_max: int = POST_BATCHES_IN_FLIGHT_MAX,
    ) -> None:
        assert size_max >= 1
        assert in_flight_max >= 1
        self.store = store
        self.size_max = size_max
        self.in_flight_max = in_flight_max
        self._queue: deque[_Pending] = deque()
        self._in_flight = 0
        self._launch_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def post(self, posting: Posting, *, allow_negative: bool = False) -> Posted:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Posted] = loop.create_future()
        self._queue.append(_Pending(posting, allow_negative, future))
        if not self._launch_scheduled:
            # Next turn of the loop: every request that arrives in this turn joins the same batch.
            self._launch_scheduled = True
            loop.call_soon(self._launch)
        return await future

    async def close(self) -> None:
        """Waits for the batches in flight (the server has stopped taking calls before this)."""
        while self._tasks or self._queue:
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            else:
                self._launch()
                await asyncio.sleep(0)

    def _launch(self) -> None:
        self._launch_scheduled = False
        while self._queue and self._in_flight < self.in_flight_max:
            batch = self._take()
            if not batch:
                return
            self._in_flight += 1
            task = asyncio.get_running_loop().create_task(self._apply(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _take(self) -> list[_Pending]:
        batch: list[_Pending] = []
        while self._queue and len(batch) < self.size_max:
            pending = self._queue.popleft()
            if not pending.future.done():  # a cancelled call (deadline, client gone) is not applied
                batch.append(pending)
        return batch

    async def _apply(self, batch: list[_Pending]) -> None:
        try:
            results = await self._results(batch)
            for pending, result in zip(batch, results, strict=True):
                if pending.future.done():
                    continue
                if isinstance(result, errors.LedgerError):
                    pending.future.set_exception(result)
                else:
                    pending.future.set_result(result)
        except Exception as exc:  # a bug: answer every caller (INTERNAL, logged by the servicer) rather than hang
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
        finally:
            self._in_flight -= 1
            if self._queue:
                self._launch()

    async def _results(self, batch: Sequence[_Pending]) -> list[Posted | errors.LedgerError]:
        requests = [(pending.posting, pending.allow_negative) for pending in batch]
        try:
            return await self.store.post_batch(requests)
        except errors.Unavailable as exc:
            return [errors.Unavailable(exc.message) for _ in batch]
        except errors.LedgerError:
            log.warning("a batch of %d posts failed as a whole; applying them one by one", len(batch))
            return [await self._alone(posting, allow_negative) for posting, allow_negative in requests]

    async def _alone(self, posting: Posting, allow_negative: bool) -> Posted | errors.LedgerError:
        try:
            return await self.store.post(posting, allow_negative=allow_negative)
        except errors.LedgerError as exc:
            return exc
