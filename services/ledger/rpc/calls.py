"""What every ledger call goes through before its handler, in one interceptor (after tracing):

    request id   bind the caller's `x-request-id` (or a new one) for the call's log lines
    metrics      count and time the call (ledger_rpc_requests_total, ledger_rpc_duration_seconds),
                 refusals below included
    auth         `authorization: Bearer <token>` → caller → roles of the RPC (services/ledger/rpc/auth.py);
                 health and reflection are open
    decoding     bytes that are no valid message of the RPC: INVALID_ARGUMENT before the handler
                 (services/ledger/rpc/decoding.py)

One interceptor instead of four: the measured, decode-guarded handler of each method is built once, at
its first call, and only the metadata is read per call. It must be the last interceptor of the server:
it answers a known method from its cache without asking the next interceptor again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from services.common.logs import new_request_id, request_id_var
from services.common.metrics import measured_handler
from services.common.request_ids import REQUEST_ID_METADATA_KEY, accepted_request_id
from services.ledger import errors
from services.ledger.rpc.auth import OPEN_SERVICE_PREFIXES, Authenticator, current_caller, current_roles
from services.ledger.rpc.decoding import Abort, tolerant_handler

AUTHORIZATION_METADATA_KEY = "authorization"
UNKNOWN_METHOD = "unknown"  # the metrics label of refusals of methods the server does not have


class CallInterceptor(grpc.aio.ServerInterceptor):
    """Request id, metrics, authentication and authorization, and undecodable requests, for every call."""

    def __init__(self, authenticator: Authenticator, abort: Abort) -> None:
        self.authenticator = authenticator
        self.abort = abort
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        request_id = None
        authorizations: list[str | bytes] = []
        for key, value in handler_call_details.invocation_metadata or ():
            if key == REQUEST_ID_METADATA_KEY:
                request_id = accepted_request_id(value)
            elif key == AUTHORIZATION_METADATA_KEY:
                authorizations.append(value)
        request_id_var.set(request_id or new_request_id())
        handler = self._handlers.get(method)
        if handler is None:
            handler = await self._handler(continuation, handler_call_details)
        if method.startswith(OPEN_SERVICE_PREFIXES):
            return handler
        try:  # default deny: a method the server does not know is refused like one the caller may not call
            caller = self._authorize(method, authorizations)
        except errors.LedgerError as refusal:
            return self._refusal(method if handler is not None else UNKNOWN_METHOD, refusal)
        current_caller.set(caller.name)
        current_roles.set(caller.roles)
        return handler

    async def _handler(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:  # None (as the continuation may answer) for a method the server lacks
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler  # unknown or streaming, not cached: a made-up method name must not grow the cache
        method = handler_call_details.method
        measured = measured_handler(tolerant_handler(handler, self.abort), method)
        self._handlers[method] = measured
        return measured

    def _authorize(self, method: str, authorizations: list[str | bytes]) -> Any:
        if len(authorizations) > 1:  # Which of two tokens counts would be up to each reader (a proxy, us): refuse.
            raise errors.Unauthenticated("more than one authorization metadata entry")
        authorization = None
        if authorizations:
            value = authorizations[0]
            authorization = value if isinstance(value, str) else value.decode("latin-1")
        return self.authenticator.authorize(method, authorization)

    def _refusal(self, method: str, refusal: errors.LedgerError) -> grpc.RpcMethodHandler:
        async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
            await self.abort(context, refusal)

        # No deserializer: the request is refused whatever its bytes, and counted like any call.
        return measured_handler(grpc.unary_unary_rpc_method_handler(refuse), method)
