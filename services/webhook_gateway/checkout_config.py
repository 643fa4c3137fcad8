"""What `POST /checkout` offers on Stripe's page beyond the catalog price: promotion codes and automatic tax.

    variable                         meaning (default)
    CHECKOUT_ALLOW_PROMOTION_CODES   true: the customer may enter a promotion code (allow_promotion_codes) (false)
    CHECKOUT_AUTOMATIC_TAX           true: Stripe Tax computes and collects tax (automatic_tax[enabled]) (false)
    CHECKOUT_TAX_BEHAVIOR            exclusive (tax on top of the price) or inclusive (within it), sent as the
                                     line item's price_data[tax_behavior]; only with automatic tax (unset: the
                                     Stripe account's default tax behavior)

Either way the pack is still matched on the session's `amount_subtotal`, the catalog price, and the
ledger records what was paid beside it (services.stripe_bridge.events). Both are off by default: turn
them on only once the Stripe account is set up for them (a promotion code must exist; Stripe Tax must
be registered where the customers are), or Stripe refuses the session (502 PAYMENT_PROVIDER_ERROR).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from services.common import config
from services.common.config import ConfigError

BOOLEAN_VALUES: Final = {"true": True, "false": False}
TAX_BEHAVIORS: Final = ("exclusive", "inclusive")


@dataclass(frozen=True, slots=True)
class CheckoutOptions:
    """Promotion codes and automatic tax on the Checkout Sessions the gateway creates (all off by default)."""

    allow_promotion_codes: bool = False
    automatic_tax: bool = False
    tax_behavior: str | None = None  # exclusive | inclusive; None: the Stripe account's default

    def __post_init__(self) -> None:
        assert self.tax_behavior is None or self.tax_behavior in TAX_BEHAVIORS, self.tax_behavior

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> CheckoutOptions:
        automatic_tax = _boolean(environ, "CHECKOUT_AUTOMATIC_TAX")
        tax_behavior = config.optional(environ, "CHECKOUT_TAX_BEHAVIOR")
        if tax_behavior is not None and tax_behavior not in TAX_BEHAVIORS:
            raise ConfigError(f"CHECKOUT_TAX_BEHAVIOR: expected one of {', '.join(TAX_BEHAVIORS)}")
        if tax_behavior is not None and not automatic_tax:
            raise ConfigError("CHECKOUT_TAX_BEHAVIOR: set only with CHECKOUT_AUTOMATIC_TAX=true")
        return cls(
            allow_promotion_codes=_boolean(environ, "CHECKOUT_ALLOW_PROMOTION_CODES"),
            automatic_tax=automatic_tax,
            tax_behavior=tax_behavior,
        )


def _boolean(environ: Mapping[str, str], name: str) -> bool:
    raw = config.optional(environ, name)
    if raw is None:
        return False
    value = BOOLEAN_VALUES.get(raw.strip().lower())
    if value is None:
        raise ConfigError(f"{name}: expected true or false")
    return value
