"""Requests whose bytes are not a valid message of their RPC, refused as INVALID_ARGUMENT before any handler runs.

A varint longer than 64 bits (an integer beyond int64), a string field that is not UTF-8, a truncated field:
protobuf cannot decode them. grpc.aio answers a failing request deserializer with UNKNOWN and the exception's
class in the details; the wrapped handler makes it the documented refusal instead, with its ErrorInfo.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

import grpc
from google.protobuf.message import DecodeError

from services.ledger import errors

_UNDECODABLE: Final = object()
Abort = Callable[[Any, errors.LedgerError], Awaitable[None]]


def tolerant_handler(handler: grpc.RpcMethodHandler, abort: Abort) -> grpc.RpcMethodHandler:
    """`handler` (unary-unary) with a deserializer that lets undecodable bytes through as a marker, which the
    behaviour refuses as INVALID_ARGUMENT (services/ledger/rpc/calls.py builds this once per method)."""
    if handler.request_deserializer is None:
        return handler
    # grpc-stubs types these for the sync server; under grpc.aio the behaviour is a coroutine function.
    deserialize: Callable[[bytes], Any] = handler.request_deserializer
    behaviour: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]] = handler.unary_unary  # type: ignore[assignment]

    def decode(raw: bytes) -> Any:
        try:
            return deserialize(raw)
        except DecodeError:
            return _UNDECODABLE

    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if request is _UNDECODABLE:
            await abort(context, errors.InvalidArgument("request", "is not a valid message of this RPC"))
        return await behaviour(request, context)

    return grpc.unary_unary_rpc_method_handler(
        guarded, request_deserializer=decode, response_serializer=handler.response_serializer
    )
