"""The server-side credit catalog: which package gives how many credits for which price.

Credits always come from here, never from a client or from Stripe metadata alone. The gateway
prices Checkout Sessions with it, and the gateway and the reconciler check every paid amount
against it (`Catalog.match`): a payment whose package, amount or currency disagrees is refused.

`CREDIT_PACKAGES` (JSON object, package id -> package) overrides the default, the seed's packs:

    {"small":  {"credits": 100,  "amount_minor": 500,  "currency": "eur"},
     "medium": {"credits": 550,  "amount_minor": 2500, "currency": "eur"},
     "large":  {"credits": 1200, "amount_minor": 5000, "currency": "eur", "name": "1200 credits",
                "valid_days": 365}}

Amounts are integer minor units; currencies are ISO-4217 codes, stored lower case as Stripe
writes them (upper case input is accepted and lowered). `name` (optional) is what the customer
sees on the Stripe checkout page; it defaults to "<credits> credits". `valid_days` (optional,
1 to 3,650) is how long a pack's credits stay valid once credited: the ledger grants them as paid
credits expiring that many days after the purchase is credited. Absent, they never expire.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from services.common import config
from services.common.config import ConfigError

PACKAGES_MAX: Final = 50
PACKAGE_ID_PATTERN: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
CURRENCY_PATTERN: Final = re.compile(r"^[a-z]{3}$")
CREDITS_MAX: Final = 1_000_000_000  # The ledger's per-entry limit.
AMOUNT_MINOR_MAX: Final = 99_999_999  # Stripe's largest amount (eight digits).
NAME_CHARS_MAX: Final = 100
VALID_DAYS_MAX: Final = 3_650  # Ten years: the ledger's furthest expire_time.
NEVER_EXPIRES: Final = 0  # A pack without valid_days (PaymentDetails.grant_valid_days 0).
PACKAGE_KEYS: Final = frozenset({"credits", "amount_minor", "currency", "name", "valid_days"})
CATALOG_EXPECTED: Final = 'a JSON object {"<package id>": {"credits": 100, "amount_minor": 500, "currency": "eur"}}'


@dataclass(frozen=True, slots=True)
class Package:
    """One pack: `credits` for `amount_minor` minor units of `currency`, valid `valid_days` (0: forever)."""

    package_id: str
    credits: int
    amount_minor: int
    currency: str
    name: str
    valid_days: int = NEVER_EXPIRES

    def __post_init__(self) -> None:
        assert PACKAGE_ID_PATTERN.match(self.package_id), self.package_id
        assert 1 <= self.credits <= CREDITS_MAX, self.credits
        assert 1 <= self.amount_minor <= AMOUNT_MINOR_MAX, self.amount_minor
        assert CURRENCY_PATTERN.match(self.currency), self.currency
        assert 1 <= len(self.name) <= NAME_CHARS_MAX, self.name
        assert self.valid_days == NEVER_EXPIRES or 1 <= self.valid_days <= VALID_DAYS_MAX, self.valid_days


@dataclass(frozen=True, slots=True)
class Mismatch:
    """Why a (package, amount, currency) triple is not a catalog price; PII-free, safe to log."""

    reason: str


DEFAULT_PACKAGES: Final = (
    Package("small", 100, 500, "eur", "100 credits"),
    Package("medium", 550, 2500, "eur", "550 credits"),
    Package("large", 1200, 5000, "eur", "1200 credits"),
)


class Catalog:
    """An immutable set of packages, looked up by id."""

    def __init__(self, packages: tuple[Package, ...]) -> None:
        assert 1 <= len(packages) <= PACKAGES_MAX, len(packages)
        self._by_id: dict[str, Package] = {}
        for package in packages:
            assert package.package_id not in self._by_id, package.package_id
            self._by_id[package.package_id] = package

    def __iter__(self) -> Iterator[Package]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, package_id: str) -> Package | None:
        return self._by_id.get(package_id)

    def match(self, package_id: str, amount_minor: int, currency: str) -> Package | Mismatch:
        """The package when the paid amount and currency are exactly its price; a Mismatch otherwise."""
        package = self._by_id.get(package_id)
        if package is None:
            return Mismatch(f"unknown package {_shown(package_id)}")
        paid_currency = currency.lower() if isinstance(currency, str) else ""
        if paid_currency != package.currency or amount_minor != package.amount_minor:
            return Mismatch(
                f"catalog mismatch for package {package.package_id}: paid {amount_minor} {_shown(paid_currency)}, "
                f"price is {package.amount_minor} {package.currency}"
            )
        return package

    @classmethod
    def default(cls) -> Catalog:
        return cls(DEFAULT_PACKAGES)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Catalog:
        """`CREDIT_PACKAGES` when set, the default catalog otherwise; ConfigError names the variable."""
        if config.optional(environ, "CREDIT_PACKAGES") is None:
            return cls.default()
        return cls.from_json_value(config.json_value(environ, "CREDIT_PACKAGES", CATALOG_EXPECTED))

    @classmethod
    def from_json_value(cls, value: object) -> Catalog:
        if not isinstance(value, dict) or not value:
            raise ConfigError(f"CREDIT_PACKAGES: expected {CATALOG_EXPECTED}")
        if len(value) > PACKAGES_MAX:
            raise ConfigError(f"CREDIT_PACKAGES: at most {PACKAGES_MAX} packages, got {len(value)}")
        return cls(tuple(_package(package_id, entry) for package_id, entry in value.items()))


def _shown(text: str) -> str:
    """A bounded, printable rendering of a value that came from outside (Stripe metadata)."""
    return repr(text[:40]) if isinstance(text, str) else repr(type(text).__name__)


def _package(package_id: str, entry: Any) -> Package:
    where = f"CREDIT_PACKAGES: package {package_id[:40]!r}"
    if not PACKAGE_ID_PATTERN.match(package_id):
        raise ConfigError(f"{where}: id must match {PACKAGE_ID_PATTERN.pattern}")
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected an object with credits, amount_minor and currency")
    unknown = sorted(set(entry) - PACKAGE_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; allowed: {sorted(PACKAGE_KEYS)}")
    credits = _positive_int(entry.get("credits"), CREDITS_MAX, f"{where}: credits")
    amount_minor = _positive_int(entry.get("amount_minor"), AMOUNT_MINOR_MAX, f"{where}: amount_minor")
    currency = entry.get("currency")
    if not isinstance(currency, str) or not CURRENCY_PATTERN.match(currency.lower()):
        raise ConfigError(f"{where}: currency must be a 3-letter ISO-4217 code such as 'eur'")
    name = entry.get("name", f"{credits} credits")
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= NAME_CHARS_MAX:
        raise ConfigError(f"{where}: name must be a string of 1 to {NAME_CHARS_MAX} characters")
    return Package(package_id, credits, amount_minor, currency.lower(), name.strip(), _valid_days(entry, where))


def _valid_days(entry: Mapping[str, Any], where: str) -> int:
    if "valid_days" not in entry:
        return NEVER_EXPIRES
    value = entry["valid_days"]
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= VALID_DAYS_MAX:
        raise ConfigError(
            f"{where}: valid_days must be an integer from 1 to {VALID_DAYS_MAX} (days); "
            "leave it out for credits that never expire"
        )
    return value


def _positive_int(value: object, maximum: int, where: str) -> int:
    # bool is an int in Python; `true` is not a price.
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= maximum:
        raise ConfigError(f"{where} must be an integer from 1 to {maximum}")
    return value
