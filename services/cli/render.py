"""How creditsctl shows things: aligned tables for people, one JSON document for scripts.

Every command builds an `Output`: `document` is what `--json` prints (plain JSON values; amounts are
integers in credits or minor units, times RFC 3339 UTC strings or null), `lines` the human view.
Text that came from outside (reasons, Stripe ids, details) is shown with control characters replaced,
so nothing stored in the ledger can drive the operator's terminal.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from google.protobuf.timestamp_pb2 import Timestamp

from services.cli.errors import EXIT_OK

CELL_CHARS_MAX: Final = 60
# Stripe's currencies without minor units, and those with three decimals (stripe.com/docs/currencies).
ZERO_DECIMAL_CURRENCIES: Final = frozenset(
    {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"}
)
THREE_DECIMAL_CURRENCIES: Final = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})
_CONTROL_CHARACTERS: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass
class Output:
    """What a command prints (stdout) and exits with."""

    document: Mapping[str, Any]
    lines: list[str] = field(default_factory=list)
    exit_code: int = EXIT_OK
    # One line for stderr after the output (a run that left drift, a refused event); None: nothing to add.
    complaint: str | None = None


def to_json(document: Mapping[str, Any]) -> str:
    return json.dumps(document, ensure_ascii=False, indent=2, sort_keys=False)


def timestamp(value: Timestamp) -> str | None:
    """RFC 3339 UTC (`2026-01-02T03:04:05Z`), or None for an unset protobuf Timestamp."""
    if value.seconds == 0 and value.nanos == 0:
        return None
    moment = value.ToDatetime(tzinfo=datetime.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def enum_name(name: str, prefix: str) -> str | None:
    """`PAYMENT_STATUS_CREDITED` -> `credited`; the UNSPECIFIED value -> None."""
    short = name.removeprefix(prefix).lower()
    return None if short == "unspecified" else short


def money(amount_minor: int, currency: str) -> str:
    """Minor units shown in major units with the currency: 2500, "eur" -> `25.00 EUR`."""
    code = currency.lower()
    decimals = 0 if code in ZERO_DECIMAL_CURRENCIES else 3 if code in THREE_DECIMAL_CURRENCIES else 2
    sign = "-" if amount_minor < 0 else ""
    whole, fraction = divmod(abs(amount_minor), 10**decimals)
    shown = f"{whole}.{fraction:0{decimals}d}" if decimals else str(whole)
    return f"{sign}{shown} {code.upper()}"


def signed(value: int) -> str:
    return f"{value:+d}"


def cell(value: object, chars_max: int | None = None) -> str:
    """A value as text: None as `-`, control characters replaced, cut at `chars_max` when given."""
    if value is None or value == "":
        return "-"
    text = _CONTROL_CHARACTERS.sub("?", str(value))
    return text if chars_max is None or len(text) <= chars_max else text[: chars_max - 1] + "…"


def fields(pairs: Iterable[tuple[str, object]]) -> list[str]:
    """`name   value` lines, names aligned."""
    items = [(name, cell(value)) for name, value in pairs]
    width = max((len(name) for name, _ in items), default=0)
    return [f"{name:<{width}}  {value}" for name, value in items]


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], right: Iterable[int] = ()) -> list[str]:
    """Columns aligned to their widest cell; the columns in `right` (numbers) aligned right.

    Cells are cut at CELL_CHARS_MAX, except in the last column (free text such as a reason or a detail),
    which nothing follows.
    """
    right_aligned = set(right)
    last = len(headers) - 1
    texts = [
        [cell(value, None if index == last else CELL_CHARS_MAX) for index, value in enumerate(row)] for row in rows
    ]
    widths = [max([len(header), *(len(row[index]) for row in texts)]) for index, header in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [
            value.rjust(widths[index]) if index in right_aligned else value.ljust(widths[index])
            for index, value in enumerate(values)
        ]
        return "  ".join(parts).rstrip()

    return [line(list(headers)), *(line(row) for row in texts)]
