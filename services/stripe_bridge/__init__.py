"""Stripe ⇄ ledger: what every service that meets Stripe shares (gateway, reconciler, creditsctl).

Named a bridge because it is the one place where Stripe's vocabulary (events, charges, refunds,
disputes, prices, `stripe.StripeError`) meets the ledger's (actions, payment details, our errors).
It sits between the services that use it and the ledger's client below; `services.common` stays
free of both.

    catalog.py   the credit packages and their Stripe prices (CREDIT_PACKAGES)
    events.py    pure: a Stripe event (or charge) -> one ledger action (Settle, Refund, Dispute, ...)
    apply.py     one action applied through the ledger client, with the event's id for idempotency
    config.py    Stripe's settings (STRIPE_API_KEY, STRIPE_API_BASE, STRIPE_ACCOUNT_ID) and their rules
    client.py    the one Stripe client set-up (timeouts and retries passed by each caller)
    api.py       the calls the gateway and creditsctl make (checkout session, charge, event, thin event)
    errors.py    Stripe's failures, translated once (`translate`) into our tree
"""
