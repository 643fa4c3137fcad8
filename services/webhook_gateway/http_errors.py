"""The one JSON error body of the HTTP edge, and the middleware that produces it.

Every route answers an error as::

    {"error": {"code": "UPPER_SNAKE", "message": "a sentence for humans"}}

`code` is a stable token clients branch on; `message` may change wording. Handlers raise
`HttpError` (services.webhook_gateway.errors, the gateway's exception tree); `error_middleware`
renders it, renders aiohttp's own HTTP errors (404, 405, 413, ...) the same way, and turns anything
else into 500 `INTERNAL` without echoing the exception: the stack trace goes to the log, never to
the client.

A request aiohttp's parser refuses before any route or middleware runs (a 9 KB header line, a URL or
cookie beyond `HEADER_LINE_BYTES_MAX`, more than `HEADERS_MAX` headers, a NUL in a header value,
`Content-Length` with `Transfer-Encoding`) would get aiohttp's own text/plain 400 that quotes the
offending bytes (a bearer token, for one) and an ERROR line with a traceback any client can trigger.
`GatewayRunner` serves the application with a request handler that answers these with the same JSON
error body, quotes nothing, and logs one INFO line (a client's mistake, not an operator's).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from http import HTTPStatus
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestHandler

from services.webhook_gateway.errors import MESSAGE_CHARS_MAX, HttpError

logger = logging.getLogger(__name__)

INTERNAL_MESSAGE: Final = "internal error"
# aiohttp's parser limits, passed explicitly (its defaults, named here): one request line or header line
# at most this many bytes, at most this many header lines.
HEADER_LINE_BYTES_MAX: Final = 8190
HEADERS_MAX: Final = 128
MALFORMED_REQUEST_MESSAGE: Final = (
    f"the request could not be parsed: malformed, or a line above {HEADER_LINE_BYTES_MAX} bytes, "
    f"or more than {HEADERS_MAX} headers"
)

# Canonical codes for aiohttp's own HTTP errors; any other status falls back to its phrase.
CODE_BY_STATUS: Final[Mapping[int, str]] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    408: "REQUEST_TIMEOUT",
    411: "LENGTH_REQUIRED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "RATE_LIMITED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
}

# aiohttp sets these from the body it renders; ours replaces that body, so they must not be copied.
_BODY_HEADERS: Final = frozenset({"content-type", "content-length", "content-encoding", "transfer-encoding"})


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    """The JSON error body as a plain value (also used by the OpenAPI document's examples)."""
    return {"error": {"code": code, "message": message}}


def error_response(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    """Build the JSON error response; for middlewares that answer without raising."""
    response = web.json_response(error_body(code, message), status=status)
    response.headers.update(headers or {})
    # An error is about this request only: never let a cache or a browser keep it.
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def code_for_status(status: int) -> str:
    """The canonical code of an HTTP status, e.g. 404 -> NOT_FOUND, 418 -> IM_A_TEAPOT."""
    known = CODE_BY_STATUS.get(status)
    if known is not None:
        return known
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        return "INTERNAL" if status >= 500 else "INVALID_ARGUMENT"
    return re.sub(r"[^A-Z0-9]+", "_", phrase.upper()).strip("_")


def _from_http_exception(exc: web.HTTPException) -> web.Response:
    # The reason phrase, not exc.text: the text may carry details the framework chose (sizes, paths).
    headers = {name: value for name, value in exc.headers.items() if name.lower() not in _BODY_HEADERS}
    message = (exc.reason or HTTPStatus(exc.status).phrase)[:MESSAGE_CHARS_MAX]
    return error_response(exc.status, code_for_status(exc.status), message, headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every error raised below as the JSON error body. Install it inside CORS, outside the rest."""
    try:
        return await handler(request)
    except HttpError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # Redirects and successes raised as exceptions are not errors.
        return _from_http_exception(exc)
    except Exception:
        # Logged with its stack trace; the client learns nothing about the cause.
        logger.exception("unhandled error", extra={"method": request.method, "path": request.path})
        return error_response(500, "INTERNAL", INTERNAL_MESSAGE)


# --- requests the parser refuses ----------------------------------------------------------------


class _JsonErrorRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering the errors it raises itself with the JSON error body."""

    __slots__ = ()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # `message` quotes the offending bytes of the request (a header, a token): never logged, never sent.
        if status >= 500:
            logger.error("request failed outside the error middleware", exc_info=exc, extra={"status": status})
            body_message = INTERNAL_MESSAGE
        else:
            error_type = type(exc).__name__ if exc is not None else "unknown"
            logger.info("malformed request refused", extra={"status": status, "error_type": error_type})
            body_message = MALFORMED_REQUEST_MESSAGE if status == 400 else HTTPStatus(status).phrase
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already sent; cannot send an error after it")
        response = error_response(status, code_for_status(status), body_message)
        response.force_close()  # The connection's framing may be lost: never reuse it.
        return response


class _JsonErrorServer(web.Server):
    """`web.Server` whose connections use `_JsonErrorRequestHandler`."""

    def __call__(self) -> RequestHandler:
        return _JsonErrorRequestHandler(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """`web.AppRunner` with the parser limits set explicitly and the parser's errors as JSON bodies."""

    def __init__(self, app: web.Application, **kwargs: object) -> None:
        kwargs.setdefault("max_line_size", HEADER_LINE_BYTES_MAX)
        kwargs.setdefault("max_field_size", HEADER_LINE_BYTES_MAX)
        kwargs.setdefault("max_headers", HEADERS_MAX)
        super().__init__(app, **kwargs)  # type: ignore[arg-type]  # aiohttp's kwargs are loosely typed

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # aiohttp builds its Server inside Application._make_handler; only the connection factory changes.
        server.__class__ = _JsonErrorServer
        return server
