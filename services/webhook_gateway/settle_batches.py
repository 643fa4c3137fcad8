"""The gateway's SettlePayment calls coalesced into SettlePaymentBatch calls (issue 20).

    webhook ─┐                         ┌─► alone:     SettlePayment        (the call as it always was)
    webhook ─┼─► SettleCoalescer ──────┤
    webhook ─┘   (queue)               └─► 2 or more: SettlePaymentBatch   (≤ SETTLE_BATCH_SIZE_MAX, one RPC)

Natural batching, no timer (as the ledger's group commit, services/ledger/group_commit.py): the
settlements that arrive in one turn of the event loop leave together on the next turn, at once when a
call slot is free (GATEWAY_SETTLE_BATCHES_IN_FLIGHT_MAX, 4; at most GATEWAY_SETTLE_BATCH_SIZE_MAX, 64, per
call; 1 sends every settlement as its own SettlePayment, as before issue 20); while every slot is busy
they queue and leave together as slots free. A lone event therefore goes at once, as the plain
SettlePayment it always was, and batches grow only as fast as the ledger falls behind.

Each webhook keeps its own answer: the batch's result for its request is either its SettlePaymentResponse
or its own refusal, raised as the LedgerError SettlePayment alone would have raised
(services.ledger.rpc.status.error_from_refusal), so services.stripe_bridge.apply and the webhook's 2xx / 5xx
are exactly as before. The ledger answers a batch only once every settlement of it is durable (one
statement, one transaction), so a 2xx still means the event's own effect is durable.

When the batch call fails as a whole (after the client's own retries of UNAVAILABLE, with the same
requests: the event ids make a retry safe), every webhook of the batch gets that error: UNAVAILABLE → each
answers 503 and Stripe redelivers it; a misconfiguration (PERMISSION_DENIED ...) → each answers 500. A
ledger that does not have SettlePaymentBatch yet (UNIMPLEMENTED: a rolling upgrade) gets each request
as its own SettlePayment instead.

Tracing and request ids: a lone settlement is its webhook's own call (its span, its `x-request-id`). A
batch call runs in the context of its first webhook (its span is the parent, its request id goes along)
and links to the spans of the others (`settle_batch_span_links`); each webhook's own log lines keep its
own request id, and the gateway counts batch sizes in `gateway_ledger_settle_batch_size`.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import grpc
from opentelemetry import trace

from credits.ledger.v1 import ledger_service_pb2 as pb
from services.ledger import errors
from services.ledger.client import error_from_refusal
from services.webhook_gateway.config import (
    SETTLE_BATCH_SIZE_MAX_DEFAULT,
    SETTLE_BATCH_SIZE_MAX_LIMIT,
    SETTLE_BATCHES_IN_FLIGHT_MAX_DEFAULT,
)
from services.webhook_gateway.metrics import SETTLE_BATCH_SIZE

log = logging.getLogger(__name__)

# GATEWAY_SETTLE_BATCH_SIZE_MAX and GATEWAY_SETTLE_BATCHES_IN_FLIGHT_MAX (config.py) set these.
SETTLE_BATCH_SIZE_MAX: Final = SETTLE_BATCH_SIZE_MAX_DEFAULT  # as the ledger's group commit (64)
SETTLE_BATCHES_IN_FLIGHT_MAX: Final = SETTLE_BATCHES_IN_FLIGHT_MAX_DEFAULT  # as LEDGER_BATCHES_IN_FLIGHT_MAX (4)

settle_batch_span_links: contextvars.ContextVar[tuple[trace.Link, ...]] = contextvars.ContextVar(
    "settle_batch_span_links", default=()
)


@dataclass(slots=True)
class _Pending:
    request: pb.SettlePaymentRequest
    future: asyncio.Future[pb.SettlePaymentResponse]
    context: contextvars.Context  # the webhook's: its span, its request id


class SettleCoalescer:
    """Sends SettlePayment requests alone or in SettlePaymentBatch calls; see the module docstring."""

    def __init__(
        self,
        settle_alone: Callable[[pb.SettlePaymentRequest], Awaitable[pb.SettlePaymentResponse]],
        settle_batch: Callable[[pb.SettlePaymentBatchRequest], Awaitable[pb.SettlePaymentBatchResponse]],
        *,
        size_max: int = SETTLE_BATCH_SIZE_MAX,
        in_flight_max: int = SETTLE_BATCHES_IN_FLIGHT_MAX,
    ) -> None:
        assert 1 <= size_max <= SETTLE_BATCH_SIZE_MAX_LIMIT
        assert in_flight_max >= 1
        self._settle_alone = settle_alone
        self._settle_batch = settle_batch
        self.size_max = size_max
        self.in_flight_max = in_flight_max
        self._queue: deque[_Pending] = deque()
        self._in_flight = 0
        self._launch_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def settle(self, request: pb.SettlePaymentRequest) -> pb.SettlePaymentResponse:
        """This request's own answer; raises its own LedgerError (or the batch call's, for the whole)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[pb.SettlePaymentResponse] = loop.create_future()
        self._queue.append(_Pending(request, future, contextvars.copy_context()))
        if not self._launch_scheduled:
            # Next turn of the loop: every settlement that arrives in this turn joins the same call.
            self._launch_scheduled = True
            loop.call_soon(self._launch)
        return await future

    async def close(self) -> None:
        """Waits for the calls in flight (the server has stopped taking webhooks before this)."""
        while self._tasks or self._queue:
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            else:
                self._launch()
                await asyncio.sleep(0)

    def _launch(self) -> None:
        self._launch_scheduled = False
        loop = asyncio.get_running_loop()
        while self._queue and self._in_flight < self.in_flight_max:
            batch = self._take()
            if not batch:
                return
            self._in_flight += 1
            context = batch[0].context.copy()
            if len(batch) > 1:
                context.run(settle_batch_span_links.set, _links(batch[1:]))
            task = loop.create_task(self._send(batch), context=context)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _take(self) -> list[_Pending]:
        batch: list[_Pending] = []
        while self._queue and len(batch) < self.size_max:
            pending = self._queue.popleft()
            if not pending.future.done():  # a webhook given up (its deadline) is not sent
                batch.append(pending)
        return batch

    async def _send(self, batch: list[_Pending]) -> None:
        SETTLE_BATCH_SIZE.observe(len(batch))
        try:
            if len(batch) == 1:
                await _answer_alone(batch[0], self._settle_alone)
            else:
                await self._send_batch(batch)
        except asyncio.CancelledError:  # the loop is going away: so are the webhooks waiting
            for pending in batch:
                pending.future.cancel()
            raise
        except Exception as exc:  # a bug: answer every webhook (500, logged by the handler) rather than hang
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
        finally:
            self._in_flight -= 1
            if self._queue:
                self._launch()

    async def _send_batch(self, batch: list[_Pending]) -> None:
        request = pb.SettlePaymentBatchRequest(requests=[pending.request for pending in batch])
        try:
            response = await self._settle_batch(request)
        except errors.LedgerError as failure:
            if failure.code is grpc.StatusCode.UNIMPLEMENTED:
                log.warning("the ledger has no SettlePaymentBatch: settling %d webhooks one by one", len(batch))
                await asyncio.gather(*(_answer_in_own_context(pending, self._settle_alone) for pending in batch))
                return
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(_copy(failure))
            return
        if len(response.results) != len(batch):
            raise errors.Internal(f"the ledger answered {len(response.results)} results for {len(batch)} requests")
        for pending, result in zip(batch, response.results, strict=True):
            if pending.future.done():
                continue
            if result.WhichOneof("result") == "settled":
                pending.future.set_result(result.settled)
            else:
                pending.future.set_exception(error_from_refusal(result.refusal))


async def _answer_alone(
    pending: _Pending, settle_alone: Callable[[pb.SettlePaymentRequest], Awaitable[pb.SettlePaymentResponse]]
) -> None:
    try:
        response = await settle_alone(pending.request)
    except errors.LedgerError as refusal:
        if not pending.future.done():
            pending.future.set_exception(refusal)
        return
    if not pending.future.done():
        pending.future.set_result(response)


async def _answer_in_own_context(
    pending: _Pending, settle_alone: Callable[[pb.SettlePaymentRequest], Awaitable[pb.SettlePaymentResponse]]
) -> None:
    task = asyncio.get_running_loop().create_task(_answer_alone(pending, settle_alone), context=pending.context.copy())
    await task


def _links(batch: list[_Pending]) -> tuple[trace.Link, ...]:
    links = []
    for pending in batch:
        span_context = pending.context.run(trace.get_current_span).get_span_context()
        if span_context.is_valid:
            links.append(trace.Link(span_context))
    return tuple(links)


def _copy(failure: errors.LedgerError) -> errors.LedgerError:
    """One exception object per webhook (each is raised, and so gets a traceback, in its own task)."""
    if isinstance(failure, errors.InvalidArgument):
        return errors.InvalidArgument(failure.field, failure.description)
    return errors.error_from_status(failure.code, failure.reason, failure.message, failure.metadata)
