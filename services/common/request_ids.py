"""Request ids: one id per HTTP request, carried to the ledger, on every log line of both services.

    HTTP client --X-Request-Id--> gateway (request_id_middleware) --x-request-id--> ledger
                                     | binds services.common.logs.request_id_var      | services.ledger.rpc.calls
                                     | answers X-Request-Id                           | binds it for the RPC
                                     | request_id_metadata() on each ledger call

The gateway takes the caller's `X-Request-Id` when it is a plain token (REQUEST_ID_PATTERN: letters,
digits, `.`, `_`, `-`; at most REQUEST_ID_CHARS_MAX), so a host app or a load balancer can correlate its
own logs; anything else is replaced by a new id, never echoed. The gateway's ledger client sends the id
as `x-request-id` metadata (`request_id_metadata`, services.webhook_gateway.ledger_client); the ledger
binds it (or a new one) per RPC.
Trace ids (services.common.tracing) correlate the same lines when tracing is on; request ids work
without it, and are what a support ticket quotes (the gateway answers them in a header).
"""

from __future__ import annotations

import re
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler

from services.common.logs import request_id_scope, request_id_var

REQUEST_ID_HEADER: Final = "X-Request-Id"
REQUEST_ID_METADATA_KEY: Final = "x-request-id"
REQUEST_ID_CHARS_MAX: Final = 128
REQUEST_ID_PATTERN: Final = re.compile(rf"[0-9A-Za-z._-]{{1,{REQUEST_ID_CHARS_MAX}}}")


def accepted_request_id(value: str | bytes | None) -> str | None:
    """`value` when it is a plain token of bounded length, else None (the caller makes a new id)."""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if value is None or REQUEST_ID_PATTERN.fullmatch(value) is None:
        return None
    return value


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bind the request's id for the log lines written while it is handled, and answer it in a header.

    Install it right inside the tracing middleware: every line below it, errors included, carries the id.
    """
    with request_id_scope(accepted_request_id(request.headers.get(REQUEST_ID_HEADER))) as request_id:
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # Raised answers (redirects, aiohttp's own errors) carry it too.
            exc.headers[REQUEST_ID_HEADER] = request_id
            raise
        response.headers[REQUEST_ID_HEADER] = request_id
        return response


def request_id_metadata() -> tuple[tuple[str, str], ...]:
    """The gRPC metadata that carries the bound request id to the ledger; empty outside a request."""
    request_id = request_id_var.get()
    if request_id is None:
        return ()
    return ((REQUEST_ID_METADATA_KEY, request_id),)
