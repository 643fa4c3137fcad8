"""Page tokens of the newest-first lists (transactions, holds): an opaque cursor the caller hands back."""

from __future__ import annotations

import base64

from services.ledger import errors

PAGE_TOKEN_PREFIX = "t1:"  # the transactions' list; holds and payments name their own
ID_MAX = 2**63 - 1  # the ids the lists page by are bigints


def encode_page_token(before_id: int | None, prefix: str = PAGE_TOKEN_PREFIX) -> str:
    """A cursor of a newest-first list by id; the prefix names the list, so one list's token fails on another."""
    if before_id is None:
        return ""
    return base64.urlsafe_b64encode(f"{prefix}{before_id}".encode()).decode()


def decode_page_token(token: str, prefix: str = PAGE_TOKEN_PREFIX) -> int | None:
    if not token:
        return None
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
        before_id = int(text.removeprefix(prefix)) if text.startswith(prefix) else -1
    except (ValueError, UnicodeDecodeError):
        before_id = -1
    if not 0 < before_id <= ID_MAX:
        raise errors.InvalidArgument("page_token", "is not a token this service issued")
    return before_id
