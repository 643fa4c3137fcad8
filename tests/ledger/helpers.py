"""Helpers of the ledger tests: raw calls, wire-level status parsing, journal invariants."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from credits.ledger.v1 import ledger_service_pb2 as pb
from services.ledger.errors import ERROR_DOMAIN
from tests.conftest import ALL_ROLES_TOKEN, new_key

STATUS_DETAILS_KEY = "grpc-status-details-bin"
CALL_TIMEOUT_SECONDS = 30.0


def credit_request(
    user_id: str, amount: int = 100, key: str | None = None, reason: str = "grant", **extra: Any
) -> pb.CreditRequest:
    return pb.CreditRequest(user_id=user_id, amount=amount, idempotency_key=key or new_key(), reason=reason, **extra)


def debit_request(
    user_id: str, amount: int, key: str | None = None, reason: str = "spend", **extra: Any
) -> pb.DebitRequest:
    return pb.DebitRequest(user_id=user_id, amount=amount, idempotency_key=key or new_key(), reason=reason, **extra)


def adjust_request(
    user_id: str, amount: int, key: str | None = None, actor: str = "ops@example.test", reason: str = "goodwill"
) -> pb.AdminAdjustRequest:
    return pb.AdminAdjustRequest(
        user_id=user_id, amount=amount, idempotency_key=key or new_key(), actor=actor, reason=reason
    )


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def call(method: Callable[..., Awaitable[Any]], request: Any, token: str = ALL_ROLES_TOKEN) -> Any:
    """One raw call through a generated stub method: no retries, no error mapping."""
    return await method(request, metadata=bearer(token), timeout=CALL_TIMEOUT_SECONDS)


@dataclass(frozen=True)
class Refusal:
    """A failed call as it is on the wire."""

    code: grpc.StatusCode
    message: str
    status: status_pb2.Status | None
    error_info: error_details_pb2.ErrorInfo | None
    field_violations: list[error_details_pb2.BadRequest.FieldViolation]

    @property
    def reason(self) -> str | None:
        return self.error_info.reason if self.error_info is not None else None

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.error_info.metadata) if self.error_info is not None else {}


def parse_refusal(exc: grpc.aio.AioRpcError) -> Refusal:
    """Parses grpc-status-details-bin into google.rpc.Status, ErrorInfo and BadRequest."""
    trailing: Any = exc.trailing_metadata() or ()  # (key, value) pairs at run time, whatever grpc-stubs says
    raw = [value for key, value in trailing if key == STATUS_DETAILS_KEY]
    status = status_pb2.Status.FromString(raw[0]) if raw else None
    error_info = None
    violations: list[error_details_pb2.BadRequest.FieldViolation] = []
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            assert error_info is None, "more than one ErrorInfo"
            error_info = error_details_pb2.ErrorInfo()
            detail.Unpack(error_info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            violations.extend(bad_request.field_violations)
    return Refusal(
        code=exc.code(),
        message=exc.details() or "",
        status=status,
        error_info=error_info,
        field_violations=violations,
    )


async def refusal(method: Callable[..., Awaitable[Any]], request: Any, token: str = ALL_ROLES_TOKEN) -> Refusal:
    """Makes a raw call that must fail, and returns its parsed status."""
    try:
        response = await call(method, request, token)
    except grpc.aio.AioRpcError as exc:
        return parse_refusal(exc)
    raise AssertionError(f"expected a refusal, got {type(response).__name__}: {response}")


def assert_refusal(refused: Refusal, code: grpc.StatusCode, reason: str) -> None:
    """The status code, the google.rpc.Status inside the trailer, and its single ErrorInfo agree."""
    assert refused.code == code, refused
    assert refused.status is not None, "no grpc-status-details-bin trailer"
    assert refused.status.code == code.value[0]
    assert refused.status.message == refused.message
    assert refused.error_info is not None, "no ErrorInfo detail"
    assert refused.error_info.reason == reason
    assert refused.error_info.domain == ERROR_DOMAIN
    assert "Traceback" not in refused.message


async def journal(db: asyncpg.Pool, user_id: str) -> list[asyncpg.Record]:
    return await db.fetch("SELECT * FROM credit_transactions WHERE user_id = $1 ORDER BY id", user_id)


async def assert_journal_consistent(db: asyncpg.Pool, user_id: str, *, debt_allowed: bool = False) -> int:
    """Invariants 1 and 2 for one account, read behind the service; returns the balance."""
    rows = await journal(db, user_id)
    balance = await db.fetchval("SELECT balance FROM accounts WHERE user_id = $1", user_id)
    if balance is None:
        assert rows == []
        return 0
    assert balance == sum(row["delta"] for row in rows)
    previous = 0
    for row in rows:
        assert row["balance_after"] == previous + row["delta"], dict(row)
        previous = row["balance_after"]
        if not debt_allowed:
            assert row["balance_after"] >= 0, dict(row)
    assert previous == balance
    assert len({row["idempotency_key"] for row in rows}) == len(rows)
    return int(balance)


HEALTH_WAIT_SECONDS_MAX = 15.0


async def wait_for_health(
    channel: grpc.aio.Channel, serving: bool, service: str = "", *, wait_for_ready: bool = False
) -> None:
    """Waits (bounded) until the health service reports the wanted status, through Watch.

    The ledger probes its database once a second, so a status change is seen within a few
    seconds; the bound only keeps a broken server from hanging the run.
    """
    wanted = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    watch = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(service=service), timeout=HEALTH_WAIT_SECONDS_MAX, wait_for_ready=wait_for_ready
    )
    async for response in watch:
        if response.status == wanted:
            watch.cancel()
            return
    raise AssertionError(f"health never became {health_pb2.HealthCheckResponse.ServingStatus.Name(wanted)}")


LOCK_WAIT_POLLS_MAX = 200


async def wait_for_lock_waiters(db: asyncpg.Pool, count: int) -> None:
    """Waits (bounded) until `count` ledger sessions wait on a row lock."""
    for _ in range(LOCK_WAIT_POLLS_MAX):
        waiting = await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = 'credits-ledger' AND wait_event_type = 'Lock' AND datname = current_database()"
        )
        if waiting >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{count} ledger sessions never waited on the lock")
