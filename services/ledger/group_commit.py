"""Group commit: concurrent requests of one kind applied in one statement (one transaction) per batch.

    Credit ─┐                     ┌─► batch of ≤ size_max ─► one statement: one round trip, one commit,
    Debit  ─┼─► GroupCommit ──────┤                           one lock per account
    Debit  ─┘   (queue)           └─► at most in_flight_max batches at once (pooled connections)

Two kinds share the machinery (`GroupCommit`), each with its own queue and batch slots:
- `PostBatcher`: Credit, Debit, AdminAdjust (ledger_post_batch, migrations/versions/0004_post_batch.py);
- `SettleBatcher`: SettlePayment, the webhook path (ledger_payment_settle per request, in one statement:
  services/ledger/payments/store.py, `settle_batch`).
(GetBalance reads batched into one `unnest` query did not pay: docs/performance.md.)

Natural batching, no timer: requests that arrive in one turn of the event loop leave together, at once
when a batch slot is free (so at low load a request goes alone, with no added wait); while every slot is
busy, requests queue and leave together (up to size_max each) as slots free. Batches thus grow
exactly as fast as the database falls behind, and a request never waits for a clock.

Per request, the answer is what the request alone would get: applied, replayed, or its own refusal; a
refusal is a value of the batch's result, never an exception, so it never fails its batch-mates. When
the batch statement fails as a whole:
- the database is unreachable, or rolled the transaction back as retryable (deadlock, serialization:
  errors.Unavailable): every request of the batch gets Unavailable, as each would alone (the caller
  retries with the same key; a batch that committed before the connection broke answers those retries
  as replays);
- anything else (errors.Internal: a constraint that validation should have caught): each request is
  applied alone, so only the offending one fails.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from services.ledger import errors
from services.ledger.accounts.domain import Posted, Posting
from services.ledger.accounts.store import AccountsStore
from services.ledger.database import Database
from services.ledger.payments.domain import EventSource, PaymentDetails, Settled
from services.ledger.payments.store import PaymentsStore

log = logging.getLogger(__name__)

POST_BATCH_SIZE_MAX: Final = 64
POST_BATCHES_IN_FLIGHT_MAX: Final = 4

Request = TypeVar("Request")
Result = TypeVar("Result")


@dataclass(slots=True)
class _Pending(Generic[Request, Result]):
    request: Request
    future: asyncio.Future[Result]


class GroupCommit(ABC, Generic[Request, Result]):
    """Batches requests into `_apply_batch` calls; `close()` waits for the batches in flight."""

    def __init__(self, *, size_max: int = POST_BATCH_SIZE_MAX, in_flight_max: int = POST_BATCHES_IN_FLIGHT_MAX) -> None:
        assert size_max >= 1
        assert in_flight_max >= 1
        self.size_max = size_max
        self.in_flight_max = in_flight_max
        self._queue: deque[_Pending[Request, Result]] = deque()
        self._in_flight = 0
        self._launch_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    @abstractmethod
    async def _apply_batch(self, requests: Sequence[Request]) -> list[Result | errors.LedgerError]:
        """One result per request, in order; raises only when the batch failed as a whole."""

    @abstractmethod
    async def _apply_alone(self, request: Request) -> Result:
        """The request applied alone (after its batch failed as a whole); raises its LedgerError."""

    async def submit(self, request: Request) -> Result:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._queue.append(_Pending(request, future))
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

    def _take(self) -> list[_Pending[Request, Result]]:
        batch: list[_Pending[Request, Result]] = []
        while self._queue and len(batch) < self.size_max:
            pending = self._queue.popleft()
            if not pending.future.done():  # a cancelled call (deadline, client gone) is not applied
                batch.append(pending)
        return batch

    async def _apply(self, batch: list[_Pending[Request, Result]]) -> None:
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

    async def _results(self, batch: Sequence[_Pending[Request, Result]]) -> list[Result | errors.LedgerError]:
        requests = [pending.request for pending in batch]
        try:
            return await self._apply_batch(requests)
        except errors.Unavailable as exc:
            return [errors.Unavailable(exc.message) for _ in batch]
        except errors.LedgerError:
            log.warning("a batch of %d %s requests failed as a whole; applying them one by one",
                        len(batch), type(self).__name__)
            return [await self._alone(request) for request in requests]

    async def _alone(self, request: Request) -> Result | errors.LedgerError:
        try:
            return await self._apply_alone(request)
        except errors.LedgerError as exc:
            return exc


class PostBatcher(GroupCommit[tuple[Posting, bool], Posted]):
    """Credit, Debit and AdminAdjust: (posting, allow_negative) requests through ledger_post_batch."""

    def __init__(
        self,
        store: AccountsStore,
        *,
        size_max: int = POST_BATCH_SIZE_MAX,
        in_flight_max: int = POST_BATCHES_IN_FLIGHT_MAX,
    ) -> None:
        super().__init__(size_max=size_max, in_flight_max=in_flight_max)
        self.store = store

    async def post(self, posting: Posting, *, allow_negative: bool = False) -> Posted:
        return await self.submit((posting, allow_negative))

    async def _apply_batch(self, requests: Sequence[tuple[Posting, bool]]) -> list[Posted | errors.LedgerError]:
        return await self.store.post_batch(requests)

    async def _apply_alone(self, request: tuple[Posting, bool]) -> Posted:
        posting, allow_negative = request
        return await self.store.post(posting, allow_negative=allow_negative)


class SettleBatcher(GroupCommit[tuple[PaymentDetails, EventSource | None], Settled]):
    """SettlePayment: (details, source) requests, each through ledger_payment_settle, one statement per batch."""

    def __init__(
        self,
        payments: PaymentsStore,
        *,
        size_max: int = POST_BATCH_SIZE_MAX,
        in_flight_max: int = POST_BATCHES_IN_FLIGHT_MAX,
    ) -> None:
        super().__init__(size_max=size_max, in_flight_max=in_flight_max)
        self.payments = payments

    async def settle(self, details: PaymentDetails, source: EventSource | None) -> Settled:
        return await self.submit((details, source))

    async def _apply_batch(
        self, requests: Sequence[tuple[PaymentDetails, EventSource | None]]
    ) -> list[Settled | errors.LedgerError]:
        return await self.payments.settle_batch(requests)

    async def _apply_alone(self, request: tuple[PaymentDetails, EventSource | None]) -> Settled:
        return await self.payments.settle(*request)


@dataclass(frozen=True)
class GroupCommits:
    """The batchers of one ledger process."""

    post: PostBatcher
    settle: SettleBatcher

    @classmethod
    def open(
        cls, database: Database, *, size_max: int = POST_BATCH_SIZE_MAX, in_flight_max: int = POST_BATCHES_IN_FLIGHT_MAX
    ) -> GroupCommits:
        return cls(
            post=PostBatcher(AccountsStore(database), size_max=size_max, in_flight_max=in_flight_max),
            settle=SettleBatcher(PaymentsStore(database), size_max=size_max, in_flight_max=in_flight_max),
        )

    async def close(self) -> None:
        await asyncio.gather(self.post.close(), self.settle.close())
