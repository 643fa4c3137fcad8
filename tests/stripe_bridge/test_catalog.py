"""The server-side credit catalog: defaults, CREDIT_PACKAGES parsing and validation, price matching."""

from __future__ import annotations

import json

import pytest

from services.common.config import ConfigError
from services.ledger.payments.server import GRANT_VALID_DAYS_MAX
from services.stripe_bridge.catalog import (
    AMOUNT_MINOR_MAX,
    CREDITS_MAX,
    NEVER_EXPIRES,
    PACKAGES_MAX,
    VALID_DAYS_MAX,
    Catalog,
    Mismatch,
    Package,
)


def test_default_catalog_is_the_seed_packs() -> None:
    catalog = Catalog.default()
    assert [(p.package_id, p.credits, p.amount_minor, p.currency) for p in catalog] == [
        ("small", 100, 500, "eur"),
        ("medium", 550, 2500, "eur"),
        ("large", 1200, 5000, "eur"),
    ]


@pytest.mark.parametrize(
    "environ", [{}, {"CREDIT_PACKAGES": ""}, {"CREDIT_PACKAGES": "   "}], ids=["unset", "empty", "blank"]
)
def test_unset_variable_gives_the_default(environ: dict[str, str]) -> None:
    assert [p.package_id for p in Catalog.from_env(environ)] == ["small", "medium", "large"]


def test_configured_catalog_is_parsed_and_normalized() -> None:
    value = {
        "starter": {"credits": 10, "amount_minor": 99, "currency": "USD"},
        "pro_pack-2": {"credits": CREDITS_MAX, "amount_minor": AMOUNT_MINOR_MAX, "currency": "gbp", "name": " Pro "},
    }
    catalog = Catalog.from_env({"CREDIT_PACKAGES": json.dumps(value)})
    assert catalog.get("starter") == Package("starter", 10, 99, "usd", "10 credits")
    assert catalog.get("pro_pack-2") == Package("pro_pack-2", CREDITS_MAX, AMOUNT_MINOR_MAX, "gbp", "Pro")
    assert catalog.get("small") is None
    assert len(catalog) == 2


def test_valid_days_is_read_and_absent_means_never() -> None:
    value = {
        "year": {"credits": 10, "amount_minor": 99, "currency": "eur", "valid_days": 365},
        "shortest": {"credits": 10, "amount_minor": 99, "currency": "eur", "valid_days": 1},
        "longest": {"credits": 10, "amount_minor": 99, "currency": "eur", "valid_days": VALID_DAYS_MAX},
        "forever": {"credits": 10, "amount_minor": 99, "currency": "eur"},
    }
    catalog = Catalog.from_env({"CREDIT_PACKAGES": json.dumps(value)})
    assert [(package.package_id, package.valid_days) for package in catalog] == [
        ("year", 365),
        ("shortest", 1),
        ("longest", VALID_DAYS_MAX),
        ("forever", NEVER_EXPIRES),
    ]
    assert NEVER_EXPIRES == 0, "PaymentDetails.grant_valid_days: 0 is never"
    assert all(package.valid_days == NEVER_EXPIRES for package in Catalog.default())


def test_the_longest_validity_is_the_ledgers() -> None:
    """A pack the catalog accepts is one the ledger's SettlePayment accepts (PaymentDetails.grant_valid_days)."""
    assert VALID_DAYS_MAX == GRANT_VALID_DAYS_MAX


@pytest.mark.parametrize(
    "valid_days",
    [
        pytest.param(0, id="zero"),
        pytest.param(-30, id="negative"),
        pytest.param(VALID_DAYS_MAX + 1, id="over-ten-years"),
        pytest.param(30.5, id="fractional"),
        pytest.param(30.0, id="float"),
        pytest.param("30", id="string"),
        pytest.param(True, id="boolean"),
        pytest.param(None, id="null"),
        pytest.param([30], id="list"),
    ],
)
def test_invalid_valid_days_stops_start_up_with_its_rule(valid_days: object) -> None:
    raw = json.dumps({"small": {"credits": 100, "amount_minor": 500, "currency": "eur", "valid_days": valid_days}})
    with pytest.raises(ConfigError) as raised:
        Catalog.from_env({"CREDIT_PACKAGES": raw})
    assert str(raised.value) == (
        "CREDIT_PACKAGES: package 'small': valid_days must be an integer from 1 to 3650 (days); "
        "leave it out for credits that never expire"
    )


def test_valid_days_is_an_allowed_key_named_in_the_unknown_key_message() -> None:
    raw = json.dumps({"small": {"credits": 100, "amount_minor": 500, "currency": "eur", "validity": 30}})
    with pytest.raises(ConfigError, match="'valid_days'"):
        Catalog.from_env({"CREDIT_PACKAGES": raw})


def _pack(**overrides: object) -> dict[str, object]:
    return {"credits": 100, "amount_minor": 500, "currency": "eur", **overrides}


INVALID_CATALOGS = [
    pytest.param("not json", id="not-json"),
    pytest.param("[]", id="a-list"),
    pytest.param("{}", id="empty-object"),
    pytest.param(json.dumps({"Small": _pack()}), id="upper-case-id"),
    pytest.param(json.dumps({"": _pack()}), id="empty-id"),
    pytest.param(json.dumps({"a" * 41: _pack()}), id="id-too-long"),
    pytest.param(json.dumps({"small pack": _pack()}), id="id-with-space"),
    pytest.param(json.dumps({"small": 100}), id="package-not-object"),
    pytest.param(json.dumps({"small": _pack(credits=0)}), id="zero-credits"),
    pytest.param(json.dumps({"small": _pack(credits=-5)}), id="negative-credits"),
    pytest.param(json.dumps({"small": _pack(credits=1.5)}), id="fractional-credits"),
    pytest.param(json.dumps({"small": _pack(credits="100")}), id="string-credits"),
    pytest.param(json.dumps({"small": _pack(credits=True)}), id="boolean-credits"),
    pytest.param(json.dumps({"small": _pack(credits=CREDITS_MAX + 1)}), id="credits-over-limit"),
    pytest.param(json.dumps({"small": _pack(amount_minor=0)}), id="zero-amount"),
    pytest.param(json.dumps({"small": _pack(amount_minor=5.0)}), id="float-amount"),
    pytest.param(json.dumps({"small": _pack(amount_minor=AMOUNT_MINOR_MAX + 1)}), id="amount-over-limit"),
    pytest.param(json.dumps({"small": _pack(currency="eu")}), id="two-letter-currency"),
    pytest.param(json.dumps({"small": _pack(currency="euro")}), id="four-letter-currency"),
    pytest.param(json.dumps({"small": _pack(currency="e1r")}), id="digit-in-currency"),
    pytest.param(json.dumps({"small": _pack(currency=978)}), id="numeric-currency"),
    pytest.param(json.dumps({"small": {"credits": 100, "currency": "eur"}}), id="missing-amount"),
    pytest.param(json.dumps({"small": _pack(price=5)}), id="unknown-key"),
    pytest.param(json.dumps({"small": _pack(name="")}), id="empty-name"),
    pytest.param(json.dumps({"small": _pack(name="x" * 101)}), id="name-too-long"),
    pytest.param(json.dumps({f"p{i}": _pack() for i in range(PACKAGES_MAX + 1)}), id="too-many-packages"),
]


@pytest.mark.parametrize("raw", INVALID_CATALOGS)
def test_invalid_catalog_stops_start_up_naming_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Catalog.from_env({"CREDIT_PACKAGES": raw})
    message = str(raised.value)
    assert message.startswith("CREDIT_PACKAGES")
    assert "\n" not in message


def test_match_accepts_the_exact_catalog_price() -> None:
    catalog = Catalog.default()
    assert catalog.match("medium", 2500, "eur") == catalog.get("medium")
    assert catalog.match("medium", 2500, "EUR") == catalog.get("medium")


@pytest.mark.parametrize(
    ("package_id", "amount_minor", "currency", "expected_words"),
    [
        pytest.param("medium", 2499, "eur", "catalog mismatch", id="amount-too-low"),
        pytest.param("medium", 2501, "eur", "catalog mismatch", id="amount-too-high"),
        pytest.param("medium", 2500, "usd", "catalog mismatch", id="other-currency"),
        pytest.param("medium", 500, "eur", "catalog mismatch", id="price-of-another-package"),
        pytest.param("huge", 2500, "eur", "unknown package", id="unknown-package"),
        pytest.param("", 2500, "eur", "unknown package", id="empty-package"),
    ],
)
def test_match_refuses_anything_else(package_id: str, amount_minor: int, currency: str, expected_words: str) -> None:
    result = Catalog.default().match(package_id, amount_minor, currency)
    assert isinstance(result, Mismatch)
    assert expected_words in result.reason


def test_mismatch_reason_is_bounded_for_outside_values() -> None:
    result = Catalog.default().match("x" * 10_000, 1, "eur")
    assert isinstance(result, Mismatch)
    assert len(result.reason) < 100
