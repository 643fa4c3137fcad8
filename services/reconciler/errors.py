"""Why a reconciliation run could not finish. Every message is safe to print (no key, no customer data).

    ReconcilerError                 a run stopped before it finished; it is safe to run again
    ├── StripeFailure               a call to Stripe failed, or Stripe answered outside its own protocol
    │   ├── StripeUnavailable       network error, timeout, 429 or 5xx, still failing after the bounded retries
    │   └── StripeRefused           Stripe refused the request: bad key, permission, invalid parameter
    ├── LedgerFailure               the ledger could not be used: unreachable, token refused, internal error
    └── RunInterrupted              a stop was asked for (SIGTERM) before the run finished

Foreign exceptions are translated once where they enter (stripe by services.stripe_bridge.errors.translate,
grpc by services.ledger.errors) and become these in the module that meets them (stripe_source.py, run.py),
`raise ... from exc`; tests/reconciler/test_stripe_boundary.py injects each of Stripe's failures at the seam.
A run that stops for any of them has applied only whole, idempotent ledger calls: the next run redoes
what is left and nothing twice.
"""

from __future__ import annotations


class ReconcilerError(Exception):
    """A run stopped before it finished; the message says why and is safe to print."""


class StripeFailure(ReconcilerError):
    """A call to Stripe failed, or Stripe answered outside its own protocol."""


class StripeUnavailable(StripeFailure):
    """Stripe could not be reached or answered 429/5xx after the bounded retries."""


class StripeRefused(StripeFailure):
    """Stripe refused the request (authentication, permission, invalid parameter)."""


class LedgerFailure(ReconcilerError):
    """The ledger could not be used (unreachable, caller token refused, internal error)."""


class RunInterrupted(ReconcilerError):
    """A stop was asked for before the run finished."""
