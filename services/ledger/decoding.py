"""Requests whose bytes are not a valid message of their RPC, refused as INVALID_ARGUMENT before any handler runs.

A varint longer than 64 bits (an integer beyond int64), a string field that is not UTF-8, a truncated field:
protobuf cannot decode them. grpc.aio answers a failing request deserializer with UNKNOWN and the exception's
class in the details; this interceptor makes it the documented refusal instead, with its ErrorInfo.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

import grpc
from google.protobuf.message import DecodeError

from services.ledger import errors

_UNDECODABLE: Final = object()


class UndecodableRequestInterceptor(grpc.aio.ServerInterceptor):
    """Wraps each unary handler's deserializer so that undecodable bytes become INVALID_ARGUMENT."""

    def __init__(self, abort: Callable[[Any, errors.LedgerError], Awaitable[None]]) -> None:
        self.abort = abort

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None or handler.request_deserializer is None:
            return handler
        return self._tolerant(handler)

    def _tolerant(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        # grpc-stubs types these for the sync server; under grpc.aio the behaviour is a coroutine function.
        deserialize: Callable[[bytes], Any] = handler.request_deserializer  # type: ignore[assignment]
        behaviour: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]] = handler.unary_unary  # type: ignore[assignment]

        def decode(raw: bytes) -> Any:
            try:
                return deserialize(raw)
            except DecodeError:
                return _UNDECODABLE

        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if request is _UNDECODABLE:
                await self.abort(context, errors.InvalidArgument("request", "is not a valid message of this RPC"))
            return await behaviour(request, context)

        return grpc.unary_unary_rpc_method_handler(
            guarded, request_deserializer=decode, response_serializer=handler.response_serializer
        )
