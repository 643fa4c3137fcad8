"""The workload of a fault run: concurrent ledger clients (Credit, Debit, AdminAdjust, Anonymize, replays and
key reuses, batches of credits and debits in one PostBatch, some atomic, over gRPC, each with its own
idempotency key and a deadline that is sometimes very short) and
concurrent customers in the fake Stripe account (purchases through the gateway's checkout or straight in
Stripe, async payments, partial refunds, disputes). Every choice comes from a seeded generator.

A client makes exactly one attempt per operation during the run and records what it saw; `resolve`
retries the unknown ones afterwards, with the same key and parameters, until each gives a definite answer
(a batch's operations by sending the same batch again: a ledger killed mid-batch, then the retry).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import grpc
import jwt

from credits.ledger.v1 import ledger_service_pb2 as pb
from credits.ledger.v1 import ledger_service_pb2_grpc as pb_grpc
from services.ledger.rpc.status import error_from_rpc_error
from tests.faults.history import History, Op, OpKind, Outcome
from tests.faults.stripe_world import Purchase, StripeWorld

# Codes whose answer is definite: the ledger decided and said no (nothing was written).
REFUSAL_CODES: Final = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
    }
)
DEADLINE_SECONDS_NORMAL: Final = 3.0
SHORT_DEADLINE_SECONDS_RANGE: Final = (0.005, 0.25)
SHORT_DEADLINE_SHARE: Final = 0.12
CLIENT_PAUSE_SECONDS_MAX: Final = 0.05
SHOPPER_PAUSE_SECONDS_RANGE: Final = (0.05, 0.35)
RESOLVE_ATTEMPTS_MAX: Final = 30
RESOLVE_DEADLINE_SECONDS: Final = 5.0
RESOLVE_BACKOFF_SECONDS_MAX: Final = 1.0
RESOLVE_CONCURRENT_MAX: Final = 16
CHECKOUT_TIMEOUT_SECONDS: Final = 10.0
ASYNC_PAYMENT_DELAY_SECONDS_RANGE: Final = (0.3, 3.0)
GDPR_USERS: Final = 2  # the first ledger-only users are the ones Anonymize may erase

OP_WEIGHTS: Final = {
    OpKind.CREDIT: 30,
    OpKind.DEBIT: 40,
    OpKind.ADJUST: 12,
    OpKind.REPLAY: 10,
    OpKind.REUSE: 5,
    OpKind.ANONYMIZE: 1,
    OpKind.BATCH: 6,
}
BATCH_SIZE_RANGE: Final = (2, 24)
ATOMIC_BATCH_SHARE: Final = 0.3
SHOPPER_WEIGHTS: Final = {"purchase": 44, "async_purchase": 6, "refund": 25, "dispute": 12, "move_dispute": 13}


@dataclass(frozen=True)
class Tokens:
    spender: str
    payments: str
    admin: str
    poster: str  # spender and payments: a batch of credits and debits


@dataclass(frozen=True)
class Users:
    """Ledger-only users (anonymizable) and shoppers (who also spend, so chargebacks can leave debts)."""

    ledger_only: tuple[str, ...]
    shoppers: tuple[str, ...]

    @classmethod
    def make(cls, run_id: str, ledger_only_count: int, shopper_count: int) -> Users:
        return cls(
            tuple(f"faults-{run_id}-l{n}" for n in range(ledger_only_count)),
            tuple(f"faults-{run_id}-s{n}" for n in range(shopper_count)),
        )


def classify(exc: grpc.aio.AioRpcError) -> tuple[Outcome, str]:
    """A failed call's outcome and detail (the ErrorInfo reason of a refusal, else the status code)."""
    if exc.code() in REFUSAL_CODES:
        return Outcome.REFUSED, error_from_rpc_error(exc).reason
    return Outcome.UNKNOWN, exc.code().name


class LedgerClients:
    """The gRPC side of the workload: `clients` concurrent loops of operations."""

    def __init__(self, target: str, tokens: Tokens, users: Users, history: History, rng: random.Random) -> None:
        self.channel = grpc.aio.insecure_channel(target, options=[("grpc.enable_retries", 0)])
        self.stub = pb_grpc.LedgerServiceStub(self.channel)
        self.tokens = tokens
        self.users = users
        self.history = history
        self.rng = rng
        self.anonymized: set[str] = set()

    async def close(self) -> None:
        await self.channel.close(grace=None)

    async def run(self, stop: asyncio.Event, client_index: int) -> None:
        rng = random.Random(self.rng.random() + client_index)
        while not stop.is_set():
            kind = rng.choices(list(OP_WEIGHTS), weights=list(OP_WEIGHTS.values()))[0]
            await self.operate(kind, rng)
            await asyncio.sleep(rng.uniform(0, CLIENT_PAUSE_SECONDS_MAX))

    async def operate(self, kind: OpKind, rng: random.Random) -> None:
        deadline = rng.uniform(*SHORT_DEADLINE_SECONDS_RANGE) if rng.random() < SHORT_DEADLINE_SHARE else None
        deadline = deadline or DEADLINE_SECONDS_NORMAL
        if kind in (OpKind.REPLAY, OpKind.REUSE):
            done = [op for op in self.history.ops[-500:] if op.outcome is Outcome.OK and op.kind in _MONEY_KINDS]
            if not done:
                return
            original = rng.choice(done)
            # A reuse asks for more of the same: the amount stays valid, only the parameters differ.
            change = 0 if kind is OpKind.REPLAY else rng.choice((3, 7, 11))
            delta = original.delta - change if original.delta < 0 else original.delta + change
            op = self.history.new_op(kind, original.user_id, original.key, delta, original.reason, deadline)
            op.of_op = original.op_id
            await self.call(op, _request_kind(original))
            return
        if kind is OpKind.BATCH:
            await self.post_batch(rng, deadline)
            return
        if kind is OpKind.ANONYMIZE:
            user_id = rng.choice(self.users.ledger_only[:GDPR_USERS])
            op = self.history.new_op(kind, user_id, "", 0, "gdpr", deadline)
            await self.call(op, OpKind.ANONYMIZE)
            return
        user_id = rng.choice(self.users.ledger_only + self.users.shoppers * 2)
        delta = _delta(kind, rng)
        reason = f"faults {kind.value}"
        op = self.history.new_op(kind, user_id, f"k-{uuid.uuid4().hex}", delta, reason, deadline)
        await self.call(op, kind)

    async def call(self, op: Op, request_kind: OpKind, *, resolving: bool = False) -> None:
        """One attempt; records the outcome (or, when resolving, the resolution) on `op`."""
        method, request, token = self._request(op, request_kind)
        deadline = RESOLVE_DEADLINE_SECONDS if resolving else op.deadline_seconds
        outcome, detail, transaction_id, replayed = Outcome.OK, "", 0, False
        try:
            response = await method(request, metadata=(("authorization", f"Bearer {token}"),), timeout=deadline)
        except grpc.aio.AioRpcError as exc:
            outcome, detail = self._failed(exc, f"{op.kind} {op.key}")
        else:
            if request_kind is not OpKind.ANONYMIZE:
                transaction_id, replayed = response.transaction.id, response.replayed
            else:
                self.anonymized.add(op.user_id)
        self._record(op, outcome, detail, transaction_id, replayed, resolving=resolving)

    async def post_batch(self, rng: random.Random, deadline: float) -> None:
        ops = []
        for _ in range(rng.randint(*BATCH_SIZE_RANGE)):
            kind = rng.choice((OpKind.CREDIT, OpKind.DEBIT, OpKind.DEBIT))
            user_id = rng.choice(self.users.ledger_only + self.users.shoppers * 2)
            key, reason = f"k-{uuid.uuid4().hex}", f"faults batch {kind.value}"
            ops.append(self.history.new_op(kind, user_id, key, _delta(kind, rng), reason, deadline))
        atomic = rng.random() < ATOMIC_BATCH_SHARE
        for op in ops:
            op.batch_id, op.atomic = ops[0].op_id, atomic
        await self.call_batch(ops)

    async def call_batch(self, ops: list[Op], *, resolving: bool = False) -> None:
        """One attempt of a batch; records each posting's outcome (an unknown call: every posting unknown)."""
        postings = [_batch_posting(op, self._request(op, op.kind)[1]) for op in ops]
        request = pb.PostBatchRequest(postings=postings, atomic=ops[0].atomic)
        deadline = RESOLVE_DEADLINE_SECONDS if resolving else ops[0].deadline_seconds
        metadata = (("authorization", f"Bearer {self.tokens.poster}"),)
        try:
            response = await self.stub.PostBatch(request, metadata=metadata, timeout=deadline)
        except grpc.aio.AioRpcError as exc:
            outcome, detail = self._failed(exc, f"batch {ops[0].batch_id}")
            answers = [(outcome, detail, 0, False)] * len(ops)
        else:
            answers = [_posting_answer(result) for result in response.results]
            if len(answers) != len(ops):
                detail = f"batch {ops[0].batch_id}: {len(answers)} results for {len(ops)} postings"
                self.history.anomaly("batch_results", detail)
                return
        for op, (outcome, detail, transaction_id, replayed) in zip(ops, answers, strict=True):
            self._record(op, outcome, detail, transaction_id, replayed, resolving=resolving)

    def _record(
        self, op: Op, outcome: Outcome, detail: str, transaction_id: int, replayed: bool, *, resolving: bool
    ) -> None:
        """An attempt's answer on its op: the first outcome, or, when resolving, the resolution."""
        if resolving:
            op.resolved, op.resolution_detail = outcome, detail
            op.resolution_attempts += 1
        else:
            op.outcome, op.detail, op.end_seconds = outcome, detail, self.history.now()
        if outcome is Outcome.OK:
            op.transaction_id, op.replayed = transaction_id, replayed

    def _failed(self, exc: grpc.aio.AioRpcError, what: str) -> tuple[Outcome, str]:
        if exc.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN) and _from_ledger(exc):
            self.history.anomaly("ledger_internal", f"{what}: {exc.code().name} {exc.details()}")
        return classify(exc)

    def _request(self, op: Op, kind: OpKind) -> tuple[Any, Any, str]:
        common = {"user_id": op.user_id, "idempotency_key": op.key, "reason": op.reason}
        if kind is OpKind.CREDIT:
            return self.stub.Credit, pb.CreditRequest(amount=op.delta, **common), self.tokens.payments
        if kind is OpKind.DEBIT:
            return self.stub.Debit, pb.DebitRequest(amount=-op.delta, **common), self.tokens.spender
        if kind is OpKind.ADJUST:
            request = pb.AdminAdjustRequest(amount=op.delta, actor="faults-operator", **common)
            return self.stub.AdminAdjust, request, self.tokens.admin
        assert kind is OpKind.ANONYMIZE, kind
        return self.stub.Anonymize, pb.AnonymizeRequest(user_id=op.user_id), self.tokens.admin

    async def resolve(self) -> list[Op]:
        """Retries every unknown operation with its key until it answers; returns those that never did.

        The operations of a batch that got no answer are retried as that batch, whole, with the same keys.
        """
        unknown = [op for op in self.history.ops if op.outcome is Outcome.UNKNOWN]
        batches: dict[int, list[Op]] = {}
        for op in unknown:
            if op.batch_id is not None:
                batches.setdefault(op.batch_id, []).append(op)
        slots = asyncio.Semaphore(RESOLVE_CONCURRENT_MAX)

        async def resolve_one(op: Op) -> None:
            async with slots:
                for attempt in range(RESOLVE_ATTEMPTS_MAX):
                    await self.call(op, _request_kind(self._original(op)), resolving=True)
                    if op.resolved is not Outcome.UNKNOWN:
                        return
                    await asyncio.sleep(min(RESOLVE_BACKOFF_SECONDS_MAX, 0.1 * 2**attempt))

        async def resolve_batch(ops: list[Op]) -> None:
            async with slots:
                for attempt in range(RESOLVE_ATTEMPTS_MAX):
                    await self.call_batch(ops, resolving=True)
                    if all(op.resolved is not Outcome.UNKNOWN for op in ops):
                        return
                    await asyncio.sleep(min(RESOLVE_BACKOFF_SECONDS_MAX, 0.1 * 2**attempt))

        await asyncio.gather(
            *(resolve_one(op) for op in unknown if op.batch_id is None),
            *(resolve_batch(ops) for ops in batches.values()),
        )
        return [op for op in unknown if op.resolved is not Outcome.OK and op.resolved is not Outcome.REFUSED]

    def _original(self, op: Op) -> Op:
        return self.history.ops[op.of_op - 1] if op.of_op is not None else op


_MONEY_KINDS: Final = frozenset({OpKind.CREDIT, OpKind.DEBIT, OpKind.ADJUST})


def _batch_posting(op: Op, request: Any) -> pb.BatchPosting:
    return pb.BatchPosting(credit=request) if op.kind is OpKind.CREDIT else pb.BatchPosting(debit=request)


def _posting_answer(result: pb.PostingResult) -> tuple[Outcome, str, int, bool]:
    if result.outcome in (pb.POSTING_OUTCOME_APPLIED, pb.POSTING_OUTCOME_REPLAYED):
        return Outcome.OK, "", result.transaction.id, result.outcome == pb.POSTING_OUTCOME_REPLAYED
    return Outcome.REFUSED, result.refusal.reason, 0, False


def _request_kind(op: Op) -> OpKind:
    assert op.kind not in (OpKind.REPLAY, OpKind.REUSE), op
    return op.kind


def _delta(kind: OpKind, rng: random.Random) -> int:
    if kind is OpKind.CREDIT:
        return rng.randint(1, 400)
    if kind is OpKind.DEBIT:
        return -rng.randint(1, 250)
    return rng.choice((-1, 1, 1)) * rng.randint(1, 300)


def _from_ledger(exc: grpc.aio.AioRpcError) -> bool:
    """The status carries the ledger's ErrorInfo: the ledger itself answered it (not the transport)."""
    trailing: Any = exc.trailing_metadata() or ()
    return any(key == "grpc-status-details-bin" for key, _ in trailing)


class Shoppers:
    """The Stripe side of the workload: customers paying, getting refunds and disputing."""

    def __init__(
        self,
        world: StripeWorld,
        gateway_url: str,
        jwt_secret: str,
        users: Users,
        history: History,
        rng: random.Random,
    ) -> None:
        self.world = world
        self.gateway_url = gateway_url
        self.jwt_secret = jwt_secret
        self.users = users
        self.history = history
        self.rng = rng
        self._http = aiohttp.ClientSession()
        self._async_tasks: set[asyncio.Task[None]] = set()
        self.pending_async: list[Purchase] = []

    async def close(self) -> None:
        await self._http.close()

    async def run(self, stop: asyncio.Event, shopper_index: int) -> None:
        rng = random.Random(self.rng.random() + shopper_index)
        while not stop.is_set():
            action = rng.choices(list(SHOPPER_WEIGHTS), weights=list(SHOPPER_WEIGHTS.values()))[0]
            await self.act(action, rng)
            await asyncio.sleep(rng.uniform(*SHOPPER_PAUSE_SECONDS_RANGE))

    async def act(self, action: str, rng: random.Random) -> None:
        if action in ("purchase", "async_purchase"):
            await self.purchase(rng, asynchronous=action == "async_purchase")
            return
        candidates = {
            "refund": self.world.refundable,
            "dispute": self.world.disputable,
            "move_dispute": self.world.open_disputes,
        }[action]()
        if not candidates:
            return
        purchase = rng.choice(candidates)
        if action == "refund":
            self.world.refund(purchase)
        elif action == "dispute":
            self.world.dispute(purchase)
        else:
            self.world.move_dispute(purchase)
        self.history.stripe_actions[action] += 1

    async def purchase(self, rng: random.Random, *, asynchronous: bool) -> None:
        user_id = rng.choice(self.users.shoppers)
        package = rng.choice(self.world.packages())
        via_gateway = rng.random() < 0.5
        if via_gateway:
            session_id = await self._checkout(user_id, package.package_id)
            if session_id is None:
                self.history.stripe_actions["checkout_failed"] += 1
                return
        else:
            session_id = self.world.open_session_directly(user_id, package)
        purchase = self.world.pay(user_id, package, session_id, via_gateway=via_gateway, asynchronous=asynchronous)
        self.history.stripe_actions["async_purchase" if asynchronous else "purchase"] += 1
        if asynchronous:
            self.pending_async.append(purchase)
            task = asyncio.create_task(self._finish_later(purchase, rng))
            self._async_tasks.add(task)
            task.add_done_callback(self._async_tasks.discard)

    async def _finish_later(self, purchase: Purchase, rng: random.Random) -> None:
        await asyncio.sleep(rng.uniform(*ASYNC_PAYMENT_DELAY_SECONDS_RANGE))
        self.finish(purchase, rng.random() < 0.7)

    def finish(self, purchase: Purchase, succeeded: bool) -> None:
        if purchase in self.pending_async:
            self.pending_async.remove(purchase)
            self.world.finish_async(purchase, succeeded)

    async def finish_all(self) -> None:
        """At the end of the run: every delayed payment settles one way or the other."""
        for task in list(self._async_tasks):
            task.cancel()
        await asyncio.gather(*self._async_tasks, return_exceptions=True)
        for purchase in list(self.pending_async):
            self.finish(purchase, self.rng.random() < 0.7)

    async def _checkout(self, user_id: str, package_id: str) -> str | None:
        token = jwt.encode({"sub": user_id, "exp": int(time.time()) + 600}, self.jwt_secret, algorithm="HS256")
        headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex}
        try:
            async with self._http.post(
                f"{self.gateway_url}/checkout",
                json={"package_id": package_id},
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=CHECKOUT_TIMEOUT_SECONDS),
            ) as response:
                body = await response.json(content_type=None)
                if response.status == 500:
                    self.history.anomaly("checkout_500", str(body)[:200])
                if response.status != 200:
                    return None
                return str(body["checkout_session_id"])
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
