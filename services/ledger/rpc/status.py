"""LedgerError <-> gRPC status with google.rpc.ErrorInfo (and BadRequest for field problems).

The server's handlers are wrapped in `rpc`, which calls `abort`; the client calls `error_from_rpc_error`.
Both sides of the wire use the same exception classes from services.ledger.errors.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar, cast

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from credits.ledger.v1 import ledger_service_pb2 as pb
from services.ledger import errors

log = logging.getLogger(__name__)

Request = TypeVar("Request")
Response = TypeVar("Response")

STATUS_DETAILS_KEY = "grpc-status-details-bin"


def to_status(error: errors.LedgerError) -> grpc.Status:
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=errors.ERROR_DOMAIN, metadata=error.metadata)
    details = [_pack(info)]
    if isinstance(error, errors.InvalidArgument):
        violation = error_details_pb2.BadRequest.FieldViolation(field=error.field, description=error.description)
        details.append(_pack(error_details_pb2.BadRequest(field_violations=[violation])))
    status = status_pb2.Status(code=error.code.value[0], message=error.message, details=details)
    return rpc_status.to_status(status)


async def abort(context: grpc.aio.ServicerContext, error: errors.LedgerError) -> None:
    status = to_status(error)
    await context.abort(status.code, status.details, status.trailing_metadata)


_NO_ANSWER_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)


def error_from_rpc_error(exc: grpc.aio.AioRpcError) -> errors.LedgerError:
    """Rebuilds the most specific LedgerError from a failed call."""
    code = exc.code()
    reason, metadata = "", {}
    # grpc-stubs types these as _Metadatum objects; at run time grpc.aio yields (key, value) pairs.
    trailing = cast("Iterable[tuple[str, str | bytes]]", exc.trailing_metadata() or ())
    for key, value in trailing:
        if key != STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                reason, metadata = info.reason, dict(info.metadata)
    # No answer from the ledger's handler: the call may or may not have applied, and a retry with the same key is
    # safe. CANCELLED here is the other side's doing (a ledger shutting down cancels the calls in flight; a caller
    # that cancels its own call gets asyncio.CancelledError, not a status).
    if not reason and code in _NO_ANSWER_CODES:
        reason = "UNAVAILABLE"
        code = grpc.StatusCode.UNAVAILABLE
    return errors.error_from_status(code, reason, exc.details() or code.name, metadata)


def to_refusal(error: errors.LedgerError) -> pb.Refusal:
    """An item of a batch refused: what `to_status` would send for it alone, as one message."""
    return pb.Refusal(
        code=error.code.value[0],
        reason=error.reason,
        message=error.message,
        metadata=error.metadata,
        field=error.field if isinstance(error, errors.InvalidArgument) else "",
    )


_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def error_from_refusal(refusal: pb.Refusal) -> errors.LedgerError:
    """Rebuilds the most specific LedgerError from an item of a batch (the client's side of `to_refusal`)."""
    code = _CODE_BY_NUMBER.get(refusal.code, grpc.StatusCode.UNKNOWN)
    return errors.error_from_status(code, refusal.reason, refusal.message, refusal.metadata)


def _pack(message: error_details_pb2.ErrorInfo | error_details_pb2.BadRequest) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


assert grpc.StatusCode.INVALID_ARGUMENT.value[0] == code_pb2.INVALID_ARGUMENT


def rpc(
    method: Callable[[Any, Request, grpc.aio.ServicerContext], Awaitable[Response]],
) -> Callable[[Any, Request, grpc.aio.ServicerContext], Awaitable[Response]]:
    """Answers LedgerErrors with their status; anything else is INTERNAL, logged, never echoed."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Request, context: grpc.aio.ServicerContext) -> Response:
        try:
            return await method(self, request, context)
        except errors.LedgerError as error:
            await abort(context, error)
        except Exception:
            log.exception("unexpected failure in %s", method.__name__)
            await abort(context, errors.Internal("internal error; see the ledger's log"))
        raise AssertionError("abort returned")  # context.abort always raises

    return wrapper
